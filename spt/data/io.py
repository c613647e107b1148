"""Reading external prompt/task files (JSONL/JSON/CSV/parquet/HF datasets on disk) and exporting items."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from spt.data.items import EXPORT_FIELDS, make_item
from spt.errors import SptError

IMPORT_KINDS = ("task", "harmful", "benign", "poison")
EXPORT_SUFFIXES = (".jsonl", ".csv", ".parquet")
_HARMFUL = {"harmful", "unsafe", "1", "true", "yes", "risky", "contrast"}
_BENIGN = {"benign", "safe", "0", "false", "no", "harmless"}


def read_text(path: str | os.PathLike[str]) -> str:
    """A text file's content: UTF-8 (a BOM allowed) or UTF-16 with its BOM; SptError for anything else.

    Guessing another encoding (Latin-1, cp1252) would silently change the prompts, so it is refused with
    the offset of the first undecodable byte; NUL bytes mean a binary file and are refused too.
    """
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except IsADirectoryError:
        raise SptError(f"{p} is a directory; pass a file") from None
    except OSError as e:
        raise SptError(f"cannot read {p}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-16") if data.startswith((b"\xff\xfe", b"\xfe\xff")) else data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SptError(f"{p.name} is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); save it as "
                       "UTF-8") from None
    if "\x00" in text:
        raise SptError(f"{p.name} contains NUL bytes (a binary file?); pass a UTF-8 text file")
    return text


def load_yaml(text: str, where: str) -> Any:
    """YAML `text` loaded safely, refusing a key repeated in one mapping (PyYAML keeps the last one silently,
    so `lr: 0.1` then `lr: 0.2` would train at 0.2 with no word). SptError naming `where` and the line."""
    import yaml

    class _Strict(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    repeated = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class reports it
                    repeated = False
                if repeated:
                    raise SptError(f"{where}:{key_node.start_mark.line + 1}: the key {key!r} is given twice; keep one")
            return super().construct_mapping(node, deep=deep)

    _Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Strict.construct_mapping)
    try:
        return yaml.load(text, Loader=_Strict)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise SptError(f"{where} is not valid YAML ({str(e).splitlines()[0]})") from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (use null or a number)")


def _loads(text: str) -> Any:
    """json.loads without NaN/Infinity (not JSON, and not a value any column may hold)."""
    return json.loads(text, parse_constant=_no_constants)


def _csv_rows(p: Path, text: str, delimiter: str) -> list[dict[str, Any]]:
    """Rows of a CSV/TSV text: a header of distinct names, every row as long as the header, quotes closed."""
    import sys

    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long completions are data, not an attack
    try:
        table = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as e:
        raise SptError(f"{p.name}: not valid CSV ({e}); check for an unclosed quote") from None
    table = [r for r in table if r]  # blank lines
    if not table:
        return []
    header = [h.strip() for h in table[0]]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise SptError(f"{p.name}: column {dupes[0]!r} appears more than once in the header; rename one")
    rows = []
    for n, r in enumerate(table[1:], 2):
        if len(r) != len(header):
            raise SptError(f"{p.name}:{n}: {len(r)} fields where the header has {len(header)}; fix the row or "
                           "quote fields that contain the delimiter")
        rows.append(dict(zip(header, r, strict=True)))
    return rows


def read_rows(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], str]:
    """Rows of a JSONL/JSON/CSV/TSV/parquet file or an HF `datasets` folder; returns (rows, format)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise SptError(f"{p} does not exist; pass a JSONL, CSV, parquet file or a saved HF dataset folder")
    if p.is_dir():
        try:
            from datasets import Dataset as HFDataset
            from datasets import DatasetDict, load_from_disk
        except ImportError:
            raise SptError("reading an HF dataset folder needs the `datasets` package; pip install datasets") from None
        try:
            ds = load_from_disk(str(p))
        except Exception as e:  # noqa: BLE001 - datasets raises many kinds
            raise SptError(f"{p} is not a dataset saved with save_to_disk ({type(e).__name__}: {e})") from None
        rows: list[dict[str, Any]] = []
        if isinstance(ds, DatasetDict):
            for split_name, part in ds.items():
                rows.extend({**r, "__split__": split_name} for r in part)
        elif isinstance(ds, HFDataset):
            rows = list(ds)
        return rows, "hf-datasets"
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        text = read_text(p)
        if suffix == ".json" and text.lstrip().startswith("["):
            try:
                data = _loads(text)
            except json.JSONDecodeError as e:
                raise SptError(f"{p.name}:{e.lineno}: invalid JSON ({e.msg})") from None
            except ValueError as e:
                raise SptError(f"{p.name}: {e}") from None
            if not all(isinstance(r, dict) for r in data):
                raise SptError(f"{p.name}: the JSON array must hold objects (one per row)")
            return data, "json"
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = _loads(line)
            except json.JSONDecodeError as e:
                raise SptError(f"{p.name}:{n}: invalid JSON line ({e.msg})") from None
            except ValueError as e:
                raise SptError(f"{p.name}:{n}: {e}") from None
            if not isinstance(r, dict):
                raise SptError(f"{p.name}:{n}: each JSONL line must be an object")
            rows.append(r)
        return rows, "jsonl"
    if suffix in (".csv", ".tsv"):
        return _csv_rows(p, read_text(p), "\t" if suffix == ".tsv" else ","), suffix[1:]
    if suffix in (".parquet", ".pq"):
        try:
            import pandas as pd
        except ImportError:
            raise SptError("reading parquet needs pandas and pyarrow; pip install pandas pyarrow") from None
        try:
            df = pd.read_parquet(p)
        except ImportError:
            raise SptError("reading parquet needs pyarrow; pip install pyarrow") from None
        except Exception as e:  # noqa: BLE001
            raise SptError(f"{p} is not a readable parquet file ({e})") from None
        return [{k: _unnumpy(v) for k, v in r.items()} for r in df.to_dict(orient="records")], "parquet"
    raise SptError(f"unknown file type {p.suffix!r} for {p.name}; use .jsonl, .json, .csv, .tsv, .parquet or an "
                   "HF dataset folder")


