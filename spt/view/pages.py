"""The pages of `spt view`: each builder reads the store and returns (template, context).

The same builders serve the web app (`mode="server"`: links are routes, filters and pages are applied by
the server) and the static export (`mode="static"`: links are files, filters and pagination are applied in
the browser by `static/view.js` from the same URL parameters). Templates autoescape everything.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from spt.errors import SptError
from spt.metrics import KEY_METRICS
from spt.store import browse as q

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

RUNS_PER_PAGE = 200
EVALS_PER_PAGE = 200
PAIRS_PER_PAGE = 25
UNSET = "__unset__"  # filter value meaning "not set" (an empty value means "any")

SHORT = {"refusal_rate": "refusal", "over_refusal_rate": "over-refusal", "alignment_loss": "align loss",
         "task_loss": "task loss", "task_accuracy": "task acc"}
RUN_SORTS = ("created_at", "id", "kind", "model_ref", "task", "defense", "lam", "poison_ratio", "seed", "status")
FILTER_LABELS = {"defense": "defense", "lam": "λ", "poison_ratio": "poison", "model": "model", "seed": "seed",
                 "status": "status", "kind": "kind"}

CSP_SERVER = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'none'; "
              "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
CSP_STATIC = ("default-src 'none'; script-src 'self' file:; style-src 'self' file:; img-src 'self' data: file:; "
              "connect-src 'none'; form-action 'self' file:; base-uri 'none'")


class NotFound(SptError):
    """A page for something the store does not hold (HTTP 404)."""


class Params:
    """URL parameters with `get` / `getlist` (Starlette's QueryParams has the same interface)."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()):
        self._items = [(str(k), str(v)) for k, v in items]

    @classmethod
    def of(cls, **kw: Any) -> Params:
        items = []
        for k, v in kw.items():
            for x in (v if isinstance(v, list | tuple) else [v]):
                if x is not None and x != "":
                    items.append((k, str(x)))
        return cls(items)

    def get(self, key: str, default: Any = None) -> Any:
        for k, v in self._items:
            if k == key:
                return v
        return default

    def getlist(self, key: str) -> list[str]:
        return [v for k, v in self._items if k == key]

    def multi_items(self) -> list[tuple[str, str]]:
        return list(self._items)


@dataclass
class Exported:
    """What a static export contains: links to anything else render as plain text."""

    runs: set[str] = field(default_factory=set)
    frontier: dict[str, str] = field(default_factory=dict)  # view key -> file name
    pairs: dict[tuple[str, str | None], str] = field(default_factory=dict)  # (eval, compare) -> file name
    evaluations: set[str] = field(default_factory=set)
    configurations: bool = True
    trajectories: dict[str, str] = field(default_factory=dict)  # agentic evaluation -> file name


def fmt_value(v: Any) -> str:
    """A filter value as it appears in URLs and forms (floats without trailing zeros)."""
    if v is None:
        return UNSET
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def num(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}"
    return str(v)


def ci(lo: Any, hi: Any) -> str:
    return "" if lo is None or hi is None else f"[{num(lo)}, {num(hi)}]"


def short_id(s: str | None, n: int = 13) -> str:
    if not s:
        return ""
    return s if len(s) <= n else s[:n] + "…"


def run_label(r: dict[str, Any] | None) -> str:
    """`finetune anchor λ=0.3 p=0.1 · 01a2…`: what a run is, in a few words."""
    if not r:
        return ""
    parts = [r.get("kind") or "run"]
    if r.get("defense"):
        parts.append(str(r["defense"]))
    if r.get("lam") is not None:
        parts.append(f"λ={num(r['lam'])}")
    if r.get("poison_ratio") is not None:
        parts.append(f"p={num(r['poison_ratio'])}")
    if r.get("seed") not in (None, 0) and r.get("kind") not in ("base",):
        parts.append(f"seed {r['seed']}")
    return " ".join(parts) + " · " + str(r.get("id") or r.get("run_id") or "")[:8]


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)


def frontier_key(x: str, y: str, group_by: str) -> str:
    return f"{x}|{y}|{group_by}"


def frontier_file(x: str, y: str, group_by: str) -> str:
    return f"frontier-{_slug(x)}--{_slug(y)}--{_slug(group_by)}.html"


def trajectories_file(eval_id: str) -> str:
    return f"trajectories-{_slug(eval_id)}.html"


