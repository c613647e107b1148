"""One agent trajectory: its steps (thought, tool call, observation) and its final answer.

`Trajectory.scratchpad()` is the ReAct text the evaluator reads and a preference pair trains on: each
step's agent text (its Thought, Action and Action Input, as the agent wrote them) followed by the
`Observation:` the emulator returned, then the final step's text (which holds `Final Answer:`). The
observations are the emulator's words, not the agent's; they are part of the text so that a pair's
chosen and rejected completions carry what the agent saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Step:
    """One step: the agent's text, the tool it called with its input, and what came back.

    The final step has `tool` None (the agent finished) and no observation.
    """

    thought: str
    tool: str | None = None
    tool_input: str | None = None
    observation: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. the emulator's own reasoning


@dataclass(frozen=True)
class Trajectory:
    """A whole agent run on one case."""

    case_idx: int | None
    prompt: str  # the user instruction
    steps: tuple[Step, ...]
    final_answer: str
    finished: bool  # False: the agent stopped (step or token limit, parse failure) without a final answer
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tool_calls(self) -> int:
        return sum(1 for s in self.steps if s.tool is not None)

    def scratchpad(self) -> str:
        """The ReAct text of the run (see module doc)."""
        parts: list[str] = []
        for s in self.steps:
            text = s.thought.strip("\n")
            if s.tool is not None:
                if "Action:" not in text:  # an agent text without its call: write the call out
                    text = f"{text}\nAction: {s.tool}\nAction Input: {(s.tool_input or '').strip()}".strip()
                parts.append(f"{text}\nObservation: {(s.observation or '').strip()}")
            elif text:
                parts.append(text)
        if not self.finished:
            parts.append("(the agent stopped without a final answer)")
        return "\n\n".join(parts).strip()

    def step_rows(self) -> list[dict[str, Any]]:
        """The steps as `trajectory_step` column values (without ids)."""
        return [{"position": i, "thought": s.thought, "tool": s.tool, "tool_input": s.tool_input,
                 "observation": s.observation, "meta": s.meta or None} for i, s in enumerate(self.steps)]


def from_step_rows(rows: list[Any], *, case_idx: int | None, prompt: str, final_answer: str, finished: bool,
                   meta: dict[str, Any] | None = None) -> Trajectory:
    """A Trajectory from stored `trajectory_step` rows (ordered by position)."""
    steps = tuple(Step(r.thought or "", r.tool, r.tool_input, r.observation, dict(r.meta or {}))
                  for r in sorted(rows, key=lambda r: r.position))
    return Trajectory(case_idx, prompt, steps, final_answer, finished, dict(meta or {}))
