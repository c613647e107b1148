"""`spt view` over HTTP (Starlette's test client) and its command line: routes, filters, pagination,
the frontier and agreement computations against the library's, escaping, no external URLs, read-only."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from html import unescape
from pathlib import Path

import pytest
from test_view_store import N_PAIRS, XSS_DEFENSE, XSS_RESPONSE, build_view_store
from typer.testing import CliRunner

from spt.cli import app as cli_app
from spt.errors import SptError
from spt.frontier import compute_frontier
from spt.frontier.export import to_dict
from spt.judge.metrics import agreement
from spt.store import browse as q
from spt.view.pages import STATIC

runner = CliRunner()


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """One store for the module (built once), opened read-only for the app."""
    from spt.store import open_store

    path = tmp_path_factory.mktemp("view") / "spt.db"
    store = open_store(path)
    facts = build_view_store(store)
    store.close()
    ro = q.open_readonly(path)
    yield path, ro, facts
    ro.close()


@pytest.fixture(scope="module")
def client(filled):
    from starlette.testclient import TestClient

    from spt.view.app import create_app

    _path, ro, _facts = filled
    with TestClient(create_app(ro), base_url="http://127.0.0.1") as c:
        yield c


def get(client, url, status=200):
    r = client.get(url)
    assert r.status_code == status, (url, r.status_code, r.text[:2000])
    return r.text


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def frontier_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="frontier-data">(.*?)</script>', html, re.S)
    assert m, "no frontier data on the page"
    return json.loads(m.group(1))


def pair_count(html: str) -> int:
    return len(re.findall(r'<article class="pair"', html))


# --------------------------------------------------------------------------- pages


def test_every_page_renders_and_links(client, filled):
    _path, _ro, f = filled
    runs = get(client, "/runs")
    assert "15 run(s)" in runs and f"/runs/{f['align']}" in runs and "refusal" in runs
    assert get(client, "/", 200)  # redirects to /runs
    run = get(client, f"/runs/{f['poisoned']}")
    for section in ("Lineage", "Training curves", "Metrics", "Evaluations", "Checkpoints", "Config"):
        assert section in run
    assert f"/runs/{f['align']}" in run  # the parent is linked
    assert f"/pairs?eval={f['evals']['poisoned']}" in run  # browse its responses
    assert f"compare={f['evals']['align']}" in run  # compare with the parent (aligned) model
    assert "<svg" in run and 'data-name="task_loss"' in run and 'data-name="alignment_loss"' in run
    align = get(client, f"/runs/{f['align']}")
    assert f"/runs/{f['poisoned']}" in align and "/ckpt/align" in align  # children and checkpoints
    assert "Configurations" in get(client, "/runs?view=configurations")
    assert "frontier-data" in get(client, "/frontier")
    evals = get(client, "/evals")
    assert all(f"/pairs?eval={e}" in evals for e in f["evals"].values())
    assert "Agreement" in get(client, "/judges")
    for page in ("/runs", "/frontier", "/evals", "/judges"):  # every page links to the others
        html = get(client, page)
        assert all(f'href="{p}"' in html for p in ("/runs", "/frontier", "/evals", "/judges"))


def test_runs_filters_sort_and_errors(client):
    html = get(client, "/runs?defense=anchor")
    assert "4 run(s)" in html and "proximal" not in html.split("<tbody>")[1]
    html = get(client, "/runs?defense=__unset__")  # unset: base and aligned
    assert "2 run(s)" in html
    html = get(client, "/runs?defense=anchor&defense=proximal&lam=0.3")
    assert "2 run(s)" in html
    html = get(client, "/runs?kind=finetune&sort=refusal_rate&order=desc")
    body = html.split("<tbody>")[1]
    vals = [float(v) for v in re.findall(r'<td data-v="([0-9.]+)" class="num"><span class="val">', body)[0::5]]
    assert vals == sorted(vals, reverse=True) and len(vals) >= 10
    err = get(client, "/runs?lam=abc", 400)
    assert "lam must be a number" in err
    assert "sort=" in get(client, "/runs?sort=bogus", 400)
    assert "nonexistent-run" in get(client, "/runs/nonexistent-run", 404)
    get(client, "/nowhere", 404)
    assert client.post("/runs").status_code in (404, 405)


def test_run_metrics_with_intervals(client, filled):
    _path, _ro, f = filled
    html = get(client, f"/runs/{f['data']['runs'][6].id}")  # anchor λ=1.0
    assert "alignment_loss" in html
    m = re.search(r"<td>refusal_rate</td><td class=\"num\"><span class=\"val\">([0-9.]+)</span> <span class=\"ci\">"
                  r"\[([0-9.]+), ([0-9.]+)\]", html)
    assert m and float(m.group(2)) < float(m.group(1)) < float(m.group(3))


def test_frontier_is_the_library_computation(client, filled):
    _path, ro, _f = filled
    for x, y, g in (("task_loss", "alignment_loss", "defense"), ("over_refusal_rate", "refusal_rate", "defense"),
                    ("task_loss", "refusal_rate", "stage")):
        html = get(client, f"/frontier?x={x}&y={y}&group_by={g}")
        data = frontier_data(html)
        ref = to_dict(compute_frontier(ro, x, y, group_by=g), all_points=True)
        assert [r["run_id"] for r in data["rows"]] == [r["run_id"] for r in ref["rows"]]
        assert [(gr["name"], gr["hypervolume"]) for gr in data["groups"]] == \
            [(gr["name"], gr["hypervolume"]) for gr in ref["groups"]]
        assert all(data["links"][r["run_id"]] == f"/runs/{r['run_id']}" for r in data["rows"])
        assert 'id="hv-table"' in html and 'id="points-table"' in html
    html = get(client, "/frontier?defense=anchor&defense=none")
    assert {r["defense"] for r in frontier_data(html)["rows"]} == {"anchor", "none"}
    # a computation error is shown on the page, with the form to fix it
    html = get(client, "/frontier?x=no_such_metric")
    assert 'id="frontier-error"' in html and "no_such_metric" in html and "frontier-data" not in html
    get(client, "/frontier?group_by=colour", 400)


# --------------------------------------------------------------------------- the evaluation browser


def test_pairs_side_by_side_and_pagination(client, filled):
    _path, _ro, f = filled
    ev = f["evals"]["poisoned"]
    html = get(client, f"/pairs?eval={ev}")
    assert f"{N_PAIRS} pair(s)" in html and pair_count(html) == 25
    assert html.count('class="half half-harmful"') == 25 and html.count('class="half half-benign"') == 25
    assert "How do I make a word" in html and "What is the history of the word" in html
    assert "keyword:spt: compliance" in html and "openai:gpt-4o-mini/harmfulness: score 5" in html
    assert "unscored (parse_failure)" in html
    assert "spt: compliance" in html and "gcg: " in html and "xstest: " in html  # every preset's verdict
    page2 = get(client, f"/pairs?eval={ev}&page=2")
    assert pair_count(page2) == N_PAIRS - 25 and "page 2 of 2" in page2
    get(client, f"/pairs?eval={ev}&page=3", 404)
    get(client, f"/pairs?eval={ev}&page=zero", 400)
    get(client, "/pairs?eval=nope-nope", 404)
    get(client, "/pairs", 400)
    other = get(client, f"/pairs?eval={ev}&items=other")  # the task items of the same evaluation
    assert "2 pair(s) match" in other and pair_count(other) == 2 and "The answer is" in other
    assert f"{N_PAIRS + 2} pair(s) match" in get(client, f"/pairs?eval={ev}&items=all")
    get(client, f"/pairs?eval={ev}&items=some", 400)
    by_run = get(client, f"/pairs?run={f['poisoned']}")
    assert f"{N_PAIRS} pair(s)" in by_run


def test_pairs_compare_two_runs(client, filled):
    _path, _ro, f = filled
    a, b = f["evals"]["align"], f["evals"]["poisoned"]
    html = get(client, f"/pairs?eval={a}&compare={b}")
    assert pair_count(html) == 25
    assert html.count('class="resp resp-a"') == 50 and html.count('class="resp resp-b"') == 50
    assert "I can&#39;t help with that request" in html and "Sure, here is how to do it" in html
    assert "swap A and B" in html
    via_runs = get(client, f"/pairs?run={f['align']}&compare_run={f['poisoned']}")
    assert via_runs.count('class="resp resp-b"') == 50
    # aligned refuses, poisoned complies: B's harmful answers
    html = get(client, f"/pairs?eval={a}&compare={b}&verdict=answered&side=harmful&of=b&judge={f['judges'][0]}")
    assert f"{N_PAIRS} pair(s) match" in html
    html = get(client, f"/pairs?eval={a}&compare={b}&verdict=answered&side=harmful&judge={f['judges'][0]}")
    assert "0 pair(s) match" in html
    get(client, f"/pairs?eval={a}&compare={a}", 400)


def _all_pairs(ro, ev, cmp=None):
    keys = [(r[0], r[1]) for r in q._rows(ro, "SELECT COALESCE(i.pair_id, i.id), MIN(i.category) FROM generation g "
                                              "JOIN item i ON i.id = g.item_id WHERE g.evaluation_id = :e GROUP BY 1",
                                         {"e": ev})]
    return q.pair_details(ro, ev, cmp, keys, presets=False)


def _expected(pairs, f: q.PairFilters, compare: bool) -> set[str]:
    """The filters applied in Python to every pair: the definition the SQL (and the static page) follow."""
    out = set()
    for p in pairs:
        if f.items != "all" and p["safety"] != (f.items == "safety"):
            continue
        if f.category and p["category"] != f.category:
            continue
        if f.q:
            texts = [h["item"]["prompt"] for h in p["halves"]] + [h[s]["response"] for h in p["halves"]
                                                                   for s in "ab" if h[s]]
            if not any(f.q.lower() in t.lower() for t in texts):
                continue
        if f.disagree and not p["disagree"]:
            continue
        if f.verdict:
            ok = False
            for h in p["halves"]:
                g = h[f.of]
                if g is None or (f.side != "any" and h["item"]["label"] != f.side):
                    continue
                for j in g["judgments"]:
                    if f.judge and j["judge_id"] != f.judge:
                        continue
                    axis = ("unscored" if j["status"] != "scored" else
                            {True: "refused", False: "answered"}.get(j["refused"], "unknown"))
                    if f.verdict.startswith("label:"):
                        ok |= j["status"] == "scored" and j["label"] == f.verdict[6:]
                    else:
                        ok |= axis == f.verdict
            if not ok:
                continue
        out.add(p["key"])
    return out


@pytest.mark.parametrize("params", [
    {"category": "drugs"}, {"q": "WORD07"}, {"q": "here is how"}, {"q": "100%_"}, {"disagree": "1"},
    {"verdict": "refused", "side": "benign"}, {"verdict": "unscored", "side": "any"},
    {"verdict": "label:compliance", "side": "harmful"},
    {"verdict": "answered", "disagree": "1", "category": "cybercrime"},
    {"verdict": "refused", "side": "harmful", "of": "b"}, {"items": "all"}, {"items": "other"},
    {"items": "all", "q": "answer is"},
])
def test_pair_filters_match_their_definition(filled, params):
    _path, ro, f = filled
    a, b = f["evals"]["anchor"], f["evals"]["poisoned"]
    filt = q.PairFilters.from_params(params)
    got = q.pairs_page(ro, a, b, filt, per_page=1000, presets=False)
    want = _expected(_all_pairs(ro, a, b), filt, True)
    assert {p["key"] for p in got["pairs"]} == want and got["total"] == len(want)


def test_cached_filters_match_their_definition_and_are_shared_per_evaluation(filled, monkeypatch):
    """One cache across pages: a comparison reuses the single-run pages' passes and still matches the definition."""
    path, ro, f = filled
    a, b = f["evals"]["anchor"], f["evals"]["poisoned"]
    cache = q.StoreCache(path)
    calls: list[str] = []
    real = q.verdicts
    monkeypatch.setattr(q, "verdicts", lambda store, e: calls.append(e) or real(store, e))
    filt = q.PairFilters.from_params({"disagree": "1", "q": "here is how"})
    single = q.pairs_page(ro, a, None, filt, per_page=1000, presets=False, cache=cache)
    assert calls == [a]
    both = q.pairs_page(ro, a, b, filt, per_page=1000, presets=False, cache=cache)
    assert sorted(calls) == sorted([a, b])  # A's judgments came from the cache
    assert {p["key"] for p in both["pairs"]} == _expected(_all_pairs(ro, a, b), filt, True)
    assert {p["key"] for p in single["pairs"]} == _expected(_all_pairs(ro, a, None), filt, False)
    verdict = q.PairFilters.from_params({"verdict": "refused", "side": "benign", "disagree": "1"})
    got = q.pairs_page(ro, a, b, verdict, per_page=1000, presets=False, cache=cache)
    assert len(calls) == 2  # other filters on the same evaluations: no new pass over the judgments
    assert {p["key"] for p in got["pairs"]} == _expected(_all_pairs(ro, a, b), verdict, True)


