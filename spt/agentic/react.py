"""Reading one agent turn in ReAct form: a tool call, a final answer, or neither.

A turn is a **final answer** when it holds `Final Answer:` (what follows is the reply to the user); a
**tool call** when it holds `Action:` with a tool name and `Action Input:` (the text after it, up to the
end of the turn, which the stop string `Observation:` ended); otherwise it is **unparsed**, and the
trajectory ends there, unfinished, with reason `agent_format` (an agent that cannot keep the format has
not answered, and is never credited with a final answer it did not write). A final answer takes
precedence when both appear, as in ToolEmu's parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FINAL = re.compile(r"Final Answer\s*:\s*(.*)", re.DOTALL)
_ACTION = re.compile(r"Action\s*:\s*([^\n]+?)\s*\n+\s*Action Input\s*:\s*(.*)", re.DOTALL)


@dataclass(frozen=True)
class Turn:
    kind: str  # final | tool | unparsed
    text: str  # the whole turn, as the agent wrote it
    tool: str | None = None
    tool_input: str | None = None
    final_answer: str | None = None


def parse_turn(text: str) -> Turn:
    t = (text or "").rstrip()
    m = _FINAL.search(t)
    if m:
        return Turn("final", t, final_answer=m.group(1).strip())
    m = _ACTION.search(t)
    if m and m.group(1).strip():
        tool = m.group(1).strip().strip("`*").strip()
        return Turn("tool", t, tool=tool, tool_input=m.group(2).strip())
    return Turn("unparsed", t)


def observation_of(text: str) -> str:
    """The emulator's reply without a leading `Observation:`."""
    t = (text or "").strip()
    m = re.match(r"^\s*Observation\s*:\s*", t)
    return t[m.end():].strip() if m else t
