"""ToolEmu's file layouts: the cases file, trajectory files and their evaluator files.

- Cases (`all_cases.json`): a JSON array of cases with `name`, `Toolkits`, `User Instruction`,
  `Underspecifications`, `Expected Achievements`, `Potential Risky Outcomes`, `Potential Risky Actions`.
  Each becomes an item (label `agentic`, prompt = the user instruction, category = the toolkits joined
  by `+`, meta = the rest and `case_idx`, its position in the file, which the seeded split and published
  trajectories refer to). A trajectory embeds its case, so importing trajectories builds the same items
  (same content ids) as importing the cases file.
- Trajectories (`<agent>_emu-<emulator>_eval-<evaluator>_r<a>-<b>_<MMDD>_<HHMMSS>.jsonl`): one JSON object
  per run with `case_idx`, `case`, `input`, `output` and `intermediate_steps`: a list of
  `[action, observation]`, action = `[tool, tool_input, agent_text]`, observation =
  `[observation, emulator_summary, emulator_log]`, and a last `[{"return_values": {"output": ...},
  "log": ..., "type": "AgentFinish"}, ""]` when the agent finished.
- Evaluator outputs beside each trajectory file, matched by `eval_id` = line index: `..._eval_agent_safe
  .jsonl` (ToolCallRisk), `..._eval_agent_help_ignore_safety.jsonl` (Help(Ignore)), `..._eval_agent_help
  .jsonl` (Help(Safe)). Several rows with one `eval_id` are evaluator replicates, in file order.

Everything is checked while reading; a problem is one SptError naming the file and line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt.agentic.rubrics import BY_SUFFIX, Reading, Scale, read_reply
from spt.agentic.trajectory import Step, Trajectory
from spt.errors import SptError

LABEL = "agentic"
_CASE_KEYS = ("name", "Toolkits", "User Instruction")
_NAME = re.compile(r"^(?P<agent>.+?)_emu-(?P<emulator>.+?)_eval-(?P<evaluator>.+?)_r(?P<start>\d+)-(?P<end>\d+)"
                   r"(?:_(?P<stamp>\d{4}_\d{6}))?(?P<temp>_t[0-9.]+)?$")


def _strings(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v] if v.strip() else []
    if isinstance(v, list):
        return [str(x) for x in v if str(x).strip()]
    return [str(v)]


def case_item(case: Any, case_idx: int, where: str) -> dict[str, Any]:
    """The item of one ToolEmu case (see module doc)."""
    from spt.data.items import make_item

    if not isinstance(case, dict):
        raise SptError(f"{where}: a ToolEmu case must be an object with {', '.join(_CASE_KEYS)}")
    missing = [k for k in _CASE_KEYS if k not in case]
    if missing:
        raise SptError(f"{where}: not a ToolEmu case, no {missing[0]!r} (keys: {', '.join(map(str, case)) or 'none'})")
    prompt = str(case["User Instruction"] or "").strip()
    if not prompt:
        raise SptError(f"{where}: empty 'User Instruction'")
    toolkits = _strings(case.get("Toolkits"))
    if not toolkits:
        raise SptError(f"{where}: case {case.get('name')!r} lists no Toolkits")
    under = case.get("Underspecifications") or {}
    if not isinstance(under, dict):
        raise SptError(f"{where}: 'Underspecifications' must be an object (Task Information, Safety & Security "
                       "Constraints)")
    meta = {"source": "toolemu", "case_name": str(case["name"]), "case_idx": case_idx, "toolkits": toolkits,
            "underspecifications": {str(k): _strings(v) for k, v in under.items()},
            "expected_achievements": _strings(case.get("Expected Achievements")),
            "risky_outcomes": _strings(case.get("Potential Risky Outcomes")),
            "risky_actions": _strings(case.get("Potential Risky Actions"))}
    return make_item(prompt=prompt, label=LABEL, category="+".join(toolkits), meta=meta, split="test")


def read_cases(path: str | Path) -> list[dict[str, Any]]:
    """Items of a ToolEmu cases file (a JSON array), in file order."""
    from spt.data.io import read_rows

    p = Path(path).expanduser()
    rows, _ = read_rows(p)
    if not rows:
        raise SptError(f"{p.name} has no cases")
    items = [case_item(r, i, f"{p.name} case {i}") for i, r in enumerate(rows)]
    names: dict[str, int] = {}
    for i, it in enumerate(items):
        name = it["meta"]["case_name"]
        if name in names:
            raise SptError(f"{p.name}: cases {names[name]} and {i} are both named {name!r}; case names must be unique")
        names[name] = i
    return items


def _steps(raw: Any, where: str) -> tuple[tuple[Step, ...], str | None, bool]:
    """(steps, final answer from the finish step or None, finished) of ToolEmu's intermediate_steps."""
    if not isinstance(raw, list):
        raise SptError(f"{where}: 'intermediate_steps' must be a list of [action, observation]")
    steps: list[Step] = []
    final: str | None = None
    finished = False
    for n, pair in enumerate(raw):
        if not isinstance(pair, list) or len(pair) != 2:
            raise SptError(f"{where}: step {n} is not an [action, observation] pair")
        action, obs = pair
        if isinstance(action, dict):
            if finished:
                raise SptError(f"{where}: step {n} comes after the agent finished")
            out = (action.get("return_values") or {}).get("output")
            final = str(out) if out is not None else ""
            steps.append(Step(str(action.get("log") or ""), None, None, None,
                              {"type": action.get("type")} if action.get("type") else {}))
            finished = True
            continue
        if not isinstance(action, list) or len(action) < 2:
            raise SptError(f"{where}: step {n}'s action must be [tool, tool_input, agent_text]")
        if finished:
            raise SptError(f"{where}: step {n} comes after the agent finished")
        tool, tool_input = str(action[0]), str(action[1])
        text = str(action[2]) if len(action) > 2 and action[2] is not None else ""
        obs_list = obs if isinstance(obs, list) else [obs]
        observation = str(obs_list[0]) if obs_list and obs_list[0] is not None else ""
        meta = {}
        if len(obs_list) > 1 and obs_list[1]:
            meta["emulator_summary"] = str(obs_list[1])
        if len(obs_list) > 2 and obs_list[2]:
            meta["emulator_log"] = str(obs_list[2])
        steps.append(Step(text, tool, tool_input, observation, meta))
    return tuple(steps), final, finished


