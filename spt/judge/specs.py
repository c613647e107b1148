"""Judge specifications (`BACKEND[:ARG]`, e.g. `keyword:PRESET`, `openai:MODEL`, `hf:PATH`) and their identity.

A judge's id is the content id of everything that changes its verdicts: backend, model, rubric (name,
version, template hash), decoding settings. Transport options (base URL, key, connections, timeout,
retries) are not part of it, so the same judge reached through another endpoint keeps its cache.
Each backend (`spt.judge.backends`) builds its own specs; this module only dispatches on the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from spt.errors import SptError
from spt.judge.rubrics import Rubric, get_rubric
from spt.store import content_id

if TYPE_CHECKING:
    from spt.judge.backends.base import Backend

DEFAULT_KEYWORD_PRESET = "spt"
# Bumped when the way a backend turns a rubric into a request changes (message layout, decoding).
PROMPT_FORMAT = "user-message-v1"


@dataclass
class JudgeSpec:
    """A resolved judge: what to call, with which rubric, and the identity stored in the Judge table."""

    spec: str
    backend: str
    model: str | None
    rubric: Rubric | None  # None for judges that implement the refusal axis directly (keyword, classifier)
    rubric_name: str
    rubric_version: str
    rubric_hash: str
    config: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None  # keyword preset(s)
    hf_mode: str | None = None  # generate | classifier
    path: str | None = None  # hf: the directory (or hub id) to load
    display: str | None = None  # the name shown and stored; default BACKEND:MODEL/RUBRIC

    @property
    def id(self) -> str:
        return content_id(self.config)

    @property
    def name(self) -> str:
        return self.display or f"{self.backend}:{self.model}/{self.rubric_name}"

    @property
    def max_tokens(self) -> int:
        return int(self.config.get("max_tokens") or 0)

    @property
    def impl(self) -> Backend:
        """The backend object that judges with this spec."""
        from spt.judge.backends import get_backend

        return get_backend(self.backend)


def rubric_judge_spec(spec: str, backend: str, model: str, rubric: str, **config: Any) -> JudgeSpec:
    """The spec of a model judge that reads a rubric prompt and replies in text (openai, hf generate).

    `config` adds backend-specific identity (fingerprint, decoding) to the common part.
    """
    if not model:
        raise SptError(f"`judge` {spec} needs a model: {backend}:MODEL")
    rb = get_rubric(rubric)
    cfg: dict[str, Any] = {
        "backend": backend, "model": model, "rubric": rb.name, "rubric_version": rb.version,
        "rubric_hash": rb.hash, "temperature": 0.0, "max_tokens": rb.max_tokens, "prompt_format": PROMPT_FORMAT,
    }
    cfg.update(config)
    return JudgeSpec(spec, backend, model, rb, rb.name, rb.version, rb.hash, cfg)


JUDGED_PARTS = ("response", "thinking")


def parse_judge_spec(spec: str, rubric: str = "refusal", on: str = "response") -> JudgeSpec:
    """Resolve one `--judge` value with the `--rubric` name; raises SptError on bad input.

    `on="thinking"` judges a reasoning model's thinking (kept in the generation's meta by `spt evaluate
    --reasoning`) instead of its answer: another judge identity (`on` in its config, " on thinking" in its
    name), whose metrics are named `thinking_*`, so a thought that plans harm is its own number.
    """
    from spt.judge.backends import backends, usage

    if on not in JUDGED_PARTS:
        raise SptError(f"`on` must be one of {', '.join(JUDGED_PARTS)} (got {on!r})")
    spec = (spec or "").strip()
    name, _, arg = spec.partition(":")
    backend = backends().get(name.lower())
    if backend is None:
        raise SptError(f"unknown judge backend in `judge` {spec!r}; use {usage()}")
    parsed = backend.parse(spec, arg, rubric)
    if on == "response":
        return parsed
    return replace(parsed, config={**parsed.config, "on": on}, display=f"{parsed.name} on {on}")
