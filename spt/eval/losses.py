"""Teacher-forced losses: cross-entropy of reference responses, completion tokens only.

Examples are encoded with `spt.models.encode_example` (the chat format training uses), sorted by
length and left-padded, so every row's completion sits at the end of the batch; the model then
returns logits only for the last `max completion length + 1` positions (`logits_to_keep`), never a
[tokens x vocab] tensor for the prompts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from spt.models.chat import IGNORE_INDEX


def example_losses(
    model: Any,
    tokenizer: Any,
    examples: Sequence[tuple[str, str]],
    *,
    batch_size: int = 8,
    max_length: int = 1024,
    on_batch: Callable[[int], None] | None = None,
) -> list[dict]:
    """Per example (prompt, response): {"loss": mean token CE, "sum": summed CE, "n_tokens": n}.

    In input order. An example whose completion is empty gets loss None and n_tokens 0.
    """
    import torch
    import torch.nn.functional as F

    from spt.models.chat import encode_example

    enc = [encode_example(tokenizer, p, r, max_length) for p, r in examples]
    order = sorted(range(len(enc)), key=lambda i: (-len(enc[i]["input_ids"]), i))
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    accepts_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
    out: list[dict | None] = [None] * len(enc)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(enc[i]["input_ids"]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        labels = torch.full((len(idx), width), IGNORE_INDEX, dtype=torch.long)
        attn = torch.zeros((len(idx), width), dtype=torch.long)
        first_label = width
        for r, i in enumerate(idx):
            e = enc[i]
            n = len(e["input_ids"])
            ids[r, width - n:] = torch.tensor(e["input_ids"])
            labels[r, width - n:] = torch.tensor(e["labels"])
            attn[r, width - n:] = 1
            lab = [k for k, v in enumerate(e["labels"]) if v != IGNORE_INDEX]
            if lab:
                first_label = min(first_label, width - n + lab[0])
        keep = max(width - first_label + 1, 2) if first_label < width else 2
        keep = min(keep, width)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        kwargs: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": attn.to(device),
                                  "position_ids": pos.to(device), "use_cache": False}
        if accepts_keep:
            kwargs["logits_to_keep"] = keep
        with torch.inference_mode():
            logits = model(**kwargs).logits
        logits = logits[:, -keep:, :].float()
        # logits[:, j] predicts token at position (width - keep + j + 1).
        tgt = labels[:, width - keep + 1:].to(device)
        ce = F.cross_entropy(
            logits[:, :-1, :].reshape(-1, logits.shape[-1]), tgt.reshape(-1),
            ignore_index=IGNORE_INDEX, reduction="none",
        ).view(len(idx), keep - 1)
        mask = (tgt != IGNORE_INDEX)
        sums = (ce * mask).sum(-1).tolist()
        counts = mask.sum(-1).tolist()
        for r, i in enumerate(idx):
            n = int(counts[r])
            out[i] = {"loss": (sums[r] / n) if n else None, "sum": float(sums[r]), "n_tokens": n}
        if on_batch is not None:
            on_batch(len(idx))
    return [o for o in out if o is not None]
