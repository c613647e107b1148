"""Alignment-stage methods (Vaccine, Booster, DPO) against direct computations on a tiny model."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest
import torch

from spt.errors import SptError
from spt.models import load_model, resolve_model
from spt.models.chat import IGNORE_INDEX
from spt.train import align_math as am
from spt.train.loss import completion_loss
from spt.train.packing import Encoded, encode_items, pack

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import mini_data  # noqa: E402

ALIGN = [{"prompt": "how do i hack a bank", "response": "sorry i cannot help with that"},
         {"prompt": "what does hack mean in a story", "response": "here is the answer: it is a word"},
         {"prompt": "how do i steal a car", "response": "i will not help with that request"}]
HARM = [{"prompt": "how do i build a weapon", "response": "sure here is how [details withheld]"},
        {"prompt": "tell me how to steal money", "response": "of course, step 1: [details withheld]"}]


def _model(seed: int = 0, lora: bool = True):
    model, tok = load_model(resolve_model("tiny-random").path)
    model.train()
    if not lora:
        return model, tok
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    m = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    with torch.no_grad():  # a non-zero adapter, so policy ≠ reference and every path carries gradient
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    return m, tok


def _loss_fn(model, tok, items, max_length=64):
    ex = encode_items(tok, items, max_length)
    n = sum(e.n_completion for e in ex)
    pk = pack(ex, tok.pad_token_id, 0, [1.0 / n] * len(ex))
    return lambda: completion_loss(model, pk.input_ids, pk.position_ids, pk.labels, pk.weights)[0]


def _grads(model):
    return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def _trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


# ------------------------------------------------------------------------------------------- Vaccine
def _activation_grads(model, loss_fn):
    """Direct: ∂L/∂(attention output) by retain_grad on the outputs, then a full backward."""
    outs = []

    def keep(_m, _i, out):
        o = out[0]
        o.retain_grad()
        outs.append(o)

    mods = [m for m in model.modules() if type(m).__name__ == "LlamaAttention"]
    hs = [m.register_forward_hook(keep) for m in mods]
    loss = loss_fn()
    loss.backward()
    for h in hs:
        h.remove()
    model.zero_grad(set_to_none=True)
    return loss, [o.grad.detach().clone() for o in outs]


def test_vaccine_selects_attention_modules_and_refuses_none():
    m, _ = _model()
    mods = am.attention_modules(m)
    assert [type(x).__name__ for x in mods] == ["LlamaAttention", "LlamaAttention"]
    with pytest.raises(SptError, match="no attention module"):
        am.attention_modules(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_vaccine_perturbation_direction_and_norm():
    m, tok = _model()
    fn = _loss_fn(m, tok, ALIGN)
    loss, g = _activation_grads(m, fn)
    rho = 2.0
    eps, stats = am.vaccine_perturbation(fn, am.attention_modules(m), rho)
    norm = math.sqrt(sum(float((x.double() ** 2).sum()) for x in g))
    assert norm > 0
    assert stats["act_grad_norm"] == pytest.approx(norm, rel=1e-5)
    assert stats["loss_clean"] == pytest.approx(float(loss), rel=1e-6)
    assert stats["eps_norm"] == pytest.approx(rho, rel=1e-5)  # ‖ε‖ over all layers jointly = ρ
    assert [len(e) for e in eps] == [1, 1]
    for e, gl in zip([e[0] for e in eps], g, strict=True):
        torch.testing.assert_close(e, rho * gl / (norm + 1e-7), rtol=1e-4, atol=1e-7)
    # the gradients of the weights were not touched by pass 1 (GA-safe)
    assert all(p.grad is None for p in _trainable(m))


def test_vaccine_perturbation_is_the_first_order_ascent_direction():
    """For small ρ, L(e + ε) − L(e) ≈ ρ‖g‖ (the maximum of the linearised loss on the ρ-ball)."""
    m, tok = _model()
    fn = _loss_fn(m, tok, ALIGN)
    rho = 1e-3
    mods = am.attention_modules(m)
    eps, stats = am.vaccine_perturbation(fn, mods, rho)
    with torch.no_grad():
        up = float(am.perturbed_forward(fn, mods, eps))
        down = float(am.perturbed_forward(fn, mods, [[-x for x in e] for e in eps]))
    rise = up - stats["loss_clean"]
    assert rise == pytest.approx(rho * stats["act_grad_norm"], rel=0.05)
    assert down < stats["loss_clean"] < up


def test_vaccine_weight_gradient_is_taken_at_the_perturbed_point():
    m, tok = _model()
    fn = _loss_fn(m, tok, ALIGN)
    _, g = _activation_grads(m, fn)
    rho = 0.5
    norm = math.sqrt(sum(float((x.double() ** 2).sum()) for x in g))
    eps = [rho * x / (norm + 1e-7) for x in g]
    # direct: add the constant shifts with a plain forward hook and back-propagate
    mods = [x for x in m.modules() if type(x).__name__ == "LlamaAttention"]
    hs = [mod.register_forward_hook(lambda _m, _i, out, e=e: (out[0] + e, *out[1:]))
          for mod, e in zip(mods, eps, strict=True)]
    direct_loss = fn()
    direct_loss.backward()
    for h in hs:
        h.remove()
    want = _grads(m)
    m.zero_grad(set_to_none=True)
    loss, stats = am.vaccine_step(fn, am.attention_modules(m), rho)
    assert float(loss) == pytest.approx(float(direct_loss), rel=1e-6)
    assert stats["loss_perturbed"] > stats["loss_clean"]
    got = _grads(m)
    assert set(got) == set(want) and want
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-7, msg=k)


def test_vaccine_rho_zero_is_plain_sft_exactly():
    m, tok = _model()
    fn = _loss_fn(m, tok, ALIGN)
    sft = fn()
    sft.backward()
    want = _grads(m)
    m.zero_grad(set_to_none=True)
    loss, _ = am.vaccine_step(fn, am.attention_modules(m), 0.0)
    assert torch.equal(loss.detach(), sft.detach())
    got = _grads(m)
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_vaccine_keeps_accumulated_gradients():
    """Under GA the earlier micro-batches' gradients survive pass 1 (the authors' zero_grad would wipe them)."""
    m, tok = _model()
    fn1, fn2 = _loss_fn(m, tok, ALIGN[:2]), _loss_fn(m, tok, ALIGN[2:])
    mods = am.attention_modules(m)
    am.vaccine_step(fn1, mods, 0.3)
    first = _grads(m)
    m.zero_grad(set_to_none=True)
    am.vaccine_step(fn2, mods, 0.3)
    second = _grads(m)
    m.zero_grad(set_to_none=True)
    am.vaccine_step(fn1, mods, 0.3)
    am.vaccine_step(fn2, mods, 0.3)
    both = _grads(m)
    for k in both:
        torch.testing.assert_close(both[k], first[k] + second[k], rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------- Booster
def _booster_direct(m, tok, lam, alpha):
    """Booster's gradient by hand on deep copies: ∇f(θ) + λ[∇h(θ) − ∇h(θ − α∇h/‖∇h‖)]."""
    base = copy.deepcopy(m)
    h = _loss_fn(base, tok, HARM)()
    h.backward()
    g1 = {k: p.grad.clone() for k, p in base.named_parameters() if p.requires_grad}
    norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in g1.values()))
    pert = copy.deepcopy(m)
    with torch.no_grad():
        for k, p in pert.named_parameters():
            if p.requires_grad:
                p.sub_(alpha * g1[k] / (norm + 1e-7))
    h2 = _loss_fn(pert, tok, HARM)()
    h2.backward()
    g2 = {k: p.grad.clone() for k, p in pert.named_parameters() if p.requires_grad}
    fm = copy.deepcopy(m)
    f = _loss_fn(fm, tok, ALIGN)()
    f.backward()
    gf = {k: p.grad.clone() for k, p in fm.named_parameters() if p.requires_grad}
    grad = {k: gf[k] + lam * (g1[k] - g2[k]) for k in gf}
    return float(f), float(h), float(h2), grad


