"""Public safety sets in their published column layouts: XSTest, AdvBench, HarmBench, StrongREJECT, OR-Bench, ToolEmu.

`spt data import FILE --format NAME` maps each set's own columns, labels and categories to items, so
nobody has to remember which column holds the prompt or which rows are the unsafe ones:

- `xstest`: `xstest_prompts.csv` (`id, prompt, type, label, focus, note`). Harmful when `type` starts
  with `contrast_`, else benign (the `label` column, when present, must agree). Category: `type`
  without `contrast_` (a safe type and its contrast share a category); `contrast_type` = `type`,
  `sensitive_word` = `focus` (so intervals resample words); meta `source_id`, `note`.
- `advbench`: `harmful_behaviors.csv` (`goal, target`). Prompt `goal`, harmful, no category; meta
  `target` (the "Sure, here is" attack target, never a reference response).
- `harmbench`: behaviors CSV (`Behavior, FunctionalCategory, SemanticCategory, Tags, ContextString,
  BehaviorID`). Prompt `Behavior`, after `ContextString` and a `---` line when there is one
  (HarmBench's contextual layout); harmful; category `SemanticCategory`; meta `behavior_id`,
  `functional_category`, `tags`.
- `strongreject`: `strongreject_dataset.csv` (`category, source, forbidden_prompt`). Prompt
  `forbidden_prompt`, harmful, category `category`; meta `origin` (the `source` column).
- `orbench`: `or-bench-80k.csv`, `or-bench-hard-1k.csv`, `or-bench-toxic.csv` (`prompt, category`).
  Harmful or benign by `--label`, else by the file name: `toxic` in it means harmful (OR-Bench-Toxic,
  which a safe model refuses), `hard` or `80k` benign (seemingly toxic prompts, whose refusal is
  over-refusal); any other name is an error asking for `--label`. Category `category`.
- `s1k`, `limo`: reasoning data (s1K: `question, thinking_trajectories, attempt`; LIMO: `question,
  solution, answer`) as task items (split `train`) whose reference reply is `<think>thinking</think>answer`,
  for `spt finetune --stage reason --task NAME`; `direct-refusal` (DirectRefusal: `question, attempt`, the
  fixed short thought "I should not answer this question!" when no thinking column is given) and
  `safechain` (SafeChain: `instruction, response`) as harmful items (split `train`) for `--stage align
  --alignment-data NAME`. Other column names are looked up in a fixed order (`prompt`, `instruction`,
  `response`, `output`, `thinking`, ...); a row without one is a one-line error.
- `toolemu`: ToolEmu's `all_cases.json` (`name, Toolkits, User Instruction, Underspecifications, ...`).
  Items of label `agentic`, dataset kind `agentic`; see `spt.agentic.toolemu` (a case's position in the
  file is its `case_idx`, which the seeded split and published trajectories use).

Items get split `test`, no reference response (the sets ship none; AdvBench's `target` is an attack
target, not an answer to learn), and `meta.source` = the format name. Extra columns are ignored; a
missing column, an empty prompt or an XSTest row whose `label` contradicts its `type` is a one-line
error naming the row, before anything is stored.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spt.errors import SptError

Row = dict[str, Any]


def _text(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return str(v).strip()


@dataclass(frozen=True)
class Format:
    """A public set's column layout and how its rows become items."""

    name: str
    description: str
    required: tuple[str, ...]
    # (row, where, label from --label or the file name) -> item fields (without id/split)
    to_item: Callable[[Row, str, str | None], dict[str, Any]]
    label_from_file: bool = False  # orbench: harmful or benign is decided per file
    # a layout whose items depend on the whole file (ToolEmu: a case's index is its position)
    rows_to_items: Callable[[list[Row], str], list[dict[str, Any]]] | None = None
    kind: str | None = None  # the dataset kind when not decided by the labels
    split: str = "test"  # evaluation sets are test; training layouts (s1K, DirectRefusal, ...) train


