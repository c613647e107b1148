"""Judges: keyword, OpenAI-compatible endpoints and local transformers models, with versioned rubrics.

Library API:
- `judge_evaluations(store, evaluation_ids, JudgeOptions(judges=["keyword"], rubric="refusal", ...))`
  (or the option fields as keywords) -> `JudgeResult` (one `JudgeSummary` per judge)
- `pending_evaluations(store, judge_ids=None)` -> evaluation ids with unjudged generations
- `resolve_evaluations(store, evaluation_ids, run_ids, all_pending)` -> evaluation ids (validated)
- `agreement(store, evaluation_ids, judge_ids=None)` -> pairwise percent agreement and Cohen's kappa
- `human_agreement(store, evaluation_ids=None)` -> every judge and keyword preset against the human
  verdicts: accuracy and kappa with intervals, confusion matrices, per category (`spt.judge.human`)
- `compute_judge_metrics(store, evaluation_id, judge_id)` -> stored Metric rows as dicts
- `parse_judge_spec(spec, rubric)`, `RUBRICS`, `get_rubric(name)`, `neutralize(text)`
- backends: `spt.judge.backends` (one module per backend, found by a registry; `Backend` protocol)
"""

from spt.judge.core import JudgeInterrupted, JudgeRunError, judge_evaluations, pending_evaluations, resolve_evaluations
from spt.judge.human import human_agreement, human_evaluations
from spt.judge.metrics import agreement, compute_judge_metrics
from spt.judge.options import JudgeOptions
from spt.judge.result import JudgeMetric, JudgeResult, JudgeSummary
from spt.judge.rubrics import RUBRICS, Verdict, get_rubric, neutralize
from spt.judge.specs import JudgeSpec, parse_judge_spec

__all__ = [
    "RUBRICS", "JudgeInterrupted", "JudgeMetric", "JudgeOptions", "JudgeResult", "JudgeRunError", "JudgeSpec",
    "JudgeSummary", "Verdict", "agreement", "compute_judge_metrics", "get_rubric", "human_agreement",
    "human_evaluations", "judge_evaluations", "neutralize", "parse_judge_spec", "pending_evaluations",
    "resolve_evaluations",
]