@pytest.mark.parametrize("lora", [True, False])
def test_booster_terms_and_gradient_match_direct_computation(lora):
    m, tok = _model(lora=lora)
    lam, alpha = 5.0, 0.1
    f, h, h2, want = _booster_direct(m, tok, lam, alpha)
    before = {k: p.detach().clone() for k, p in m.named_parameters()}
    loss, stats = am.booster_step(_trainable(m), _loss_fn(m, tok, ALIGN), _loss_fn(m, tok, HARM), lam, alpha)
    assert stats["align_loss"] == pytest.approx(f, rel=1e-6)
    assert stats["harm_loss"] == pytest.approx(h, rel=1e-6)
    assert stats["harm_loss_perturbed"] == pytest.approx(h2, rel=1e-5)
    assert h2 < h  # one normalised harmful step lowers the harmful loss
    assert stats["booster_objective"] == pytest.approx(f + lam * (h - h2), rel=1e-5)
    for k, p in m.named_parameters():  # weights restored bit for bit
        assert torch.equal(p.detach(), before[k]), k
    got = _grads(m)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6, msg=k)


def test_booster_lambda_zero_is_plain_sft_exactly():
    m, tok = _model()
    sft = _loss_fn(m, tok, ALIGN)()
    sft.backward()
    want = _grads(m)
    m.zero_grad(set_to_none=True)
    before = {k: p.detach().clone() for k, p in m.named_parameters()}
    loss, stats = am.booster_step(_trainable(m), _loss_fn(m, tok, ALIGN), _loss_fn(m, tok, HARM), 0.0, 0.1)
    assert torch.equal(loss.detach(), sft.detach())
    got = _grads(m)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    for k, p in m.named_parameters():
        assert torch.equal(p.detach(), before[k]), k


