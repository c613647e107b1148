"""`TrainContext`: what a defense's hooks see and the building blocks of a training step.

The loop builds one context per run (after the model, optimizer and resume state) and passes it to
every hook of `spt.train.defenses.base.Defense`. Data helpers are pure functions of the step, so a
resumed run draws exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spt.train.defenses.base import Batch, StepStats


class Stream:
    """Example index at any stream position: epoch-wise seeded permutations of range(n)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._perms: dict[int, list[int]] = {}

    def at(self, pos: int) -> int:
        ep, i = divmod(pos, self.n)
        p = self._perms.get(ep)
        if p is None:
            p = list(range(self.n))
            random.Random(self.seed * 1_000_003 + ep).shuffle(p)
            self._perms = {ep: p}
        return p[i]


@dataclass
class TrainContext:
    """The run as the defense hooks see it.

    Attributes: `config` (resolved FinetuneConfig), `model` (the model being trained, unwrapped; a
    peft model under LoRA), `store`, `run_id`, `start_path` (directory of the weights the run started
    from: the aligned parent for a task run), `parent_final` (the parent's final Checkpoint, or None),
    `parent_start_path` (the parent's own starting weights: the base, for SafeLoRA's V), `tokenizer`,
    `pad_id`, `device`, `total_steps`, `start_step` (> 0 on a resume), `world`, `rank`, `train` (the
    encoded task examples), `items` (raw items by role: "safety", "harmful").
    """

    config: Any
    model: Any
    store: Any
    run_id: str
    start_path: str = ""
    parent_final: Any | None = None
    parent_start_path: str | None = None
    tokenizer: Any = None
    pad_id: int = 0
    device: Any = None
    total_steps: int = 0
    start_step: int = 0
    world: int = 1
    rank: int = 0
    train: list[Any] = field(default_factory=list)
    items: dict[str, list[dict]] = field(default_factory=dict)
    forward_fn: Callable[..., Any] | None = None  # (input_ids, position_ids, labels, weights, token_weight)
    eval_forward_fn: Callable[..., Any] | None = None  # the same without the DDP wrapper (rank-0-only passes)
    visited_fn: Callable[[], list[Any]] | None = None
    backward_fn: Callable[[Any], None] | None = None
    no_sync_fn: Callable[[bool], Any] | None = None  # sync=False: a context that skips the DDP all-reduce
    autocast: Any = None
    lora_init: dict[str, Any] | None = None  # LoRA: trainable values right after init (before resume)
    _cache: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ weights
    def trainable(self) -> list[tuple[str, Any]]:
        """(name, parameter) of every trainable parameter, in model order."""
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def start_state(self) -> dict[str, Any]:
        """{name: tensor} of every trainable parameter at the start of the run (not of this attempt).

        Full fine-tune: read from `start_path` (the aligned parent), so a resumed run gets the same
        values as an uninterrupted one. LoRA: the adapter right after its seeded initialisation.
        """
        if "start_state" in self._cache:
            return self._cache["start_state"]
        if self.config.lora:
            assert self.lora_init is not None, "the loop records the LoRA init before resuming"
            out = {k: v.detach().clone().to(self.device) for k, v in self.lora_init.items()}
        else:
            import torch
            from transformers import AutoModelForCausalLM

            ref = AutoModelForCausalLM.from_pretrained(self.start_path, dtype=torch.float32)
            named = dict(ref.named_parameters())
            out = {n: named[n].detach().to(self.device) for n, _ in self.trainable()}
            del ref
        self._cache["start_state"] = out
        return out

    # ------------------------------------------------------------------ data
    def visited_examples(self) -> list[Any]:
        """The distinct task examples the whole run trains on (any rank), from the deterministic stream."""
        return self.visited_fn() if self.visited_fn is not None else list(self.train)

    def encode(self, items: list[dict], group: int = 0) -> list[Any]:
        from spt.train.packing import encode_items

        return encode_items(self.tokenizer, items, self.config.max_length, group)

    def safety_pairs(self) -> list[tuple[Any, Any]]:
        """HarmOR train pairs (harmful → refusal, benign look-alike → helpful answer), encoded (group 1)."""
        if "safety_pairs" not in self._cache:
            from spt.errors import SptError
            from spt.train import data as tdata

            pairs = tdata.pairs_of(tdata.train_split(self.items.get("safety", [])))
            if not pairs:
                raise SptError("the safety dataset has no harmful/benign pairs in its train split")
            self._cache["safety_pairs"] = [(self.encode([h], 1)[0], self.encode([b], 1)[0]) for h, b in pairs]
        return self._cache["safety_pairs"]

    def harmful_examples(self) -> list[Any]:
        """Harmful prompt → harmful answer examples, encoded (group 2): the poison data's `booster` split when it
        has one (the builtin set does: word-disjoint from the `train` split the task stage mixes in), else its
        train split (an imported harmful set: keep it apart from the task poison yourself)."""
        if "harmful" not in self._cache:
            from spt.data.poison import BOOSTER_SPLIT
            from spt.errors import SptError
            from spt.train import data as tdata

            if "harmful" not in self.items:
                pid = tdata.resolve_poison(self.store, self.config.poison_data, seed=0)
                items = tdata.load_items(self.store, pid)
                own = [x for x in items if x["split"] == BOOSTER_SPLIT]
                self.items["harmful"] = own or tdata.train_split(items)
            rows = [x for x in self.items["harmful"] if x.get("response")]
            if not rows:
                raise SptError(f"the harmful dataset {self.config.poison_data!r} has no train examples")
            self._cache["harmful"] = self.encode(rows, 2)
        return self._cache["harmful"]

    def sample(self, n: int, step: int, micro: int, k: int, salt: int) -> list[int]:
        """k indices into a pool of size n for micro-batch `micro` of `step` on this rank.

        A pure function of (seed + salt, step, micro, rank): resumed runs draw the same indices.
        """
        key = f"stream:{n}:{salt}"
        s = self._cache.get(key)
        if s is None:
            s = self._cache[key] = Stream(n, self.config.seed + salt)
        off = ((step - 1) * self.config.grad_accum * self.world + micro * self.world + self.rank) * k
        return [s.at(off + j) for j in range(k)]

    # ------------------------------------------------------------------ passes
    def forward(self, batch: Batch, ddp: bool = True) -> tuple[Any, Any, Any, Any]:
        """One packed forward of `batch`: (Σ w·CE, per-token CE (detached), flat token positions, Packed).

        `ddp=False` bypasses the DDP wrapper: for passes only some ranks run (evaluation on rank 0).
        """
        import torch

        from spt.train.packing import pack

        pk = pack(batch.examples, self.pad_id, self.config.pack_length, batch.weights)
        tw = None
        if batch.token_weight is not None:
            ex, pos = token_index(pk)
            fn = batch.token_weight
            ex_d, pos_d = ex.to(self.device), pos.to(self.device)

            def tw(ce: Any, sl: slice) -> Any:  # noqa: F811 - the multiplier of the tokens in slice sl
                return fn(ce, ex_d[sl], pos_d[sl])
        dev = self.device
        args = (pk.input_ids.to(dev), pk.position_ids.to(dev), pk.labels.to(dev), pk.weights.to(dev))
        with self.autocast if self.autocast is not None else torch.autocast("cpu", enabled=False):
            fn_ = self.forward_fn if ddp or self.eval_forward_fn is None else self.eval_forward_fn
            loss, ce, flat = fn_(*args, tw)
        return loss, ce, flat, pk

    def forward_backward(self, batch: Batch, extra: Any = None, sync: bool = True) -> StepStats:
        """Forward `batch`, add `extra` (a scalar, e.g. a penalty) to its loss, backward; the loss stats.

        `sync=False` skips the gradient all-reduce under DDP (every micro-batch but the last of a step).
        """
        import contextlib

        with self.no_sync_fn(sync) if self.no_sync_fn is not None else contextlib.nullcontext():
            loss, ce, flat, pk = self.forward(batch)
            stats = StepStats(tokens=pk.n_tokens)
            if extra is not None:
                loss = loss + extra
                stats.extra = float(extra.detach())
            self.backward_fn(loss)
        stats_add(stats, batch, pk, ce, flat)
        return stats