def parse_label(value: Any) -> str | None:
    """"harmful" or "benign" from a label cell (harmful/unsafe/1/true/yes/risky/contrast or
    benign/safe/0/false/no/harmless, any case); None when it is neither."""
    raw = (_text(value) or "").strip().lower()
    if raw in _HARMFUL:
        return "harmful"
    if raw in _BENIGN:
        return "benign"
    return None


def _unnumpy(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    return v


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, float) and v != v:  # NaN from pandas
        return None
    return str(v)


def _from_messages(msgs: Any, where: str) -> tuple[str, str | None]:
    if isinstance(msgs, str):
        try:
            msgs = json.loads(msgs)
        except json.JSONDecodeError:
            raise SptError(f"{where}: the messages column is not a list of {{role, content}}") from None
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
        raise SptError(f"{where}: the messages column must be a non-empty list of {{role, content}}")
    last_assistant = None
    if msgs[-1].get("role") == "assistant":
        last_assistant = _text(msgs[-1].get("content"))
        msgs = msgs[:-1]
    users = [m for m in msgs if m.get("role") == "user"]
    if not users:
        raise SptError(f"{where}: the messages have no user turn")
    return _text(users[-1].get("content")) or "", last_assistant


def rows_to_items(rows: list[dict[str, Any]], kind: str, *, source_name: str, prompt_col: str | None = None,
                  response_col: str | None = None, messages_col: str | None = None,
                  category_col: str | None = None, label_col: str | None = None, pair_col: str | None = None,
                  split_col: str | None = None, answer_col: str | None = None) -> list[dict[str, Any]]:
    """Map file rows to item dicts; every problem is an SptError naming the column or row."""
    if kind not in IMPORT_KINDS:
        raise SptError(f"unknown `kind` {kind!r}; use one of {', '.join(IMPORT_KINDS)}")
    if not rows:
        raise SptError(f"{source_name} has no rows")
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols and k != "__split__":
                cols.append(k)
    have = set(cols)
    shown = ", ".join(cols) or "none"

    def need(col: str | None, flag: str) -> str | None:
        if col is not None and col not in have:
            raise SptError(f"{source_name} has no column {col!r} (for `{flag}`); its columns are: {shown}")
        return col

    need(prompt_col, "prompt_col")
    need(messages_col, "messages_col")
    if prompt_col is None and messages_col is None:
        if "prompt" in have:
            prompt_col = "prompt"
        elif "messages" in have:
            messages_col = "messages"
        else:
            raise SptError(f"{source_name} has no 'prompt' or 'messages' column; its columns are: {shown}; "
                           "name one with `prompt_col` or `messages_col`")
    response_col = need(response_col, "response_col") or ("response" if "response" in have else None)
    category_col = need(category_col, "category_col") or ("category" if "category" in have else None)
    label_col = need(label_col, "label_col")
    pair_col = need(pair_col, "pair_col") or ("pair_id" if "pair_id" in have else None)
    split_col = need(split_col, "split_col") or ("split" if "split" in have else None)
    answer_col = need(answer_col, "answer_col") or ("answer" if "answer" in have else None)
    if kind in ("task", "poison") and response_col is None and messages_col is None:
        raise SptError(f"`kind` {kind} needs responses, but {source_name} has no 'response' column; its columns "
                       f"are: {shown}; name one with `response_col` or use `messages_col`")
    if label_col is not None and kind not in ("harmful", "benign"):
        raise SptError("`label_col` only applies to `kind` harmful or benign (labels harmful/benign per row)")

    items: list[dict[str, Any]] = []
    for n, r in enumerate(rows, 1):
        where = f"{source_name} row {n}"
        if messages_col is not None:
            prompt, response = _from_messages(r.get(messages_col), where)
            if response_col is not None and _text(r.get(response_col)):
                response = _text(r.get(response_col))
        else:
            for col in (prompt_col, response_col):
                v = r.get(col) if col else None
                if v is not None and not isinstance(v, str):
                    raise SptError(f"{where}: column {col!r} holds {type(v).__name__} {str(v)[:40]!r}, not text; "
                                   "quote it as a string")
            prompt = _text(r.get(prompt_col)) or ""
            response = _text(r.get(response_col)) if response_col else None
        if not prompt.strip():
            raise SptError(f"{where}: empty prompt")
        if kind in ("task", "poison") and not (response or "").strip():
            raise SptError(f"{where}: empty response (`kind` {kind} needs one for every row)")
        if kind == "task":
            label = "task"
        elif kind == "poison":
            label = "poison"
        elif label_col is not None:
            parsed = parse_label(r.get(label_col))
            if parsed is None:
                raw = (_text(r.get(label_col)) or "").strip().lower()
                raise SptError(f"{where}: label {raw!r} in column {label_col!r} is neither harmful "
                               "(harmful/unsafe/1) nor benign (benign/safe/0)")
            label = parsed
        else:
            label = kind
        if split_col is not None:
            split = (_text(r.get(split_col)) or "").strip() or None
        else:
            split = r.get("__split__")
        if split is None:
            split = "train" if kind in ("task", "poison") else "test"
        answer = _text(r.get(answer_col)) if answer_col else None
        if kind == "task" and not answer:
            answer = (response or "").strip()
        pair = _text(r.get(pair_col)) if pair_col else None
        items.append(make_item(
            prompt=prompt, response=response, category=_text(r.get(category_col)) if category_col else None,
            label=label, pair_id=f"{source_name}:{pair}" if pair else None, answer=answer if kind == "task" else None,
            split=str(split),
        ))
    if kind == "task" and split_col is None and not any(r.get("__split__") for r in rows):
        # No split given: a deterministic 90/10 split by content so that the task has a test set.
        for it in items:
            it["split"] = "test" if int(it["id"][7:15], 16) % 10 == 0 else "train"
    return items