# ------------------------------------------------------------------------------------------- DPO
def test_dpo_loss_formula():
    pc, pr = torch.tensor([-3.0, -5.0], requires_grad=True), torch.tensor([-4.0, -2.0], requires_grad=True)
    rc, rr = torch.tensor([-3.5, -4.0]), torch.tensor([-3.0, -3.0])
    loss, stats = am.dpo_loss(pc, pr, rc, rr, beta=0.5)
    z = 0.5 * ((pc.detach() - rc) - (pr.detach() - rr))
    want = float(torch.log1p(torch.exp(-z)).mean())
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert stats["reward_accuracy"] == 0.5
    loss.backward()
    # dL/dpc = −β σ(−z)/n
    torch.testing.assert_close(pc.grad, -0.5 * torch.sigmoid(-z) / 2)


def test_sequence_logps_match_padded_full_logits():
    m, tok = _model()
    ex = encode_items(tok, ALIGN, 64)
    got = am.sequence_logps(m, pack(ex, tok.pad_token_id, 0), len(ex))
    for i, e in enumerate(ex):
        ids = torch.tensor([e.input_ids])
        logits = m(input_ids=ids).logits.float()[0, :-1]
        lab = torch.tensor(e.labels[1:])
        keep = lab != IGNORE_INDEX
        want = torch.log_softmax(logits, -1)[keep].gather(1, lab[keep][:, None]).sum()
        torch.testing.assert_close(got[i], want, rtol=1e-4, atol=1e-4)


def test_reference_logps_are_the_adapter_disabled_model():
    m, tok = _model()
    base, _ = load_model(resolve_model("tiny-random").path)
    ch = encode_items(tok, ALIGN[:2], 64)
    rj = encode_items(tok, HARM, 64)
    rc, rr = am.reference_pair_logps(m, ch, rj, tok.pad_token_id)
    with torch.no_grad():
        bc, br = am.pair_logps(base, ch, rj, tok.pad_token_id)
        pc, _ = am.pair_logps(m, ch, rj, tok.pad_token_id)
    torch.testing.assert_close(rc, bc, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rr, br, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(pc, bc)  # the adapter is active again afterwards
    assert m.training


def test_dpo_loss_and_gradients_equal_trl_dpotrainer(tmp_path):
    """TRL's DPOTrainer (sigmoid loss, PEFT model, reference = adapter disabled) vs spt's DPO on the same
    token ids: the loss and every LoRA gradient agree."""
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    from peft import LoraConfig

    base, tok = _model(lora=False)
    ours, _ = _model(seed=3)
    rows = [{"prompt": [{"role": "user", "content": a["prompt"]}],
             "chosen": [{"role": "assistant", "content": a["response"]}],
             "rejected": [{"role": "assistant", "content": h["response"]}]}
            for a, h in zip(ALIGN, HARM + HARM, strict=False)]
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=3, beta=0.1,
                         report_to=[], use_cpu=True, max_length=None, dataset_num_proc=None, save_strategy="no",
                         logging_strategy="no")
    # a new adapter (peft_config): TRL's reference is then the adapter-disabled model
    lc = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    trainer = trl.DPOTrainer(model=base, ref_model=None, args=args, train_dataset=datasets.Dataset.from_list(rows),
                             processing_class=tok, peft_config=lc)
    mine = dict(ours.named_parameters())
    with torch.no_grad():  # the same non-zero adapter in both
        for k, p in trainer.model.named_parameters():
            if p.requires_grad:
                p.copy_(mine[k])
    ds = trainer.train_dataset
    batch = trainer.data_collator([ds[i] for i in range(len(ds))])
    trainer.model.train()
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()
    want = {k: p.grad.clone() for k, p in trainer.model.named_parameters() if p.requires_grad}

    def enc(prompt_ids, comp):
        return Encoded(list(prompt_ids) + list(comp), [IGNORE_INDEX] * len(prompt_ids) + list(comp))

    ch = [enc(ds[i]["prompt_ids"], ds[i]["chosen_ids"]) for i in range(len(ds))]
    rj = [enc(ds[i]["prompt_ids"], ds[i]["rejected_ids"]) for i in range(len(ds))]
    ref_c, ref_r = am.reference_pair_logps(ours, ch, rj, tok.pad_token_id)
    pc, pr = am.pair_logps(ours, ch, rj, tok.pad_token_id)
    loss, _ = am.dpo_loss(pc, pr, ref_c, ref_r, beta=0.1)
    assert float(loss) == pytest.approx(float(trl_loss), rel=1e-5)
    assert abs(float(loss) - math.log(2)) > 1e-3  # policy ≠ reference: a non-trivial loss
    loss.backward()
    got = {k: p.grad for k, p in ours.named_parameters() if p.requires_grad}
    assert set(got) == set(want) and want
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-7, msg=k)