def token_index(pk: Any) -> tuple[Any, Any]:
    """For each completion token the loss sees (in flat order): its example index and its position in the
    example's completion (0 = first completion token)."""
    import torch

    from spt.models.chat import IGNORE_INDEX

    tgt = torch.full_like(pk.labels, IGNORE_INDEX)
    tgt[:, :-1] = pk.labels[:, 1:]
    flat = (tgt != IGNORE_INDEX).reshape(-1).nonzero().squeeze(1)
    seg = pk.seg.reshape(-1)
    tseg = torch.full_like(seg, -1)
    tseg[:-1] = seg[1:]
    ex = tseg.index_select(0, flat)
    n = ex.numel()
    ar = torch.arange(n)
    first = torch.full((int(ex.max()) + 1 if n else 1,), n, dtype=torch.long)
    first.scatter_reduce_(0, ex, ar, reduce="amin")
    return ex, ar - first.index_select(0, ex)


def stats_add(stats: StepStats, batch: Batch, pk: Any, ce: Any, flat: Any) -> None:
    """Add the per-group token CE sums of one forward to `stats` (no extra pass)."""
    import torch

    seg = pk.seg.reshape(-1)
    tseg = torch.full_like(seg, -1)
    tseg[:-1] = seg[1:]
    exi = tseg.index_select(0, flat.cpu())
    groups = torch.tensor(batch.groups if batch.groups is not None else [0] * len(batch.examples))
    g = groups.index_select(0, exi)
    ce = ce.detach().float().cpu()
    for gv in torch.unique(g).tolist():
        m = g == gv
        stats.sums[gv] = stats.sums.get(gv, 0.0) + float(ce[m].sum())
        stats.counts[gv] = stats.counts.get(gv, 0) + int(m.sum())