def check_out_path(out: str | os.PathLike[str]) -> Path:
    """Validate an export destination before anything is written (suffix, folder, permissions)."""
    p = Path(out).expanduser()
    suffix = p.suffix.lower()
    if suffix not in EXPORT_SUFFIXES and suffix != "":
        raise SptError(f"cannot export to {p.name}: use a .jsonl, .csv or .parquet file, or a folder name without "
                       "a suffix for an HF dataset")
    if p.is_dir():
        raise SptError(f"{p} is a directory; `out` must name a file (or a new folder for an HF dataset)")
    if suffix == "" and p.exists():
        raise SptError(f"{p} already exists; an HF dataset export needs a new folder")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise SptError(f"cannot write {p}: folder {parent} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".spt-write-test-"):
            pass
        if p.exists() and not os.access(p, os.W_OK):
            raise PermissionError(13, "permission denied")
    except OSError as e:
        raise SptError(f"cannot write {p} ({e.strerror or e}); choose a writable `out`") from None
    return p


def render_jsonl(items: list[dict[str, Any]]) -> bytes:
    lines = [json.dumps({k: it.get(k) for k in EXPORT_FIELDS}, ensure_ascii=False, sort_keys=False)
             for it in items]
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


def render_csv(items: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EXPORT_FIELDS)
    for it in items:
        row = []
        for k in EXPORT_FIELDS:
            v = it.get(k)
            row.append("" if v is None else json.dumps(v, sort_keys=True, ensure_ascii=False) if k == "meta" else v)
        w.writerow(row)
    return buf.getvalue().encode("utf-8")


def export_items(items: list[dict[str, Any]], out: str | os.PathLike[str]) -> Path:
    """Write items to .jsonl / .csv / .parquet, or an HF dataset folder (no suffix). Deterministic bytes."""
    p = check_out_path(out)
    suffix = p.suffix.lower()
    rows = [{k: it.get(k) for k in EXPORT_FIELDS} for it in items]
    if suffix in (".jsonl", ".csv"):
        data = render_jsonl(rows) if suffix == ".jsonl" else render_csv(rows)
        tmp = p.with_name(p.name + ".tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, p)
        except OSError as e:
            raise SptError(f"cannot write {p} ({e.strerror or e})") from None
        return p
    for r in rows:
        r["meta"] = json.dumps(r["meta"], sort_keys=True) if r["meta"] is not None else None
    if suffix == ".parquet":
        try:
            import pandas as pd

            pd.DataFrame(rows, columns=list(EXPORT_FIELDS)).to_parquet(p, index=False)
        except ImportError:
            raise SptError("writing parquet needs pandas and pyarrow; pip install pandas pyarrow") from None
        return p
    try:
        from datasets import Dataset as HFDataset
    except ImportError:
        raise SptError("exporting an HF dataset needs the `datasets` package; pip install datasets") from None
    HFDataset.from_list(rows).save_to_disk(str(p))
    return p


def import_dataset(store, path: str | os.PathLike[str], kind: str, name: str, **columns: str | None) -> str:
    """Import a file as a dataset (validated fully before one write transaction); returns the dataset id."""
    from spt.data.items import store_items
    from spt.store.ids import file_hash

    if not name or not name.strip():
        raise SptError("`name` must not be empty")
    if name.startswith("builtin:"):
        raise SptError(f"`name` {name!r}: the 'builtin:' prefix is reserved for built-in datasets")
    if kind not in IMPORT_KINDS:
        raise SptError(f"unknown `kind` {kind!r}; use one of {', '.join(IMPORT_KINDS)}")
    p = Path(path).expanduser()
    rows, fmt = read_rows(p)
    items = rows_to_items(rows, kind, source_name=p.name, **columns)
    source = {
        "builder": "import", "path": str(p.resolve()), "format": fmt,
        "file_hash": file_hash(p) if p.is_file() else None,
        "columns": {k: v for k, v in columns.items() if v is not None}, "n_rows": len(rows),
    }
    return store_items(store, name.strip(), kind, items, source)