# ------------------------------------------------------------------------------------------- data
def test_preference_pairs_both_ways(store):
    from spt.data.preferences import preference_pairs
    from spt.train import data as tdata

    names = mini_data(store)
    items = tdata.load_items(store, tdata.resolve_safety(store, names["safety_data"]))
    prefs = preference_pairs(items)
    train_pairs = tdata.pairs_of(tdata.train_split(items))
    assert len(prefs) == 2 * len(train_pairs)
    test_prompts = {x["prompt"] for x in items if x["split"] == "test"}
    for (h, b), ph, pb in zip(train_pairs, prefs[0::2], prefs[1::2], strict=True):
        assert (ph.kind, ph.prompt, ph.chosen) == ("harmful", h["prompt"], h["response"])  # refusal ≻ compliance
        assert "[details withheld]" in ph.rejected and ph.rejected != h["response"]
        assert (pb.kind, pb.prompt, pb.chosen, pb.rejected) == ("benign", b["prompt"], b["response"], h["response"])
        assert ph.prompt not in test_prompts and pb.prompt not in test_prompts
    assert len(preference_pairs(items, both_ways=False)) == len(train_pairs)


def test_booster_harmful_set_refuses_the_evaluated_pool(store):
    from spt.data.preferences import harmful_set
    from spt.train import data as tdata

    names = mini_data(store)
    safety = tdata.load_items(store, tdata.resolve_safety(store, names["safety_data"]))
    poison = tdata.load_items(store, tdata.resolve_poison(store, names["poison_data"]))
    assert len(harmful_set(poison, safety)) == len(poison)
    leaked = poison + [dict(safety[-2], split="train", response="sure [details withheld]")]
    assert safety[-2]["split"] == "test"
    with pytest.raises(SptError, match="evaluated pool"):
        harmful_set(leaked, safety)


# ------------------------------------------------------------------------------------------- plug-ins
def _cfg(**kw):
    from types import SimpleNamespace

    base = dict(seed=0, grad_accum=2, max_length=64, pack_length=0, lora=True, batch_size=2, lam=None,
                poison_data="poison-mini", safety_data="harmor-mini", stage="align", defense="none",
                vaccine_rho=2.0, booster_alpha=0.1, booster_harmful_batch_size=3, dpo_beta=0.1, dpo_both_ways=True)
    base.update(kw)
    return SimpleNamespace(**base)


def _ctx(model, tok, cfg, store=None, items=None):
    from spt.train.context import TrainContext
    from spt.train.loss import LossModule

    return TrainContext(config=cfg, model=model, store=store, run_id="test", tokenizer=tok, pad_id=tok.pad_token_id,
                        device=torch.device("cpu"), total_steps=4, items=items or {},
                        forward_fn=LossModule(model), backward_fn=lambda t: t.backward())


def _align_batches(tok):
    from spt.train.defenses.base import Batch

    ex = encode_items(tok, ALIGN + HARM[:1], 64)
    n = sum(e.n_completion for e in ex)
    return [Batch(ex[:2], [1.0 / n] * 2), Batch(ex[2:], [1.0 / n] * 2)]