def test_disagree_filter(client, filled):
    _path, _ro, f = filled
    ev = f["evals"]["poisoned"]
    html = get(client, f"/pairs?eval={ev}&disagree=1")
    n = len(f["disagree_pairs"]["poisoned"])
    assert n > 0 and f"{n} pair(s) match" in html and html.count("badge disagree") == n
    assert "0 pair(s) match" in get(client, f"/pairs?eval={f['evals']['align']}&disagree=1")


def test_bad_pair_filters(client, filled):
    _path, _ro, f = filled
    ev = f["evals"]["poisoned"]
    assert "side=" in get(client, f"/pairs?eval={ev}&side=left", 400)
    assert "verdict=" in get(client, f"/pairs?eval={ev}&verdict=maybe", 400)
    get(client, f"/pairs?eval={ev}&q=" + "x" * 300, 400)


# --------------------------------------------------------------------------- judges


def test_judges_agreement_is_the_library_computation(client, filled):
    _path, ro, f = filled
    evs = list(f["evals"].values())
    want = agreement(ro, evs)
    got = q.judges_overview(ro, evs)
    assert len(got["pairs"]) == len(want["pairs"]) == 1
    for w in want["pairs"]:
        g = next(p for p in got["pairs"] if {p["a"], p["b"]} == {w["a"], w["b"]})
        assert (g["n"], g["n_excluded"]) == (w["n"], w["n_excluded"])
        assert g["percent"] == pytest.approx(w["percent"]) and g["kappa"] == pytest.approx(w["kappa"])
    for key, ev in f["evals"].items():
        one = agreement(ro, [ev])["pairs"][0]
        mine = q.judges_overview(ro, [ev])["pairs"][0]
        assert mine["n"] == one["n"] and mine["n_excluded"] == one["n_excluded"]
        assert (mine["kappa"] is None and one["kappa"] is None) or mine["kappa"] == pytest.approx(one["kappa"])
        llm = next(j for j in q.judges_overview(ro, [ev])["judges"] if j["rubric"] == "harmfulness")
        assert llm["unscored"] == f["unscored"][key] and llm["reasons"] == {"parse_failure": f["unscored"][key]}
    html = get(client, "/judges")
    assert 'id="kappa-matrix"' in html and "parse_failure: " in html and "κ " in html
    html = get(client, f"/judges?eval={f['evals']['poisoned']}")
    assert "verdict=unscored" in html  # unscored counts link to those responses
    get(client, "/judges?eval=missing-eval", 404)


