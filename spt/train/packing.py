"""Encoding examples and packing them into padding-free rows.

Every example is encoded once with `spt.models.encode_example` (the chat template evaluation uses;
prompt tokens labelled -100). A micro-batch is packed first-fit-decreasing into rows of capacity
`max(longest example, pack_length)`; each example keeps its own `position_ids` starting at 0, and the
model gets no 2-D attention mask, so transformers builds a block-diagonal causal mask from the
position ids (sdpa/eager) or uses varlen kernels (flash attention): attention never crosses examples.
Only the tail of a row can be padding (its own position run, label -100, weight 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spt.models.chat import IGNORE_INDEX


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    group: int = 0  # 0 task/train data, 1 safety batch (anchor), eval: 0 harmful / 1 benign
    item_id: str | None = None

    @property
    def n_completion(self) -> int:
        return sum(1 for t in self.labels[1:] if t != IGNORE_INDEX)


def encode_items(tokenizer: Any, items: list[dict], max_length: int, group: int = 0) -> list[Encoded]:
    from spt.models.chat import encode_example

    out = []
    for it in items:
        e = encode_example(tokenizer, it["prompt"], it.get("response") or "", max_length)
        out.append(Encoded(e["input_ids"], e["labels"], group, it.get("id")))
    return out


@dataclass
class Packed:
    input_ids: Any  # [R, C] long
    position_ids: Any  # [R, C] long
    labels: Any  # [R, C] long
    weights: Any  # [R, C] float: loss weight of the token predicted at this position's label
    seg: Any  # [R, C] long: index of the example in the packed list, -1 for padding
    n_tokens: int  # real (non-padding) tokens


def pack(examples: list[Encoded], pad_id: int, pack_length: int = 0,
         token_weights: list[float] | None = None) -> Packed:
    """Pack `examples` into rows; `token_weights[i]` is the loss weight of each completion token of example i."""
    import torch

    lens = [len(e.input_ids) for e in examples]
    cap = max([pack_length, *lens])
    order = sorted(range(len(examples)), key=lambda i: (-lens[i], i))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for r, free in enumerate(room):
            if free >= lens[i]:
                rows[r].append(i)
                room[r] -= lens[i]
                break
        else:
            rows.append([i])
            room.append(cap - lens[i])
    width = max(cap - min(room), 1) if rows else 1
    R = len(rows)
    ids = torch.full((R, width), pad_id, dtype=torch.long)
    pos = torch.zeros((R, width), dtype=torch.long)
    lab = torch.full((R, width), IGNORE_INDEX, dtype=torch.long)
    w = torch.zeros((R, width), dtype=torch.float32)
    seg = torch.full((R, width), -1, dtype=torch.long)
    for r, members in enumerate(rows):
        o = 0
        for i in members:
            e, n = examples[i], lens[i]
            ids[r, o:o + n] = torch.tensor(e.input_ids)
            pos[r, o:o + n] = torch.arange(n)
            lab[r, o:o + n] = torch.tensor(e.labels)
            # labels are shifted inside the loss: position t predicts labels[t+1]; the first label of
            # an example is never predicted from the previous example (it is always a prompt token).
            lab[r, o] = IGNORE_INDEX
            if token_weights is not None:
                w[r, o:o + n] = token_weights[i]
            seg[r, o:o + n] = i
            o += n
        if o < width:  # tail padding: its own position run, so it forms its own attention block
            pos[r, o:] = torch.arange(width - o)
    return Packed(ids, pos, lab, w, seg, sum(lens))
