"""Two-stage sweeps: vary the alignment stage (`--align-defense`, `--align-method`) under the task grid.

Each alignment variant (an align-stage defense such as `none`, `vaccine`, `booster`, with a method
`sft` or `dpo`) is one alignment run from the sweep's model; every task configuration (defense × λ ×
options × poison × seed) is planned once per variant and starts from that variant's aligned run. An
alignment run is trained once and shared: the task configurations of a variant all ask `spt.train`
for the same alignment settings, and `finetune` returns the finished run with that identity instead of
training it again (a concurrent second request waits on the lease).

DPO runs without an align-stage defense, so the product skips `dpo` × a defense other than `none`
(listed in `skipped`); a defense that cannot run at the align stage is refused. The functions here are
pure (no store, no torch) and serve `spt.sweep.plan` (the planner), `spt.sweep.run` (the runner) and
the `spt sweep --dry-run` listing.
"""

from __future__ import annotations

from typing import Any

from spt.errors import SptError
from spt.progress import ProgressFn

ALIGN_METHODS = ("sft", "dpo")
TASK_ONLY = ("task", "poison", "poison_data", "from_run", "model")


def align_variants(defenses: list[str] | None, methods: list[str] | None) -> tuple[list[dict[str, str]], list[str]]:
    """([{"defense", "method"}], skipped labels) for the product of the two axes, in the order given.

    Empty axes default to `none` / `sft`. SptError for an unknown method or a defense that has no align
    stage.
    """
    from spt.train.defenses import get_defense

    ds = list(dict.fromkeys(defenses or [])) or ["none"]
    ms = list(dict.fromkeys(methods or [])) or ["sft"]
    for m in ms:
        if m not in ALIGN_METHODS:
            raise SptError(f"`align_method` {m!r} is not one of {', '.join(ALIGN_METHODS)}")
    for d in ds:
        cls = get_defense(d)
        if "align" not in cls.stages:
            raise SptError(f"`align_defense` {d}: defense {d!r} applies to `stage` {' or '.join(cls.stages)}, "
                           "not align; align-stage defenses: " + ", ".join(align_defense_names()))
    out, skipped = [], []
    for m in ms:
        for d in ds:
            if m == "dpo" and d != "none":
                skipped.append(f"{d}+dpo")
                continue
            out.append({"defense": d, "method": m})
    return out, skipped


def align_defense_names() -> list[str]:
    """The defenses that can run at the align stage (for help and errors)."""
    from spt.train.defenses import all_defenses

    return [n for n, c in all_defenses().items() if "align" in c.stages]


def variant_label(v: dict[str, str]) -> str:
    """`vaccine`, `none+dpo`: the alignment variant as shown in plans and tables."""
    return v["defense"] if v["method"] == "sft" else f"{v['defense']}+{v['method']}"


def align_config_values(model: str, train: dict[str, Any], variant: dict[str, str],
                        max_steps: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """The FinetuneConfig fields of one alignment run: the sweep's model and training settings (task-only
    settings dropped), `--stage align`, the variant's defense and method."""
    values = {k: v for k, v in (train or {}).items() if k not in TASK_ONLY}
    values.update(model=model, stage="align", defense=variant["defense"])
    if variant["method"] != "sft":
        values["method"] = variant["method"]
    if max_steps is not None:
        values["max_steps"] = max_steps
    if seed is not None:
        values["seed"] = seed
    return values


def expand_two_stage(task_configs: list[dict[str, Any]], variants: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Every task configuration once per alignment variant (variant outermost), re-indexed; each carries
    `align` (the variant) so the runner starts it from that variant's aligned run."""
    out: list[dict[str, Any]] = []
    for v in variants:
        for c in task_configs:
            d = {k: val for k, val in c.items() if k not in ("index", "key")}
            d["align"] = dict(v)
            d["index"] = len(out)
            out.append(d)
    return out


def alignment_runs(configs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The distinct alignment variants a plan trains, in plan order (each trained once)."""
    seen: list[dict[str, str]] = []
    for c in configs:
        v = c.get("align")
        if v is not None and v not in seen:
            seen.append(v)
    return seen


def ensure_alignment(store: Any, model: str, train: dict[str, Any], variant: dict[str, str],
                     max_steps: int | None = None, progress: ProgressFn | None = None) -> str:
    """The id of the finished alignment run of `variant`: trained now, or the one already done (same
    identity), or resumed when an earlier attempt was interrupted."""
    from spt.train import FinetuneConfig, finetune

    values = align_config_values(model, train, variant, max_steps)
    values.setdefault("resume", True)
    known = FinetuneConfig.field_names()
    unknown = sorted(set(values) - known)
    if unknown:
        raise SptError(f"alignment run: unknown finetune settings {', '.join(unknown)}")
    return finetune(store, FinetuneConfig(**values), progress).run_id
