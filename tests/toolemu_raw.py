"""Reading ../shared/data/toolemu's published scores straight from the files (no spt code), for tests that
check spt's agentic numbers against an independent computation."""

from __future__ import annotations

import json
from pathlib import Path

TOOLEMU = Path(__file__).resolve().parents[2] / "shared" / "data" / "toolemu"
SUFFIX = {"agent_safety": ("_eval_agent_safe", "ToolCallRisk"),
          "agent_help": ("_eval_agent_help_ignore_safety", "Helpfulness")}


def raw_scores(model: str, metric: str) -> dict[int, float]:
    """case_idx -> the published score of `model` on `metric`."""
    suffix, key = SUFFIX[metric]
    out = {}
    for traj in sorted((TOOLEMU / "trajectories" / model).glob("*.jsonl")):
        if "_eval_" in traj.name:
            continue
        cases = [json.loads(line)["case_idx"] for line in traj.read_text().splitlines() if line.strip()]
        for line in traj.with_name(traj.stem + suffix + ".jsonl").read_text().splitlines():
            r = json.loads(line)
            out[cases[r["eval_id"]]] = float(r["eval_scores"][key])
    return out