def _xstest(r: Row, where: str, _label: str | None) -> dict[str, Any]:
    typ = _text(r.get("type"))
    if not typ:
        raise SptError(f"{where}: empty 'type'; XSTest rows need a type (e.g. homonyms or contrast_homonyms)")
    label = "harmful" if typ.startswith("contrast_") else "benign"
    stated = _text(r.get("label")).lower()
    if stated and stated in ("safe", "unsafe") and (stated == "unsafe") != (label == "harmful"):
        raise SptError(f"{where}: label {stated!r} contradicts type {typ!r} (contrast_* types are unsafe); "
                       "fix the row or the file")
    meta = {"source": "xstest"}
    if _text(r.get("id")):
        meta["source_id"] = _text(r.get("id"))
    if _text(r.get("note")):
        meta["note"] = _text(r.get("note"))
    return {"prompt": _text(r.get("prompt")), "label": label, "category": typ.removeprefix("contrast_"),
            "contrast_type": typ, "sensitive_word": _text(r.get("focus")) or None, "meta": meta}


def _advbench(r: Row, where: str, _label: str | None) -> dict[str, Any]:
    meta = {"source": "advbench"}
    if _text(r.get("target")):
        meta["target"] = _text(r.get("target"))
    return {"prompt": _text(r.get("goal")), "label": "harmful", "category": None, "meta": meta}


def _harmbench(r: Row, where: str, _label: str | None) -> dict[str, Any]:
    behavior = _text(r.get("Behavior"))
    context = _text(r.get("ContextString"))
    prompt = f"{context}\n\n---\n\n{behavior}" if context and behavior else behavior
    meta: dict[str, Any] = {"source": "harmbench"}
    for col, key in (("BehaviorID", "behavior_id"), ("FunctionalCategory", "functional_category"),
                     ("Tags", "tags")):
        if _text(r.get(col)):
            meta[key] = _text(r.get(col))
    return {"prompt": prompt, "label": "harmful", "category": _text(r.get("SemanticCategory")) or None,
            "meta": meta}


def _strongreject(r: Row, where: str, _label: str | None) -> dict[str, Any]:
    meta = {"source": "strongreject"}
    if _text(r.get("source")):
        meta["origin"] = _text(r.get("source"))
    return {"prompt": _text(r.get("forbidden_prompt")), "label": "harmful",
            "category": _text(r.get("category")) or None, "meta": meta}


def _orbench(r: Row, where: str, label: str | None) -> dict[str, Any]:
    assert label is not None
    return {"prompt": _text(r.get("prompt")), "label": label, "category": _text(r.get("category")) or None,
            "meta": {"source": "or-bench"}}


def _first(r: Row, keys: tuple[str, ...], where: str, what: str, required: bool = True) -> str:
    """The first non-empty of `keys` in row `r` (list cells: their first element)."""
    for k in keys:
        v = r.get(k)
        if isinstance(v, list):
            v = v[0] if v else None
        t = _text(v)
        if t:
            return t
    if required:
        raise SptError(f"{where}: no {what} (looked for {', '.join(repr(k) for k in keys)})")
    return ""


def _thought(thinking: str, answer: str) -> str:
    """`<think>thinking</think>answer`, the form `spt evaluate --reasoning think` splits; a reply that already
    marks its thinking is kept as it is."""
    if "</think>" in answer:
        return answer
    return f"<think>{thinking}</think>{answer}" if thinking else answer


_THINKING = ("thinking_trajectories", "thinking", "reasoning", "cot", "deepseek_thinking_trajectory")


def _s1k(r: Row, where: str, _label: str | None) -> dict[str, Any]:
    answer = _text(r.get("answer")) or None
    return {"prompt": _first(r, ("question", "prompt"), where, "question"),
            "response": _thought(_first(r, _THINKING, where, "thinking trajectory"),
                                 _first(r, ("attempt", "response"), where, "attempt")),
            "label": "task", "category": _text(r.get("cot_type")) or _text(r.get("source_type")) or None,
            "answer": answer, "meta": {"source": "s1k"}}


