"""Generation in `spt evaluate` (`spt.eval.generate_batched`) vs plain `model.generate()`.

Three ways over the same prompts (HarmOR test prompts, rendered with the model's chat template),
greedy, the same `max_new_tokens`:
- `single`: `model.generate()` one prompt at a time (what a first script does);
- `batched`: `model.generate()` on batches in input order, left-padded (what a careful script does);
- `spt`: `generate_batched` (length-sorted batches; static cache on GPU).
New tokens count up to and including the end-of-turn token, for all three alike. The greedy outputs
of `batched` and `spt` are compared token by token with `single`.

    python bench/generate_throughput.py                                   # tiny-random, quick
    python bench/generate_throughput.py --model smollm2-135m --n 32 --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, log, machine, peak_rss_mb, synthetic_prompt, torch_info  # noqa: E402


def harmor_prompts(n: int, seed: int = 0) -> tuple[list[str], str]:
    """n HarmOR test prompts (harmful and benign look-alikes, mixed lengths); synthetic ones without spt.data."""
    try:
        from spt.data import build_harmor

        items = [it for it in build_harmor(seed=seed) if it.get("split") == "test"] or build_harmor(seed=seed)
        rng = random.Random(seed)
        rng.shuffle(items)
        prompts = [it["prompt"] for it in items[:n]]
        source = "harmor-test"
    except ImportError:
        prompts, source = [], "synthetic"
    rng = random.Random(seed)
    while len(prompts) < n:
        prompts.append(synthetic_prompt(rng))
        source = "synthetic" if source == "synthetic" else source + "+synthetic"
    return prompts, source


def _trim(toks: list[int], stop: set[int], pad: int | None) -> list[int]:
    """New tokens up to and including the first stop token (padding after it dropped)."""
    for k, t in enumerate(toks):
        if t in stop:
            return toks[: k + 1]
    return toks


def plain_single(model, encoded: list[list[int]], gen_kwargs: dict, stop: set[int]) -> tuple[float, list]:
    import torch

    device = next(model.parameters()).device
    outs = []
    _sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for ids in encoded:
            x = torch.tensor([ids], device=device)
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), **gen_kwargs)
            outs.append(_trim(out[0, len(ids):].tolist(), stop, None))
    _sync(device)
    return time.perf_counter() - t0, outs


def plain_batched(model, tokenizer, encoded: list[list[int]], gen_kwargs: dict, stop: set[int],
                  batch_size: int) -> tuple[float, list]:
    """Batches in input order, left-padded by the tokenizer, one `generate` per batch."""
    import torch

    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    outs: list = []
    _sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(encoded), batch_size):
            chunk = encoded[s:s + batch_size]
            enc = tokenizer.pad({"input_ids": chunk}, padding=True, return_tensors="pt")
            width = enc["input_ids"].shape[1]
            out = model.generate(input_ids=enc["input_ids"].to(device),
                                 attention_mask=enc["attention_mask"].to(device), **gen_kwargs)
            outs.extend(_trim(row, stop, None) for row in out[:, width:].tolist())
    _sync(device)
    return time.perf_counter() - t0, outs


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-random", help="tiny-random | smollm2-135m | a model directory")
    ap.add_argument("--n", type=int, default=32, help="prompts")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", default="auto", help="spt and batched generate (auto: spt's choice)")
    ap.add_argument("--skip-single", action="store_true", help="skip the one-at-a-time baseline (slow)")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats of batched/spt (best kept)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from spt.eval.generate import auto_batch_size, eos_ids, generate_batched
    from spt.models import load_model, prompt_ids, resolve_model

    path = resolve_model(args.model).path
    model, tok = load_model(path, device=args.device)
    prompts, source = harmor_prompts(args.n)
    encoded = [prompt_ids(tok, p) if getattr(tok, "chat_template", None) else tok(p)["input_ids"] for p in prompts]
    stop_list = eos_ids(model, tok)
    stop = set(stop_list)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if args.batch_size == "auto":
        bs = auto_batch_size(model, max(len(e) for e in encoded), args.max_new_tokens)
    else:
        bs = int(args.batch_size)
    gen_kwargs = {"max_new_tokens": args.max_new_tokens, "do_sample": False, "pad_token_id": pad_id,
                  "eos_token_id": stop_list, "temperature": None, "top_p": None, "top_k": None}
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{args.model}: {n_params / 1e6:.1f}M params, {len(prompts)} prompts ({source}), batch {bs}, "
        f"device {next(model.parameters()).device}")

    # warm-up (kernels, allocator, lazy imports) outside the timings
    generate_batched(model, tok, prompts[: min(4, len(prompts))], max_new_tokens=4, batch_size=bs)

    result: dict = {"benchmark": "generate_throughput", "machine": machine(), "torch": torch_info(),
                    "params": {"model": args.model, "n_params": n_params, "n_prompts": len(prompts),
                               "prompt_source": source, "max_new_tokens": args.max_new_tokens, "batch_size": bs,
                               "prompt_tokens_min": min(map(len, encoded)),
                               "prompt_tokens_max": max(map(len, encoded)),
                               "prompt_tokens_mean": round(sum(map(len, encoded)) / len(encoded), 1)}}
    ref = None
    if not args.skip_single:
        s_t, s_out = plain_single(model, encoded, gen_kwargs, stop)
        n_tok = sum(map(len, s_out))
        result["single"] = {"seconds": round(s_t, 3), "new_tokens": n_tok, "new_tokens_per_s": round(n_tok / s_t, 2)}
        ref = s_out
        log(f"single: {n_tok / s_t:.1f} new tok/s")

    best: dict[str, tuple[float, list]] = {}
    every: dict[str, list[float]] = {"batched": [], "spt": []}
    for _ in range(max(1, args.repeats)):
        b_t, b_out = plain_batched(model, tok, encoded, gen_kwargs, stop, bs)
        every["batched"].append(round(b_t, 3))
        if "batched" not in best or b_t < best["batched"][0]:
            best["batched"] = (b_t, b_out)
        _sync(next(model.parameters()).device)
        t0 = time.perf_counter()
        res = generate_batched(model, tok, prompts, max_new_tokens=args.max_new_tokens, batch_size=bs)
        _sync(next(model.parameters()).device)
        g_t = time.perf_counter() - t0
        g_out = [r["token_ids"] for r in res]
        every["spt"].append(round(g_t, 3))
        if "spt" not in best or g_t < best["spt"][0]:
            best["spt"] = (g_t, g_out)
    for name in ("batched", "spt"):
        t, out = best[name]
        n_tok = sum(map(len, out))
        result[name] = {"seconds": round(t, 3), "new_tokens": n_tok, "new_tokens_per_s": round(n_tok / t, 2),
                        "all_seconds": every[name]}
        log(f"{name}: {n_tok / t:.1f} new tok/s")
    if ref is None:
        ref = best["batched"][1]
    result["mismatches"] = {
        "spt_vs_single" if not args.skip_single else "spt_vs_batched":
            sum(1 for a, b in zip(best["spt"][1], ref, strict=True) if a != b),
        "batched_vs_single" if not args.skip_single else "batched_vs_batched":
            sum(1 for a, b in zip(best["batched"][1], ref, strict=True) if a != b),
    }
    rate = {k: result[k]["new_tokens_per_s"] for k in ("single", "batched", "spt") if k in result}
    result["ratios"] = {"spt_vs_batched": round(rate["spt"] / rate["batched"], 2)}
    if "single" in rate:
        result["ratios"]["spt_vs_single"] = round(rate["spt"] / rate["single"], 2)
        result["ratios"]["batched_vs_single"] = round(rate["batched"] / rate["single"], 2)
    result["outputs_identical"] = all(v == 0 for v in result["mismatches"].values())
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if torch.cuda.is_available() and next(model.parameters()).device.type == "cuda":
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        result["targets"] = {"ge_5x_batched_gpu": rate["spt"] / rate["batched"] >= 5}
    else:
        result["targets"] = {"ge_5x_batched_gpu": None, "note": "the 5x target is for GPU; CPU figures only"}
    emit(result)
    return result


if __name__ == "__main__":
    main()
