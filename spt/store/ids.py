"""Identifiers: time-sortable event ids and algorithm-tagged content hashes.

Event rows (runs, evaluations, judgments, ...) get UUIDv7 strings: they sort by creation time and
never collide across machines, which is what lets `spt import` merge stores from many nodes.
Content rows (items, datasets, judge configs) get `sha256:<hex>` over canonical JSON, so the same
content built twice, anywhere, has one id.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from typing import Any

_lock = threading.Lock()
_last_ms = 0
_seq = 0


def new_id() -> str:
    """Return a UUIDv7 string, strictly increasing within this process."""
    global _last_ms, _seq
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _seq += 1
            if _seq > 0xFFF:  # 12-bit counter exhausted: borrow the next millisecond
                ms += 1
                _seq = 0
        else:
            _seq = int.from_bytes(os.urandom(2), "big") & 0x3FF
        _last_ms = ms
        seq = _seq
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= seq << 64
    value |= 0b10 << 62
    value |= rand
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the byte form that content hashes cover."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content_id(obj: Any) -> str:
    """`sha256:<hex>` of the canonical JSON of `obj`."""
    return "sha256:" + hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def text_hash(text: str) -> str:
    """`sha256:<hex>` of a string (prompts, responses, rubric templates)."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_hash(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """`sha256:<hex>` of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return "sha256:" + h.hexdigest()
