"""`FinetuneConfig`: every setting of `spt finetune`, loadable from a YAML recipe (flags override it).

Fields left at None get a resolved default in `resolve()` (learning rate by LoRA/full, λ and the
defense's options by defense, epochs when no step budget is given). Validation raises `SptError`
before anything touches the store.

The dataclass is the shared settings below plus one field per option declared by a defense in
`spt/train/defenses/` (`lisa_align_steps`, `safelora_mode`, ...), added when this module is imported:
a new defense's options are settings, YAML keys and sweep `--set`/`--axis` names without edits here.
Only the chosen defense's options are kept (the others are reset to None) and enter the identity.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt.errors import SptError

STAGES = ("align", "task", "reason")  # reason: reasoning SFT on a reasoning task (the Safety Tax's first stage)
DEFAULT_REASONING_TASK = "builtin:arithmetic-think"
PRECISIONS = ("auto", "bf16", "float32")
DEFAULT_MODEL = "smollm2-135m"
DEFAULT_TASK = "builtin:arithmetic"
DEFAULT_SAFETY = "harmor"
DEFAULT_POISON = "builtin:harmor-comply"

# Settings that do not change the trained weights (excluded from the run identity).
NON_IDENTITY = {"save_every", "log_every", "resume", "config_path", "progress", "json", "compile",
                "align_eval_pairs"}


@dataclass
class _Settings:
    """All settings of one fine-tuning run (see `spt finetune --help`); defense options are added below."""

    model: str | None = None  # model reference (packaged name, local dir, hub id)
    from_run: str | None = None  # start from this run's final checkpoint (lineage)
    stage: str = "task"  # align | task
    task: str = DEFAULT_TASK  # task dataset: builtin:NAME, dataset name or id
    safety_data: str = DEFAULT_SAFETY  # HarmOR dataset (align data, anchor batches, alignment-loss batch)
    # align stage: train on this set instead of safety_data's train pairs (direct-refusal, cot-refusal, NAME)
    alignment_data: str | None = None
    poison: float = 0.0  # poison ratio in [0, 1)
    poison_data: str = DEFAULT_POISON
    defense: str = "none"
    method: str = "sft"  # sft | dpo: the align stage's objective (spt.train.dpo)
    lam: float | None = None  # λ (meaning depends on the defense; default from the defense)
    lora: bool = True
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    lora_dropout: float = 0.05
    epochs: float | None = None
    max_steps: int | None = None
    lr: float | None = None  # default 2e-4 (LoRA) / 3e-5 (full)
    batch_size: int = 8  # examples per micro-batch per process
    grad_accum: int = 1
    max_length: int = 256
    seed: int = 0
    save_every: int = 100  # steps between checkpoints (0: only the final one)
    log_every: int = 10  # steps between TrainLog rows (alignment loss evaluated there)
    resume: bool = False
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    pack_length: int = 512  # row capacity when packing (longer examples get a row of their own length)
    align_eval_pairs: int = 16  # HarmOR test pairs in the fixed alignment-loss batch
    compile: bool = False  # torch.compile the model (GPU)
    # auto: bf16 autocast on CUDA, float32 on CPU (spt's behaviour before this option); bf16: bf16 autocast on
    # any device (on CPUs with avx512_bf16 or AMX about 3x faster matmuls); float32: no autocast anywhere
    precision: str = "auto"
    config_path: str | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> Any:
        """Read a YAML recipe (keys = field names, dashes allowed; `from` for from_run); non-None overrides win."""
        from spt.data.io import load_yaml, read_text

        p = Path(path).expanduser()
        if not p.exists():
            raise SptError(f"config file {p} does not exist")
        data = load_yaml(read_text(p), f"config file {p}") or {}
        if not isinstance(data, dict):
            raise SptError(f"config file {p} must be a mapping of settings")
        data = {str(k).replace("-", "_"): v for k, v in data.items()}
        if "from" in data:
            data["from_run"] = data.pop("from")
        unknown = set(data) - cls.field_names()
        if unknown:
            raise SptError(f"unknown settings in {p}: {', '.join(sorted(unknown))}; valid: "
                           f"{', '.join(sorted(cls.field_names()))}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        data["config_path"] = str(p)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------ resolution
    def checked_types(self) -> Any:
        """A copy whose values have the field's type (numbers from YAML strings like `1e-4` parsed, NaN and
        infinities refused); SptError naming the setting otherwise."""
        c = dataclasses.replace(self)
        for name, kind in _TYPES.items():
            v = getattr(c, name)
            if v is None:
                if name in _OPTIONAL:
                    continue
                raise SptError(f"{_flag(name)} must be set (a {kind}); drop the empty value to use the default")
            setattr(c, name, _coerce(name, kind, v))
        return c

    def resolve(self) -> Any:
        """A copy with defaults filled in and every value checked (SptError on bad input)."""
        from spt.train.defenses import get_defense, option_fields

        c = self.checked_types()
        c.lora_targets = list(c.lora_targets or [])
        if c.stage not in STAGES:
            raise SptError(f"unknown stage {c.stage!r}; use one of {', '.join(STAGES)}")
        if c.model and c.from_run:
            raise SptError("give either `model` or `from_run` RUN_ID, not both (`from_run` uses the run's model)")
        if not c.model and not c.from_run:
            c.model = DEFAULT_MODEL
        d = get_defense(c.defense)
        explicit_lam = c.lam is not None
        if c.lam is None:
            c.lam = d.lam.default if d.lam is not None else None
        elif d.lam is None:
            c.lam = None if c.lam == 0 else c.lam
            if c.lam is not None:
                raise SptError(f"defense {c.defense!r} takes no `lam`; drop it or pick a defense that uses λ")
        if c.lam is not None:
            c.lam = float(c.lam)
            lo, hi = d.lam.range or (-math.inf, math.inf)
            if not (lo <= c.lam <= hi):
                rng = f"[{lo:g}, {hi:g}]" if hi != math.inf else f"≥ {lo:g}"
                raise SptError(f"`lam` {c.lam:g} is outside {rng} for defense {c.defense!r} ({d.lam.help})")
        own = d.fields()
        for f in option_fields():  # options of other defenses never reach the run
            if f not in own:
                setattr(c, f, None)
        if not (0.0 <= float(c.poison) < 1.0):
            raise SptError(f"`poison` {c.poison:g} is outside [0, 1); give the fraction of poisoned examples")
        c.poison = float(c.poison)
        if c.stage == "align":
            if c.poison > 0:
                raise SptError("`poison` applies to `stage` task only; the align stage trains on HarmOR train")
        if c.alignment_data is not None and c.stage != "align":
            raise SptError("`alignment_data` applies to `stage` align (the safety-alignment data it trains on)")
        if c.stage == "reason":
            if c.poison > 0:
                raise SptError("`poison` applies to `stage` task only; `stage` reason trains on the reasoning task")
            if c.defense != "none":
                raise SptError(f"`stage` reason trains without a defense (got `defense` {c.defense}); the Safety Tax's "
                               "first stage is plain reasoning SFT")
            if c.task == DEFAULT_TASK:
                c.task = DEFAULT_REASONING_TASK
        if c.stage not in d.stages and c.stage != "reason":
            raise SptError(f"defense {c.defense!r} applies to `stage` {' or '.join(d.stages)}, not {c.stage}")
        for name in ("lora_r", "lora_alpha", "batch_size", "grad_accum", "max_length"):
            if int(getattr(c, name)) < 1:
                raise SptError(f"`{name}` must be ≥ 1")
        if c.max_length < 16:
            raise SptError("`max_length` must be ≥ 16 tokens")
        if c.max_steps is not None and c.max_steps < 1:
            raise SptError("`max_steps` must be ≥ 1")
        if c.epochs is not None and c.epochs <= 0:
            raise SptError("`epochs` must be > 0")
        if c.max_steps is not None and c.epochs is not None:
            raise SptError("give `epochs` or `max_steps`, not both")
        if c.max_steps is None and c.epochs is None:
            c.epochs = 1.0
        if c.lr is None:
            c.lr = 2e-4 if c.lora else 3e-5
        if c.lr <= 0:
            raise SptError("`lr` must be > 0")
        if c.save_every < 0 or c.log_every < 1:
            raise SptError("`save_every` must be ≥ 0 and log_every ≥ 1")
        if c.lora and not c.lora_targets:
            raise SptError("`lora_targets` is empty; name modules such as q_proj,v_proj")
        if not (0 <= c.lora_dropout < 1):
            raise SptError("lora_dropout must be in [0, 1)")
        if not (0 <= c.warmup_ratio < 1):
            raise SptError(f"warmup_ratio {c.warmup_ratio:g} must be in [0, 1)")
        if c.weight_decay < 0 or c.max_grad_norm < 0:
            raise SptError("weight_decay and max_grad_norm must be ≥ 0")
        if c.precision not in PRECISIONS:
            raise SptError(f"unknown `precision` {c.precision!r}; use one of {', '.join(PRECISIONS)}")
        if c.pack_length < 16 or c.align_eval_pairs < 1:
            raise SptError("pack_length must be ≥ 16 and align_eval_pairs ≥ 1")
        d.resolve_options(c, explicit_lam)
        d.validate_config(c)
        from spt.train.methods import resolve_method

        resolve_method(c, explicit_lam)  # --method: checks it, fills its options and clears the others'
        return c

    def identity_fields(self) -> dict[str, Any]:
        """The settings that change the trained weights (of defense options: the chosen defense's)."""
        from spt.train.defenses import get_defense, option_fields

        d = self.to_dict()
        from spt.train.methods import method_identity
        from spt.train.methods import option_fields as method_fields

        for k in NON_IDENTITY | {"model", "from_run", "method"} | set(option_fields()) | set(method_fields()):
            d.pop(k, None)
        if not self.lora:
            for k in ("lora_r", "lora_alpha", "lora_targets", "lora_dropout"):
                d.pop(k)
        if d.get("precision") == "auto":  # identities from before the option stay the same
            d.pop("precision")
        d.update(get_defense(self.defense).identity(self))
        d.update(method_identity(self))  # {} for SFT: existing identities are unchanged
        if self.stage == "align":
            for k in ("task", "poison", "poison_data"):
                d.pop(k)
        elif self.poison == 0:
            d.pop("poison_data")
        if d.get("alignment_data") is None:  # identities of runs without it stay what they were
            d.pop("alignment_data", None)
        return d


# ------------------------------------------------------------------ types of the settings
_TYPES: dict[str, str] = {
    "model": "str", "from_run": "str", "stage": "str", "task": "str", "safety_data": "str", "alignment_data": "str",
    "poison": "float",
    "poison_data": "str", "defense": "str", "lam": "float", "lora": "bool", "lora_r": "int", "lora_alpha": "int",
    "lora_targets": "list", "lora_dropout": "float", "epochs": "float", "max_steps": "int", "lr": "float",
    "batch_size": "int", "grad_accum": "int", "max_length": "int", "seed": "int", "save_every": "int",
    "log_every": "int", "resume": "bool", "warmup_ratio": "float", "weight_decay": "float",
    "max_grad_norm": "float", "pack_length": "int",
    "align_eval_pairs": "int", "compile": "bool", "config_path": "str", "method": "str", "precision": "str",
}
_OPTIONAL = {"model", "from_run", "lam", "epochs", "max_steps", "lr", "config_path", "alignment_data"}
_EXAMPLES = {"float": "e.g. 0.1 or 2e-4", "int": "e.g. 8", "bool": "", "str": "",
             "list": "a list of module names like [q_proj, v_proj]"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _bad(name: str, kind: str, v: Any, why: str = "") -> SptError:
    what = {"float": "a number", "int": "a whole number", "bool": "true or false", "str": "text",
            "list": "a list"}[kind]
    hint = f" ({_EXAMPLES[kind]})" if _EXAMPLES[kind] else ""
    return SptError(f"{_flag(name)} {v!r} {why or 'is not ' + what}{hint}")


def _coerce(name: str, kind: str, v: Any) -> Any:
    import math

    if kind == "str":
        if not isinstance(v, str) or not v.strip():
            raise _bad(name, kind, v, "is not a non-empty text value")
        return v
    if kind == "bool":
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in ("true", "false", "yes", "no"):
            return v.strip().lower() in ("true", "yes")
        raise _bad(name, kind, v)
    if kind == "list":
        if isinstance(v, str):
            v = [t.strip() for t in v.split(",") if t.strip()]
        if not isinstance(v, (list, tuple)) or not all(isinstance(t, str) and t.strip() for t in v):
            raise _bad(name, kind, v)
        return list(v)
    if isinstance(v, bool):
        raise _bad(name, kind, v)
    if kind == "int":
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            return int(v)
        if isinstance(v, str):
            try:
                return int(v.strip())
            except ValueError:
                raise _bad(name, kind, v) from None
        if not isinstance(v, int):
            raise _bad(name, kind, v)
        if abs(v) > 2**63 - 1:
            raise _bad(name, kind, v, "is too large (at most 9223372036854775807)")
        return v
    # float: YAML 1.1 reads `1e-4` (no dot) as a string, so numeric text is accepted
    if isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            raise _bad(name, kind, v) from None
    elif isinstance(v, (int, float)):
        f = float(v)
    else:
        raise _bad(name, kind, v)
    if not math.isfinite(f):
        raise _bad(name, kind, v, "is not a finite number")
    return f


def _with_defense_options() -> type:
    """`_Settings` plus one field (default None: resolved by the defense) per defense option."""
    from spt.train.defenses import option_fields
    from spt.train.methods import option_fields as method_fields

    extra = [(f, Any, field(default=None)) for f in [*option_fields(), *method_fields()]]
    cls = dataclasses.make_dataclass("FinetuneConfig", extra, bases=(_Settings,))
    cls.__module__ = __name__
    cls.__doc__ = ("All settings of one fine-tuning run (see `spt finetune --help`), with one field per "
                   "defense option: " + ", ".join(f for f in option_fields()) + ".")
    return cls


FinetuneConfig = _with_defense_options()