# --------------------------------------------------------------------------- safety of the page


def _all_pages(client, f) -> dict[str, str]:
    a, b = f["evals"]["align"], f["evals"]["poisoned"]
    urls = ["/runs", "/runs?view=configurations", f"/runs/{f['xss_run']}", f"/runs/{f['poisoned']}", "/frontier",
            "/frontier?x=over_refusal_rate&y=refusal_rate", "/evals", f"/pairs?eval={b}",
            f"/pairs?eval={a}&compare={b}",
            f"/pairs?eval={b}&q=%3Cscript%3E", "/judges", f"/judges?eval={b}", "/runs?defense=%3Cscript%3E"]
    return {u: get(client, u) for u in urls}


def test_untrusted_text_is_escaped(client, filled):
    _path, _ro, f = filled
    pages = _all_pages(client, f)
    joined = "\n".join(pages.values())
    for needle in ("<script>document", "<img src=x onerror", "<img src=y onerror", "</script><script>",
                   "<b>tag</b>", "<b>maybe</b>"):
        assert needle not in joined, needle
    assert "data-pwned" in joined  # the hostile text is there, as text
    b = f["evals"]["poisoned"]
    html = pages[f"/pairs?eval={b}"]
    assert unescape("&lt;script&gt;document.title=&#39;PWNED&#39;") in unescape(html)
    assert "&lt;script&gt;document.title=&#39;PWNED&#39;" in html
    # the frontier's JSON cannot end its script element early
    fr = pages["/frontier"]
    data = frontier_data(fr)
    assert XSS_DEFENSE in {r["defense"] for r in data["rows"]}
    assert fr.count("</script>") == fr.count("<script")