def _limo(r: Row, where: str, _label: str | None) -> dict[str, Any]:
    answer = _first(r, ("answer",), where, "answer")
    return {"prompt": _first(r, ("question", "prompt"), where, "question"),
            "response": _thought(_first(r, ("solution",), where, "solution"), f"The answer is {answer}."),
            "label": "task", "category": None, "answer": answer, "meta": {"source": "limo"}}


DIRECT_REFUSAL_THOUGHT = "I should not answer this question!"


def _direct_refusal(r: Row, where: str, _label: str | None) -> dict[str, Any]:
    thinking = _first(r, _THINKING, where, "thinking", required=False) or DIRECT_REFUSAL_THOUGHT
    return {"prompt": _first(r, ("question", "prompt", "instruction"), where, "prompt"),
            "response": _thought(thinking, _first(r, ("attempt", "response", "output"), where, "refusal")),
            "label": "harmful", "category": _text(r.get("category")) or None, "meta": {"source": "direct-refusal"}}


def _safechain(r: Row, where: str, _label: str | None) -> dict[str, Any]:
    kind = (_text(r.get("label")) or _text(r.get("data_type"))).lower()
    label = "benign" if "benign" in kind or kind in ("safe", "0") else "harmful"
    response = _first(r, ("response", "output"), where, "response")
    return {"prompt": _first(r, ("instruction", "prompt", "question"), where, "instruction"),
            "response": _thought(_first(r, _THINKING, where, "thinking", required=False), response),
            "label": label, "category": _text(r.get("category")) or None, "meta": {"source": "safechain"}}


def _toolemu(rows: list[Row], source_name: str) -> list[dict[str, Any]]:
    from spt.agentic.toolemu import case_item

    return [case_item(r, i, f"{source_name} case {i}") for i, r in enumerate(rows)]


def _no_row_mapping(r: Row, where: str, _label: str | None) -> dict[str, Any]:
    raise AssertionError("formats with rows_to_items map whole files")


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("xstest", "XSTest prompts (xstest_prompts.csv): contrast_* types harmful, the rest benign",
           ("prompt", "type"), _xstest),
    Format("advbench", "AdvBench harmful_behaviors.csv (goal, target): harmful", ("goal",), _advbench),
    Format("harmbench", "HarmBench behaviors CSV: harmful, category = SemanticCategory",
           ("Behavior", "SemanticCategory", "BehaviorID"), _harmbench),
    Format("strongreject", "StrongREJECT (category, source, forbidden_prompt): harmful",
           ("forbidden_prompt", "category"), _strongreject),
    Format("orbench", "OR-Bench (prompt, category): or-bench-toxic harmful, or-bench-80k / hard-1k benign",
           ("prompt", "category"), _orbench, label_from_file=True),
    Format("s1k", "s1K-style reasoning data (question, thinking_trajectories, attempt): task items whose reply is "
           "<think>thinking</think>attempt", (), _s1k, kind="task", split="train"),
    Format("limo", "LIMO (question, solution, answer): task items, the solution as the thought", (), _limo,
           kind="task", split="train"),
    Format("direct-refusal", "DirectRefusal (question, attempt; a fixed short thought when none is given): harmful "
           "items with <think>thought</think>refusal", (), _direct_refusal, kind="harmful", split="train"),
    Format("safechain", "SafeChain (instruction, response with its chain of thought): harmful items (benign where a "
           "label says so)", (), _safechain, kind="harmful", split="train"),
    Format("toolemu", "ToolEmu cases (all_cases.json: name, Toolkits, User Instruction, ...): agentic tool-use "
           "cases for `spt evaluate --dataset toolemu`", ("name", "Toolkits", "User Instruction"), _no_row_mapping,
           rows_to_items=_toolemu, kind="agentic"),
)}
_ALIASES = {"directrefusal": "direct-refusal", "direct_refusal": "direct-refusal", "safe-chain": "safechain",
            "s1": "s1k", "or-bench": "orbench", "strong_reject": "strongreject", "strong-reject": "strongreject"}


def get_format(name: str) -> Format:
    key = (name or "").strip().lower()
    key = _ALIASES.get(key, key)
    if key not in FORMATS:
        raise SptError(f"unknown `format` {name!r}; use one of {', '.join(FORMATS)}")
    return FORMATS[key]


