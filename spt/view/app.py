"""The web app behind `spt view`: Starlette routes over the page builders, GET only, read-only store.

Routes (every page is a bookmarkable URL; filters are query parameters):

    /runs                 runs (filters: defense, lam, poison_ratio, model, seed, status, kind; sort, order, page)
    /runs?view=configurations
    /runs/{run_id}        one run
    /frontier             x, y, group_by, category, judge, preset, setting, per_seed + run filters
    /evals                evaluations
    /pairs                eval, compare (or run, compare_run); category, q, verdict, judge, side, of, disagree, page
    /judges               eval (optional)
    /static/...           the page's own CSS and JS
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spt.errors import SptError
from spt.view.pages import CSP_SERVER, STATIC, NotFound, Site

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP_SERVER,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def create_app(store: Any, *, allowed_hosts: list[str] | None = None):
    """A Starlette app serving `store` (open it with `spt.store.browse.open_readonly`).

    `allowed_hosts`: Host header values to accept (default: loopback names), which keeps other web pages
    from reading the store through DNS rebinding; pass ["*"] to accept any.
    """
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.responses import HTMLResponse, RedirectResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    site = Site(store, mode="server")

    def page(build: Callable[[Any], tuple[str, dict[str, Any]]]) -> Callable[[Any], Any]:
        def endpoint(request: Any) -> Any:
            try:
                template, ctx = build(request)
                return HTMLResponse(site.render(template, ctx), headers=SECURITY_HEADERS)
            except NotFound as e:
                return HTMLResponse(site.error(str(e), 404), status_code=404, headers=SECURITY_HEADERS)
            except SptError as e:
                return HTMLResponse(site.error(str(e), 400), status_code=400, headers=SECURITY_HEADERS)

        return endpoint

    def home(request: Any) -> Any:
        return RedirectResponse("/runs", status_code=302)

    routes = [
        Route("/", home),
        Route("/runs", page(lambda r: site.runs_page(r.query_params))),
        Route("/runs/{run_id:path}", page(lambda r: site.run_page(r.path_params["run_id"]))),
        Route("/frontier", page(lambda r: site.frontier_page(r.query_params))),
        Route("/evals", page(lambda r: site.evals_page(r.query_params))),
        Route("/pairs", page(lambda r: site.pairs_page(r.query_params))),
        Route("/judges", page(lambda r: site.judges_page(r.query_params))),
        Route("/trajectories", page(lambda r: site.trajectories_page(r.query_params))),
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
    ]

    async def not_found(request: Any, exc: Any) -> Any:
        status = getattr(exc, "status_code", 404)
        msg = "no such page" if status == 404 else getattr(exc, "detail", "error")
        return HTMLResponse(site.error(f"{msg}: {request.url.path}", status), status_code=status,
                            headers=SECURITY_HEADERS)

    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or list(LOOPBACK))]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={404: not_found, 405: not_found})
    app.state.site = site
    return app
