"""Every user input of `spt`, classified, with the malformed values each kind of input must refuse.

A data module (no tests here): the fuzz tests (`tests/test_fuzz_*.py`) read it.

- `PARAMS`: every option and argument of every command, discovered from the typer app itself
  (`typer.main.get_command(app)`, walked through its groups), so the list cannot go stale.
- `SPECS`: the hand-written classification of each of them, keyed `"<command path> <param name>"`:
  its kind (which decides the bad values), the arguments that make the rest of the command line valid
  and cheap (`base`), and per-option exceptions (`ok`: values of that kind that this option legitimately
  accepts, each with the reason). `test_fuzz_cli.test_inventory_is_complete` fails when an option
  appears that `SPECS` does not classify.
- `BAD`: the malformed values of each kind. Placeholders in braces are filled in per test world
  (`{ADIR}` a directory, `{MISSING}` a missing file, `{UNDERFILE}` a path under a regular file, ...).
- `FILE_INPUTS`: every file importer / format; `ENV_VARS`: every environment variable, with the values
  it must refuse or the documented reason it accepts them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

HUGE_INT = str(10**30)  # beyond SQLite's INTEGER and every seed/step counter
INT64_OVER = str(2**63)  # one past SQLite's largest INTEGER
LONG = "x" * 10_001  # > 10k characters

# ---------------------------------------------------------------------------------------------------------
# malformed values per kind of input
# ---------------------------------------------------------------------------------------------------------
# (the hypothesis tests generate more of each: other negatives, integers past 2**63, -inf, 1e400, control chars)
_INT_COMMON = ["-1", "nan", "abc", "", "1.5", HUGE_INT]
_FLOAT_COMMON = ["-1", "nan", "inf", "abc", ""]
_TEXT_COMMON = ["", " ", "\x1b[31mred", "a\nb", LONG]

BAD: dict[str, list[str]] = {
    "count": ["0", *_INT_COMMON],  # a whole number >= 1
    "nonneg_int": _INT_COMMON,  # a whole number >= 0 (0 means something: final only, all, ...)
    "port": ["-1", "65536", "nan", "abc", "", HUGE_INT],
    "pos_float": ["0", *_FLOAT_COMMON],  # a finite number > 0
    "nonneg_float": _FLOAT_COMMON,  # a finite number >= 0
    "unit_float": ["-0.1", "1.5", "nan", "inf", "abc", ""],  # a ratio in [0, 1] (or [0, 1))
    "ref": [*_TEXT_COMMON, "[bold]x[/]", "no-such-thing-zz"],  # looks up something that must exist
    "new_name": _TEXT_COMMON,  # names something new (markup is a legal name: shown literally)
    "choice": [*_TEXT_COMMON, "bogus", "[bold]x[/]"],  # one of a fixed set
    "column": [*_TEXT_COMMON, "nosuchcol", "[bold]x[/]"],  # a column of the input file
    "spec": [*_TEXT_COMMON, "=", "bogus", "[bold]x[/]", "a=1=2"],  # KEY=VALUE / a,b,c mini-language
    "text": ["a\x07b", "\x1b[31mred", "a\nb", LONG],  # free text with no structure (slurm words, urls ...)
    "path_in": ["{ADIR}", "{MISSING}", "{UNDERFILE}", ""],  # a file that is read
    "path_out": ["{ADIR}", "{UNDERFILE}", ""],  # a file that is written
    "dir_out": ["{AFILE}", "{UNDERFILE}", ""],  # a folder that is written
    "dir_in": ["{AFILE}", "{MISSING}", "{UNDERFILE}", ""],  # a folder that is read
    "db": ["{ADIR}", "{UNDERFILE}", "", "{GARBAGE}"],  # the store (a missing store is created: not bad)
    "flag": [],  # no value
}

# ---------------------------------------------------------------------------------------------------------
# the parameters, discovered from the app
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    command: tuple[str, ...]  # ("runs", "set"); () is the root
    name: str  # the Python parameter name
    opts: tuple[str, ...]  # ("--lr",) ; for an argument its name
    secondary: tuple[str, ...]
    is_argument: bool
    is_flag: bool
    multiple: bool
    nargs: int
    annotation: str

    @property
    def key(self) -> str:
        return " ".join([*self.command, self.name]) if self.command else f"<root> {self.name}"

    @property
    def flag(self) -> str:
        longs = [o for o in self.opts if o.startswith("--")]
        return longs[0] if longs else self.opts[0]


def _walk(cmd: Any, path: tuple[str, ...], out: list[Param]) -> None:
    for p in cmd.params:
        td = getattr(p, "type_descriptor", None)
        ann = getattr(td, "annotation", None)
        out.append(Param(command=path, name=p.name, opts=tuple(p.opts), secondary=tuple(p.secondary_opts),
                         is_argument=p.param_type_name == "argument", is_flag=bool(getattr(p, "is_flag", False)),
                         multiple=bool(getattr(p, "multiple", False)), nargs=p.nargs,
                         annotation=getattr(ann, "__name__", str(ann))))
    for name, sub in getattr(cmd, "commands", {}).items():
        _walk(sub, (*path, name), out)


def discover() -> list[Param]:
    from spt.cli import app

    out: list[Param] = []
    _walk(typer.main.get_command(app), (), out)
    return out


def commands() -> list[tuple[str, ...]]:
    """Every invocable command path (leaves: not groups)."""
    from spt.cli import app

    out: list[tuple[str, ...]] = []

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for n, s in subs.items():
                walk(s, (*path, n))
        elif path:
            out.append(path)

    walk(typer.main.get_command(app), ())
    return out


PARAMS: list[Param] = discover()

# ---------------------------------------------------------------------------------------------------------
# the classification
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Spec:
    kind: str
    base: list[str] | None = None  # replaces the command's default base (see BASE)
    ok: dict[str, str] = field(default_factory=dict)  # bad-of-its-kind values this option accepts: value -> why
    extra_bad: list[str] = field(default_factory=list)  # values bad for this option only
    note: str = ""
    skip: str = ""  # not fuzzed (reported as not covered), with the reason


# The rest of a valid, cheap command line, per command. Placeholders: {RUN} a fine-tuned run, {RUN_B} another,
# {ALIGN} the aligned run (has a checkpoint row), {CSV} a harmful-prompts CSV, {RESP} completions CSV,
# {XSTEST} an xstest_prompts.csv, {OTHER} another (empty) spt store. A bad value that is wrongly accepted
# runs into the blocked heavy imports (torch, transformers, ...) or the blocked server, never a real model.
FT = ["--model", "tiny-random", "--max-steps", "1"]
SERVED = "http://127.0.0.1:9/v1"  # nothing listens there: a bad value wrongly accepted ends as a dead endpoint
EXT = ["--responses", "{RESP}", "--model-name", "m"]
SWEEP = ["--model", "tiny-random", "--dry-run"]
SLURM = [*SWEEP, "--executor", "slurm"]
BASE: dict[tuple[str, ...], list[str]] = {
    (): ["db", "status"],  # root options go before the command; see test_fuzz_cli.argv
    ("build-data",): ["--per-category", "4", "--category", "{CATEGORY}"],
    ("finetune",): FT,
    ("merge",): ["{ALIGN}"],
    ("evaluate",): ["tiny-random", "--dataset", "small", "--limit", "2"],  # small: no HarmOR build
    ("judge",): ["--all-pending", "--judge", "keyword"],
    ("frontier",): [],
    ("compare",): ["{RUN}", "{RUN_B}"],
    ("persistence",): [],
    ("import",): ["{OTHER}"],
    ("sweep",): SWEEP,
    ("demo",): ["--quick", "--model", "tiny-random"],
    ("view",): ["--export", "site"],
    ("data", "import"): ["{CSV}", "--kind", "harmful", "--name", "fz"],
    ("data", "list"): [],
    ("data", "show"): ["small"],
    ("data", "export"): ["small", "--out", "out.jsonl"],
    ("runs",): [],
    ("runs", "reap"): ["--dry-run"],
    ("runs", "show"): ["{RUN}"],
    ("runs", "set"): ["{RUN}", "notes=x"],
    ("db", "path"): [],
    ("db", "status"): [],
    ("db", "backup"): ["backup.db"],
    ("db", "upgrade"): [],
}

_DEFENSE_OF = {  # the defense (or method) a defense-specific finetune flag needs in its base
    "safety_batch_size": ["--defense", "anchor"],
    "booster_alpha": ["--stage", "align", "--defense", "booster"],
    "booster_harmful_batch_size": ["--stage", "align", "--defense", "booster"],
    "lisa_align_steps": ["--defense", "lisa"],
    "lisa_task_steps": ["--defense", "lisa"],
    "lisa_prox_after": ["--defense", "lisa"],
    "safelora_mode": ["--defense", "safelora"],
    "safelora_select": ["--defense", "safelora"],
    "safelora_layers": ["--defense", "safelora"],
    "tokenwise_first_factor": ["--defense", "tokenwise"],
    "tokenwise_bias_factor": ["--defense", "tokenwise"],
    "tokenwise_bias_length": ["--defense", "tokenwise"],
    "vaccine_rho": ["--stage", "align", "--defense", "vaccine"],
    "dpo_beta": ["--stage", "align", "--method", "dpo"],
    **{k: ["--stage", "align", "--method", "grpo", "--batch-size", "4"] for k in (
        "reward", "reward_judge", "reward_judge_base_url", "grpo_tags", "grpo_num_generations",
        "grpo_max_completion_length", "grpo_beta", "grpo_temperature", "grpo_task_ratio", "grpo_rollout")},
}

_COMPARE_SKIP = ("the template store's runs name a task (gsm8k) with no stored dataset, so `compare RUN RUN_B` "
                 "itself stops there; not covered")
_NOTE_ZERO_OK = "0 is documented as meaningful here"
_PERSIST_SKIP = ("the template store has no agentic evaluations, so every `persistence` line stops at its first side "
                 "whatever this value; tests/test_agentic_persistence.py covers it on real ones")


_AGENTIC = ["tiny-random", "--emulator", "openai:e", "--evaluator", "openai:j"]
_PREF_BASE = ["--preferences", "--from", "{RUN}", "--from", "{RUN_B}"]


def _persist_base(without: str | None = None) -> list[str]:
    flags = ("--safe", "--helpful", "--safe-then-help", "--help-then-safe")
    return [x for f in flags if f != without for x in (f, "{RUN}")]

SPECS: dict[str, Spec] = {
    # root
    "<root> db": Spec("db"),
    # build-data
    "build-data category": Spec("choice", base=["--per-category", "4"]),
    "build-data per_category": Spec("count", base=["--category", "{CATEGORY}"]),
    "build-data seed": Spec("nonneg_int"),
    # build-data --preferences: the template store has no agentic evaluations, so values are fuzzed where they
    # are checked before the store is opened; the sources as references
    "build-data sources": Spec("ref", base=["--preferences", "--from", "{RUN}"]),
    "build-data metric": Spec("choice", base=_PREF_BASE),
    "build-data metric2": Spec("choice", base=_PREF_BASE),
    "build-data combine": Spec("choice", base=[*_PREF_BASE, "--metric2", "agent_help"]),
    "build-data min_diff": Spec("nonneg_float", base=_PREF_BASE, extra_bad=["0", "3.5"]),
    "build-data min_chosen": Spec("nonneg_float", base=_PREF_BASE, extra_bad=["3.5"]),
    "build-data consistency": Spec("choice", base=_PREF_BASE),
    "build-data evaluator": Spec("ref", skip=_PERSIST_SKIP),
    "build-data name": Spec("new_name"),
    "build-data pools": Spec("spec", extra_bad=["train=nan,poison=0.15,dev=0.1,test=0.25",
                                                "train=-1,poison=1,dev=0.5,test=0.5"]),
    "build-data renderings": Spec("count"),
    "build-data out": Spec("path_out", note="a file, or a *new* folder (HF dataset); an existing folder is refused"),
    "build-data templates": Spec("dir_in"),
    "build-data db": Spec("db"),
    # finetune
    "finetune model": Spec("ref", base=["--max-steps", "1"]),
    "finetune from_run": Spec("ref", base=["--max-steps", "1"]),
    "finetune stage": Spec("choice"),
    "finetune task": Spec("ref"),
    "finetune safety_data": Spec("ref"),
    "finetune poison": Spec("unit_float", extra_bad=["1"]),  # [0, 1)
    "finetune poison_data": Spec("ref", base=[*FT, "--poison", "0.1"]),
    "finetune defense": Spec("choice"),
    "finetune method": Spec("choice"),
    "finetune lam": Spec("nonneg_float", base=[*FT, "--defense", "anchor"]),
    "finetune lora_r": Spec("count"),
    "finetune lora_alpha": Spec("count"),
    "finetune lora_targets": Spec("spec", note="module names; checked against the model when it loads"),
    "finetune epochs": Spec("pos_float"),
    "finetune max_steps": Spec("count", base=["--model", "tiny-random"]),
    "finetune lr": Spec("pos_float"),
    "finetune batch_size": Spec("count"),
    "finetune grad_accum": Spec("count"),
    "finetune max_length": Spec("count"),
    "finetune seed": Spec("nonneg_int"),
    "finetune precision": Spec("choice"),
    "finetune save_every": Spec("nonneg_int", note=_NOTE_ZERO_OK + " (0: final only)"),
    "finetune log_every": Spec("count"),
    "finetune config": Spec("path_in"),
    "finetune db": Spec("db", base=FT),
    "finetune safety_batch_size": Spec("count"),
    "finetune booster_alpha": Spec("nonneg_float", note="≥ 0 per its help"),
    "finetune booster_harmful_batch_size": Spec("count"),
    "finetune lisa_align_steps": Spec("count"),
    "finetune lisa_task_steps": Spec("count"),
    "finetune lisa_prox_after": Spec("unit_float"),
    "finetune safelora_mode": Spec("choice"),
    "finetune safelora_select": Spec("choice"),
    "finetune safelora_layers": Spec("count"),
    "finetune tokenwise_first_factor": Spec("nonneg_float", note="≥ 0 per its help"),
    "finetune tokenwise_bias_factor": Spec("nonneg_float", note="≥ 0 per its help"),
    "finetune tokenwise_bias_length": Spec("nonneg_int", note="≥ 0 per its help"),
    "finetune vaccine_rho": Spec("pos_float"),
    "finetune dpo_beta": Spec("pos_float"),
    "finetune alignment_data": Spec("ref", base=[*FT, "--stage", "align"]),
    # --method grpo (checked in the config, before the model loads)
    "finetune reward": Spec("spec", extra_bad=["format:0", "format:x", "format,format"]),
    "finetune reward_judge": Spec("spec", base=["--stage", "align", "--method", "grpo", "--batch-size", "4",
                                                "--reward", "judge"]),
    "finetune reward_judge_base_url": Spec("text", skip="only read when a GRPO run starts judging (after the model "
                                                         "loads); tests/test_grpo.py covers a failing endpoint"),
    "finetune grpo_tags": Spec("spec", extra_bad=["A", "A,A", "a b,c"]),
    "finetune grpo_num_generations": Spec("count", extra_bad=["1", "65"]),
    "finetune grpo_max_completion_length": Spec("count"),
    "finetune grpo_beta": Spec("nonneg_float"),
    "finetune grpo_temperature": Spec("pos_float", extra_bad=["11"]),
    "finetune grpo_task_ratio": Spec("unit_float", extra_bad=["0.995"]),
    "finetune grpo_rollout": Spec("choice"),
    "finetune preferences": Spec("ref", base=[*FT, "--stage", "align", "--method", "dpo"]),
    # merge
    "merge run_id": Spec("ref", base=[]),
    "merge checkpoint": Spec("ref"),
    "merge out": Spec("dir_out"),
    "merge dtype": Spec("choice"),
    "merge db": Spec("db"),
    # evaluate: generating with a model
    "evaluate target": Spec("ref", base=["--dataset", "small", "--limit", "2"]),
    "evaluate dataset": Spec("ref"),
    "evaluate split": Spec("choice"),
    "evaluate task": Spec("ref"),
    "evaluate task_split": Spec("choice", base=["tiny-random", "--dataset", "small", "--limit", "2", "--task",
                                                "builtin:arithmetic-steps"]),
    "evaluate limit": Spec("count", base=["tiny-random", "--dataset", "small"],
                           ),  # a huge limit is refused at parse time (past 64-bit), like every number
    "evaluate max_new_tokens": Spec("count"),
    "evaluate batch_size": Spec("choice", extra_bad=["0", "-1", "nan", HUGE_INT]),  # a number >= 1 or 'auto'
    "evaluate temperature": Spec("nonneg_float"),
    "evaluate seed": Spec("nonneg_int"),
    "evaluate refusal_preset": Spec("choice"),
    "evaluate dtype": Spec("choice"),
    # evaluate --responses FILE: completions generated elsewhere
    "evaluate responses": Spec("path_in", base=["--model-name", "m"]),
    # evaluate --trajectories DIR --format toolemu: one agent's published ToolEmu runs (a folder or one file)
    "evaluate trajectories": Spec("dir_in", base=["--format", "toolemu"]),
    "evaluate model_name": Spec("new_name", base=["--responses", "{RESP}"]),
    "evaluate prompt_col": Spec("column", base=EXT),
    "evaluate response_col": Spec("column", base=EXT),
    "evaluate label_col": Spec("column", base=EXT),
    "evaluate label": Spec("choice", base=EXT),
    "evaluate category_col": Spec("column", base=EXT),
    "evaluate verdict_col": Spec("column", base=EXT),
    "evaluate verdict_map": Spec("spec", base=[*EXT, "--verdict-col", "human"]),
    "evaluate fmt": Spec("choice", base=EXT),
    "evaluate dataset_name": Spec("new_name", base=EXT),
    "evaluate train_seed": Spec("nonneg_int", base=EXT),
    "evaluate cluster_col": Spec("column", base=EXT),
    # evaluate --benchmark
    "evaluate benchmarks": Spec("ref", base=["tiny-random"], extra_bad=["{ADIR}", "{UNDERFILE}", "{MISSING}.yaml"]),
    "evaluate num_fewshot": Spec("nonneg_int", base=["tiny-random", "--benchmark", "arc_easy"]),
    "evaluate gen_kwargs": Spec("spec", base=["tiny-random", "--benchmark", "arc_easy"]),
    # evaluate --engine (served and API models, vLLM)
    "evaluate engine": Spec("choice"),
    "evaluate reasoning": Spec("spec", extra_bad=["tags:A", "tags:A,A", "think2"]),
    "evaluate system_prompt": Spec("text", extra_bad=["@{MISSING}", "@{ADIR}", "grpo:A", "grpo:A,A"]),
    # agentic evaluations (--emulator/--evaluator); nothing listens at SERVED, and the template store has no
    # agentic cases, so a valid line stops at the dataset
    "evaluate emulator": Spec("ref", base=["tiny-random", "--evaluator", "openai:j", "--base-url", SERVED]),
    "evaluate evaluator": Spec("ref", base=["tiny-random", "--emulator", "openai:e", "--base-url", SERVED]),
    "evaluate replicates": Spec("count", base=_AGENTIC),
    "evaluate max_steps": Spec("count", base=_AGENTIC),
    "evaluate emulator_base_url": Spec("text", base=_AGENTIC, extra_bad=["not a url", "ftp://x"]),
    "evaluate evaluator_base_url": Spec("text", base=_AGENTIC, extra_bad=["not a url", "ftp://x"]),
    "evaluate base_url": Spec("text", base=["openai:m"], extra_bad=["not a url", "ftp://x"]),
    "evaluate api_key_env": Spec("text", base=["openai:m", "--base-url", SERVED], extra_bad=["NO_SUCH_ENV_VAR_ZZ"]),
    "evaluate max_connections": Spec("count", base=["openai:m", "--base-url", SERVED]),
    "evaluate max_retries": Spec("nonneg_int", base=["openai:m", "--base-url", SERVED]),
    "evaluate timeout": Spec("pos_float", base=["openai:m", "--base-url", SERVED]),
    "evaluate db": Spec("db"),
    # judge
    "judge evaluation_ids": Spec("ref", base=["--judge", "keyword"]),
    "judge run": Spec("ref", base=["--judge", "keyword"]),
    "judge judge": Spec("spec", base=["--all-pending"]),
    "judge rubric": Spec("choice"),
    "judge on": Spec("choice", base=["--all-pending"]),
    "judge base_url": Spec("text", base=["--all-pending", "--judge", "openai:gpt-4o-mini"],
                           extra_bad=["", "not a url"]),
    "judge api_key_env": Spec("text", base=["--all-pending", "--judge", "openai:gpt-4o-mini"],
                              extra_bad=["", "NO_SUCH_ENV_VAR_ZZ"]),
    "judge max_connections": Spec("count"),
    "judge max_retries": Spec("nonneg_int"),
    "judge timeout": Spec("pos_float"),
    "judge price_table": Spec("path_in"),
    "judge cost_limit": Spec("nonneg_float"),
    "judge db": Spec("db"),
    # frontier
    "frontier x": Spec("choice"),
    "frontier y": Spec("choice"),
    "frontier group_by": Spec("choice"),
    "frontier where": Spec("spec"),
    "frontier judge": Spec("ref"),
    "frontier category": Spec("choice"),
    "frontier preset": Spec("choice"),
    "frontier export": Spec("choice"),
    "frontier out": Spec("path_out", base=["--export", "csv"]),
    "frontier plot": Spec("path_out", extra_bad=["plot.bogus"]),
    "frontier ref": Spec("spec", extra_bad=["nan,nan", "1", "inf,1"]),
    "frontier setting": Spec("ref"),
    "frontier db": Spec("db"),
    # compare
    "compare a": Spec("ref", base=["{RUN_B}"]),
    "compare b": Spec("ref", base=["{RUN}"]),
    "compare setting": Spec("ref", skip=_COMPARE_SKIP),
    "compare preset": Spec("choice", skip=_COMPARE_SKIP),
    "compare db": Spec("db", skip=_COMPARE_SKIP),
    # persistence (the template store has no agentic evaluations, so a valid line stops at the first side;
    # the sides are fuzzed as references, the plot path before the store is opened)
    "persistence safe": Spec("ref", base=_persist_base("--safe")),
    "persistence helpful": Spec("ref", base=_persist_base("--helpful")),
    "persistence safe_then_help": Spec("ref", base=_persist_base("--safe-then-help")),
    "persistence help_then_safe": Spec("ref", base=_persist_base("--help-then-safe")),
    "persistence plot": Spec("path_out", base=_persist_base(), extra_bad=["plot.bogus"]),
    "persistence split_seed": Spec("nonneg_int", skip=_PERSIST_SKIP),
    "persistence evaluator": Spec("ref", skip=_PERSIST_SKIP),
    "persistence n_boot": Spec("count", skip=_PERSIST_SKIP),
    "persistence db": Spec("db", skip=_PERSIST_SKIP),
    # import
    "import source": Spec("path_in", base=[], extra_bad=["{GARBAGE}", "{SELF}"]),
    "import on_conflict": Spec("choice"),
    "import db": Spec("db"),
    # sweep
    "sweep model": Spec("ref", base=["--dry-run"]),
    "sweep from_run": Spec("ref", base=["--dry-run"]),
    "sweep task": Spec("ref"),
    "sweep defense": Spec("spec"),
    "sweep lam": Spec("spec", base=[*SWEEP, "--defense", "anchor"], extra_bad=["nan", "-1", "1,,2", "inf"]),
    "sweep axis": Spec("spec"),
    "sweep align_defense": Spec("choice"),
    "sweep align_method": Spec("choice"),
    "sweep align_max_steps": Spec("count"),
    "sweep poison": Spec("spec", extra_bad=["-0.1", "nan", "1.5"]),
    "sweep seeds": Spec("spec", extra_bad=["-1", "1.5", "nan", HUGE_INT]),
    "sweep max_steps": Spec("count"),
    "sweep train_set": Spec("spec"),
    "sweep eval_set": Spec("spec"),
    "sweep judge": Spec("spec"),
    "sweep rubric": Spec("choice"),
    "sweep executor": Spec("choice"),
    "sweep only_index": Spec("nonneg_int"),
    "sweep out_dir": Spec("dir_out", base=SLURM),
    "sweep partition": Spec("text", base=SLURM, extra_bad=["", "a b", "a;b"]),
    "sweep gpus_per_task": Spec("nonneg_int", base=SLURM),
    "sweep gres": Spec("text", base=SLURM, extra_bad=["", "a b"]),
    "sweep account": Spec("text", base=SLURM, extra_bad=["", "a b"]),
    "sweep qos": Spec("text", base=SLURM, extra_bad=["", "a b"]),
    "sweep sbatch_extra": Spec("path_in", base=SLURM),
    "sweep cpus_per_task": Spec("count", base=SLURM),
    "sweep time": Spec("text", base=SLURM, extra_bad=["", "forever", "-1"]),
    "sweep mem": Spec("text", base=SLURM, extra_bad=["", "lots", "-1G"]),
    "sweep setup": Spec("text", base=SLURM, note="a shell line for the job script"),
    "sweep spt_command": Spec("text", base=SLURM, extra_bad=[""]),
    "sweep gather_dir": Spec("dir_in", base=["--executor", "slurm"]),
    "sweep db": Spec("db"),
    # demo
    "demo plot": Spec("path_out", extra_bad=["plot.bogus"]),
    "demo model": Spec("ref", base=["--quick"]),
    "demo db": Spec("db"),
    # view
    "view port": Spec("port", base=[]),
    "view host": Spec("text", base=[], extra_bad=["", " ", "[bold]x[/]", "no such host!"]),
    "view export": Spec("dir_out", base=[]),
    "view where": Spec("spec"),
    "view db": Spec("db"),
    # data
    "data import file": Spec("path_in", base=["--kind", "harmful", "--name", "fz"], extra_bad=["{GARBAGE}"]),
    "data import kind": Spec("choice", base=["{CSV}", "--name", "fz"]),
    "data import name": Spec("new_name", base=["{CSV}", "--kind", "harmful"]),
    "data import fmt": Spec("choice", base=["{XSTEST}"]),
    "data import label": Spec("choice", base=["{ORBENCH}", "--format", "orbench"]),
    "data import prompt_col": Spec("column"),
    "data import response_col": Spec("column"),
    "data import messages_col": Spec("column"),
    "data import category_col": Spec("column"),
    "data import label_col": Spec("column"),
    "data import pair_col": Spec("column"),
    "data import split_col": Spec("column"),
    "data import answer_col": Spec("column", base=["{CSV}", "--kind", "task", "--name", "fz"]),
    "data import db": Spec("db"),
    "data list db": Spec("db"),
    "data show name": Spec("ref", base=[]),
    "data show n": Spec("nonneg_int"),
    "data show db": Spec("db"),
    "data export name": Spec("ref", base=["--out", "out.jsonl"]),
    "data export out": Spec("path_out", base=["small"], extra_bad=["out.bogus"]),
    "data export split": Spec("choice"),
    "data export db": Spec("db"),
    # runs
    "runs where": Spec("spec"),
    "runs limit": Spec("nonneg_int", note=_NOTE_ZERO_OK + " (0: all)",
                       ok={HUGE_INT: "more than there are runs shows them all, like --limit 0"}),
    "runs db": Spec("db"),
    "runs reap timeout": Spec("pos_float"),
    "runs reap db": Spec("db"),
    "runs show run_id": Spec("ref", base=[]),
    "runs show db": Spec("db"),
    "runs set run_id": Spec("ref", base=["notes=x"]),
    "runs set assignments": Spec("spec", base=["{RUN}"]),
    "runs set db": Spec("db"),
    # db
    "db path db": Spec("db", note="db path only prints the path: it never opens it"),
    "db status db": Spec("db"),
    "db backup dest": Spec("path_out", base=[], extra_bad=["{AFILE}"]),
    "db backup db": Spec("db"),
    "db upgrade db": Spec("db"),
}

# Values of their kind that a given option legitimately accepts, with the reason (the fuzz tests expect
# success, not exit 2, for these; everything else of the kind must be refused).
_ACCEPTED: dict[str, dict[str, str]] = {
    "db path db": {v: "`spt db path` prints the path it would use and never opens it" for v in BAD["db"]},
}
for _k, _v in _ACCEPTED.items():
    SPECS[_k].ok.update(_v)

# The options that fuzz as flags (no value): every bool flag. `--json` is everywhere.
FLAG_KINDS = {"bool"}


def spec_of(p: Param) -> Spec | None:
    """The classification of `p`: flags classify themselves; everything else must be in SPECS."""
    if p.is_flag:
        return Spec("flag")
    s = SPECS.get(p.key)
    if s is not None and s.base is None:
        if p.command == ("finetune",) and p.name in _DEFENSE_OF:
            s.base = [*FT, *_DEFENSE_OF[p.name]]
        else:
            s.base = list(BASE[p.command])
    return s


def bad_values(p: Param) -> list[tuple[str, bool]]:
    """(value, must_refuse) for every malformed value of `p`'s kind plus its own extra ones."""
    s = spec_of(p)
    if s is None or s.skip:
        return []
    vals = list(dict.fromkeys([*BAD[s.kind], *s.extra_bad]))
    return [(v, v not in s.ok) for v in vals]


