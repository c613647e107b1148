"""`spt frontier` and spt.frontier over a store filled with runs, evaluations and metrics directly."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET

import pytest
from test_frontier_fixtures import add_eval, add_judge, add_metric, add_run, realistic_store
from typer.testing import CliRunner

from spt.cli import app
from spt.errors import SptError
from spt.frontier import compute_frontier, non_dominated, plot_frontier, render, to_dict
from spt.frontier.export import columns

runner = CliRunner()


def cli(db_path, *args):
    return runner.invoke(app, ["--db", str(db_path), *args])


@pytest.fixture
def filled(store):
    data = realistic_store(store)
    return store, data


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory):
    """One filled store for the read-only CLI error tests (building a store per case is the slow part)."""
    from spt.store import open_store

    path = tmp_path_factory.mktemp("frontier") / "spt.db"
    with open_store(path) as st:
        realistic_store(st)
    return path


def test_compute_frontier_realistic(filled):
    store, data = filled
    r = compute_frontier(store)
    assert (r.x.name, r.y.name) == ("task_loss", "alignment_loss")
    assert r.n_runs == 14 and len(r.points) == 14 and r.excluded == {}
    # the result's frontier is exactly the brute-force non-dominated set
    mask = non_dominated([p.xy for p in r.points], ("lower", "lower"))
    assert [p.on_frontier for p in r.points] == mask
    assert r.ref == (2.4, 1.9)  # fixed: the base (starting) model's task and alignment loss
    assert r.ref_source.startswith("fixed: task_loss 2.4 (starting model")
    names = [g.name for g in r.groups]
    assert names[:3] == ["anchor", "proximal", "(align)"]  # ranked by hypervolume
    hv = {g.name: g for g in r.groups}
    assert hv["(base)"].hypervolume == 0  # the reference point is the base model itself
    for g in r.groups:  # a bootstrap interval around each hypervolume
        assert g.hv_low <= g.hypervolume <= g.hv_high or g.hypervolume == 0
    assert set(names) == {"anchor", "proximal", "none", "(base)", "(align)"}
    assert all(g.hypervolume >= 0 for g in r.groups)
    # the x value comes from the task evaluation, the y value from the HarmOR one
    p = next(p for p in r.points if p.defense == "anchor" and p.lam == 1.0)
    assert p.x.evaluation_id != p.y.evaluation_id
    assert p.x.ci_low < p.x.value < p.x.ci_high and p.x.n == 200


def test_or_bench_directions_and_where(filled):
    store, _ = filled
    r = compute_frontier(store, "over_refusal_rate", "refusal_rate", where=["kind=finetune"])
    assert r.directions == ("lower", "higher") and r.n_runs == 12
    mask = non_dominated([p.xy for p in r.points], r.directions)
    assert [p.on_frontier for p in r.points] == mask
    r2 = compute_frontier(store, where=["defense=anchor", "defense=proximal", "lam=0.3"])
    assert sorted(p.defense for p in r2.points) == ["anchor", "proximal"]
    r3 = compute_frontier(store, where=["tag=anchor"], group_by="poison")
    assert {p.defense for p in r3.points} == {"anchor"} and [g.name for g in r3.groups] == ["poison=0.05"]
    assert compute_frontier(store, where=["model=smollm2-135m", "status=done", "seed=0", "task=gsm8k"]).n_runs == 12
    assert {g.name for g in compute_frontier(store, group_by="stage").groups} == {"base", "align", "finetune"}


def test_latest_evaluation_wins_and_exclusions(store):
    with store.write() as s:
        a = add_run(s, defense="anchor", lam=1.0)
        b = add_run(s, defense="anchor", lam=2.0)
        no_eval = add_run(s, defense="anchor", lam=3.0)
        only_x = add_run(s, defense="none")
        unscored = add_run(s, defense="none", poison=0.1)
        s.flush()
        e_old, e_new = add_eval(s, a, minute=1), add_eval(s, a, minute=5)
        add_metric(s, a, e_old, "task_loss", 9.0)
        add_metric(s, a, e_old, "alignment_loss", 9.0)
        add_metric(s, a, e_new, "task_loss", 1.0)  # newer evaluation: replaces 9.0; alignment stays 9.0
        e = add_eval(s, b, minute=2)
        add_metric(s, b, e, "task_loss", 2.0)
        add_metric(s, b, e, "alignment_loss", 1.0)
        e = add_eval(s, only_x, minute=2)
        add_metric(s, only_x, e, "task_loss", 0.5)
        e = add_eval(s, unscored, minute=2)
        add_metric(s, unscored, e, "task_loss", 0.5)
        add_metric(s, unscored, e, "alignment_loss", None, n=0, n_unscored=50)
    # no starting model evaluated: no fixed reference point, so no hypervolume, but the Pareto set stands
    noref = compute_frontier(store)
    assert noref.ref is None and noref.ref_source.startswith("hypervolume left out: no base-model run has task_loss")
    assert "`ref`" in noref.ref_source and {p.run_id for p in noref.frontier} == {a.id, b.id}
    assert all(g.hypervolume is None and g.rank is None and g.hv_low is None for g in noref.groups)
    r = compute_frontier(store, ref=(10, 10))
    vals = {p.run_id: p.xy for p in r.points}
    assert vals == {a.id: (1.0, 9.0), b.id: (2.0, 1.0)}
    assert r.excluded == {"no evaluation": 1, "no alignment_loss": 1, "unscored (metric has no value)": 1}
    assert no_eval.id not in vals


def test_categories_and_judges(store):
    with store.write() as s:
        j1, j2 = add_judge(s, "openai:gpt-4o-mini/harmfulness"), add_judge(s, "hf:llama-guard/harmfulness")
        runs = [add_run(s, defense=d, lam=lam) for d, lam in (("anchor", 1.0), ("none", None))]
        s.flush()
        for i, run in enumerate(runs):
            e = add_eval(s, run, minute=i)
            add_metric(s, run, e, "task_loss", 1.0 + i)
            add_metric(s, run, e, "task_loss", 3.0 - i, category="violence")
            add_metric(s, run, e, "harmfulness_mean", 2.0 + i, judge=j1.id)
            add_metric(s, run, e, "harmfulness_mean", 4.0 - i, judge=j2.id)
            add_metric(s, run, e, "harmfulness_mean", 1.5 + i, judge=j1.id, category="violence")
    with pytest.raises(SptError, match="recorded by 2 judges.*`judge`"):
        compute_frontier(store, "task_loss", "harmfulness_mean", ref=(9, 9))
    r = compute_frontier(store, "task_loss", "harmfulness_mean", ref=(9, 9), judge="hf:llama-guard/harmfulness")
    assert sorted(p.xy for p in r.points) == [(1.0, 4.0), (2.0, 3.0)]
    assert {p.y.judge_id for p in r.points} == {j2.id} and r.judge["name"] == "hf:llama-guard/harmfulness"
    r = compute_frontier(store, "task_loss", "harmfulness_mean", ref=(9, 9), judge=j1.id.removeprefix("sha256:")[:10])
    assert {p.y.judge_id for p in r.points} == {j1.id}
    r = compute_frontier(store, "task_loss", "harmfulness_mean", ref=(9, 9), judge=j1.id, category="violence")
    assert sorted(p.xy for p in r.points) == [(2.0, 2.5), (3.0, 1.5)] and all(p.on_frontier for p in r.points)
    with pytest.raises(SptError, match="no category 'nope'.*violence"):
        compute_frontier(store, category="nope", x="task_loss", y="harmfulness_mean", judge=j1.id, ref=(9, 9))
    with pytest.raises(SptError, match="no judge with that name"):
        compute_frontier(store, "task_loss", "harmfulness_mean", ref=(9, 9), judge="nobody")
    # export carries the judge identity
    rows = list(csv.DictReader(io.StringIO(render(
        compute_frontier(store, "task_loss", "harmfulness_mean", ref=(9, 9), judge=j1.id), "csv", all_points=True))))
    assert {row["harmfulness_mean_judge_id"] for row in rows} == {j1.id}


def test_exports_parse_back(filled, tmp_path):
    store, _ = filled
    r = compute_frontier(store)
    for all_points in (False, True):
        want = r.rows(all_points)
        rows = list(csv.DictReader(io.StringIO(render(r, "csv", all_points))))
        assert [row["run_id"] for row in rows] == [p.run_id for p in want]
        assert list(rows[0]) == columns(r)
        for row, p in zip(rows, want, strict=True):
            assert float(row["task_loss"]) == p.x.value and float(row["alignment_loss_ci_high"]) == p.y.ci_high
            assert int(row["task_loss_n"]) == p.x.n and row["task_loss_evaluation_id"] == p.x.evaluation_id
            assert row["defense"] == (p.defense or "") and row["on_frontier"] == str(p.on_frontier)
            assert (row["lam"] == "") == (p.lam is None)
        data = json.loads(render(r, "json", all_points))
        assert data == json.loads(json.dumps(to_dict(r, all_points)))
        assert [d["run_id"] for d in data["rows"]] == [p.run_id for p in want]
        assert data["rows"][0]["task_loss"] == want[0].x.value
        assert data["x"]["direction"] == "lower" and data["groups"][0]["name"] == "anchor"
        md = render(r, "md", all_points).splitlines()
        tex = render(r, "latex", all_points)
        md_rows = [ln for ln in md if ln.startswith("| ") and ln.count("|") > 10][1:]  # minus header
        assert len(md_rows) == len(want)
        tex_rows = [ln for ln in tex.splitlines() if ln.endswith(r"\\") and ln.count("&") > 10][1:]
        assert len(tex_rows) == len(want)
        for p, md_line, tex_line in zip(want, md_rows, tex_rows, strict=True):
            cells = [c.strip() for c in md_line.strip("|").split("|")]
            assert cells[0] == p.run_id and cells[6] == f"{p.x.value:.4g}" and cells[9] == f"{p.y.value:.4g}"
            tcells = [c.strip() for c in tex_line.removesuffix(r"\\").split("&")]
            assert tcells[0] == p.run_id and tcells[6] == f"{p.x.value:.4g}" and tcells[11] == str(p.y.n)
    assert r"\toprule" in tex and r"task\_loss" in tex


@pytest.mark.parametrize("suffix", ["png", "svg", "pdf"])
def test_plot_formats(filled, tmp_path, suffix):
    store, _ = filled
    out = tmp_path / f"frontier.{suffix}"
    plot_frontier(compute_frontier(store), out)
    data = out.read_bytes()
    if suffix == "png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        import matplotlib.image as mpimg

        img = mpimg.imread(out)
        assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 400
        assert img[..., :3].std() > 0.05  # not a blank canvas
    elif suffix == "svg":
        root = ET.fromstring(data)
        assert root.tag.endswith("svg")
        text = data.decode()
        assert "better" in text or "↓" in text  # axis labels say which way is better
    else:
        assert data[:5] == b"%PDF-" and b"%%EOF" in data[-32:]


def test_plot_bad_suffix(filled, tmp_path):
    store, _ = filled
    with pytest.raises(SptError, match=r"\.png, \.svg or \.pdf"):
        plot_frontier(compute_frontier(store), tmp_path / "f.gif")


def test_cli_frontier_outputs(filled, db_path, tmp_path):
    res = cli(db_path, "frontier")
    assert res.exit_code == 0, res.output
    assert "non-dominated" in res.output and "hypervolume per defense" in res.output and "anchor" in res.output
    res = cli(db_path, "frontier", "--or-bench", "--json", "--all-points", "--where", "kind=finetune")
    data = json.loads(res.stdout)
    assert data["x"]["name"] == "over_refusal_rate" and data["y"]["name"] == "refusal_rate"
    assert len(data["rows"]) == 12 and data["n_runs"] == 12
    out = tmp_path / "f.csv"
    png = tmp_path / "f.png"
    res = cli(db_path, "frontier", "--out", str(out), "--plot", str(png), "--group-by", "stage")
    assert res.exit_code == 0, res.output
    assert out.read_text().startswith("run_id,") and png.read_bytes()[:4] == b"\x89PNG"
    res = cli(db_path, "frontier", "--export", "md")
    assert res.exit_code == 0 and res.stdout.startswith("Non-dominated runs") and "| run_id |" in res.stdout
    res = cli(db_path, "frontier", "--export", "latex", "--out", str(tmp_path / "t.tex"))
    assert res.exit_code == 0 and (tmp_path / "t.tex").read_text().startswith(r"\begin{table}")
    res = cli(db_path, "frontier", "--ref", "3,3", "--json")
    assert json.loads(res.stdout)["ref"] == [3.0, 3.0]


@pytest.mark.parametrize("args,message", [
    (["--group-by", "color"], "choose one of: defense, poison, model, stage"),
    (["--x", "bleu"], "no direction in the registry"),
    (["--x", "pair_score"], "no run has metric 'pair_score'; metrics in the store: alignment_loss"),
    (["--x", "task_loss", "--y", "task_loss"], "pick two different metrics"),
    (["--or-bench", "--x", "task_loss"], "either --or-bench or --x/--y"),
    (["--ref", "1"], "expected two numbers"),
    (["--ref", "a,b"], "expected two numbers"),
    (["--where", "color=red"], "unknown key 'color'; valid keys: defense"),
    (["--where", "lam=abc"], "lam must be a number"),
    (["--where", "defense"], "expected KEY=VALUE"),
    (["--export", "xlsx"], "choose one of: csv, json, md, latex"),
    (["--out", "x.xlsx"], "cannot tell the format"),
    (["--plot", "x.gif"], ".png, .svg or .pdf"),
    (["--category", "nope"], "no category 'nope'"),
    (["--judge", "nobody", "--x", "task_loss"], "no judges yet"),
    (["--where", "defense=nothing"], "no run has both task_loss and alignment_loss"),
])
def test_cli_bad_inputs(shared_db, args, message):
    res = cli(shared_db, "frontier", *args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_cli_empty_store(db_path):
    from spt.store import open_store

    open_store(db_path).close()  # a store with no runs yet
    res = cli(db_path, "frontier")
    assert res.exit_code == 2 and "no metrics" in res.output and "evaluate" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_cli_missing_store_is_named_and_not_created(tmp_path):
    db = tmp_path / "typo.db"
    res = cli(db, "frontier")
    assert res.exit_code == 2 and "does not exist" in res.output and not db.exists()


def test_cli_metric_nobody_recorded_lists_metrics(store, db_path):
    with store.write() as s:
        run = add_run(s, defense="anchor", lam=1.0)
        s.flush()
        e = add_eval(s, run)
        add_metric(s, run, e, "refusal_rate", 0.9)
        add_metric(s, run, e, "task_loss", 1.0)
    res = cli(db_path, "frontier")
    assert res.exit_code == 2
    assert "no run has metric 'alignment_loss'; metrics in the store: refusal_rate, task_loss" in res.output


def test_presets_own_preset_wins_and_preset_filter(store):
    with store.write() as s:
        runs = [add_run(s, defense="anchor", lam=lam) for lam in (0.5, 2.0)]
        s.flush()
        for i, run in enumerate(runs):
            e = add_eval(s, run, minute=i, preset="spt")
            add_metric(s, run, e, "over_refusal_rate", 0.1 + i / 10, preset=None)
            add_metric(s, run, e, "refusal_rate", 0.5 + i / 10, preset="spt")
            add_metric(s, run, e, "refusal_rate", 0.9 - i / 10, preset="gcg")
    r = compute_frontier(store, "over_refusal_rate", "refusal_rate")
    assert sorted(p.y.value for p in r.points) == [0.5, 0.6] and {p.y.preset for p in r.points} == {"spt"}
    r = compute_frontier(store, "over_refusal_rate", "refusal_rate", preset="gcg", where=["lam=2"])
    assert [p.y.value for p in r.points] == [0.8] and r.points[0].y.preset == "gcg"
    with pytest.raises(SptError, match="presets: None, gcg, spt"):
        compute_frontier(store, "over_refusal_rate", "refusal_rate", preset="xstest")