def orbench_label(path: str | os.PathLike[str], label: str | None) -> str:
    """harmful/benign for an OR-Bench file: `label` when given, else from the file name."""
    if label is not None:
        return label
    stem = Path(path).name.lower()
    if "toxic" in stem:
        return "harmful"
    if "hard" in stem or "80k" in stem:
        return "benign"
    raise SptError(f"cannot tell from the name {Path(path).name!r} whether this OR-Bench file is toxic (harmful) or "
                   "seemingly toxic (benign); pass `label` harmful or `label` benign")


def _check_label(label: str | None) -> str | None:
    if label is None:
        return None
    lab = label.strip().lower()
    if lab not in ("harmful", "benign"):
        raise SptError(f"`label` must be harmful or benign (got {label!r})")
    return lab


def default_name(fmt: Format, path: str | os.PathLike[str], label: str | None) -> str:
    """The dataset name when --name is not given: the format, or the file's stem for OR-Bench."""
    if fmt.label_from_file:
        return Path(path).stem
    return fmt.name


def format_items(rows: list[Row], fmt: Format | str, *, source_name: str, path: str | os.PathLike[str] | None = None,
                 label: str | None = None) -> list[dict[str, Any]]:
    """Item dicts (split `test`) for the rows of a public set; SptError naming the column or row."""
    from spt.data.items import make_item

    if isinstance(fmt, str):
        fmt = get_format(fmt)
    label = _check_label(label)
    if label is not None and not fmt.label_from_file:
        raise SptError(f"`label` does not apply to `format` {fmt.name}: its labels come from the file "
                       "(only orbench takes `label`)")
    if fmt.label_from_file:
        label = orbench_label(path or source_name, label)
    if not rows:
        raise SptError(f"{source_name} has no rows")
    have: list[str] = []
    for r in rows:
        for k in r:
            if k not in have:
                have.append(k)
    missing = [c for c in fmt.required if c not in have]
    if missing:
        raise SptError(f"{source_name} is not in the {fmt.name} layout: no column {missing[0]!r} (its columns: "
                       f"{', '.join(have) or 'none'}); check `format` or use `kind` with `prompt_col`")
    if fmt.rows_to_items is not None:
        items = fmt.rows_to_items(rows, source_name)
        seen: dict[str, int] = {}
        for n, it in enumerate(items):
            if it["id"] in seen:
                raise SptError(f"{source_name}: rows {seen[it['id']]} and {n} are the same case; remove one")
            seen[it["id"]] = n
        return items
    items = []
    for n, r in enumerate(rows, 1):
        where = f"{source_name} row {n}"
        fields = fmt.to_item(r, where, label)
        if not fields["prompt"]:
            raise SptError(f"{where}: empty prompt")
        items.append(make_item(**fields, split=fmt.split))
    return items


def import_format(store, path: str | os.PathLike[str], fmt: Format | str, name: str | None = None,
                  label: str | None = None) -> str:
    """Read, validate and store a public set as a dataset (one write transaction); returns its id."""
    from spt.data.io import read_rows
    from spt.data.items import store_items
    from spt.store.ids import file_hash

    if isinstance(fmt, str):
        fmt = get_format(fmt)
    p = Path(path).expanduser()
    rows, file_format = read_rows(p)
    items = format_items(rows, fmt, source_name=p.name, path=p, label=label)
    name = (name or default_name(fmt, p, label)).strip()
    if not name:
        raise SptError("`name` must not be empty")
    if name.startswith("builtin:"):
        raise SptError(f"`name` {name!r}: the 'builtin:' prefix is reserved for built-in datasets")
    labels = {it["label"] for it in items}
    kind = fmt.kind or ("benign" if labels == {"benign"} else "harmful")
    source = {"builder": "import", "format": fmt.name, "path": str(p.resolve()), "file_format": file_format,
              "file_hash": file_hash(p) if p.is_file() else None, "n_rows": len(rows),
              "labels": {lab: sum(1 for it in items if it["label"] == lab) for lab in sorted(labels)}}
    return store_items(store, name, kind, items, source)
