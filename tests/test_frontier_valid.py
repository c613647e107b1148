"""The rules that make a frontier a valid comparison (spt.frontier.comparable)."""

from __future__ import annotations

import pytest
from test_frontier_fixtures import add_eval, add_metric, add_run, realistic_store
from typer.testing import CliRunner

from spt.cli import app
from spt.errors import SptError
from spt.frontier import compute_frontier


def _hv(r):
    return {g.name: g.hypervolume for g in r.groups}


def test_fixed_reference_keeps_hypervolume_when_a_dominated_run_is_added(store):
    realistic_store(store)
    before = compute_frontier(store)
    with store.write() as s:
        worse = add_run(s, defense="anchor", lam=9.0, poison=0.05, minute=500)
        s.flush()
        e = add_eval(s, worse, minute=501)
        add_metric(s, worse, e, "alignment_loss", 1.85)  # dominated by every other anchor run
        add_metric(s, worse, e, "task_loss", 2.35)
    after = compute_frontier(store)
    assert after.ref == before.ref and len(after.points) == len(before.points) + 1
    assert _hv(after) == pytest.approx(_hv(before))


def test_mixed_evaluation_settings_are_refused(store):
    realistic_store(store)
    with store.write() as s:
        other = add_run(s, defense="anchor", lam=5.0, poison=0.05, minute=600)
        s.flush()
        e = add_eval(s, other, minute=601)
        e.config = {"identity_fields": {"dataset": "sha256:other", "split": "test", "limit": 60}}
        add_metric(s, other, e, "alignment_loss", 1.0)
        add_metric(s, other, e, "task_loss", 1.2)
    with pytest.raises(SptError, match="2 different settings.*`setting`") as info:
        compute_frontier(store)
    key = str(info.value).split("settings, which are not comparable on one frontier: ")[1][:10]
    r = compute_frontier(store, setting=key)  # the majority setting: the realistic runs
    assert other.id not in {p.run_id for p in r.points} and len(r.points) == 14


def test_mixed_poison_ratios_need_group_by(store):
    realistic_store(store)
    with store.write() as s:
        run = add_run(s, defense="none", poison=0.2, minute=700)
        s.flush()
        e = add_eval(s, run, minute=701)
        add_metric(s, run, e, "alignment_loss", 2.5)
        add_metric(s, run, e, "task_loss", 1.1)
    with pytest.raises(SptError, match="mix poison: 0.05, 0.2.*`group_by` poison"):
        compute_frontier(store)
    r = compute_frontier(store, group_by="poison")
    assert {"poison=0.05", "poison=0.2"} <= {g.name for g in r.groups}
    assert len(compute_frontier(store, where=["poison=0.05"], ref=(3, 3)).points) == 12
    res = CliRunner().invoke(app, ["--db", str(store.path), "frontier"])
    assert res.exit_code == 2 and "mix poison" in res.output


def test_seeds_pool_into_configurations(store):
    base_cfg = {"identity_inputs": {"start": "w", "settings": {"lr": 1, "seed": 0}}}
    with store.write() as s:
        base = add_run(s, kind="base", task=None)
        s.flush()
        e = add_eval(s, base)
        add_metric(s, base, e, "task_loss", 3.0)
        add_metric(s, base, e, "alignment_loss", 3.0)
        for seed, (tl, al) in enumerate(((1.0, 2.0), (1.2, 1.6), (1.1, 1.8))):
            cfg = {"identity_inputs": {"start": "w", "settings": {"lr": 1, "seed": seed}}}
            run = add_run(s, defense="none", poison=0.1, seed=seed, config=cfg, minute=seed + 1)
            s.flush()
            e = add_eval(s, run, minute=seed + 1)
            add_metric(s, run, e, "task_loss", tl)
            add_metric(s, run, e, "alignment_loss", al)
        other = add_run(s, defense="none", poison=0.1, config={"identity_inputs": {**base_cfg["identity_inputs"],
                                                                                   "start": "v"}}, minute=9)
        s.flush()
        e = add_eval(s, other, minute=9)
        add_metric(s, other, e, "task_loss", 2.0)
        add_metric(s, other, e, "alignment_loss", 2.5)
    pooled = compute_frontier(store)
    cfg_point = next(p for p in pooled.points if len(p.runs) == 3)
    assert len(pooled.points) == 3 and cfg_point.seeds == [0, 1, 2]
    assert cfg_point.x.value == pytest.approx(1.1) and cfg_point.y.value == pytest.approx(1.8)
    # Student t across 3 seeds: mean ± t(0.975, 2) * sd / sqrt(3), sd of (1.0, 1.2, 1.1) = 0.1
    assert cfg_point.x.ci_high - 1.1 == pytest.approx(4.302653 * 0.1 / 3 ** 0.5, rel=1e-4)
    assert cfg_point.x.ci_method == "t-across-seeds+per-seed"
    assert len(compute_frontier(store, per_seed=True).points) == 5


def test_hypervolume_bootstrap_is_bounded_for_large_frontiers(store, monkeypatch):
    import spt.frontier.compute as compute

    realistic_store(store)
    assert all(g.hv_low is not None for g in compute_frontier(store).groups)
    monkeypatch.setattr(compute, "HV_BOOT_CELLS", 14 * 50)  # 14 points: 50 replicates < HV_BOOT_MIN
    r = compute_frontier(store)
    assert all(g.hv_low is None and g.distinct_from_next is None for g in r.groups) and r.groups[0].hypervolume > 0
