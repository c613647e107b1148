"""The one identity of a model's weights: what training, evaluation, merging and local judges all use.

A model directory's weights id is the content hash of its weight files: the safetensors files (else the
`.bin` files), one file's hash when there is one, else a hash over every file's name and hash. The same
weights get the same id wherever they are: a checkpoint evaluated by run id or by its path, a base model
by name or by directory, a judge model, a merge's base. (This is the hash checkpoints have always stored,
so run and evaluation identities in existing stores stay valid.) Tokenizer and chat template are not
weights: an evaluation records the chat template's hash next to its identity. Hashing gigabytes is slow,
so the id is cached by (path, names, sizes, mtimes) in the spt cache. A reference that is not a
directory (a hub id) is `ref:` plus the reference.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def weight_files(path: str | Path) -> list[Path]:
    """The files whose bytes are the model's weights, in name order."""
    d = Path(path)
    files = sorted(d.glob("*.safetensors"))
    return files or sorted(d.glob("*.bin"))


def weights_id(path: str | Path) -> str:
    """The content id of the weights at `path` (see the module doc); `ref:PATH` when it is not a directory."""
    from spt.paths import cache_dir
    from spt.store import content_id, file_hash

    p = Path(path).expanduser()
    if not p.is_dir():
        return f"ref:{path}"
    files = weight_files(p)
    stat_key = content_id(["weights-v1", str(p.resolve())]
                          + [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files])
    entry = cache_dir() / "fingerprints" / (stat_key.split(":")[1][:32] + ".json")
    try:
        return json.loads(entry.read_text())["weights_id"]
    except (OSError, ValueError, KeyError):
        pass
    wid = file_hash(files[0]) if len(files) == 1 else content_id({f.name: file_hash(f) for f in files})
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"path": str(p.resolve()), "weights_id": wid}))
        os.replace(tmp, entry)
    except OSError:
        pass
    return wid
