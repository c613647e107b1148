"""The defense registry: small strategy classes with hooks the training loop calls.

Adding a defense is one module `spt/train/defense_<name>.py` that subclasses `Defense`, decorates it
with `@register`, and is listed in `spt.train.DEFENSE_MODULES`. Hooks (all optional):

- `validate_config(config)` / `validate_lineage(config, parent_run)`: raise SptError before any write.
- `setup(ctx)`: once, after the model is built (snapshot anchors, build iterators).
- `safety_examples(step)`: encoded examples to train on next to the task batch in this step, with
  their loss weight (`anchor`).
- `extra_loss(model)`: a scalar added to the loss of every optimizer step (`proximal`).
- `post_train(ctx)`: a transform of the trained model before the final checkpoint (`safelora`);
  returns a dict recorded with the run.
"""

from __future__ import annotations

from typing import Any, ClassVar

from spt.errors import SptError

DEFENSES: dict[str, type[Defense]] = {}


def register(cls: type[Defense]) -> type[Defense]:
    DEFENSES[cls.name] = cls
    return cls


def _load_all() -> None:
    import importlib

    from spt.train import DEFENSE_MODULES

    for m in DEFENSE_MODULES:
        importlib.import_module(m)


def get_defense(name: str) -> type[Defense]:
    _load_all()
    if name not in DEFENSES:
        raise SptError(f"unknown defense {name!r}; valid: {', '.join(sorted(DEFENSES))}")
    return DEFENSES[name]


class Defense:
    """Base class: plain SFT (no hook does anything)."""

    name: ClassVar[str] = "base"
    default_lam: ClassVar[float | None] = None
    lam_range: ClassVar[tuple[float, float] | None] = None
    lam_meaning: ClassVar[str] = ""
    needs_safety_batches: ClassVar[bool] = False

    def __init__(self, config: Any):
        self.config = config
        self.lam = config.lam

    @classmethod
    def validate_config(cls, config: Any) -> None:
        """Raise SptError for settings this defense cannot run with."""

    @classmethod
    def validate_lineage(cls, config: Any, parent: Any | None) -> None:
        """Raise SptError when the run's lineage (parent run) does not fit this defense."""

    def setup(self, ctx: Any) -> None:
        """Called once after the model is built and before the first step."""

    def task_weight(self) -> float:
        """Weight of the task loss in the step's objective."""
        return 1.0

    def safety_weight(self) -> float:
        return 0.0

    def extra_loss(self, model: Any) -> Any | None:
        """A differentiable scalar added once per optimizer step, or None."""
        return None

    def post_train(self, ctx: Any) -> dict[str, Any] | None:
        """Transform the trained model in place before the final checkpoint; return what to record."""
        return None