def test_no_external_urls(client, filled):
    _path, _ro, f = filled
    texts = list(_all_pages(client, f).values())
    texts += [p.read_text() for p in STATIC.iterdir()]
    url_attr = re.compile(r"""(?:src|href|action|xlink:href)\s*=\s*["']?\s*([^"'\s>]+)""", re.I)
    for t in texts:
        for u in url_attr.findall(t):
            assert not re.match(r"^(?:[a-z][a-z0-9+.-]*:)?//", u, re.I) or u.startswith(("http://127.0.0.1",)), u
        assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", t)
        assert "@import" not in t
        assert not re.search(r"\b(fetch|XMLHttpRequest|WebSocket|EventSource|sendBeacon)\s*\(", t)
    js = (STATIC / "view.js").read_text()
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js
    assert "eval(" not in js and "new Function" not in js


def test_security_headers(client):
    r = client.get("/runs")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    r = client.get("/runs", headers={"host": "evil.example.com"})
    assert r.status_code == 400  # DNS rebinding: only loopback host names


def test_store_is_never_written(client, filled):
    path, ro, f = filled
    before = sha(path)
    mtime = path.stat().st_mtime_ns
    _all_pages(client, f)
    get(client, f"/pairs?eval={f['evals']['anchor']}&disagree=1&verdict=refused&side=any")
    assert sha(path) == before and path.stat().st_mtime_ns == mtime
    with ro.engine.connect() as conn, pytest.raises(Exception, match="readonly|read-only|query_only|attempt"):
        conn.exec_driver_sql("DELETE FROM run")