# ---------------------------------------------------------------------------------------------------------
# file importers and formats (test_fuzz_files.py builds the malformed files)
# ---------------------------------------------------------------------------------------------------------
FILE_INPUTS: dict[str, dict[str, Any]] = {
    "data import (csv)": {"argv": ["data", "import", "{FILE}", "--kind", "harmful", "--name", "fz"], "ext": ".csv"},
    "data import (jsonl)": {"argv": ["data", "import", "{FILE}", "--kind", "harmful", "--name", "fz"],
                            "ext": ".jsonl"},
    "data import (json)": {"argv": ["data", "import", "{FILE}", "--kind", "harmful", "--name", "fz"], "ext": ".json"},
    "data import (parquet)": {"argv": ["data", "import", "{FILE}", "--kind", "harmful", "--name", "fz"],
                              "ext": ".parquet"},
    **{f"data import --format {f}": {"argv": ["data", "import", "{FILE}", "--format", f], "ext": ".csv",
                                     "stem": stem}
       for f, stem in (("xstest", "xstest_prompts"), ("advbench", "harmful_behaviors"),
                       ("harmbench", "harmbench_behaviors_text_all"), ("strongreject", "strongreject_dataset"),
                       ("orbench", "or-bench-toxic"))},
    "evaluate --responses (csv)": {"argv": ["evaluate", "--responses", "{FILE}", "--model-name", "m"], "ext": ".csv"},
    "evaluate --responses (jsonl)": {"argv": ["evaluate", "--responses", "{FILE}", "--model-name", "m"],
                                     "ext": ".jsonl"},
    "finetune --config": {"argv": ["finetune", "--config", "{FILE}", "--model", "tiny-random"], "ext": ".yaml"},
    "import OTHER.db": {"argv": ["import", "{FILE}"], "ext": ".db"},
    "evaluate --benchmark task.yaml": {"argv": ["evaluate", "tiny-random", "--benchmark", "{FILE}"], "ext": ".yaml"},
    "judge --price-table": {"argv": ["judge", "--all-pending", "--judge", "keyword", "--price-table", "{FILE}"],
                            "ext": ".json"},
    "build-data --templates DIR": {"argv": ["build-data", "--templates", "{FILE}"], "ext": ""},
    "sweep --sbatch-extra": {"argv": ["sweep", *SLURM, "--sbatch-extra", "{FILE}"], "ext": ".txt"},
}