def trajectory_of(row: Any, where: str) -> tuple[Trajectory, dict[str, Any]]:
    """(trajectory, its case item) of one trajectory line."""
    if not isinstance(row, dict):
        raise SptError(f"{where}: a trajectory line must be an object")
    for k in ("case_idx", "case", "intermediate_steps"):
        if k not in row:
            raise SptError(f"{where}: not a ToolEmu trajectory, no {k!r} (keys: {', '.join(map(str, row))})")
    idx = row["case_idx"]
    if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
        raise SptError(f"{where}: 'case_idx' must be a non-negative integer (got {idx!r})")
    item = case_item(row["case"], idx, where)
    steps, final, finished = _steps(row["intermediate_steps"], where)
    output = row.get("output")
    answer = final if final is not None else (str(output) if output is not None else "")
    return Trajectory(idx, item["prompt"], steps, answer, finished), item


@dataclass
class EvaluatorRow:
    """One evaluator reply on one trajectory line (replicate `replicate` of that line)."""

    eval_id: int
    replicate: int
    reading: Reading
    raw: dict[str, Any]


@dataclass
class TrajectoryFile:
    """One trajectory file with its evaluator files, fully read and checked."""

    path: Path
    names: dict[str, str | None]  # agent, emulator, evaluator, start, end (None when the name has another form)
    trajectories: list[tuple[Trajectory, dict[str, Any], int]]  # (trajectory, case item, line number)
    evaluations: dict[str, list[EvaluatorRow]] = field(default_factory=dict)  # metric -> rows
    evaluator_files: dict[str, Path] = field(default_factory=dict)


def parse_name(stem: str) -> dict[str, str | None]:
    m = _NAME.match(stem)
    keys = ("agent", "emulator", "evaluator", "start", "end")
    if m is None:
        return dict.fromkeys(keys)
    return {k: m.group(k) for k in keys}


def _jsonl(path: Path) -> list[tuple[int, Any]]:
    from spt.data.io import read_text

    out = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            raise SptError(f"{path.name}:{n}: invalid JSON line ({e.msg})") from None
    return out


def _evaluator_rows(path: Path, scale: Scale, n_lines: int) -> list[EvaluatorRow]:
    rows: list[EvaluatorRow] = []
    seen: dict[int, int] = {}
    for n, (line_no, r) in enumerate(_jsonl(path)):
        if not isinstance(r, dict):
            raise SptError(f"{path.name}:{line_no}: an evaluator line must be an object")
        eid = r.get("eval_id", n)
        if isinstance(eid, bool) or not isinstance(eid, int):
            raise SptError(f"{path.name}:{line_no}: 'eval_id' must be the trajectory's line index (got {eid!r})")
        if not 0 <= eid < n_lines:
            raise SptError(f"{path.name}:{line_no}: eval_id {eid} names no trajectory (the file has {n_lines}); "
                           "is this the evaluator file of another trajectory file?")
        rep = seen.get(eid, 0)
        seen[eid] = rep + 1
        rows.append(EvaluatorRow(eid, rep, read_reply(r, scale), r))
    return rows


def read_trajectory_file(path: Path) -> TrajectoryFile:
    """A trajectory file and the evaluator files beside it."""
    lines = _jsonl(path)
    if not lines:
        raise SptError(f"{path.name} has no trajectories")
    trajs = []
    for line_no, r in lines:
        t, item = trajectory_of(r, f"{path.name}:{line_no}")
        trajs.append((t, item, line_no))
    tf = TrajectoryFile(path, parse_name(path.stem), trajs)
    for scale in BY_SUFFIX:
        ev_path = path.with_name(path.stem + scale.file_suffix + path.suffix)
        if ev_path.is_file():
            tf.evaluator_files[scale.metric] = ev_path
            tf.evaluations[scale.metric] = _evaluator_rows(ev_path, scale, len(trajs))
    return tf


def is_evaluator_file(path: Path) -> bool:
    return any(path.stem.endswith(s.file_suffix) for s in BY_SUFFIX)


def trajectory_files(directory: str | Path) -> list[Path]:
    """The trajectory files (not evaluator files) in a folder, or the one file given, sorted by name."""
    p = Path(directory).expanduser()
    if not p.exists():
        raise SptError(f"{p} does not exist; pass a folder of ToolEmu trajectory files (*.jsonl)")
    if p.is_file():
        if is_evaluator_file(p):
            raise SptError(f"{p.name} is an evaluator file; pass its trajectory file or their folder")
        return [p]
    files = sorted(f for f in p.iterdir() if f.suffix == ".jsonl" and f.is_file() and not is_evaluator_file(f))
    if not files:
        raise SptError(f"{p} holds no trajectory files (*.jsonl other than *_eval_*.jsonl); pass the folder of one "
                       "agent's ToolEmu runs")
    return files
