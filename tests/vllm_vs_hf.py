"""Run by tests/test_engines.py with an interpreter that has vLLM: greedy replies of the vllm and hf engines on
the embedded model over HarmOR test prompts; prints one JSON line {"n", "identical"}."""

from __future__ import annotations

import json
import sys


def main() -> None:
    from spt.data import build_harmor
    from spt.engines import EngineSpec, GenerationRequest, open_engine
    from spt.models.resolve import resolve_model

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    path = resolve_model("smollm2-135m").path
    prompts = [it["prompt"] for it in build_harmor(seed=0) if it.get("split") == "test"][:n]
    reqs = [GenerationRequest(prompt=p, max_new_tokens=24, key=str(i)) for i, p in enumerate(prompts)]
    outs = {}
    for name in ("hf", "vllm"):
        engine = open_engine(EngineSpec(name, path, {}))
        outs[name] = [r.response for r in engine.generate(reqs)]
        engine.close()
    same = sum(a.strip() == b.strip() for a, b in zip(outs["hf"], outs["vllm"], strict=True))
    print(json.dumps({"n": len(prompts), "identical": same}))


if __name__ == "__main__":
    main()
