"""Completion-only loss without full-vocabulary logits for prompt tokens.

The decoder runs once on the packed rows; hidden states are gathered at the positions whose next
token is a completion token, and the language-model head plus cross-entropy run over those rows in
chunks. `LinearCrossEntropy` computes each chunk's gradient during the forward pass (softmax − one
hot, times the token weight), so no chunk of logits is kept for backward and none is recomputed:
peak extra memory is one [chunk × vocab] block.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spt.models.chat import IGNORE_INDEX

CHUNK_ELEMENTS = 1 << 24  # logits elements per chunk (64 MB in float32)


def causal_lm(model: Any) -> Any:
    """The transformers causal LM inside a peft / DDP / compiled wrapper."""
    m = model
    for _ in range(4):
        if hasattr(m, "module") and isinstance(m, nn.parallel.DistributedDataParallel):
            m = m.module
        elif hasattr(m, "_orig_mod"):
            m = m._orig_mod
        elif hasattr(m, "get_base_model") and hasattr(m, "peft_config"):
            m = m.get_base_model()
        else:
            break
    return m


class LinearCrossEntropy(torch.autograd.Function):
    """Σ_i w_i · CE(h_i Wᵀ, y_i), chunked over rows, gradients formed in the forward pass."""

    @staticmethod
    def forward(ctx, h, weight, targets, w, chunk, token_weight=None):  # type: ignore[override]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n = h.shape[0]
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        ce_all = torch.empty(n, dtype=torch.float32, device=h.device)
        gh = torch.empty_like(h) if need_h else None
        gw = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        for s in range(0, n, chunk):
            hc, yc, wc = h[s:s + chunk], targets[s:s + chunk], w[s:s + chunk]
            logits = (hc @ weight.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            ce = lse - logits.gather(1, yc[:, None]).squeeze(1)
            ce_all[s:s + chunk] = ce
            if token_weight is not None:  # a multiplier computed from this forward's own token losses
                wc = wc * token_weight(ce.detach(), slice(s, s + hc.shape[0])).to(wc.dtype)
            total += (ce * wc).sum()
            if need_h or need_w:
                g = torch.exp(logits - lse[:, None])
                g[torch.arange(g.shape[0], device=g.device), yc] -= 1.0
                g *= wc[:, None]
                g = g.to(h.dtype)
                if need_h:
                    gh[s:s + chunk] = g @ weight
                if need_w:
                    gw += (g.t() @ hc).float()
            del logits
        ctx.save_for_backward(gh if need_h else torch.empty(0), gw if need_w else torch.empty(0))
        ctx.need = (need_h, need_w)
        ctx.wdtype = weight.dtype
        ctx.mark_non_differentiable(ce_all)
        return total, ce_all

    @staticmethod
    def backward(ctx, grad_total, _grad_ce):  # type: ignore[override]
        gh, gw = ctx.saved_tensors
        need_h, need_w = ctx.need
        return (gh * grad_total.to(gh.dtype) if need_h else None,
                (gw * grad_total).to(ctx.wdtype) if need_w else None, None, None, None, None)


def completion_states(model: Any, input_ids: Any, position_ids: Any, labels: Any) -> tuple[Any, Any, Any, Any]:
    """(output head, hidden states that predict a completion token, those tokens, their flat positions).

    Position t of a row predicts labels[t+1]; only positions with a real next label are kept, so the head
    never runs on prompt tokens.
    """
    lm = causal_lm(model)
    decoder, head = lm.get_decoder(), lm.get_output_embeddings()
    out = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False)
    hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
    R, C, d = hidden.shape
    tgt = torch.full_like(labels, IGNORE_INDEX)
    tgt[:, :-1] = labels[:, 1:]
    flat = (tgt != IGNORE_INDEX).reshape(-1).nonzero().squeeze(1)
    return head, hidden.reshape(R * C, d).index_select(0, flat), tgt.reshape(-1).index_select(0, flat), flat


def completion_loss(model: Any, input_ids: Any, position_ids: Any, labels: Any, weights: Any,
                    chunk_elements: int = CHUNK_ELEMENTS, token_weight: Any = None) -> tuple[Any, Any, Any]:
    """(Σ w·CE over completion tokens, per-token CE (detached), flat positions of those tokens).

    Position t of a row predicts labels[t+1]; only positions with a real next label are evaluated.
    `token_weight(ce, sl)`, if given, multiplies the weights of the completion tokens in slice `sl` (of
    the flat order) by a value computed from their detached CE (token-wise constrained SFT): the weight
    is a constant of the backward pass, as in the authors' code.
    """
    head, h, y, flat = completion_states(model, input_ids, position_ids, labels)
    tw = torch.zeros_like(weights)
    tw[:, :-1] = weights[:, 1:]
    w = tw.reshape(-1).index_select(0, flat).to(torch.float32)
    vocab = head.weight.shape[0]
    chunk = max(64, chunk_elements // max(vocab, 1))
    if isinstance(head, nn.Linear) and head.bias is None and type(head) is nn.Linear:
        total, ce = LinearCrossEntropy.apply(h, head.weight, y, w, chunk, token_weight)
        return total, ce, flat
    # generic head (bias, adapter-wrapped): chunked with recomputation in backward
    from torch.utils.checkpoint import checkpoint

    def _chunk(hc, yc, wc):
        ce = F.cross_entropy(head(hc).float(), yc, reduction="none")
        return (ce * wc).sum(), ce.detach()

    total = h.new_zeros((), dtype=torch.float32)
    ces = []
    for s in range(0, h.shape[0], chunk):
        wc = w[s:s + chunk]
        if token_weight is not None:
            with torch.no_grad():
                ce0 = F.cross_entropy(head(h[s:s + chunk]).float(), y[s:s + chunk], reduction="none")
            wc = wc * token_weight(ce0, slice(s, s + ce0.shape[0])).to(wc.dtype)
        if torch.is_grad_enabled():
            t, ce = checkpoint(_chunk, h[s:s + chunk], y[s:s + chunk], wc, use_reentrant=False)
        else:
            t, ce = _chunk(h[s:s + chunk], y[s:s + chunk], wc)
        total = total + t
        ces.append(ce)
    return total, torch.cat(ces) if ces else h.new_zeros(0), flat


class LossModule(nn.Module):
    """Wraps the model so DDP (accelerate) sees one forward that returns the weighted loss."""

    def __init__(self, model: Any, chunk_elements: int = CHUNK_ELEMENTS):
        super().__init__()
        self.model = model
        self.chunk_elements = chunk_elements

    def forward(self, input_ids, position_ids, labels, weights, token_weight=None):  # type: ignore[override]
        return completion_loss(self.model, input_ids, position_ids, labels, weights, self.chunk_elements,
                               token_weight)


def reference_loss(model: Any, examples: list[Any], pad_id: int) -> Any:
    """The straightforward implementation: padded batch, full logits, mean CE over completion tokens."""
    L = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), L), pad_id, dtype=torch.long)
    lab = torch.full((len(examples), L), IGNORE_INDEX, dtype=torch.long)
    att = torch.zeros((len(examples), L), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        lab[i, :n] = torch.tensor(e.labels)
        att[i, :n] = 1
    logits = model(input_ids=ids, attention_mask=att).logits.float()
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX)
