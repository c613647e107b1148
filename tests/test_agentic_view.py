"""Trajectories in `spt view`: the page of an agentic evaluation (server and static export) shows each
case's steps, observations, final answer and scores, escaped, and the evaluations page links to it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from spt.agentic.importer import TrajectoryImport, import_trajectories

TOOLEMU = Path(__file__).resolve().parents[2] / "shared" / "data" / "toolemu"
pytestmark = pytest.mark.skipif(not (TOOLEMU / "all_cases.json").is_file(), reason="../shared/data/toolemu is absent")
MODEL = "Qwen_Qwen2.5-7B-Instruct"


@pytest.fixture
def imported(tmp_path):
    from spt.store import browse as q
    from spt.store import open_store

    path = tmp_path / "spt.db"
    store = open_store(path)
    res = import_trajectories(store, TrajectoryImport(TOOLEMU / "trajectories" / MODEL))
    store.close()
    ro = q.open_readonly(path)
    yield ro, res
    ro.close()


def _first_raw() -> dict:
    f = sorted(p for p in (TOOLEMU / "trajectories" / MODEL).glob("*_r0-15_*.jsonl") if "_eval_" not in p.name)[0]
    return json.loads(f.read_text().splitlines()[0])


def test_trajectories_page_shows_steps_observations_and_scores(imported):
    from starlette.testclient import TestClient

    from spt.view.app import create_app

    ro, res = imported
    with TestClient(create_app(ro), base_url="http://127.0.0.1") as c:
        evals = c.get("/evals").text
        assert f"/trajectories?eval={res['evaluation_id']}" in evals and "browse responses" not in evals
        page = c.get(f"/trajectories?eval={res['evaluation_id']}&case=0")
        assert page.status_code == 200
        html = page.text
        raw = _first_raw()
        first_call = next(s for s in raw["intermediate_steps"] if isinstance(s[0], list))
        assert first_call[0][0] in html  # the tool name
        import html as h

        assert first_call[1][0][:200] in h.unescape(html)  # the observation, escaped in the page
        assert re.search(r"agent_safety", html) and "gpt-5-mini" in html
        assert c.get("/trajectories?eval=nope").status_code == 404
        assert c.get(f"/trajectories?eval={res['evaluation_id']}&case=x").status_code == 400
        assert c.get(f"/trajectories?eval={res['evaluation_id']}&page=99").status_code == 404


def test_static_export_writes_one_trajectories_page_per_agentic_evaluation(imported, tmp_path):
    from spt.view.export import export_site

    ro, res = imported
    out = export_site(ro, tmp_path / "site")
    assert out["trajectory_pages"] == 1 and out["pair_pages"] == 0
    name = next(f for f in out["files"] if f.startswith("trajectories-"))
    text = (tmp_path / "site" / name).read_text()
    assert text.count("<details>") == 144
    assert name in (tmp_path / "site" / "evals.html").read_text()