# ---------------------------------------------------------------------------------------------------------
# environment variables
# ---------------------------------------------------------------------------------------------------------
ENV_BAD = ["", "nan", "-1", "abc", "{UNDERFILE}"]


@dataclass
class EnvVar:
    kind: str  # number | path | dir
    commands: list[list[str]]  # cheap commands that read it
    ok: dict[str, str] = field(default_factory=dict)  # bad values it legitimately accepts: value -> why
    note: str = ""


_EMPTY_UNSET = "an empty value means unset (the default), like most Unix tools; documented behaviour"
_REL = "a relative path is a valid path (resolved against the working directory)"
_PATH_OK = {"": _EMPTY_UNSET, "nan": _REL, "-1": _REL, "abc": _REL}
ENV_VARS: dict[str, EnvVar] = {
    "SPT_BUSY_TIMEOUT_MS": EnvVar("number", [["--db", "{DB}", "db", "status"], ["--db", "{DB}", "runs"]],
                                  ok={"": _EMPTY_UNSET}),
    "SPT_CACHE": EnvVar("dir", [["--db", "{DB}", "evaluate", "tiny-random", "--limit", "1"]], ok=dict(_PATH_OK),
                        note="read only where a model is resolved (packaged tiny models, GGUF conversions)"),
    "SPT_DB": EnvVar("db", [["db", "status"], ["runs"]], ok=dict(_PATH_OK)),
    "SPT_HARMOR_TEMPLATES": EnvVar("dir", [["--db", "{DB}", "build-data", "--list-categories"]],
                                   ok={"": _EMPTY_UNSET}),
    "SPT_HOME": EnvVar("dir", [["db", "status"], ["runs"]], ok=dict(_PATH_OK)),
    "SPT_JUDGE_RETRY_BASE_S": EnvVar("number", [["--db", "{DB}", "judge", "--all-pending", "--judge",
                                                 "openai:gpt-4o-mini"]],
                                     ok={"": _EMPTY_UNSET}),
    "SPT_WRITE_WAIT_S": EnvVar("number", [["--db", "{DB}", "runs", "set", "{RUN}", "notes=x"]],
                               ok={"": _EMPTY_UNSET}),
    "SPT_IMPORT_CHUNK_ROWS": EnvVar("number", [["--db", "{DB}", "import", "{OTHER}"]], ok={"": _EMPTY_UNSET}),
    "SPT_LEASE_TIMEOUT_S": EnvVar("number", [["--db", "{DB}", "runs", "reap", "--dry-run"]], ok={"": _EMPTY_UNSET}),
    "SPT_SWEEP_STAGES": EnvVar("spec", [["--db", "{DB}", "sweep", *SWEEP]], ok={"": _EMPTY_UNSET},
                               note="internal: the stages a sweep worker runs"),
}


def env_vars_in_source() -> set[str]:
    """Every SPT_* environment variable the package reads (so ENV_VARS cannot go stale)."""
    import spt

    root = Path(spt.__file__).parent
    found: set[str] = set()
    for f in root.rglob("*.py"):
        text = f.read_text(encoding="utf-8")
        found |= set(re.findall(r"[\"'](SPT_[A-Z0-9_]+)[\"']", text))
    return found


# ---------------------------------------------------------------------------------------------------------
# Cases that still fail (issue 35 is open for them). Each is a strict xfail (tests/conftest.py): when a fix
# makes one pass, the suite fails until it is removed from here, so this list only shrinks.
KNOWN_OPEN: dict[str, str] = {}