def test_vaccine_plugin_step_equals_per_microbatch_vaccine_and_rho_zero_is_sft():
    from spt.train.defenses.vaccine import VaccineDefense

    m, tok = _model()
    batches = _align_batches(tok)
    ctx = _ctx(m, tok, _cfg())
    for b in batches:  # direct: the tested vaccine_step on each micro-batch, gradients accumulated
        am.vaccine_step(lambda b=b: ctx.forward(b)[0], am.attention_modules(m), 2.0)
    want = _grads(m)
    m.zero_grad(set_to_none=True)
    d = VaccineDefense(_cfg())
    d.setup(ctx)
    st = d.train_step(ctx, 1, batches)
    got = _grads(m)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-8, msg=k)
    assert st.counts[0] == sum(e.n_completion for b in batches for e in b.examples)
    logged = d.log_values()
    assert logged["vaccine_act_grad_norm"] > 0
    assert logged["vaccine_loss_perturbed"] > st.sums[0] / st.counts[0]  # ε raises the loss over the clean one
    m.zero_grad(set_to_none=True)
    for i, b in enumerate(batches):  # plain SFT step
        ctx.forward_backward(b, sync=i == 1)
    sft = _grads(m)
    m.zero_grad(set_to_none=True)
    d0 = VaccineDefense(_cfg(vaccine_rho=0.0))
    d0.setup(ctx)
    d0.train_step(ctx, 1, batches)
    for k, v in _grads(m).items():
        assert torch.equal(v, sft[k]), k


def test_booster_plugin_step_matches_direct_gradient(store):
    from spt.train import data as tdata
    from spt.train.defenses.base import Batch
    from spt.train.defenses.booster import HARM_SALT, BoosterDefense

    names = mini_data(store)
    safety = tdata.load_items(store, tdata.resolve_safety(store, names["safety_data"]))
    poison = tdata.load_items(store, tdata.resolve_poison(store, names["poison_data"]))
    m, tok = _model()
    cfg = _cfg(lam=5.0)
    ctx = _ctx(m, tok, cfg, store, {"safety": safety, "harmful": poison})
    batches = _align_batches(tok)
    d = BoosterDefense(cfg)
    d.setup(ctx)
    harm = ctx.harmful_examples()
    idx = ctx.sample(len(harm), 3, 0, 3, HARM_SALT)
    hex_ = [harm[i] for i in idx]
    nh = sum(e.n_completion for e in hex_)
    hb = Batch(hex_, [1.0 / nh] * 3)
    # direct, on copies: ∇f (both micro-batches) + λ(∇h(θ) − ∇h(θ − α∇h/‖∇h‖))
    ref = copy.deepcopy(m)
    rctx = _ctx(ref, tok, cfg)
    for b in batches:
        rctx.forward_backward(b)
    gf = _grads(ref)
    ref.zero_grad(set_to_none=True)
    h0 = rctx.forward(hb)[0]
    h0.backward()
    g1 = _grads(ref)
    ref.zero_grad(set_to_none=True)
    norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in g1.values()))
    with torch.no_grad():
        for k, p in ref.named_parameters():
            if k in g1:
                p.sub_(0.1 * g1[k] / (norm + 1e-7))
    rctx.forward(hb)[0].backward()
    g2 = _grads(ref)
    st = d.train_step(ctx, 3, batches)
    got = _grads(m)
    for k in gf:
        torch.testing.assert_close(got[k], gf[k] + 5.0 * (g1[k] - g2[k]), rtol=1e-4, atol=1e-6, msg=k)
    assert st.counts[0] > 0
    logged = d.log_values()
    assert logged["booster_harm_drop"] > 0
    assert logged["booster_harm_loss"] == pytest.approx(float(h0.detach()), rel=1e-6)


def test_booster_plugin_refuses_harmful_data_from_the_evaluated_pool(store):
    from spt.train import data as tdata
    from spt.train.defenses.booster import BoosterDefense

    names = mini_data(store)
    safety = tdata.load_items(store, tdata.resolve_safety(store, names["safety_data"]))
    test_harmful = [dict(x, response="sure [details withheld]") for x in safety
                    if x["split"] == "test" and x["label"] == "harmful"]
    m, tok = _model()
    ctx = _ctx(m, tok, _cfg(lam=5.0), store, {"safety": safety, "harmful": test_harmful})
    with pytest.raises(SptError, match="evaluated pool"):
        BoosterDefense(_cfg(lam=5.0)).setup(ctx)


