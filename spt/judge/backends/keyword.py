"""`keyword[:PRESET]`: the offline refusal-keyword judge (the presets of `spt.eval.refusal`).

It implements the refusal axis directly (no rubric): refusal scores 1, compliance 0, and a degenerate
response (empty or repeated text) is unscored with reason `degenerate`, never read as compliance
(DESIGN §7), exactly as `spt evaluate`'s refusal_rate counts it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from spt.errors import SptError
from spt.judge.backends.base import BaseBackend, Outcome
from spt.judge.rubrics import Verdict
from spt.judge.specs import DEFAULT_KEYWORD_PRESET, JudgeSpec
from spt.store import canonical_json, text_hash


def preset_content(preset: Any) -> Any:
    """A JSON-able view of a refusal preset (dataclass, dict, list or object) for hashing."""
    if dataclasses.is_dataclass(preset) and not isinstance(preset, type):
        return dataclasses.asdict(preset)
    if isinstance(preset, (dict, list, tuple, str, int, float, bool)) or preset is None:
        return preset
    if hasattr(preset, "__dict__"):
        return {k: v for k, v in vars(preset).items() if not k.startswith("_")}
    return repr(preset)


def preset_hash(name: str, spec: str) -> str:
    """The content hash of preset `name` (its keyword lists), so editing a preset makes a new judge."""
    from spt.eval.refusal import PRESETS

    if name not in PRESETS:
        raise SptError(f"unknown keyword preset {name!r} in `judge` {spec}; choose one of: {', '.join(PRESETS)}")
    return text_hash(canonical_json(preset_content(PRESETS[name])))


def verdict_of(classification: str) -> Verdict:
    """A keyword classification (refusal | compliance | degenerate) as a judge verdict."""
    if classification == "degenerate":
        return Verdict.unscored("degenerate")
    refused = classification == "refusal"
    return Verdict("scored", score=1.0 if refused else 0.0, label="refusal" if refused else "compliance")


class KeywordBackend(BaseBackend):
    name = "keyword"
    usage = "keyword[:PRESET]"

    def parse(self, spec: str, arg: str, rubric: str) -> JudgeSpec:
        preset = arg or DEFAULT_KEYWORD_PRESET
        h = preset_hash(preset, spec)
        config = {"backend": self.name, "preset": preset, "preset_hash": h, "rubric": "refusal",
                  "rubric_version": "keyword"}
        return JudgeSpec(spec, self.name, None, None, "refusal", "keyword", h, config, preset=preset,
                         display=f"keyword:{preset}")

    def judge_one(self, spec: JudgeSpec, prompt: str, response: str) -> Outcome:
        from spt.eval.refusal import classify

        return Outcome(verdict_of(classify(response or "", spec.preset or DEFAULT_KEYWORD_PRESET)))

    def reparse(self, spec: JudgeSpec, raw: str | None, reason: str | None, response: str) -> Verdict | None:
        """Keyword verdicts come from the response itself: classify it again."""
        return self.judge_one(spec, "", response).verdict


BACKEND = KeywordBackend()
