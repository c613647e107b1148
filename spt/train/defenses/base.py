"""The defense interface: one module in `spt/train/defenses/` per defense, found by the registry.

A defense is a subclass of `Defense` in its own module of this package (`spt/train/defenses/<name>.py`).
The registry (`spt.train.defenses.DEFENSES`) imports every module of the package and registers every
`Defense` subclass that sets `name`, so adding a defense is adding that one file: its options become
`spt finetune` flags, YAML recipe keys and `spt sweep --axis` axes, its identity fields enter the run
identity, and the training loop calls its hooks. Nothing else is edited.

What a defense declares (class attributes):

- `name`: the `--defense` value. `summary`: one line for `--help`. `paper`: the source (paper, code).
- `stages`: the stages it applies to, a subset of ("align", "task"). `--stage` outside them is refused.
- `lam`: an `Option` whose field is the shared `lam` setting (λ, the run's "strength" shown on the
  frontier and in the `Run.lam` column), or None when λ means nothing for this defense. `--lam` keeps
  working for recipes written before the options existed.
- `options`: a tuple of `Option`s. Each becomes the config field `<defense>_<name>` (or `Option.field`
  for settings older than this interface, e.g. anchor's `safety_batch_size`), the flag
  `--<defense>-<name>`, the YAML key of the same name and a sweep axis (`spt sweep --axis
  <defense>_<name>=v1,v2`). Values are type-checked and range-checked before anything is written.
  An option default may be None, meaning "resolved by `resolve_options`" (e.g. SafeLoRA's selection
  follows whether λ was given).
- identity: by default λ (always part of the identity) plus every option with `identity=True`;
  override `identity(config)` to change that. Options of other defenses never enter a run's identity,
  so adding a defense does not change the identity of existing runs.

Hooks, in the order the loop calls them (all optional; the base class is plain SFT):

1. `validate_config(config)` (classmethod) and `validate_lineage(config, parent_run)` (classmethod):
   raise `SptError` before anything is written (wrong stage, LoRA-only method on a full fine-tune,
   a parent run of the wrong kind).
2. `setup(ctx)`: once, after the model is built and before a resume's state is applied (`ctx.start_step`
   says where training continues; `load_state_dict` follows). It runs under a forked RNG, so loading
   things there never changes the training's random stream. `ctx` is a `spt.train.context.TrainContext`:
   the model, the config, the start weights
   (`ctx.start_state()`: the weights the run started from, i.e. the aligned parent for a task run,
   read from disk so a resumed run sees the same anchor as an uninterrupted one), the parent's final
   checkpoint and starting weights, the tokenizer, and data helpers (`ctx.safety_pairs()`,
   `ctx.harmful_examples()`, `ctx.sample(...)`) that are pure functions of the step, so a resumed run
   draws the same batches.
3. Per optimizer step, either
   - `batches(ctx, step, micro)`: turn the step's task micro-batches (lists of `Encoded` examples) into
     the `Batch`es actually trained on: which examples (add safety examples, swap in alignment data),
     each example's loss weight, and an optional per-token reweighting `Batch.token_weight`
     (`(ce, example, position) -> multiplier`, evaluated on the current forward's token losses, so a
     weight that depends on the model's own log-probs costs no extra pass). Default: the task examples,
     each completion token weighted 1/(completion tokens of the step), i.e. the token-mean loss; plus
   - `extra_loss(ctx, step)`: a differentiable scalar added once per optimizer step (proximal, Lisa);
   or
   - `train_step(ctx, step, batches)`: the whole forward/backward of the step, for defenses that need
     extra passes, perturbed activations or alternate weights (Vaccine, Booster). It must leave the
     step's gradient in `.grad` of the trainable parameters and return the `StepStats` of the task
     loss; `ctx.forward_backward(batch, extra)` runs the default pass for one batch and is the building
     block (it packs, runs under autocast, and handles DDP sync); `ctx.forward(batch)` runs a forward
     only. Return None to fall back to the default step. The loop then clips, steps the optimizer
     and the schedule. Under gradient accumulation the weights of `batches` already make the sum over
     micro-batches the step objective; a multi-pass step must keep that scaling (defenses.md §12.1).
4. `after_step(ctx, step)`: after the optimizer step (state switches, snapshots of iterates).
5. `log_values()`: numbers to log as TrainLog rows at log steps (e.g. `tokenwise_mean_weight`).
6. `state_dict()` / `load_state_dict(state)`: what a resumed run needs to continue exactly (tensors and
   plain values only: the trainer state is loaded with `weights_only=True`).
7. `post_train(ctx)`: after the last step and before the final checkpoint; may transform the model in
   place (SafeLoRA). Returns a dict recorded in the run's result (`result[<name>]`) and, without its
   `layers` list, in the final checkpoint's meta; None records nothing. A defense whose `post_train`
   changes the weights sets `changes_weights_after_training = True`, and the loop re-measures the
   alignment loss after it (logged as `<metric>_post_<name>`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from spt.errors import SptError

STAGES = ("align", "task")
TYPES = {"float": float, "int": int, "str": str, "bool": bool}


@dataclass(frozen=True)
class Option:
    """One setting of a defense.

    `kind` is "float", "int", "str" or "bool"; `range` an inclusive (low, high) for numbers (use
    math.inf for no upper bound); `choices` the allowed strings; `paper` where the default comes from.
    `field` overrides the config field name (default `<defense>_<name>`; `lam` for λ).
    """

    name: str
    kind: str
    default: Any
    help: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    paper: str = ""
    field: str | None = None
    identity: bool = True

    def field_name(self, defense: str) -> str:
        return self.field or f"{defense}_{self.name}"

    def flag(self, defense: str) -> str:
        return "--" + self.field_name(defense).replace("_", "-")

    def describe(self) -> str:
        """Help text with the default and the allowed values."""
        parts = [self.help.rstrip(".") + "."]
        if self.choices:
            parts.append(f"One of {', '.join(self.choices)}.")
        elif self.range is not None:
            lo, hi = self.range
            parts.append(f"In [{lo:g}, {hi:g}]." if hi < 1e6 else f"≥ {lo:g}.")
        if self.default is not None:
            parts.append(f"Default {self.default}.")
        if self.paper:
            parts.append(f"({self.paper})")
        return " ".join(parts)

    def check(self, defense: str, value: Any) -> Any:
        """The value with this option's type, or SptError naming the option and the allowed values."""
        flag = f"`{self.field_name(defense)}`"
        if value is None:
            return None
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
                return value.strip().lower() in ("true", "yes")
            raise SptError(f"{flag} {value!r} is not true or false")
        if self.kind == "str":
            if not isinstance(value, str) or not value.strip():
                raise SptError(f"{flag} {value!r} is not a non-empty text value")
            if self.choices and value not in self.choices:
                raise SptError(f"{flag} {value!r} is not one of {', '.join(self.choices)}")
            return value
        if isinstance(value, bool):
            raise SptError(f"{flag} {value!r} is not a number")
        try:
            v = float(value.strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise SptError(f"{flag} {value!r} is not a number (e.g. {self.default})") from None
        if not math.isfinite(v):
            raise SptError(f"{flag} {value!r} is not a finite number")
        if self.kind == "int":
            if not v.is_integer():
                raise SptError(f"{flag} {value!r} is not a whole number")
            v = int(v)
        if self.range is not None:
            lo, hi = self.range
            if not (lo <= v <= hi):
                rng = f"[{lo:g}, {hi:g}]" if hi != math.inf else f"≥ {lo:g}"
                raise SptError(f"{flag} {v:g} is outside {rng} ({self.help.rstrip('.')})")
        return v


@dataclass
class Batch:
    """One micro-batch as trained: examples, each example's loss weight per completion token, and an
    optional per-token multiplier computed from the current token losses.

    `token_weight(ce, example, position)` gets three tensors of the same length over the micro-batch's
    completion tokens: the (detached) token cross-entropy under the current weights, the index of the
    token's example in `examples`, and the token's position in its response (0 = first response token).
    It returns the multiplier of each token's weight (detached use only; no gradient flows through it).
    `group` tags examples for logging: 0 task, 1 safety/alignment, 2 harmful.
    """

    examples: list[Any]
    weights: list[float]
    token_weight: Callable[[Any, Any, Any], Any] | None = None
    groups: list[int] | None = None


@dataclass
class StepStats:
    """Token-loss sums a step reports for logging (sum of token CE and token counts per group)."""

    sums: dict[int, float] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    tokens: int = 0
    extra: float = 0.0

    def add(self, other: StepStats) -> None:
        for g, v in other.sums.items():
            self.sums[g] = self.sums.get(g, 0.0) + v
        for g, v in other.counts.items():
            self.counts[g] = self.counts.get(g, 0) + v
        self.tokens += other.tokens
        self.extra += other.extra


@dataclass
class LogWindow:
    """A defense's own numbers, summed per step between log steps; `mean()` averages them per step."""

    sums: dict[str, float] = field(default_factory=dict)
    steps: int = 0

    def add_step(self, values: dict[str, float]) -> None:
        """One optimizer step's values."""
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.steps += 1

    def mean(self, prefix: str = "") -> dict[str, float]:
        """The per-step means since the last call (names prefixed with `prefix`), and a fresh window."""
        out = {prefix + k: v / max(1, self.steps) for k, v in self.sums.items()}
        self.sums, self.steps = {}, 0
        return out


class Defense:
    """Base class: plain SFT on the task data (no hook changes anything)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    stages: ClassVar[tuple[str, ...]] = ("task",)
    lam: ClassVar[Option | None] = None
    options: ClassVar[tuple[Option, ...]] = ()
    changes_weights_after_training: ClassVar[bool] = False

    def __init__(self, config: Any):
        self.config = config
        self.lam_value: float | None = None if config.lam is None else float(config.lam)
        self.opts: dict[str, Any] = {o.name: getattr(config, o.field_name(self.name), o.default)
                                     for o in self.options}

    # ------------------------------------------------------------------ declarations
    @classmethod
    def fields(cls) -> dict[str, Option]:
        """{config field name: Option} for this defense's options (λ not included)."""
        return {o.field_name(cls.name): o for o in cls.options}

    @classmethod
    def resolve_options(cls, config: Any, explicit_lam: bool) -> None:
        """Fill this defense's option defaults into `config` (in place) and check every value.

        `explicit_lam` says whether λ was given (flag, recipe or sweep axis) before defaults were filled.
        """
        for f, o in cls.fields().items():
            v = getattr(config, f, None)
            setattr(config, f, o.default if v is None else o.check(cls.name, v))

    @classmethod
    def identity(cls, config: Any) -> dict[str, Any]:
        """This defense's settings that change the trained weights (λ is always in the identity)."""
        return {f: getattr(config, f) for f, o in cls.fields().items() if o.identity}

    @classmethod
    def validate_config(cls, config: Any) -> None:
        """Raise SptError for settings this defense cannot run with."""

    @classmethod
    def validate_lineage(cls, config: Any, parent: Any | None) -> None:
        """Raise SptError when the run's lineage (parent run) does not fit this defense."""

    # ------------------------------------------------------------------ hooks
    def setup(self, ctx: Any) -> None:
        """Called once after the model is built (and the resume state loaded), before the first step."""

    def batches(self, ctx: Any, step: int, micro: list[list[Any]]) -> list[Batch]:
        """The micro-batches of this step; default: task examples, token-mean loss over the step."""
        n = sum(e.n_completion for ex in micro for e in ex)
        w = 1.0 / max(1, n)
        return [Batch(list(ex), [w] * len(ex)) for ex in micro]

    def extra_loss(self, ctx: Any, step: int) -> Any | None:
        """A differentiable scalar added once per optimizer step, or None."""
        return None

    def train_step(self, ctx: Any, step: int, batches: list[Batch]) -> StepStats | None:
        """The whole forward/backward of one step; None runs the default (one pass per batch)."""
        return None

    def after_step(self, ctx: Any, step: int) -> None:
        """Called after each optimizer step."""

    def log_values(self) -> dict[str, float]:
        """Numbers logged as TrainLog rows at log steps."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs (tensors and plain values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` on resume."""

    def post_train(self, ctx: Any) -> dict[str, Any] | None:
        """Transform the trained model in place before the final checkpoint; return what to record."""
        return None

    @classmethod
    def describe_record(cls, record: dict[str, Any]) -> str | None:
        """One line for `spt finetune` about what `post_train` recorded (None: nothing worth a line)."""
        return None