def pairs_file(eval_id: str, compare_id: str | None) -> str:
    return f"pairs-{_slug(eval_id)}" + (f"--vs--{_slug(compare_id)}" if compare_id else "") + ".html"


class Site:
    """Renders pages for one store, as a web app (`mode="server"`) or as files (`mode="static"`)."""

    def __init__(self, store: Any, *, mode: str = "server", exported: Exported | None = None,
                 scope_where: list[str] | None = None):
        from jinja2 import Environment, FileSystemLoader, select_autoescape

        self.store = store
        self.mode = mode
        self.exported = exported or Exported()
        self.scope_where = list(scope_where or [])
        self.cache = q.StoreCache(store.path)
        self.env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(num=num, ci=ci, short=short_id, run_label=run_label, fmtv=fmt_value)
        self.env.globals.update(url=self.url, asset=self.asset, mode=mode, UNSET=UNSET, sort_link=self.sort_link,
                                store_name=Path(store.path).name, store_path=str(store.path),
                                csp=CSP_SERVER if mode == "server" else CSP_STATIC, SHORT=SHORT,
                                FILTER_LABELS=FILTER_LABELS)

    # ------------------------------------------------------------------ links

    def asset(self, name: str) -> str:
        return f"/static/{name}" if self.mode == "server" else f"static/{name}"

    def url(self, page: str, id: str | None = None, /, **params: Any) -> str | None:
        """The link to a page, or None when a static export does not contain it."""
        qs = urlencode([(k, v) for k, v in Params.of(**params).multi_items()])
        tail = f"?{qs}" if qs else ""
        if self.mode == "server":
            base = {"runs": "/runs", "configurations": "/runs", "frontier": "/frontier", "evals": "/evals",
                    "pairs": "/pairs", "judges": "/judges", "trajectories": "/trajectories"}.get(page)
            if page == "run":
                return f"/runs/{quote(str(id), safe='')}"
            if page == "configurations":
                qs = urlencode([("view", "configurations")] + Params.of(**params).multi_items())
                return f"{base}?{qs}"
            if base is None:
                raise ValueError(page)
            return base + tail
        ex = self.exported
        if page == "runs":
            return "runs.html" + tail
        if page == "configurations":
            return ("configurations.html" + tail) if ex.configurations else None
        if page == "run":
            return f"run-{_slug(id)}.html" if id in ex.runs else None
        if page == "frontier":
            key = frontier_key(params.get("x") or "", params.get("y") or "", params.get("group_by") or "defense")
            if not params.get("x") and not params.get("y"):
                return "frontier.html"
            return ex.frontier.get(key)
        if page == "evals":
            return "evals.html"
        if page == "pairs":
            ev, cmp = params.pop("eval", None), params.pop("compare", None)
            name = ex.pairs.get((ev, cmp or None))
            if name is None:
                return None
            rest = urlencode(Params.of(**params).multi_items())
            return name + (f"?{rest}" if rest else "")
        if page == "judges":
            return "judges.html" if not params.get("eval") else None
        if page == "trajectories":
            name = ex.trajectories.get(params.get("eval") or "")
            return name if name and not params.get("page") else None
        raise ValueError(page)

    def render(self, template: str, ctx: dict[str, Any]) -> str:
        return self.env.get_template(template).render(**ctx)

    def error(self, message: str, status: int = 400) -> str:
        return self.render("error.html", {"page": "error", "title": "error", "message": message, "status": status})

    # ------------------------------------------------------------------ runs

    def _where(self, params: Params) -> tuple[list[str], dict[str, list[str]]]:
        """Run filters from the page's parameters (server) or the export's selection (static)."""
        from spt.store.selection import parse_where

        where: list[str] = list(self.scope_where)
        selected: dict[str, list[str]] = {}
        if self.mode == "server":
            for key in q.RUN_FILTERS:
                vals = [v for v in params.getlist(key) if v != ""]
                if vals:
                    selected[key] = vals
                    where += [f"{key}={'' if v == UNSET else v}" for v in vals]
            for v in params.getlist("tag"):
                if v:
                    selected.setdefault("tag", []).append(v)
                    where.append(f"tag={v}")
        else:
            selected = {k: [v for v in params.getlist(k) if v] for k in q.RUN_FILTERS}
            selected = {k: v for k, v in selected.items() if v}
        parse_where(where)  # validates: SptError on a bad value
        return where, selected

    def _filter_options(self) -> dict[str, list[str]]:
        opts = q.run_filter_options(self.store)
        return {k: [fmt_value(v) for v in vals] for k, vals in opts.items()}

    def runs_page(self, params: Params) -> tuple[str, dict[str, Any]]:
        from spt.runs import list_configurations, list_runs
        from spt.store.selection import latest_metrics, parse_where

        view = params.get("view") or "runs"
        if view not in ("runs", "configurations"):
            raise SptError(f"view={view!r}: choose runs or configurations")
        where, selected = self._where(params)
        sort = params.get("sort") or "created_at"
        order = params.get("order") or "asc"
        if order not in ("asc", "desc"):
            raise SptError(f"order={order!r}: choose asc or desc")
        if sort not in RUN_SORTS + KEY_METRICS:
            raise SptError(f"sort={sort!r}: choose one of {', '.join(RUN_SORTS + KEY_METRICS)}")
        page = _page(params)
        ctx: dict[str, Any] = {"page": "runs", "title": "runs" if view == "runs" else "configurations", "view": view,
                               "selected": selected, "options": self._filter_options(), "sort": sort, "order": order,
                               "metrics": KEY_METRICS, "params": params}
        if view == "configurations":
            cfgs = list_configurations(self.store, where)
            for c in cfgs:
                c["run_links"] = [(r, self.url("run", r)) for r in c["runs"]]
            ctx.update(rows=cfgs, total=len(cfgs), pages=1, page_no=1)
            return "configurations.html", ctx
        runs = list_runs(self.store, where)
        cis = latest_metrics(self.store, list(KEY_METRICS), categories=["all"], judge_mode="none",
                             where=parse_where(where))
        for r in runs:
            r["ci"] = {m: cis.get((r["id"], m, "all", None)) for m in KEY_METRICS}
        runs = _sort_runs(runs, sort, order)
        total = len(runs)
        pages = max(1, math.ceil(total / RUNS_PER_PAGE)) if self.mode == "server" else 1
        if self.mode == "server":
            if page > pages:
                raise NotFound(f"page {page} is past the last page ({pages})")
            runs = runs[(page - 1) * RUNS_PER_PAGE: page * RUNS_PER_PAGE]
        for r in runs:
            r["url"] = self.url("run", r["id"])
        ctx.update(rows=runs, total=total, pages=pages, page_no=page,
                   pager=self._pager("runs", params, page, pages))
        return "runs.html", ctx

    def _pager(self, pagename: str, params: Params, page: int, pages: int) -> dict[str, Any]:
        base = [(k, v) for k, v in params.multi_items() if k != "page"]

        def link(n: int) -> str:
            d: dict[str, list[str]] = {}
            for k, v in base + [("page", str(n))]:
                d.setdefault(k, []).append(v)
            return self.url(pagename, **d) or ""

        return {"page": page, "pages": pages, "prev": link(page - 1) if page > 1 else None,
                "next": link(page + 1) if page < pages else None, "first": link(1), "last": link(pages)}

    def sort_link(self, params: Params, key: str, current: str, order: str) -> str:
        d: dict[str, list[str]] = {}
        for k, v in params.multi_items():
            if k not in ("sort", "order", "page"):
                d.setdefault(k, []).append(v)
        new_order = "desc" if (key == current and order == "asc") else "asc"
        return self.url("runs", **d, sort=key, order=new_order) or ""

    # ------------------------------------------------------------------ one run

    def run_page(self, run_id: str) -> tuple[str, dict[str, Any]]:
        from spt.runs import show_run
        from spt.view.svg import line_chart

        try:
            info = show_run(self.store, run_id)
        except SptError as e:
            raise NotFound(str(e)) from None
        run = info["run"]
        kids = q.children(self.store, run["id"])
        curves = q.train_curves(self.store, run["id"])
        losses = {k: v for k, v in curves.items() if "loss" in k}
        charts = []
        if losses:
            charts.append(line_chart(dict(sorted(losses.items(), key=lambda kv: (kv[0] != "task_loss", kv[0]))),
                                     title="training losses"))
        for name, s in sorted(curves.items()):
            if name not in losses:
                charts.append(line_chart({name: s}, title=name, height=200))
        parent_eval = None
        evs = q.evaluations(self.store, run_ids=[run["id"]])
        by_id = {e["id"]: e for e in evs}
        for e in info["evaluations"]:
            e["n_generations"] = by_id.get(e["id"], {}).get("n_generations", e.get("n_generations", 0))
            e["pairs_url"] = self.url("pairs", eval=e["id"]) if e["n_generations"] else None
            e["judges_url"] = self.url("judges", eval=e["id"]) if e["n_generations"] else None
            e["compare_url"] = None
            if e["n_generations"] and run.get("parent_run_id"):
                cands = [c for c in q.compare_candidates(self.store, by_id[e["id"]])
                         if c["run_id"] == run["parent_run_id"]] if e["id"] in by_id else []
                if cands:
                    parent_eval = cands[-1]
                    e["compare_url"] = self.url("pairs", eval=e["id"], compare=parent_eval["id"])
        lineage = info["lineage"]
        for step in lineage:
            step["url"] = self.url("run", step["run_id"])
        for k in kids:
            k["url"] = self.url("run", k["id"])
        metric_keys = sorted({k for s in lineage for k in s["metrics"]})
        return "run.html", {"page": "run", "title": f"run {run['id'][:13]}", "run": run, "info": info,
                            "children": kids, "charts": charts, "lineage": lineage, "metric_keys": metric_keys,
                            "config_json": json.dumps(run.get("config"), indent=2, sort_keys=True, default=str,
                                                      ensure_ascii=False),
                            "provenance_json": json.dumps(run.get("provenance"), indent=2, sort_keys=True,
                                                          default=str, ensure_ascii=False),
                            "frontier_url": self.url("frontier")}

    # ------------------------------------------------------------------ frontier

    def frontier_options(self) -> dict[str, Any]:
        from spt.frontier.registry import METRICS
        from spt.store.selection import evaluation_settings, recorded_metrics

        names = recorded_metrics(self.store)
        settings: dict[str, str] = {}
        for key, desc in evaluation_settings(self.store).values():
            settings.setdefault(key, desc)
        judges = q._rows(self.store, "SELECT id, name FROM judge ORDER BY name, id")
        from spt.store.queries import metric_presets_and_categories

        presets, cats = metric_presets_and_categories(self.store)
        return {"metrics": [(n, METRICS[n].arrow if n in METRICS else "") for n in names], "settings": settings,
                "judges": judges, "presets": presets, "categories": cats}

    def frontier_page(self, params: Params, *, view_links: list[tuple[str, str]] | None = None
                      ) -> tuple[str, dict[str, Any]]:
        from spt.frontier import DEFAULT_X, DEFAULT_Y, GROUP_BY, compute_frontier
        from spt.frontier.export import to_dict

        x = params.get("x") or DEFAULT_X
        y = params.get("y") or DEFAULT_Y
        group_by = params.get("group_by") or "defense"
        category = params.get("category") or "all"
        judge = params.get("judge") or None
        preset = params.get("preset") or None
        setting = params.get("setting") or None
        per_seed = params.get("per_seed") in ("1", "true", "on")
        where, selected = self._where(params)
        ctx: dict[str, Any] = {"page": "frontier", "title": "frontier", "x": x, "y": y, "group_by": group_by,
                               "category": category, "judge": judge or "", "preset": preset or "",
                               "setting": setting or "", "per_seed": per_seed, "selected": selected,
                               "group_bys": GROUP_BY, "error": None, "result": None, "data": None, "fixes": [],
                               "notice": None,
                               "view_links": view_links or [], "options": self.frontier_options(),
                               "run_options": self._filter_options(),
                               "or_bench_url": self.url("frontier", x="over_refusal_rate", y="refusal_rate",
                                                        group_by=group_by)}
        if group_by not in GROUP_BY:
            raise SptError(f"group_by={group_by!r}: choose one of {', '.join(GROUP_BY)}")
        current: dict[str, Any] = {"x": x, "y": y, "group_by": group_by, "category": category, "judge": judge,
                                   "preset": preset, "setting": setting, "per_seed": "1" if per_seed else None,
                                   **selected}

        def compute(g: str) -> Any:
            return compute_frontier(self.store, x, y, category=category, judge=judge, preset=preset, where=where,
                                    group_by=g, setting=setting, per_seed=per_seed)

        try:
            result = compute(group_by)
        except SptError as e:
            ctx["error"] = str(e)
            ctx["fixes"] = self._frontier_fixes(current)
            fallback = None
            if not any(v for _k, v in params.multi_items()) and self.mode == "server":
                # the default view of a store whose runs mix poison ratios (or models): group by them instead
                for g in ("poison", "model"):
                    try:
                        fallback = (g, compute(g))
                        break
                    except SptError:
                        continue
            if fallback is None:
                return "frontier.html", ctx
            group_by, result = fallback
            ctx.update(group_by=group_by, notice=f"{e} Showing the runs grouped by {group_by} instead; pick one "
                       "below to rank defenses within it.", error=None)
        data = to_dict(result, all_points=True)
        links = {}
        for row in data["rows"]:
            links[row["run_id"]] = self.url("run", row["run_id"])
        data["links"] = links
        ctx.update(result=result, data=data, rows=data["rows"],
                   title=f"frontier: {result.y.name} vs {result.x.name}")
        return "frontier.html", ctx

    def _frontier_fixes(self, current: dict[str, Any]) -> list[dict[str, str]]:
        """Links that make an invalid frontier valid: another grouping, or one poison ratio (with the base and
        aligned models, whose poison is unset)."""
        from spt.frontier import GROUP_BY

        fixes = []
        for g in GROUP_BY:
            if g != current.get("group_by"):
                href = self.url("frontier", **{**current, "group_by": g})
                if href:
                    fixes.append({"label": f"group by {g}", "href": href})
        if not current.get("poison_ratio"):
            poisons = [v for v in q.run_filter_options(self.store)["poison_ratio"] if v is not None]
            if len(poisons) > 1:
                for v in poisons:
                    href = self.url("frontier", **{**current, "poison_ratio": [fmt_value(v), UNSET]})
                    if href:
                        fixes.append({"label": f"rank {current.get('group_by')} at poison {fmt_value(v)}",
                                      "href": href})
        return fixes

    # ------------------------------------------------------------------ evaluations

    def evals_page(self, params: Params, *, run_ids: list[str] | None = None) -> tuple[str, dict[str, Any]]:
        page = _page(params)
        evs = q.evaluations(self.store, run_ids=run_ids)
        evs.reverse()  # newest run first
        total = len(evs)
        pages = max(1, math.ceil(total / EVALS_PER_PAGE)) if self.mode == "server" else 1
        if self.mode == "server":
            evs = evs[(page - 1) * EVALS_PER_PAGE: page * EVALS_PER_PAGE]
        from spt.agentic.browse import agentic_ids

        agentic = agentic_ids(self.store, [e["id"] for e in evs])
        for e in evs:
            e["run_url"] = self.url("run", e["run_id"])
            e["pairs_url"] = self.url("pairs", eval=e["id"]) if e["n_generations"] and e["id"] not in agentic else None
            e["trajectories_url"] = self.url("trajectories", eval=e["id"]) if e["id"] in agentic else None
            e["judges_url"] = self.url("judges", eval=e["id"]) if e["n_generations"] else None
        return "evals.html", {"page": "evals", "title": "evaluations", "rows": evs, "total": total,
                              "pager": self._pager("evals", params, page, pages)}

    # ------------------------------------------------------------------ the evaluation browser

    def pairs_page(self, params: Params, *, eval_id: str | None = None, compare_id: str | None = None
                   ) -> tuple[str, dict[str, Any]]:
        """The pair browser. In static mode `eval_id`/`compare_id` are given and every pair is rendered."""
        if self.mode == "server":
            eval_id = params.get("eval") or None
            compare_id = params.get("compare") or None
            if not eval_id and params.get("run"):
                eval_id = q.browsable_evaluation(self.store, _resolve_run(self.store, params.get("run")))
                if eval_id is None:
                    raise NotFound(f"run {params.get('run')} has no evaluation with HarmOR generations")
            if not compare_id and params.get("compare_run"):
                cid = _resolve_run(self.store, params.get("compare_run"))
                compare_id = q.browsable_evaluation(self.store, cid)
                if compare_id is None:
                    raise NotFound(f"run {params.get('compare_run')} has no evaluation with HarmOR generations")
        if not eval_id:
            raise SptError("choose an evaluation to browse (eval=ID), e.g. from the evaluations page")
        try:
            ev = q.evaluation(self.store, eval_id)
        except SptError as e:
            raise NotFound(str(e)) from None
        cmp = None
        if compare_id:
            try:
                cmp = q.evaluation(self.store, compare_id)
            except SptError as e:
                raise NotFound(str(e)) from None
            if cmp["id"] == ev["id"]:
                raise SptError("compare: pick another evaluation than the one browsed")
        # the static page holds every item; its script applies the filters (HarmOR pairs by default)
        f = q.PairFilters.from_params(params) if self.mode == "server" else q.PairFilters(items="all")
        page = _page(params) if self.mode == "server" else 1
        per_page = PAIRS_PER_PAGE if self.mode == "server" else 10 ** 9
        data = q.pairs_page(self.store, ev["id"], cmp["id"] if cmp else None, f, page=page, per_page=per_page,
                            cache=self.cache)
        if self.mode == "server" and page > data["pages"]:
            raise NotFound(f"page {page} is past the last page ({data['pages']}) for these filters")
        _annotate(data["pairs"])
        options = q.browser_options(self.store)
        candidates = q.compare_candidates(self.store, ev)
        cand_links = []
        for c in candidates:
            link = self.url("pairs", eval=ev["id"], compare=c["id"])
            cand_links.append({**c, "url": link, "selected": bool(cmp and c["id"] == cmp["id"])})
        filt = f.params()
        base = {"eval": ev["id"], "compare": cmp["id"] if cmp else None}
        for r in (ev, cmp):
            if r is not None:
                r["run_url"] = self.url("run", r["run_id"])
        ctx = {"page": "pairs", "title": f"responses: {run_label({**ev, 'id': ev['run_id']})}", "ev": ev,
               "cmp": cmp, "f": f, "data": data, "options": options, "candidates": cand_links,
               "swap_url": self.url("pairs", eval=cmp["id"], compare=ev["id"], **filt) if cmp else None,
               "uncompare_url": self.url("pairs", eval=ev["id"], **filt) if cmp else None,
               "presets": _preset_names(), "pager": None, "verdict_axis": q.VERDICT_AXIS,
               "judges_url": self.url("judges", eval=ev["id"])}
        if self.mode == "server":
            d: dict[str, list[str]] = {k: [v] for k, v in {**base, **filt}.items() if v}
            ctx["pager"] = self._pager("pairs", Params([(k, v) for k, vs in d.items() for v in vs]),
                                       data["page"], data["pages"])
        return "pairs.html", ctx

    def trajectories_page(self, params: Params, *, eval_id: str | None = None) -> tuple[str, dict[str, Any]]:
        """An agentic evaluation's trajectories: per case its steps, final answer and scores."""
        from spt.agentic.browse import agentic_ids, trajectories

        eval_id = eval_id or params.get("eval") or None
        if not eval_id:
            raise SptError("choose an agentic evaluation (eval=ID), e.g. from the evaluations page")
        try:
            ev = q.evaluation(self.store, eval_id)
        except SptError as e:
            raise NotFound(str(e)) from None
        if ev["id"] not in agentic_ids(self.store, [ev["id"]]):
            raise SptError(f"evaluation {ev['id']} is not an agentic evaluation; browse it with the pair browser")
        case = params.get("case")
        if case is not None:
            try:
                case = int(case)
            except ValueError:
                raise SptError(f"case={case!r} is not a case index (a whole number)") from None
        page = _page(params) if self.mode == "server" else 1
        per_page = PAIRS_PER_PAGE if self.mode == "server" else 10 ** 9
        data = trajectories(self.store, ev["id"], case=case, page=page, per_page=per_page)
        if self.mode == "server" and page > data["pages"]:
            raise NotFound(f"page {page} is past the last page ({data['pages']})")
        ev["run_url"] = self.url("run", ev["run_id"])
        ctx = {"page": "evals", "title": f"trajectories: {run_label({**ev, 'id': ev['run_id']})}", "ev": ev,
               "data": data, "pager": None}
        if self.mode == "server":
            ctx["pager"] = self._pager("trajectories", Params([("eval", ev["id"])]), data["page"], data["pages"])
        return "trajectories.html", ctx

    def warm(self, n_evaluations: int = 8) -> None:
        """Fill the cache with the slowest computations (judge agreement over the store, the pair order of
        the newest evaluations and their current judgments), so the first visits to those pages are fast.
        `spt view` runs it before printing the URL."""
        self.cache.get(("judges", None), lambda: q.judges_overview(self.store, None))
        for e in q.evaluations(self.store, with_counts=False)[-n_evaluations:][::-1]:
            self.cache.get(("pairs", e["id"]), lambda e=e: q.pair_index(self.store, e["id"]))
            self.cache.get(("verdicts", e["id"]), lambda e=e: q.verdicts(self.store, e["id"]))

    # ------------------------------------------------------------------ judges

    def judges_page(self, params: Params, *, eval_ids: list[str] | None = None) -> tuple[str, dict[str, Any]]:
        scope = "all evaluations"
        ev = None
        if self.mode == "server" and params.get("eval"):
            try:
                ev = q.evaluation(self.store, params.get("eval"))
            except SptError as e:
                raise NotFound(str(e)) from None
            eval_ids = [ev["id"]]
            scope = f"evaluation {ev['id'][:13]} ({run_label({**ev, 'id': ev['run_id']})})"
            ev["pairs_url"] = self.url("pairs", eval=ev["id"])
        elif eval_ids is not None:
            scope = f"{len(eval_ids)} evaluation(s) of the exported runs"
        key = ("judges", tuple(eval_ids) if eval_ids is not None else None)
        ov = self.cache.get(key, lambda: q.judges_overview(self.store, eval_ids))
        names = {j["id"]: j["name"] for j in ov["judges"]}
        matrix = {(p["a"], p["b"]): p for p in ov["pairs"]}
        matrix.update({(p["b"], p["a"]): p for p in ov["pairs"]})
        ov = {"judges": [dict(j) for j in ov["judges"]], "pairs": ov["pairs"]}
        for j in ov["judges"]:
            j["unscored_url"] = (self.url("pairs", eval=ev["id"], verdict="unscored", side="any", judge=j["id"])
                                 if ev is not None else None)
        return "judges.html", {"page": "judges", "title": "judges", "scope": scope, "ev": ev,
                               "judges": ov["judges"], "pairs": ov["pairs"], "matrix": matrix, "names": names}


