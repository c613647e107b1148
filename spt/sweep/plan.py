"""Planning a sweep: the spec, its id, and the cartesian product of configurations.

A sweep varies the defense, λ, the poison ratio and the seed around one fixed setting (model or
parent run, task, training and evaluation options). The plan is the product
defense × λ × poison × seed in the order the values were given; for the `none` defense λ means
nothing, so its λ axis collapses to a single configuration per poison × seed. The plan is a pure
function of the spec: the same spec gives the same configurations at the same indexes, on any
machine, which is what lets one Slurm array task run "configuration $SLURM_ARRAY_TASK_ID".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from spt.errors import SptError
from spt.store.ids import content_id

NO_LAMBDA_DEFENSES = ("none",)
EXECUTORS = ("local", "slurm")


@dataclass
class SweepSpec:
    """What a sweep varies and what it keeps fixed.

    `train` holds extra `spt.train.FinetuneConfig` fields (lr, epochs, lora, ...), `eval_options`
    extra `spt.eval.EvaluateConfig` fields; both are part of every configuration's identity.
    `None` in an axis means "the stage's default" (for example no --poison given).
    """

    model: str | None = None
    from_run: str | None = None
    task: str | None = None
    defenses: list[str] = field(default_factory=lambda: ["none"])
    lams: list[float | None] = field(default_factory=lambda: [None])
    poisons: list[float | None] = field(default_factory=lambda: [None])
    seeds: list[int | None] = field(default_factory=lambda: [None])
    max_steps: int | None = None
    train: dict[str, Any] = field(default_factory=dict)
    evaluate: bool = True
    eval_options: dict[str, Any] = field(default_factory=dict)
    judges: list[str] = field(default_factory=lambda: ["keyword"])
    rubric: str | None = None

    def __post_init__(self) -> None:
        self.defenses = _dedupe([str(d).strip() for d in self.defenses if str(d).strip()]) or ["none"]
        self.lams = _dedupe([None if v is None else _float("--lam", v) for v in self.lams]) or [None]
        self.poisons = _dedupe([None if v is None else _float("--poison", v) for v in self.poisons]) or [None]
        self.seeds = _dedupe([None if v is None else _int("--seeds", v) for v in self.seeds]) or [None]
        self.judges = _dedupe([str(j).strip() for j in self.judges if str(j).strip() and j != "none"])
        if self.max_steps is not None:
            self.max_steps = _int("--max-steps", self.max_steps)
        self.train = dict(self.train or {})
        self.eval_options = dict(self.eval_options or {})

    def validate(self) -> None:
        """Problems that make every configuration fail; raised before anything is run or written."""
        if not self.model and not self.from_run:
            raise SptError("a sweep needs --model REF or --from RUN_ID")
        if self.model and self.from_run:
            raise SptError("give either --model or --from RUN_ID, not both (--from uses the run's model)")
        if self.max_steps is not None and self.max_steps < 1:
            raise SptError(f"--max-steps must be at least 1, not {self.max_steps}")
        for p in self.poisons:
            if p is not None and not 0.0 <= p <= 1.0:
                raise SptError(f"--poison {p:g} is not a ratio; use values between 0 and 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepSpec:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def id(self) -> str:
        return sweep_id(self)

    @property
    def tag(self) -> str:
        return sweep_tag(self)


def _dedupe(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _float(flag: str, v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise SptError(f"{flag}: {v!r} is not a number; give a comma-separated list like 0.1,0.3") from None
    if not math.isfinite(f):
        raise SptError(f"{flag}: {v!r} is not a finite number")
    return f


def _int(flag: str, v: Any) -> int:
    try:
        if isinstance(v, float) and not v.is_integer():
            raise ValueError
        return int(v)
    except (TypeError, ValueError):
        raise SptError(f"{flag}: {v!r} is not an integer") from None


def split_list(value: str | None, flag: str) -> list[str]:
    """`"a, b,c"` -> ["a", "b", "c"]; None or "" -> []."""
    if value is None:
        return []
    items = [v.strip() for v in str(value).split(",")]
    if any(not v for v in items):
        raise SptError(f"{flag} {value!r} has an empty entry; give a comma-separated list like 0.1,0.3")
    return items


def sweep_id(spec: SweepSpec) -> str:
    """The content id of the spec: the same sweep has the same id wherever it is planned."""
    return content_id({"sweep": spec.to_dict()})


def sweep_tag(spec: SweepSpec) -> str:
    """The run tag that marks this sweep's runs (`spt frontier --where tag=sweep:...`)."""
    return "sweep:" + sweep_id(spec).removeprefix("sha256:")[:12]


