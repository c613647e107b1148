"""Planning a sweep: the spec, its id, and the cartesian product of configurations.

A sweep varies the defense, λ, each defense's own options, the poison ratio and the seed around one
fixed setting (model or parent run, task, training and evaluation options). The plan is, per defense,
the product λ × its option axes × poison × seed in the order the values were given. Each defense gets
only its own axes: λ collapses for a defense without λ (`none`), and an option axis
(`--axis lisa_align_steps=10,50`) multiplies only the configurations of the defense that declares the
option (`spt/train/defenses/`); `--axis anchor.lam=0.1,0.3` gives one defense its own λ values. The plan is a pure
function of the spec: the same spec gives the same configurations at the same indexes, on any
machine, which is what lets one Slurm array task run "configuration $SLURM_ARRAY_TASK_ID".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from spt.errors import SptError
from spt.store.ids import content_id

EXECUTORS = ("local", "slurm")


def _defense_registry() -> Any:
    """spt.train.defenses, or None in a build without the training stage (no defense-specific axes)."""
    try:
        from spt.train import defenses
    except ImportError:  # pragma: no cover - spt.train is part of spt
        return None
    return defenses


def _lam_axis_owner(key: str, reg: Any) -> str | None:
    """`anchor_lam` / `anchor.lam` -> "anchor" when that defense takes λ (a per-defense λ axis)."""
    for sep in ("_lam", ".lam"):
        if key.endswith(sep):
            name = key[: -len(sep)]
            try:
                if reg is not None and reg.get_defense(name).lam is not None:
                    return name
            except SptError:
                return None
    return None


def takes_lambda(defense: str) -> bool:
    """Whether λ means something for `defense` (unknown names keep λ: they fail later, with a message)."""
    reg = _defense_registry()
    if reg is None:
        return defense != "none"
    try:
        return reg.get_defense(defense).lam is not None
    except SptError:
        return True


# Training settings that an axis may vary for every defense (`--axis epochs=1,2,3`): the Safety Tax's
# epochs sweep, a learning-rate sweep. name -> (type, what a value must be)
TRAIN_AXES: dict[str, type] = {"epochs": float, "lr": float, "max_steps": int, "lora_r": int}


def _train_axis_value(name: str, v: Any) -> float | int:
    kind = TRAIN_AXES[name]
    num = _int(f"`axis` {name}", v) if kind is int else _float(f"`axis` {name}", v)
    if not num > 0:
        raise SptError(f"`axis` {name} value {v!r} must be greater than 0")
    return num


@dataclass
class SweepSpec:
    """What a sweep varies and what it keeps fixed.

    `train` holds extra `spt.train.FinetuneConfig` fields (lr, epochs, lora, ...), `eval_options`
    extra `spt.eval.EvaluateConfig` fields; both are part of every configuration's identity.
    `None` in an axis means "the stage's default" (for example no --poison given). `axes` maps a
    defense option's config field (`lisa_align_steps`) to its values; it applies to that defense only. A
    training setting of `TRAIN_AXES` (`epochs`, `lr`, `max_steps`, `lora_r`) applies to every defense.
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
    axes: dict[str, list[Any]] = field(default_factory=dict)
    align_defenses: list[str] = field(default_factory=list)  # two-stage: align-stage defenses (spt.sweep.align_stage)
    align_methods: list[str] = field(default_factory=list)  # two-stage: sft | dpo
    align_max_steps: int | None = None  # steps of each alignment run (default: one epoch of HarmOR train)

    def __post_init__(self) -> None:
        self.axes = {str(k).strip().replace("-", "_"): _dedupe(list(v) if isinstance(v, (list, tuple)) else [v])
                     for k, v in (self.axes or {}).items()}
        self.defenses = _dedupe([str(d).strip() for d in self.defenses if str(d).strip()]) or ["none"]
        self.lams = _dedupe([None if v is None else _float("`lam`", v) for v in self.lams]) or [None]
        self.poisons = _dedupe([None if v is None else _float("`poison`", v) for v in self.poisons]) or [None]
        self.seeds = _dedupe([None if v is None else _int("`seeds`", v) for v in self.seeds]) or [None]
        self.judges = _dedupe([str(j).strip() for j in self.judges if str(j).strip() and j != "none"])
        if self.max_steps is not None:
            self.max_steps = _int("`max_steps`", self.max_steps)
        self.train = dict(self.train or {})
        self.eval_options = dict(self.eval_options or {})
        self.align_defenses = _dedupe([str(d).strip() for d in self.align_defenses or [] if str(d).strip()])
        self.align_methods = _dedupe([str(m).strip() for m in self.align_methods or [] if str(m).strip()])
        if self.align_max_steps is not None:
            self.align_max_steps = _int("`align_max_steps`", self.align_max_steps)

    @property
    def two_stage(self) -> bool:
        """Whether the sweep also varies the alignment stage (each variant trained once, then shared)."""
        return bool(self.align_defenses or self.align_methods)

    def validate(self) -> None:
        """Problems that make every configuration fail; raised before anything is run or written."""
        if not self.model and not self.from_run:
            raise SptError("a sweep needs `model` REF or `from_run` RUN_ID")
        if self.model and self.from_run:
            raise SptError("give either `model` or `from_run` RUN_ID, not both (`from_run` uses the run's model)")
        if self.max_steps is not None and self.max_steps < 1:
            raise SptError(f"`max_steps` must be at least 1, not {self.max_steps}")
        if self.two_stage:
            if self.from_run:
                raise SptError("`align_defense`/`align_method` train the alignment runs from `model`; drop `from_run` "
                               "(or drop the align axes to start every configuration from that run)")
            from spt.sweep.align_stage import align_variants

            align_variants(self.align_defenses, self.align_methods)  # SptError for a bad name or stage
            if self.align_max_steps is not None and self.align_max_steps < 1:
                raise SptError(f"`align_max_steps` must be at least 1, not {self.align_max_steps}")
        for p in self.poisons:
            if p is not None and not 0.0 <= p <= 1.0:
                raise SptError(f"`poison` {p:g} is not a ratio; use values between 0 and 1")
        reg = _defense_registry()
        for f, values in self.axes.items():
            if f in TRAIN_AXES:
                if not values:
                    raise SptError(f"`axis` {f} has no values; give a comma-separated list")
                for v in values:
                    _train_axis_value(f, v)
                if f in self.train:
                    raise SptError(f"`axis` {f} and `set` {f} both give {f}; keep one")
                if f == "epochs" and (self.max_steps is not None or "max_steps" in self.axes):
                    raise SptError("`axis` epochs and a step budget (`max_steps`) exclude each other; drop one")
        if self.axes and reg is not None:
            for f, values in self.axes.items():
                if f in TRAIN_AXES:
                    continue
                lam_owner = _lam_axis_owner(f, reg)
                if lam_owner is not None:
                    if lam_owner not in self.defenses:
                        raise SptError(f"`axis` {f}: defense {lam_owner} is not in `defense` {','.join(self.defenses)}")
                    for v in values:
                        _float(f"`axis` {f}", v)
                    continue
                owner = reg.owner_of(f)
                if owner is None:
                    raise SptError(f"`axis` {f}: no defense has this option and it is not a training axis; options: "
                               f"{', '.join(sorted(reg.option_fields()))}; training axes: {', '.join(TRAIN_AXES)}")
                if owner not in self.defenses:
                    raise SptError(f"`axis` {f} is an option of defense {owner}, which is not in `defense` "
                                   f"{','.join(self.defenses)}")
                if not values:
                    raise SptError(f"`axis` {f} has no values; give a comma-separated list")
                opt = reg.option_fields()[f][1]
                for v in values:
                    opt.check(owner, v)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["axes"]:  # sweeps without option axes keep the id they had before axes existed
            d.pop("axes")
        if not self.two_stage:  # nor do single-stage sweeps (no alignment axes)
            for k in ("align_defenses", "align_methods", "align_max_steps"):
                d.pop(k)
        return d

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
    for k in ("defenses", "lams", "poisons", "seeds", "axes", "align_defenses", "align_methods"):
        fixed.pop(k, None)
    axes = {k: config[k] for k in ("defense", "lam", "poison", "seed")}
    if config.get("options"):
        axes["options"] = config["options"]
    if config.get("align"):
        axes["align"] = config["align"]
    return content_id({"sweep_config": {**fixed, **axes}})