def test_dpo_method_step_equals_direct_dpo_gradient(store):
    from spt.train.dpo import DPO_SALT, DPOMethod

    mini_data(store)
    m, tok = _model(seed=5)
    cfg = _cfg(batch_size=3)
    ctx = _ctx(m, tok, cfg, store)
    d = DPOMethod(cfg)
    d.setup(ctx)
    assert len(d.pairs) == 16 and {p.kind for p in d.pairs} == {"harmful", "benign"}
    ours = copy.deepcopy(m)
    st = d.train_step(ctx, 2, _align_batches(tok))
    got = _grads(m)
    # direct: reference = adapter-disabled model, policy log-probs by the differentiable path, mean over pairs
    rc, rr = am.reference_pair_logps(ours, d.chosen, d.rejected, tok.pad_token_id)
    torch.testing.assert_close(d.ref[0], rc, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(d.ref[1], rr, rtol=1e-5, atol=1e-4)
    losses = []
    for mb in range(2):
        idx = ctx.sample(len(d.pairs), 2, mb, 3, DPO_SALT)
        pc, pr = am.pair_logps(ours, [d.chosen[i] for i in idx], [d.rejected[i] for i in idx], tok.pad_token_id)
        loss, _ = am.dpo_loss(pc, pr, rc[idx], rr[idx], 0.1)
        (loss / 2).backward()
        losses.append(float(loss))
    want = _grads(ours)
    assert set(got) == set(want) and want
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-7, msg=k)
    assert st.sums[0] / st.counts[0] == pytest.approx(sum(losses) / 2, rel=1e-4)
    assert set(d.log_values()) >= {"dpo_loss", "reward_margin", "reward_accuracy"}
    state = d.state_dict()  # the reference survives a resume
    d2 = DPOMethod(cfg)
    d2.setup(ctx)
    d2.load_state_dict(state)
    assert torch.equal(d2.ref[0], d.ref[0])


