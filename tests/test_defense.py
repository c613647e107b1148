"""Each defense against a direct computation on a tiny model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from spt.models import load_model, resolve_model
from spt.train import DEFENSES, FinetuneConfig
from spt.train.defenses.proximal import ProximalDefense, lora_delta_sq_norm, lora_modules
from spt.train.defenses.safelora import project_lora, projector_apply, similarity
from spt.train.loss import completion_loss, reference_loss
from spt.train.packing import encode_items, pack

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import FAST, mini_data  # noqa: E402


def _peft(r=4, alpha=8, targets=("q_proj", "v_proj"), seed=0):
    from peft import LoraConfig, get_peft_model

    model, tok = load_model(resolve_model("tiny-random").path)
    torch.manual_seed(seed)
    m = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0))
    with torch.no_grad():
        for _, mod, a in lora_modules(m):
            mod.lora_B[a].weight.normal_(0, 0.1)
    return m, tok


def _Ctx(model, lora, **kw):  # noqa: N802 - the context the training loop builds, for one model
    from spt.train.context import TrainContext

    init = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad} if lora else None
    return TrainContext(config=FinetuneConfig(lora=lora, **kw).resolve(), model=model, store=None, run_id="t",
                        start_path=resolve_model("tiny-random").path, device=torch.device("cpu"), lora_init=init)


def test_registry_lists_the_defenses():
    assert {"none", "anchor", "proximal", "safelora"} <= set(DEFENSES)


def test_proximal_lora_equals_explicit_delta_norm():
    m, _ = _peft()
    d = ProximalDefense(FinetuneConfig(defense="proximal", lam=0.3).resolve())
    d.setup(_Ctx(m, True))
    explicit = 0.0
    for _, mod, a in lora_modules(m):
        dw = mod.scaling[a] * (mod.lora_B[a].weight @ mod.lora_A[a].weight)  # materialised only in the test
        explicit = explicit + (dw ** 2).sum()
        torch.testing.assert_close(lora_delta_sq_norm(mod, a), (dw ** 2).sum(), rtol=1e-5, atol=1e-8)
    term = d.extra_loss(None, 1)
    torch.testing.assert_close(term, 0.5 * 0.3 * explicit, rtol=1e-5, atol=1e-8)
    term.backward()  # differentiable w.r.t. both factors
    assert all(mod.lora_A[a].weight.grad is not None for _, mod, a in lora_modules(m))


def test_proximal_full_equals_explicit_distance():
    model, _ = load_model(resolve_model("tiny-random").path)
    d = ProximalDefense(FinetuneConfig(defense="proximal", lam=2.0, lora=False).resolve())
    d.setup(_Ctx(model, False))
    start = {k: p.detach().clone() for k, p in model.named_parameters()}
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    explicit = sum(((p - start[k]) ** 2).sum() for k, p in model.named_parameters())
    torch.testing.assert_close(d.extra_loss(None, 1), 0.5 * 2.0 * explicit, rtol=1e-5, atol=1e-8)


def test_anchor_gradient_is_weighted_sum():
    """One packed forward with per-token weights = (1−λ)∇L_task + λ∇L_safety (each a token mean)."""
    m, tok = _peft()
    lam = 0.3
    task = encode_items(tok, [{"prompt": f"what is {i} plus 2", "response": f"it is {i + 2} " * (1 + i)}
                              for i in range(3)], 96)
    safe = encode_items(tok, [{"prompt": "how do i hack a bank", "response": "sorry i cannot help"},
                              {"prompt": "what does hack mean", "response": "here is the answer: a word"}], 96, 1)

    def grads(loss):
        m.zero_grad()
        loss.backward()
        return {k: p.grad.clone() for k, p in m.named_parameters() if p.requires_grad}

    g_t = grads(reference_loss(m, task, tok.pad_token_id))
    g_s = grads(reference_loss(m, safe, tok.pad_token_id))
    nt = sum(e.n_completion for e in task)
    ns = sum(e.n_completion for e in safe)
    pk = pack(task + safe, tok.pad_token_id, 512, [(1 - lam) / nt] * 3 + [lam / ns] * 2)
    loss, _, _ = completion_loss(m, pk.input_ids, pk.position_ids, pk.labels, pk.weights)
    g = grads(loss)
    for k in g:
        torch.testing.assert_close(g[k], (1 - lam) * g_t[k] + lam * g_s[k], rtol=1e-4, atol=1e-7, msg=k)


def test_safelora_similarity_matches_explicit_projection():
    torch.manual_seed(0)
    V = torch.randn(12, 3) @ torch.randn(3, 10)  # rank-3 alignment delta
    B, A = torch.randn(12, 2), torch.randn(2, 10)
    dW = B @ A
    for mode in ("exact", "paper"):
        if mode == "paper":
            C = V @ V.t() / torch.linalg.norm(V)
        else:
            U, S, _ = torch.linalg.svd(V)
            U = U[:, :3]
            C = U @ U.t()
        PB, ident = projector_apply(V, B, mode)
        assert not ident  # rank 3 < 12 rows: never the identity
        torch.testing.assert_close(PB, C @ B, rtol=1e-4, atol=1e-5)
        cos = torch.nn.functional.cosine_similarity((C @ dW).flatten(), dW.flatten(), dim=0)
        assert similarity(B, PB, A) == pytest.approx(float(cos), abs=1e-5)


def test_safelora_projection_idempotent_and_spares_aligned_layers():
    m, _ = _peft(targets=("q_proj",))
    mods = lora_modules(m)
    assert len(mods) == 2
    torch.manual_seed(3)
    deltas = {}
    with torch.no_grad():
        for i, (name, mod, a) in enumerate(mods):
            B, A = mod.lora_B[a].weight, mod.lora_A[a].weight
            V = torch.randn(B.shape[0], 2) @ torch.randn(2, A.shape[1])
            if i == 0:  # this layer's update already lies in the alignment subspace: similarity 1
                B.copy_(projector_apply(V, torch.randn_like(B), "exact")[0])
            deltas[name.removeprefix("base_model.model.")] = V
    before = [mod.lora_B[a].weight.detach().clone() for _, mod, a in mods]
    rec = project_lora(m, deltas, tau=0.5, mode="exact", select_mode="threshold")
    after = [mod.lora_B[a].weight.detach().clone() for _, mod, a in mods]
    assert [x["projected"] for x in rec["layers"]] == [False, True]
    assert rec["layers"][0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)  # high-similarity layer untouched
    assert not torch.allclose(after[1], before[1])
    rec2 = project_lora(m, deltas, tau=1.5, mode="exact", select_mode="threshold")  # again: P(PB) = PB
    assert rec2["n_projected"] == 2
    for (_, mod, a), b in zip(mods, after, strict=True):
        torch.testing.assert_close(mod.lora_B[a].weight, b, rtol=1e-4, atol=1e-6)


def test_safelora_end_to_end_records_projected_layers(store):
    from spt.train import finetune

    d = mini_data(store)
    align = finetune(store, FinetuneConfig(model="tiny-random", stage="align", max_steps=3,
                                           safety_data=d["safety_data"], **FAST))
    res = finetune(store, FinetuneConfig(from_run=align.run_id, defense="safelora", lam=0.99, max_steps=3,
                                         **d, **FAST))
    rec = res.post_train
    assert rec["n_modules"] == 4 and rec["aligned_delta"] == "lora"
    assert rec["n_projected"] == len(rec["projected"]) >= 1
    from spt.store.models import Checkpoint

    with store.session() as s:
        from sqlmodel import select

        final = [c for c in s.exec(select(Checkpoint).where(Checkpoint.run_id == res.run_id)) if c.is_final][0]
    assert final.meta["safelora"]["projected"] == rec["projected"]