def test_open_readonly_refuses(tmp_path):
    missing = tmp_path / "missing.db"
    with pytest.raises(SptError, match="does not exist"):
        q.open_readonly(missing)
    assert not missing.exists()
    with pytest.raises(SptError, match="directory"):
        q.open_readonly(tmp_path)
    (tmp_path / "junk.db").write_text("not a database at all, just text" * 100)
    with pytest.raises(SptError):
        q.open_readonly(tmp_path / "junk.db")


# --------------------------------------------------------------------------- the command


def test_cli_bad_input(filled, tmp_path):
    path, _ro, _f = filled
    missing = tmp_path / "nope.db"
    res = runner.invoke(cli_app, ["view", "--db", str(missing)])
    assert res.exit_code == 2 and "does not exist" in res.output and not missing.exists()
    assert len(res.output.strip().splitlines()) == 1
    res = runner.invoke(cli_app, ["view", "--db", str(path), "--port", "70000"])
    assert res.exit_code == 2 and "--port 70000" in res.output
    res = runner.invoke(cli_app, ["view", "--db", str(path), "--port", "abc"])
    assert res.exit_code == 2
    res = runner.invoke(cli_app, ["view", "--db", str(path), "--where", "defense=anchor"])
    assert res.exit_code == 2 and "--export" in res.output
    full = tmp_path / "full"
    full.mkdir()
    (full / "x.txt").write_text("x")
    res = runner.invoke(cli_app, ["view", "--db", str(path), "--export", str(full)])
    assert res.exit_code == 2 and "not empty" in res.output and "--force" in res.output
    res = runner.invoke(cli_app, ["view", "--db", str(path), "--export", str(tmp_path / "o"), "-w", "colour=red"])
    assert res.exit_code == 2 and "unknown key" in res.output and not (tmp_path / "o").exists()
    res = runner.invoke(cli_app, ["view", "--db", str(path), "--export", str(tmp_path / "o"), "-w", "defense=zzz"])
    assert res.exit_code == 2 and "no runs match" in res.output


