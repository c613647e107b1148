"""Batched generation: prompts sorted by length, left padding, greedy or seeded sampling.

`generate_batched` is the one entry point (also used by `bench/generate_throughput.py`). It renders
each prompt with the model's chat template (`spt.models.prompt_ids`, the same tokens training saw),
sorts by length so a batch wastes little padding, left-pads, and calls `model.generate`. Results come
back in input order; `on_batch` sees each batch as soon as it is done, so callers can commit rows as
they go.

On CUDA the batches use a static KV cache and prompt lengths padded to a bucket (multiple of
`BUCKET`) so compiled shapes repeat; on CPU the dynamic cache is faster and is what the tests cover.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

BUCKET = 32
CPU_AUTO_BATCH = 16
MAX_AUTO_BATCH = 256


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token id that ends a response (generation config's and the tokenizer's eos)."""
    ids: list[int] = []
    gc_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for v in (gc_eos if isinstance(gc_eos, list) else [gc_eos]) + [tokenizer.eos_token_id]:
        if v is not None and v not in ids:
            ids.append(int(v))
    return ids


def auto_batch_size(model: Any, max_len: int, max_new_tokens: int) -> int:
    """A batch size that fits: CPU 16; on CUDA from free memory and the KV-cache size per sequence."""
    import torch

    device = next(model.parameters()).device
    if device.type != "cuda":
        return CPU_AUTO_BATCH
    free, _total = torch.cuda.mem_get_info(device)
    cfg = model.config
    layers = getattr(cfg, "num_hidden_layers", 24)
    heads = getattr(cfg, "num_attention_heads", 16)
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    elt = next(model.parameters()).element_size()
    seq = max_len + max_new_tokens
    per_seq = 2 * layers * kv_heads * head_dim * elt * seq  # K and V
    per_seq += cfg.vocab_size * 4 * 2  # last-step logits (float32) and sampling work space
    per_seq += cfg.hidden_size * elt * seq * 8  # activations of the prefill
    n = int(free * 0.6 // max(per_seq, 1))
    return max(1, min(MAX_AUTO_BATCH, n))


def _encode(tokenizer: Any, prompts: Sequence[str], chat: bool) -> list[list[int]]:
    from spt.models.chat import prompt_ids

    if chat and getattr(tokenizer, "chat_template", None):
        return [prompt_ids(tokenizer, p) for p in prompts]
    return [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]


def generate_batched(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int | str = "auto",
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    chat: bool = True,
    sort: bool = True,
    static_cache: bool | None = None,
    on_batch: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Generate one response per prompt; a list of dicts in input order.

    Each dict: index, prompt, response, token_ids (new tokens, eos included when produced),
    n_prompt_tokens, n_new_tokens, finish_reason (eos | length), latency_s (wall time of its batch),
    batch_size. Greedy when `temperature` is 0, else sampling seeded per batch from `seed` and the
    batch's first prompt index, so a given batch composition reproduces.
    """
    import torch

    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    encoded = _encode(tokenizer, prompts, chat)
    order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i)) if sort else list(range(len(prompts)))
    if not order:
        return []
    device = next(model.parameters()).device
    if batch_size == "auto" or batch_size is None:
        bs = auto_batch_size(model, max(len(e) for e in encoded), max_new_tokens)
    else:
        bs = int(batch_size)
        if bs < 1:
            raise ValueError("batch_size must be >= 1")
    use_static = device.type == "cuda" if static_cache is None else static_cache
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop = eos_ids(model, tokenizer)
    stop_set = set(stop)

    gen_kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens, "pad_token_id": pad_id, "eos_token_id": stop,
        "do_sample": temperature > 0,
    }
    if temperature > 0:
        gen_kwargs.update(temperature=float(temperature), top_p=float(top_p), top_k=0)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    if use_static:
        gen_kwargs["cache_implementation"] = "static"

    results: list[dict | None] = [None] * len(prompts)
    for start in range(0, len(order), bs):
        idx = order[start:start + bs]
        width = max(len(encoded[i]) for i in idx)
        if use_static:
            width = -(-width // BUCKET) * BUCKET
        input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        attn = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            ids = encoded[i]
            input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attn[r, width - len(ids):] = 1
        if temperature > 0:
            torch.manual_seed(seed * 1_000_003 + idx[0])
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids.to(device), attention_mask=attn.to(device), **gen_kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        new = out[:, width:].tolist()
        batch: list[dict] = []
        for r, i in enumerate(idx):
            toks = new[r]
            finish = "length"
            for k, t in enumerate(toks):
                if t in stop_set:
                    toks = toks[: k + 1]
                    finish = "eos"
                    break
            body = [t for t in toks if t not in stop_set]
            res = {
                "index": i, "prompt": prompts[i],
                "response": tokenizer.decode(body, skip_special_tokens=True),
                "token_ids": toks, "n_prompt_tokens": len(encoded[i]), "n_new_tokens": len(toks),
                "finish_reason": finish, "latency_s": dt, "batch_size": len(idx),
            }
            results[i] = res
            batch.append(res)
        if on_batch is not None:
            on_batch(batch)
    return [r for r in results if r is not None]
