"""`spt view --export DIR`: the same pages as static files that open from file:// with no server.

A selection of runs (`--where`) is written with its run pages, the frontier (several standard views),
the evaluation browser for each of their evaluations (every pair on one page, filtered and paginated in
the browser) and each run compared with its parent on the same prompts, and the judges page. The
page's CSS and JS are copied next to the pages; nothing refers to anything outside the folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from spt.errors import SptError
from spt.progress import ProgressFn, report
from spt.store import browse as q
from spt.view.pages import STATIC, Exported, Params, Site, frontier_file, frontier_key, pairs_file, trajectories_file

# Frontier views written by an export (those the store has metrics for): the default, the OR-Bench view,
# and safety against task performance.
FRONTIER_VIEWS = (
    ("task_loss", "alignment_loss"),
    ("over_refusal_rate", "refusal_rate"),
    ("task_loss", "refusal_rate"),
    ("task_accuracy", "refusal_rate"),
    ("task_loss", "over_refusal_rate"),
    ("alignment_loss", "refusal_rate"),
)


def check_out_dir(out: str | Path, force: bool) -> Path:
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise SptError(f"`export` {out} is a file; name a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise SptError(f"`export` {out} is not empty; pass `force` to write into it, or name a new directory")
    return out


def export_site(store: Any, out: str | Path, *, where: list[str] | None = None, force: bool = False,
                progress: ProgressFn | None = None) -> dict[str, Any]:
    """Write the static bundle for the runs matching `where` into `out`; returns what was written.

    `progress` gets `Progress("export", pages written, pages to write, "pages")` per page."""
    from spt.store.selection import parse_where, select_runs

    out = check_out_dir(out, force)
    where = list(where or [])
    where_d = parse_where(where)
    runs = select_runs(store, where_d)
    if not runs:
        raise SptError("no runs match `where`; nothing to export" if where else "the store has no runs; nothing to "
                       "export (run `spt demo --quick` for an example)")
    run_ids = [r["id"] for r in runs]
    evs = q.evaluations(store, run_ids=run_ids)
    from spt.agentic.browse import agentic_ids

    agentic = agentic_ids(store, [e["id"] for e in evs])
    browsable = [e for e in evs if e["n_generations"] and e["id"] not in agentic]
    ex = Exported(runs=set(run_ids), evaluations={e["id"] for e in evs},
                  trajectories={e: trajectories_file(e) for e in sorted(agentic)})
    for e in browsable:
        ex.pairs[(e["id"], None)] = pairs_file(e["id"], None)
        parent = e.get("parent_run_id")
        if parent:
            cands = [c for c in q.compare_candidates(store, e) if c["run_id"] == parent]
            if cands:
                ex.pairs[(e["id"], cands[-1]["id"])] = pairs_file(e["id"], cands[-1]["id"])

    site = Site(store, mode="static", exported=ex, scope_where=where)
    # frontier views: compute first, so every page links only to views that exist
    views: list[tuple[str, str, str, tuple[str, dict[str, Any]]]] = []
    first_error = None
    for x, y in FRONTIER_VIEWS:
        for group_by in ("defense", "poison", "model"):
            tpl, ctx = site.frontier_page(Params.of(x=x, y=y, group_by=group_by))
            if ctx["error"] is None:
                views.append((x, y, group_by, (tpl, ctx)))
                break
            first_error = first_error or ctx
    for i, (x, y, g, _page) in enumerate(views):
        ex.frontier[frontier_key(x, y, g)] = "frontier.html" if i == 0 else frontier_file(x, y, g)

    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    # index, runs, configurations, a page per run, the frontier views, evaluations, pairs, judges
    n_pages = 3 + len(run_ids) + max(1, len(views)) + 1 + len(ex.pairs) + len(ex.trajectories) + 1

    def write(name: str, html: str) -> None:
        (out / name).write_text(html, encoding="utf-8")
        written.append(name)
        report(progress, "export", len(written), n_pages, "pages")

    tpl, ctx = site.runs_page(Params())
    html = site.render(tpl, ctx)
    write("index.html", html)
    write("runs.html", html)
    tpl, ctx = site.runs_page(Params.of(view="configurations"))
    write("configurations.html", site.render(tpl, ctx))
    for rid in run_ids:
        tpl, ctx = site.run_page(rid)
        write(site.url("run", rid), site.render(tpl, ctx))
    links = [{"label": f"{y} vs {x} by {g}", "href": ex.frontier[frontier_key(x, y, g)], "key": frontier_key(x, y, g)}
             for x, y, g, _p in views]
    if views:
        for x, y, g, (tpl, ctx) in views:
            key = frontier_key(x, y, g)
            ctx["view_links"] = [{**v, "here": v["key"] == key} for v in links]
            write(ex.frontier[key], site.render(tpl, ctx))
    else:
        ctx = first_error or {"page": "frontier", "title": "frontier", "error": "no frontier"}
        ctx["view_links"] = []
        write("frontier.html", site.render("frontier.html", ctx))
    tpl, ctx = site.evals_page(Params(), run_ids=run_ids)
    write("evals.html", site.render(tpl, ctx))
    for (ev_id, cmp_id), name in ex.pairs.items():
        tpl, ctx = site.pairs_page(Params(), eval_id=ev_id, compare_id=cmp_id)
        write(name, site.render(tpl, ctx))
    for ev_id, name in ex.trajectories.items():
        tpl, ctx = site.trajectories_page(Params(), eval_id=ev_id)
        write(name, site.render(tpl, ctx))
    tpl, ctx = site.judges_page(Params(), eval_ids=[e["id"] for e in evs])
    write("judges.html", site.render(tpl, ctx))
    (out / "static").mkdir(exist_ok=True)
    for f in STATIC.iterdir():
        if f.is_file():
            shutil.copyfile(f, out / "static" / f.name)
            written.append(f"static/{f.name}")
    return {"out": str(out), "runs": len(run_ids), "evaluations": len(evs), "pair_pages": len(ex.pairs),
            "trajectory_pages": len(ex.trajectories),
            "frontier_views": [v["label"] for v in links], "files": written}
