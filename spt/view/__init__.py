"""`spt view`: a local, read-only web app over the store, and the same pages as a static bundle.

    from spt.view import open_readonly, create_app, export_site
    store = open_readonly("spt.db")          # never writes, never creates, never migrates
    app = create_app(store)                  # a Starlette app (serve it with uvicorn)
    export_site(store, "out/", where=["defense=anchor"])   # static pages that open from file://

Pages: runs, run (config, lineage, training curves, checkpoints, evaluations, metrics), frontier
(`spt.frontier.compute_frontier`, drawn in the browser), the evaluation browser (HarmOR pairs side by
side with every judge's and keyword preset's verdict, filters, two-run comparison, pagination) and
judges (agreement matrix, unscored counts with reasons). Everything from the store is escaped when
rendered; the pages load nothing from outside the package.

Light to import: starlette, jinja2 and uvicorn are imported by the functions that need them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "export_site", "open_readonly"]


def open_readonly(path: Any):
    from spt.store.browse import open_readonly as _open

    return _open(path)


def create_app(store: Any, **kwargs: Any):
    from spt.view.app import create_app as _create

    return _create(store, **kwargs)


def export_site(store: Any, out: Any, **kwargs: Any):
    from spt.view.export import export_site as _export

    return _export(store, out, **kwargs)