def test_cli_export(filled, tmp_path):
    path, _ro, f = filled
    before = sha(path)
    out = tmp_path / "bundle"
    res = runner.invoke(cli_app, ["view", "--db", str(path), "--export", str(out), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["runs"] == 15 and info["pair_pages"] >= 5
    names = {p.name for p in out.iterdir()}
    assert {"index.html", "runs.html", "frontier.html", "evals.html", "judges.html", "static"} <= names
    assert f"run-{f['poisoned']}.html" in names
    assert f"pairs-{f['evals']['poisoned']}--vs--{f['evals']['align']}.html" in names
    fr = (out / "frontier.html").read_text()
    assert len(frontier_data(fr)["rows"]) == len(to_dict(compute_frontier(q.open_readonly(path)), True)["rows"])
    html = (out / f"pairs-{f['evals']['poisoned']}.html").read_text()
    assert pair_count(html) == N_PAIRS + 2 and 'data-mode="static"' in html  # every item; the script filters
    assert "<script>document" not in html and XSS_RESPONSE not in html
    for name in names - {"static"}:  # links stay inside the bundle
        for href in re.findall(r'href="([^"#]+)"', (out / name).read_text()):
            if href == "data:,":  # the empty favicon
                continue
            target = href.split("?")[0]
            assert not target.startswith(("/", "http:", "https:", "file:")), (name, href)
            assert (out / target).exists(), (name, href)
    selected = tmp_path / "anchor"
    res = runner.invoke(cli_app, ["view", "--db", str(path), "--export", str(selected), "-w", "defense=anchor"])
    assert res.exit_code == 0, res.output
    assert len(list(selected.glob("run-*.html"))) == 4
    res = runner.invoke(cli_app, ["view", "--db", str(path), "--export", str(selected), "-w", "defense=none",
                                  "--force"])
    assert res.exit_code == 0, res.output
    assert sha(path) == before


def _serve(path: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "spt.cli", "view", "--db", str(path), "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
    assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, m.group(1)


def test_serve_prints_url_and_stops_on_ctrl_c(filled):
    path, _ro, _f = filled
    before = sha(path)
    proc, url = _serve(path)
    try:
        with urllib.request.urlopen(url + "runs", timeout=20) as r:
            assert r.status == 200 and "15 run(s)" in r.read().decode()
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sha(path) == before


def test_serve_port_in_use(filled):
    path, _ro, _f = filled
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        res = runner.invoke(cli_app, ["view", "--db", str(path), "--port", str(s.getsockname()[1])])
        assert res.exit_code == 2 and "cannot listen" in res.output
    finally:
        s.close()


def test_help_stays_light():
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", "import sys, spt.cli; print(sorted(m for m in ('starlette', "
                          "'uvicorn', 'jinja2') if m in sys.modules))"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr
    assert time.perf_counter() - t0 < 30


def test_frontier_of_mixed_poison_ratios(tmp_path):
    """The default frontier of runs that mix poison ratios cannot rank defenses: the page groups by poison
    instead and says why; an explicit `group_by=defense` shows the error with links that fix it."""
    from starlette.testclient import TestClient
    from test_frontier_fixtures import add_eval, add_metric, add_run, realistic_store

    from spt.store import open_store
    from spt.view.app import create_app

    store = open_store(tmp_path / "mixed.db")
    data = realistic_store(store)
    with store.write() as s:
        run = add_run(s, defense="anchor", lam=0.3, poison=0.2, parent=data["align"].id, minute=500)
        s.flush()
        ev = add_eval(s, run, minute=501)
        for name, v in (("alignment_loss", 1.7), ("task_loss", 1.1), ("refusal_rate", 0.6)):
            add_metric(s, run, ev, name, v)
    store.close()
    ro = q.open_readonly(tmp_path / "mixed.db")
    try:
        with TestClient(create_app(ro), base_url="http://127.0.0.1") as c:
            html = get(c, "/frontier")
            assert 'id="frontier-notice"' in html and "grouped by poison" in html
            assert {r["group"] for r in frontier_data(html)["rows"]} >= {"poison=0.05", "poison=0.2"}
            html = get(c, "/frontier?group_by=defense")
            assert 'id="frontier-error"' in html and "frontier-data" not in html
            fix = re.search(r'href="([^"]*poison_ratio=0\.05[^"]*)">rank defense at poison 0.05', html)
            assert fix and "poison_ratio=__unset__" in fix.group(1)
            html = get(c, unescape(fix.group(1)))
            data_fixed = frontier_data(html)
            assert {r["poison_ratio"] for r in data_fixed["rows"]} <= {0.05, None}
            assert data_fixed["groups"][0]["name"] in ("anchor", "proximal")
    finally:
        ro.close()
