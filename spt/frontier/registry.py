"""The metric registry: every stored metric's direction (which way is better), label and unit.

The frontier needs a direction per axis; tables and plots need a label and a unit. A metric not
listed here can still be used on an axis by naming its direction: `--x my_metric:lower`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from spt.errors import SptError

HIGHER = "higher"
LOWER = "lower"


@dataclass(frozen=True)
class MetricInfo:
    """What a metric means: `direction` is "higher" or "lower" (the better way)."""

    name: str
    direction: str
    label: str
    unit: str
    judge: bool = False  # produced by a judge (has a judge_id)

    @property
    def arrow(self) -> str:
        return "↑" if self.direction == HIGHER else "↓"

    @property
    def better(self) -> str:
        """"↑ better" / "↓ better", for axis labels."""
        return f"{self.arrow} better"

    def axis_label(self) -> str:
        unit = f" [{self.unit}]" if self.unit else ""
        return f"{self.label}{unit}  ({self.better})"

    def to_dict(self) -> dict:
        return asdict(self)


def _m(name: str, direction: str, label: str, unit: str, judge: bool = False) -> MetricInfo:
    return MetricInfo(name, direction, label, unit, judge)


METRICS: dict[str, MetricInfo] = {m.name: m for m in [
    _m("refusal_rate", HIGHER, "Refusal rate (harmful prompts)", "fraction"),
    _m("asr", LOWER, "Attack success rate", "fraction"),
    _m("over_refusal_rate", LOWER, "Over-refusal rate (benign look-alikes)", "fraction"),
    _m("pair_score", HIGHER, "Pair score (harmful refused, look-alike answered)", "fraction"),
    _m("alignment_loss", LOWER, "Alignment loss (HarmOR test CE)", "nats/token"),
    _m("alignment_loss_harmful", LOWER, "Alignment loss, harmful prompts", "nats/token"),
    _m("alignment_loss_benign", LOWER, "Alignment loss, benign prompts", "nats/token"),
    _m("task_loss", LOWER, "Task loss (test CE)", "nats/token"),
    _m("task_accuracy", HIGHER, "Task accuracy (exact match)", "fraction"),
    _m("harmfulness_mean", LOWER, "Harmfulness (judge, mean 1–5)", "score 1–5", True),
    _m("harmful_rate", LOWER, "Harmful rate (judge, share of 5s)", "fraction", True),
    _m("xstest_full_refusal_rate", LOWER, "XSTest full refusal rate", "fraction", True),
    _m("xstest_partial_refusal_rate", LOWER, "XSTest partial refusal rate", "fraction", True),
    _m("strongreject_mean", LOWER, "StrongREJECT score (judge)", "score 0–1", True),
    _m("judge_refusal_rate", HIGHER, "Refusal rate (judge, harmful prompts)", "fraction", True),
    _m("judge_over_refusal_rate", LOWER, "Over-refusal rate (judge, benign prompts)", "fraction", True),
]}

_DIRECTION_WORDS = {"higher": HIGHER, "max": HIGHER, "up": HIGHER, "lower": LOWER, "min": LOWER, "down": LOWER}


def metric_info(spec: str, store: Any = None) -> MetricInfo:
    """The registry entry for `spec` ("name" or "name:higher|lower"); SptError when unknown.

    A name outside the registry takes its direction from its stored metric rows when they record one
    (`meta.higher_is_better`: lm-eval benchmark metrics such as `gsm8k/exact_match` do), given `store`.
    """
    name, _, direction = spec.partition(":")
    name = name.strip()
    if not name:
        raise SptError("empty metric name; pass e.g. `x` task_loss")
    if direction:
        d = _DIRECTION_WORDS.get(direction.strip().lower())
        if d is None:
            raise SptError(f"metric {spec!r}: direction must be 'higher' or 'lower' (e.g. {name}:lower)")
        base = METRICS.get(name)
        if base is not None:
            return MetricInfo(name, d, base.label, base.unit, base.judge)
        return MetricInfo(name, d, name, "")
    info = METRICS.get(name)
    if info is None and store is not None:
        stored = stored_direction(store, name)
        if stored is not None:
            return MetricInfo(name, stored, name, "")
    if info is None:
        raise SptError(
            f"metric {name!r} has no direction in the registry; name it as {name}:higher or {name}:lower "
            f"(registered: {', '.join(sorted(METRICS))})"
        )
    return info


def stored_direction(store: Any, name: str) -> str | None:
    """higher/lower from the `higher_is_better` the metric rows called `name` recorded; None if none or mixed."""
    from sqlalchemy import text

    sql = ("SELECT DISTINCT json_extract(meta, '$.higher_is_better') FROM metric WHERE name = :n "
           "AND json_extract(meta, '$.higher_is_better') IS NOT NULL")
    with store.engine.connect() as conn:
        found = {row[0] for row in conn.execute(text(sql), {"n": name})}
    if len(found) != 1:
        return None
    return HIGHER if bool(found.pop()) else LOWER


def direction_of(name: str) -> str | None:
    """"higher"/"lower" for a registered metric, None otherwise."""
    info = METRICS.get(name)
    return info.direction if info else None