def plan_sweep(spec: SweepSpec) -> list[dict[str, Any]]:
    """The configurations of a sweep, in a stable order, each a dict with its `index`.

    Per defense, outermost first: λ × the training axes (`TRAIN_AXES`, every defense) × the defense's own
    option axes × poison × seed, values in the order given; a defense without λ (`none`) collapses λ. A
    configuration with option or training axes carries them as `options` ({config field: value}).
    """
    import itertools

    reg = _defense_registry()
    configs: list[dict[str, Any]] = []
    for defense in spec.defenses:
        lams = spec.lams if takes_lambda(defense) else [None]
        for k, values in spec.axes.items():  # a λ axis of this defense alone replaces the shared one
            if _lam_axis_owner(k, reg) == defense:
                lams = [_float(f"`axis` {k}", v) for v in values]
        own = [f for f in spec.axes if f in TRAIN_AXES] + [
            f for f in spec.axes if f not in TRAIN_AXES and reg is not None and reg.owner_of(f) == defense]
        for lam in lams:
            values = [[_train_axis_value(f, v) for v in spec.axes[f]] if f in TRAIN_AXES else spec.axes[f] for f in own]
            for combo in itertools.product(*values):
                for poison in spec.poisons:
                    for seed in spec.seeds:
                        c: dict[str, Any] = {"index": len(configs), "defense": defense, "lam": lam,
                                             "poison": poison, "seed": seed}
                        if own:
                            c["options"] = dict(zip(own, combo, strict=True))
                        configs.append(c)
    if spec.two_stage:  # every task configuration once per alignment variant, variant outermost
        from spt.sweep.align_stage import align_variants, expand_two_stage

        configs = expand_two_stage(configs, align_variants(spec.align_defenses, spec.align_methods)[0])
    for c in configs:
        c["key"] = config_key(spec, c)
    return configs