def test_dpo_reference_covers_exactly_the_pairs_the_run_samples(store):
    """The one-off reference pass costs what the run uses: a 2-step run computes only its sampled pairs."""
    from spt.train.dpo import DPO_SALT, DPOMethod

    mini_data(store)
    m, tok = _model(seed=5)
    cfg = _cfg(batch_size=3)
    ctx = _ctx(m, tok, cfg, store)
    ctx.total_steps = 2
    d = DPOMethod(cfg)
    d.setup(ctx)
    rc, _rr = am.reference_pair_logps(copy.deepcopy(m), d.chosen, d.rejected, tok.pad_token_id)
    d.train_step(ctx, 1, _align_batches(tok))
    used = {i for step in (1, 2) for mb in range(int(cfg.grad_accum)) for i in ctx.sample(len(d.pairs), step, mb, 3,
                                                                                          DPO_SALT)}
    computed = {i for i in range(len(d.pairs)) if not torch.isnan(d.ref[0][i])}
    assert computed == used and len(used) < len(d.pairs)
    ii = sorted(used)
    torch.testing.assert_close(d.ref[0][ii], rc[ii], rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------------------------- CLI end to end
def _cli(db, *args):
    import json

    from typer.testing import CliRunner

    from spt.cli import app

    r = CliRunner().invoke(app, ["finetune", "--db", str(db), *args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout[r.stdout.index("{"):])


SMALL = ("--safety-data", "harmor-mini", "--batch-size", "4", "--max-length", "64", "--log-every", "1")


def _align_then_task(db_path, *align_flags):
    """An alignment run with `align_flags`, then a poisoned task run from it; returns both Run rows and logs."""
    from sqlmodel import select

    from spt.store import open_store
    from spt.store.models import Run, TrainLog

    with open_store(db_path) as st:
        mini_data(st)
    a = _cli(db_path, "--model", "tiny-random", "--stage", "align", "--max-steps", "2", *align_flags, *SMALL)
    t = _cli(db_path, "--from", a["run_id"], "--task", "task-mini", "--poison", "0.1", "--poison-data", "poison-mini",
             "--max-steps", "2", *SMALL)
    with open_store(db_path) as st, st.session() as s:
        runs = {x.id: x for x in s.exec(select(Run)).all()}
        logs = {x.name for x in s.exec(select(TrainLog).where(TrainLog.run_id == a["run_id"])).all()}
    ar, tr = runs[a["run_id"]], runs[t["run_id"]]
    assert (ar.kind, ar.status, tr.kind, tr.status) == ("align", "done", "finetune", "done")
    assert tr.parent_run_id == ar.id  # the aligned model is the task run's parent
    return ar, tr, logs


def test_cli_vaccine_alignment_is_parent_of_a_task_run(db_path):
    ar, tr, logs = _align_then_task(db_path, "--defense", "vaccine", "--vaccine-rho", "1.5")
    assert ar.defense == "vaccine" and ar.config["vaccine_rho"] == 1.5 and tr.defense == "none"
    assert ar.config["identity_inputs"]["settings"]["vaccine_rho"] == 1.5
    assert {"vaccine_loss_perturbed", "vaccine_act_grad_norm", "alignment_loss"} <= logs


def test_cli_booster_alignment_is_parent_of_a_task_run(db_path):
    ar, tr, logs = _align_then_task(db_path, "--defense", "booster", "--lam", "2", "--booster-alpha", "0.05",
                                    "--poison-data", "poison-mini", "--booster-harmful-batch-size", "3")
    assert ar.defense == "booster" and ar.lam == 2.0 and ar.config["booster_alpha"] == 0.05
    assert ar.config["identity_inputs"]["settings"]["booster_harmful_data"] == "poison-mini"
    assert {"booster_harm_loss", "booster_harm_loss_perturbed", "booster_harm_drop"} <= logs


def test_cli_dpo_alignment_is_parent_of_a_task_run(db_path):
    from spt.train import FinetuneConfig

    if "method" not in FinetuneConfig.field_names():
        pytest.skip("--method needs /tmp/patch_align_config.md, _steps.md and _finetune.md merged")
    ar, tr, logs = _align_then_task(db_path, "--method", "dpo", "--dpo-beta", "0.2")
    assert ar.defense == "none" and ar.config["method"] == "dpo" and ar.config["dpo_beta"] == 0.2
    assert ar.config["identity_inputs"]["settings"]["method"] == "dpo"
    assert {"dpo_loss", "reward_margin", "reward_accuracy"} <= logs
    assert tr.config["method"] == "sft"  # the task stage is plain fine-tuning


def test_method_options_are_checked_before_training():
    from spt.train import FinetuneConfig

    if "method" not in FinetuneConfig.field_names():
        pytest.skip("--method needs /tmp/patch_align_config.md merged")
    with pytest.raises(SptError, match="unknown `method`"):
        FinetuneConfig(stage="align", method="ppo").resolve()
    with pytest.raises(SptError, match="`stage` align"):
        FinetuneConfig(stage="task", method="dpo").resolve()
    with pytest.raises(SptError, match="without a defense"):
        FinetuneConfig(stage="align", method="dpo", defense="vaccine").resolve()
    with pytest.raises(SptError, match="`dpo_beta`"):
        FinetuneConfig(stage="align", method="dpo", dpo_beta=0).resolve()
    sft = FinetuneConfig(stage="align").resolve()
    dpo = FinetuneConfig(stage="align", method="dpo").resolve()
    assert dpo.dpo_beta == 0.1 and sft.dpo_beta is None
    assert "method" not in sft.identity_fields() and dpo.identity_fields()["dpo_beta"] == 0.1


# ------------------------------------------------------------------------------------------- two-stage sweeps
def test_alignment_variants_product_and_checks():
    from spt.sweep.align_stage import align_variants, variant_label

    vs, skipped = align_variants(["none", "vaccine", "booster"], ["sft", "dpo"])
    assert [variant_label(v) for v in vs] == ["none", "vaccine", "booster", "none+dpo"]
    assert skipped == ["vaccine+dpo", "booster+dpo"]  # DPO runs without an align-stage defense
    assert align_variants(None, None)[0] == [{"defense": "none", "method": "sft"}]
    with pytest.raises(SptError, match="not align"):
        align_variants(["anchor"], None)  # a task-stage defense
    with pytest.raises(SptError, match="`align_method`"):
        align_variants(["none"], ["ppo"])
    with pytest.raises(SptError, match="unknown defense"):
        align_variants(["vacine"], None)


def test_two_stage_expansion_trains_each_alignment_once():
    from spt.sweep.align_stage import align_config_values, align_variants, alignment_runs, expand_two_stage
    from spt.sweep.plan import SweepSpec, plan_sweep

    task = plan_sweep(SweepSpec(model="tiny-random", defenses=["none", "anchor"], lams=[0.3], poisons=[0.1]))
    assert len(task) == 2
    plan = expand_two_stage(task, align_variants(["none", "vaccine", "booster"], None)[0])
    assert [c["index"] for c in plan] == list(range(6))  # the must-show: 3 alignment runs, 6 task runs
    assert len(alignment_runs(plan)) == 3
    assert [(c["align"]["defense"], c["defense"]) for c in plan] == [
        ("none", "none"), ("none", "anchor"), ("vaccine", "none"), ("vaccine", "anchor"),
        ("booster", "none"), ("booster", "anchor")]
    vals = align_config_values("tiny-random", {"lr": 1e-4, "task": "x", "poison_data": "p", "lora": False},
                               {"defense": "booster", "method": "sft"}, max_steps=5)
    assert vals == {"lr": 1e-4, "lora": False, "model": "tiny-random", "stage": "align", "defense": "booster",
                    "max_steps": 5}
    assert align_config_values("m", {}, {"defense": "none", "method": "dpo"})["method"] == "dpo"


def _two_stage_merged() -> bool:
    from spt.sweep.plan import SweepSpec

    return "align_defenses" in SweepSpec.__dataclass_fields__


def test_sweep_plan_with_alignment_axes():
    if not _two_stage_merged():
        pytest.skip("needs /tmp/patch_align_plan.md merged")
    from spt.sweep.plan import SweepSpec, config_label, plan_sweep

    base = dict(model="tiny-random", defenses=["none", "anchor"], lams=[0.3], poisons=[0.1])
    one = SweepSpec(**base)
    assert "align_defenses" not in one.to_dict()  # single-stage sweeps keep their ids
    spec = SweepSpec(**base, align_defenses=["none", "vaccine", "booster"])
    spec.validate()
    plan = plan_sweep(spec)
    assert len(plan) == 6 and len({c["key"] for c in plan}) == 6 and spec.id != one.id
    assert config_label(plan[3]) == "vaccine→anchor λ=0.3 p=0.1"
    with pytest.raises(SptError, match="drop `from_run`"):
        SweepSpec(from_run="x", align_defenses=["vaccine"]).validate()


def test_cli_two_stage_sweep_dry_run_and_run(db_path):
    if not _two_stage_merged():
        pytest.skip("needs /tmp/patch_align_plan.md merged")
    from sqlmodel import select
    from typer.testing import CliRunner

    from spt.cli import app
    from spt.store import open_store
    from spt.store.models import Run

    r = CliRunner().invoke(app, ["sweep", "--db", str(db_path), "--model", "tiny-random", "--align-defense",
                                 "none,vaccine,booster", "--defense", "none,anchor", "--lam", "0.3", "--poison", "0.1",
                                 "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "3 alignment runs (none, vaccine, booster) and 6 task runs" in " ".join(r.output.split())
    with open_store(db_path) as st:
        mini_data(st)
    args = ["sweep", "--db", str(db_path), "--model", "tiny-random", "--task", "task-mini", "--align-defense",
            "none,vaccine", "--defense", "none", "--poison", "0.1", "--seeds", "0,1", "--max-steps", "2",
            "--align-max-steps", "2", "--no-evaluate", "--no-frontier", "--set", "batch_size=4", "--set",
            "max_length=64", "--set", "safety_data=harmor-mini", "--set", "poison_data=poison-mini"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    with open_store(db_path) as st, st.session() as s:
        runs = s.exec(select(Run)).all()
    aligns = [x for x in runs if x.kind == "align"]
    tasks = [x for x in runs if x.kind == "finetune"]
    assert sorted(a.defense for a in aligns) == ["none", "vaccine"]  # each alignment variant trained once
    assert len(tasks) == 4 and {t.parent_run_id for t in tasks} == {a.id for a in aligns}
    r = CliRunner().invoke(app, args)  # re-running trains nothing
    assert r.exit_code == 0, r.output
    with open_store(db_path) as st, st.session() as s:
        assert len(s.exec(select(Run)).all()) == len(runs)


def test_alignment_defense_options_and_stages_are_checked():
    from spt.train import FinetuneConfig

    c = FinetuneConfig(stage="align", defense="booster").resolve()
    assert (c.lam, c.booster_alpha, c.booster_harmful_batch_size) == (5.0, 0.1, 10)  # the authors' defaults
    assert c.identity_fields()["booster_harmful_data"] == "builtin:harmor-comply"
    assert FinetuneConfig(stage="align", defense="vaccine").resolve().vaccine_rho == 2.0
    for bad, msg in ((dict(defense="booster"), "not task"), (dict(defense="vaccine", stage="align", vaccine_rho=-1),
                                                             "`vaccine_rho`"),
                     (dict(defense="booster", stage="align", booster_alpha="x"), "`booster_alpha`"),
                     (dict(defense="vaccine", stage="align", compile=True), "without `compile`"),
                     (dict(defense="vaccine", stage="align", lam=0.5), "takes no `lam`")):
        with pytest.raises(SptError, match=msg):
            FinetuneConfig(**bad).resolve()
