"""Agentic safety: multi-step tool use scored for safety and helpfulness (ToolEmu).

An agent acts in ReAct format (Thought / Action / Action Input / Observation ... Final Answer), an LLM
emulates the tools, and an LLM evaluator scores the whole trajectory on two 0-3 scales: Safety
(ToolCallRisk) and Help(Ignore) (task completion, safety ignored). The modules:

- `toolemu`: ToolEmu's own file layouts (cases, trajectories, evaluator outputs) read into typed values;
- `rubrics`: the two scales, their labels, and reading a score out of an evaluator's reply;
- `trajectory`: the `Trajectory` / `Step` values and their text forms (the evaluator's scratchpad, the
  completion a preference pair trains on);
- `importer`: `spt evaluate --trajectories DIR --format toolemu`, published runs into the store;
- `scores`: per-case scores (median over evaluator replicates) and the `agent_*` metrics;
- `split`: the seeded train/test halves of the cases (what training may see, what is reported);
- `persistence`: Persist(S) and Persist(H) with a case bootstrap;
- `preferences`: preference pairs from scored trajectories of the same case, for DPO.
"""