def config_label(config: dict[str, Any]) -> str:
    """`anchor λ=0.1 p=0.1 seed=0` (unset axes left out; `vaccine→anchor ...` in a two-stage sweep)."""
    parts = [str(config["defense"])]
    if config.get("align"):
        from spt.sweep.align_stage import variant_label

        parts[0] = f"{variant_label(config['align'])}→{parts[0]}"
    if config.get("lam") is not None:
        parts.append(f"λ={config['lam']:g}")
    for k, v in (config.get("options") or {}).items():
        parts.append(f"{k}={_fmt(v)}")
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
    for k, values in spec.axes.items():
        args += ["--axis", f"{k}={','.join(_fmt(v) for v in values)}"]
    if spec.align_defenses:
        args += ["--align-defense", ",".join(spec.align_defenses)]
    if spec.align_methods:
        args += ["--align-method", ",".join(spec.align_methods)]
    if spec.align_max_steps is not None:
        args += ["--align-max-steps", str(spec.align_max_steps)]
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


def parse_axes(items: list[str] | None) -> dict[str, list[Any]]:
    """`["lisa_align_steps=10,50", "anchor.lam=0.1,0.3"]` -> {field: [values]} (JSON values).

    `<defense>.lam` (or `<defense>_lam`) is that defense's own λ axis, replacing `--lam` for it.
    """
    import json

    out: dict[str, list[Any]] = {}
    for item in items or []:
        key, sep, raw = str(item).partition("=")
        key = key.strip().replace("-", "_").replace(".", "_")
        if not sep or not key:
            raise SptError(f"`axis` {item!r}: expected OPTION=V1,V2, for example `axis` lisa_align_steps=10,50")
        values = []
        for v in split_list(raw, f"`axis` {key}"):
            try:
                values.append(json.loads(v))
            except ValueError:
                values.append(v)
        out[key] = values
    return out
