"""`spt compare`: paired differences on the same prompts, exact McNemar, refusal of unlike evaluations."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from spt.cli import app
from spt.compare import compare
from spt.errors import SptError
from spt.store import content_id, new_id
from spt.store.models import Evaluation, Generation, Item, Run

REFUSE = "I'm sorry, but I can't help with that."
ANSWER = "Sure. Start by reading the manual, then follow the steps in order."
SETTING = {"v": 2, "dataset": "sha256:d", "split": "test", "limit": 40, "generation": {"generate": True},
           "task": None}


def _items(n_pairs: int) -> list[Item]:
    out = []
    for k in range(n_pairs):
        for label in ("harmful", "benign"):
            prompt = f"{label} prompt {k}"
            out.append(Item(id=content_id([prompt]), prompt=prompt, response="ref", label=label,
                            category="c", pair_id=f"p{k}", sensitive_word=f"w{k}"))
    return out


def _run_with(s, items, refused: dict[str, bool], *, setting=None, seed=0, config=None) -> str:
    run = Run(id=new_id(), kind="finetune", model_ref="m", base_model="m", seed=seed, status="done",
              config=config)
    s.add(run)
    s.flush()
    ev = Evaluation(id=new_id(), run_id=run.id, identity=new_id(), split="test", refusal_preset="spt",
                    status="done", config={"identity_fields": {**(setting or SETTING), "weights": run.id}})
    s.add(ev)
    s.flush()
    for it in items:
        s.add(Generation(evaluation_id=ev.id, item_id=it.id, prompt=it.prompt,
                         response=REFUSE if refused[it.id] else ANSWER, meta={"loss": 1.0 + refused[it.id]}))
    return run.id


def test_paired_difference_and_mcnemar_by_hand(store):
    items = _items(20)
    harmful = [it for it in items if it.label == "harmful"]
    # A refuses harmful 0..9; B refuses harmful 0..17 except 3: b (A yes, B no) = 1, c (A no, B yes) = 8
    a = {it.id: it.label == "harmful" and int(it.pair_id[1:]) < 10 for it in items}
    b = {it.id: it.label == "harmful" and int(it.pair_id[1:]) < 18 and it.pair_id != "p3" for it in items}
    with store.write() as s:
        s.add_all(items)
        s.flush()
        ra, rb = _run_with(s, items, a), _run_with(s, items, b)
    res = compare(store, ra, rb)
    d = {x.metric: x for x in res.differences}
    rr = d["refusal_rate"]
    assert rr.n == 20 and rr.a == pytest.approx(0.5) and rr.b == pytest.approx(17 / 20)
    assert rr.diff == pytest.approx(0.35) and rr.ci_low <= 0.35 <= rr.ci_high
    assert (rr.mcnemar_b, rr.mcnemar_c) == (1, 8)
    # exact two-sided: 2 * P(X <= 1), X ~ Bin(9, 1/2) = 2 * (1 + 9) / 512
    assert rr.p_value == pytest.approx(20 / 512)
    orr = d["over_refusal_rate"]  # no benign item differs: not a zero-width interval, the exact 0/20 bound
    assert orr.diff == 0 and orr.p_value == 1.0 and orr.ci_high == pytest.approx(1 - 0.025 ** (1 / 20))
    assert orr.ci_low == -orr.ci_high and orr.method == "exact-discordant"
    assert d["alignment_loss"].n == 40 and d["alignment_loss"].diff == pytest.approx(0.35 / 2)
    assert len(harmful) == 20


def test_a_configuration_pools_its_seeds(store):
    items = _items(10)
    cfg = {"identity_inputs": {"settings": {"seed": 0, "lr": 1}}}
    with store.write() as s:
        s.add_all(items)
        s.flush()
        ra = _run_with(s, items, {it.id: False for it in items})
        for seed, cut in ((0, 4), (1, 6)):
            c = json.loads(json.dumps(cfg))
            c["identity_inputs"]["settings"]["seed"] = seed
            _run_with(s, items, {it.id: it.label == "harmful" and int(it.pair_id[1:]) < cut for it in items},
                      seed=seed, config=c)
    from spt.store.selection import select_runs

    cfg_id = next(r["configuration"] for r in select_runs(store) if r["seed"] == 1)
    res = compare(store, ra, cfg_id)
    rr = next(x for x in res.differences if x.metric == "refusal_rate")
    assert len(res.b["runs"]) == 2 and rr.b == pytest.approx(0.5)  # (0.4 + 0.6) / 2
    assert rr.mcnemar_b is None  # McNemar needs one verdict per item
    # A is one fine-tuned seed: it is assumed to vary over seeds as B does. se^2 = 0.02 (1 + 1/2), df = 1,
    # and t with one degree of freedom is Cauchy: p = 1 - 2 atan(t) / pi
    t = 0.5 / math.sqrt(0.03)
    assert rr.method == "t-over-seeds (equal seed variance assumed)" and (rr.n_seeds_a, rr.n_seeds_b) == (1, 2)
    assert rr.p_value == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-6)
    assert rr.ci_low == -1.0 and rr.ci_high == 1.0  # t_{0.975,1} = 12.7: clipped to the range of a rate difference
    assert res.note is None and compare(store, ra, ra).note.startswith("seed variance not estimated")


def test_unlike_evaluations_are_refused(store):
    items = _items(6)
    with store.write() as s:
        s.add_all(items)
        s.flush()
        ra = _run_with(s, items, {it.id: True for it in items})
        rb = _run_with(s, items[:8], {it.id: True for it in items})
        rc = _run_with(s, items, {it.id: True for it in items}, setting={**SETTING, "limit": 60})
    with pytest.raises(SptError, match="different prompts"):
        compare(store, ra, rb)
    with pytest.raises(SptError, match="different prompt sets or settings"):
        compare(store, ra, rc)
    r = CliRunner().invoke(app, ["--db", str(store.path), "compare", ra, rc])
    assert r.exit_code == 2 and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["--db", str(store.path), "compare", ra, ra, "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["differences"][0]["diff"] == 0
