"""Judge specifications (`keyword`, `keyword:PRESET`, `openai:MODEL`, `hf:PATH`) and their identity.

A judge's id is the content id of everything that changes its verdicts: backend, model, rubric (name,
version, template hash), decoding settings. Transport options (base URL, key, connections, timeout,
retries) are not part of it, so the same judge reached through another endpoint keeps its cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt.errors import SptError
from spt.judge.rubrics import Rubric, get_rubric
from spt.store import canonical_json, content_id, text_hash

BACKENDS = ("keyword", "openai", "hf")
DEFAULT_KEYWORD_PRESET = "spt"
# Bumped when the way a backend turns a rubric into a request changes (message layout, decoding).
PROMPT_FORMAT = "user-message-v1"


@dataclass
class JudgeSpec:
    """A resolved judge: what to call, with which rubric, and the identity stored in the Judge table."""

    spec: str
    backend: str
    model: str | None
    rubric: Rubric | None  # None for keyword judges (they implement the refusal axis directly)
    rubric_name: str
    rubric_version: str
    rubric_hash: str
    config: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None  # keyword preset
    hf_mode: str | None = None  # generate | classifier
    path: str | None = None  # hf: the directory (or hub id) to load

    @property
    def id(self) -> str:
        return content_id(self.config)

    @property
    def name(self) -> str:
        if self.backend == "keyword":
            return f"keyword:{self.preset}"
        return f"{self.backend}:{self.model}/{self.rubric_name}"

    @property
    def max_tokens(self) -> int:
        return int(self.config.get("max_tokens") or 0)


def _keyword_spec(spec: str, preset: str | None) -> JudgeSpec:
    from spt.eval.refusal import PRESETS

    preset = preset or DEFAULT_KEYWORD_PRESET
    if preset not in PRESETS:
        raise SptError(f"unknown keyword preset {preset!r} in --judge {spec}; choose one of: {', '.join(PRESETS)}")
    preset_hash = text_hash(canonical_json(_preset_content(PRESETS[preset])))
    config = {"backend": "keyword", "preset": preset, "preset_hash": preset_hash, "rubric": "refusal",
              "rubric_version": "keyword"}
    return JudgeSpec(spec, "keyword", None, None, "refusal", "keyword", preset_hash, config, preset=preset)


def _preset_content(preset: Any) -> Any:
    """A JSON-able view of a refusal preset (dataclass, dict, list or object) for hashing."""
    import dataclasses

    if dataclasses.is_dataclass(preset) and not isinstance(preset, type):
        return dataclasses.asdict(preset)
    if isinstance(preset, (dict, list, tuple, str, int, float, bool)) or preset is None:
        return preset
    if hasattr(preset, "__dict__"):
        return {k: v for k, v in vars(preset).items() if not k.startswith("_")}
    return repr(preset)


def _hf_fingerprint(path: str) -> tuple[str | None, str]:
    """(fingerprint of a local model directory, mode generate|classifier)."""
    p = Path(path).expanduser()
    if not p.exists():
        return None, "generate"
    if not p.is_dir():
        raise SptError(f"--judge hf:{path}: not a model directory (expected config.json and weights)")
    cfg_file = p / "config.json"
    if not cfg_file.exists():
        raise SptError(f"--judge hf:{path}: no config.json in that directory; pass a transformers model directory")
    cfg_text = cfg_file.read_text(encoding="utf-8")
    try:
        cfg = json.loads(cfg_text)
    except json.JSONDecodeError as e:
        raise SptError(f"--judge hf:{path}: config.json is not valid JSON ({e})") from None
    archs = cfg.get("architectures") or []
    mode = "classifier" if any("SequenceClassification" in a for a in archs) else "generate"
    files = sorted(
        (f.name, f.stat().st_size) for f in p.iterdir()
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json", ".model", ".gguf", ".txt")
    )
    return content_id({"config": cfg_text, "files": files}), mode


def parse_judge_spec(spec: str, rubric: str = "refusal") -> JudgeSpec:
    """Resolve one `--judge` value with the `--rubric` name; raises SptError on bad input."""
    spec = (spec or "").strip()
    backend, _, arg = spec.partition(":")
    backend = backend.lower()
    if backend == "human":
        raise SptError("human verdicts are imported, not run: `spt evaluate --responses FILE --model-name NAME "
                       "--verdict-col COL`; compare judges with them by `spt judge --agreement`")
    if backend not in BACKENDS:
        raise SptError(f"unknown judge backend in --judge {spec!r}; use keyword, keyword:PRESET, openai:MODEL "
                       "or hf:PATH")
    if backend == "keyword":
        return _keyword_spec(spec, arg or None)
    if not arg:
        raise SptError(f"--judge {spec} needs a model: {backend}:MODEL")
    rb = get_rubric(rubric)
    config: dict[str, Any] = {
        "backend": backend, "model": arg, "rubric": rb.name, "rubric_version": rb.version,
        "rubric_hash": rb.hash, "temperature": 0.0, "max_tokens": rb.max_tokens, "prompt_format": PROMPT_FORMAT,
    }
    mode = None
    path = None
    if backend == "hf":
        from spt.models.resolve import resolve_model

        path = resolve_model(arg).path
        fingerprint, mode = _hf_fingerprint(path)
        config.update({"mode": mode, "fingerprint": fingerprint, "decoding": "greedy"})
        if mode == "classifier":
            # A classifier head implements the refusal axis from its labels, whatever --rubric says.
            config.update({"rubric": "refusal", "rubric_version": "classifier", "rubric_hash": None,
                           "max_tokens": None, "temperature": None})
            return JudgeSpec(spec, backend, arg, None, "refusal", "classifier", "", config, hf_mode=mode,
                             path=path)
    return JudgeSpec(spec, backend, arg, rb, rb.name, rb.version, rb.hash, config, hf_mode=mode, path=path)