def verdict_axis(j: dict[str, Any]) -> str:
    """A judgment on the common refusal axis: refused | answered | unknown | unscored."""
    if j["status"] != "scored":
        return "unscored"
    return {True: "refused", False: "answered"}.get(j["refused"], "unknown")


def _annotate(pairs: list[dict[str, Any]]) -> None:
    """Each judgment's axis, and per pair the verdict tokens the static page filters on:
    [run a|b, item label, judge id, axis, label]."""
    for p in pairs:
        tokens = []
        for h in p["halves"]:
            for side in ("a", "b"):
                g = h[side]
                if not g:
                    continue
                for j in g["judgments"]:
                    j["axis"] = verdict_axis(j)
                    tokens.append([side, h["item"]["label"], j["judge_id"], j["axis"], j["label"]])
        p["tokens"] = tokens


def _page(params: Params) -> int:
    raw = params.get("page") or "1"
    try:
        page = int(raw)
    except ValueError:
        raise SptError(f"page={raw!r}: a page number (1, 2, ...)") from None
    if page < 1:
        raise SptError(f"page={raw!r}: pages start at 1")
    return page


def _resolve_run(store: Any, run_id: str) -> str:
    from spt.runs import resolve_run

    try:
        return resolve_run(store, run_id).id
    except SptError as e:
        raise NotFound(str(e)) from None


def _preset_names() -> list[str]:
    from spt.eval.refusal import PRESETS

    return list(PRESETS)


def _sort_runs(runs: list[dict[str, Any]], sort: str, order: str) -> list[dict[str, Any]]:
    def key(r: dict[str, Any]) -> tuple:
        v = r["metrics"].get(sort) if sort in KEY_METRICS else r.get(sort)
        if v is None:
            return (1, 0, "")
        return (0, 0, v) if isinstance(v, int | float) else (0, 1, str(v))

    present = [r for r in runs if key(r)[0] == 0]
    missing = [r for r in runs if key(r)[0] == 1]
    present.sort(key=lambda r: (key(r), r["created_at"] or "", r["id"]), reverse=(order == "desc"))
    return present + missing  # runs without the value last, whatever the order