def config_key(spec: SweepSpec, config: dict[str, Any]) -> str:
    """Identity of one configuration: every setting that reaches its stages (not its index)."""
    fixed = spec.to_dict()
    for k in ("defenses", "lams", "poisons", "seeds"):
        fixed.pop(k)
    axes = {k: config[k] for k in ("defense", "lam", "poison", "seed")}
    return content_id({"sweep_config": {**fixed, **axes}})


def plan_sweep(spec: SweepSpec) -> list[dict[str, Any]]:
    """The configurations of a sweep, in a stable order, each a dict with its `index`.

    defense × λ × poison × seed, outermost first, values in the order given; `none` collapses λ.
    """
    configs: list[dict[str, Any]] = []
    for defense in spec.defenses:
        lams = [None] if defense in NO_LAMBDA_DEFENSES else spec.lams
        for lam in lams:
            for poison in spec.poisons:
                for seed in spec.seeds:
                    configs.append({"index": len(configs), "defense": defense, "lam": lam,
                                    "poison": poison, "seed": seed})
    for c in configs:
        c["key"] = config_key(spec, c)
    return configs


def config_label(config: dict[str, Any]) -> str:
    """`anchor λ=0.1 p=0.1 seed=0` (unset axes left out)."""
    parts = [str(config["defense"])]
    if config.get("lam") is not None:
        parts.append(f"λ={config['lam']:g}")
    if config.get("poison") is not None:
        parts.append(f"p={config['poison']:g}")
    if config.get("seed") is not None:
        parts.append(f"seed={config['seed']}")
    return " ".join(parts)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def spec_to_args(spec: SweepSpec) -> list[str]:
    """Command-line arguments of `spt sweep` that rebuild exactly this spec (used by Slurm tasks)."""
    args: list[str] = []
    if spec.model:
        args += ["--model", spec.model]
    if spec.from_run:
        args += ["--from", spec.from_run]
    if spec.task:
        args += ["--task", spec.task]
    args += ["--defense", ",".join(spec.defenses)]
    if spec.lams != [None]:
        args += ["--lam", ",".join(_fmt(v) for v in spec.lams)]
    if spec.poisons != [None]:
        args += ["--poison", ",".join(_fmt(v) for v in spec.poisons)]
    if spec.seeds != [None]:
        args += ["--seeds", ",".join(_fmt(v) for v in spec.seeds)]
    if spec.max_steps is not None:
        args += ["--max-steps", str(spec.max_steps)]
    for k, v in sorted(spec.train.items()):
        args += ["--set", f"{k}={_json_value(v)}"]
    if not spec.evaluate:
        args.append("--no-evaluate")
    for k, v in sorted(spec.eval_options.items()):
        args += ["--eval-set", f"{k}={_json_value(v)}"]
    args += ["--judge", ",".join(spec.judges) if spec.judges else "none"]
    if spec.rubric:
        args += ["--rubric", spec.rubric]
    return args


def _json_value(v: Any) -> str:
    """The text that `parse_assignments` reads back as `v`."""
    import json

    if isinstance(v, str):
        try:
            json.loads(v)
        except ValueError:
            return v  # plain text stays plain
        return json.dumps(v)  # "3" or "true" as a string: quote it
    return json.dumps(v)


def parse_assignments(items: list[str] | None, flag: str) -> dict[str, Any]:
    """`["lr=3e-5", "lora=true", "name=x"]` -> {"lr": 3e-05, "lora": True, "name": "x"} (JSON values)."""
    import json

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise SptError(f"{flag} {item!r}: expected KEY=VALUE, for example {flag} lr=3e-5")
        raw = raw.strip()
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out[key] = value
    return out
