"""SafeLoRA after a full-fine-tune alignment (the paper's setting: V = W_aligned − W_base has full rank).

The paper's C = V Vᵀ/‖V‖_F with the authors' top-k-lowest-similarity selection projects modules at the
default settings; the exact orthogonal projector is the identity there, and the run says so."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

from spt.train import FinetuneConfig, finetune
from spt.train.defenses.safelora import select

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import FAST, mini_data  # noqa: E402


def test_select_lowest_k_and_threshold():
    s = [0.9, 0.1, 0.5, 0.1, 0.7]
    assert select(s, "number", 2, 0.0) == [False, True, False, True, False]
    assert select(s, "number", 3, 0.0) == [False, True, True, True, False]
    assert select([0.2, 0.2, 0.9], "number", 1, 0.0) == [True, True, False]  # ties at the k-th project too
    assert select(s, "threshold", 10, 0.6) == [False, True, True, True, False]


def test_defaults_and_lam_selects_threshold():
    c = FinetuneConfig(from_run="x", defense="safelora").resolve()
    assert (c.safelora_mode, c.safelora_select, c.safelora_layers, c.lam) == ("paper", "number", 10, None)
    c = FinetuneConfig(from_run="x", defense="safelora", lam=0.3).resolve()  # recipes written for τ keep τ
    assert c.safelora_select == "threshold" and "safelora_layers" not in c.identity_fields()


def test_full_ft_alignment_default_projects_and_exact_warns(store):
    d = mini_data(store)
    align = finetune(store, FinetuneConfig(model="tiny-random", stage="align", lora=False, max_steps=3, lr=1e-3,
                                           safety_data=d["safety_data"], **FAST))
    common = dict(from_run=align.run_id, defense="safelora", max_steps=3, **d, **FAST)
    res = finetune(store, FinetuneConfig(**common, safelora_layers=3))
    rec = res.post_train
    assert rec["aligned_delta"] == "full" and rec["mode"] == "paper" and rec["select"] == "number"
    assert rec["n_modules"] == 4 and rec["n_projected"] == 3 and not rec["no_op"]
    sims = {x["module"]: x["similarity"] for x in rec["layers"]}
    unprojected = [m for m in sims if m not in rec["projected"]]
    assert all(sims[m] >= max(sims[p] for p in rec["projected"]) for m in unprojected)  # the lowest k
    assert all(x["rel_change"] > 1e-3 for x in rec["layers"] if x["projected"])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ex = finetune(store, FinetuneConfig(**common, safelora_mode="exact")).post_train
    # q_proj 64×64 and v_proj 32×64 of a full fine-tune: V has full row rank, U Uᵀ = I
    assert ex["projector_identity"] and ex["n_projector_identity"] == 4 and ex["no_op"]
    assert "identity" in ex["warning"] and any("safelora changed nothing" in str(x.message) for x in w)


def test_full_ft_projection_matches_explicit_c(store):
    """The Gram-matrix similarity equals cos(vec(CΔW), vec(ΔW)) with C and ΔW materialised."""
    from spt.train.defenses.safelora import projector_apply, similarity

    torch.manual_seed(0)
    V = torch.randn(32, 64)  # full row rank, as after a full fine-tune
    B, A = torch.randn(32, 4), torch.randn(4, 64)
    C = V @ V.t() / torch.linalg.norm(V)
    PB, ident = projector_apply(V, B, "paper")
    assert not ident
    dW = B @ A
    cos = torch.nn.functional.cosine_similarity((C @ dW).flatten(), dW.flatten(), dim=0)
    assert similarity(B, PB, A) == pytest.approx(float(cos), abs=1e-5)
    _, ident = projector_apply(V, B, "exact")
    assert ident


def test_finetune_reports_the_projection_in_the_defense_s_own_words():
    from spt.train import get_defense

    rec = {"mode": "paper", "n_projected": 2, "n_modules": 4, "select": "top_k", "k": 2}
    line = get_defense("safelora").describe_record(rec)
    assert line == "safelora (paper) projected 2/4 modules (k=2 lowest similarity)"
    assert get_defense("safelora").describe_record({**rec, "select": "threshold", "tau": 0.5}).endswith("(τ=0.5)")
    assert get_defense("lisa").describe_record({"steps_align": 4}) is None  # nothing worth a line
