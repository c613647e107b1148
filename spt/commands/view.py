"""`spt view`: browse the store in a web page (read-only), or `--export DIR` the same pages as static files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from spt.commands._common import DbOption, JsonOption, ProgressDisplay, console, db_path, err_console, print_json
from spt.errors import SptError

DEFAULT_PORT = 8765
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def bind(host: str, port: int) -> Any:
    """A listening socket on host:port (port 0: a free one); SptError when that is not possible."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise SptError(f"--host {host!r}: cannot resolve it ({e.strerror}); use an address like 127.0.0.1") from None
    family, _type, _proto, _canon, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise SptError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port (0 picks a free "
                       "one)") from None
    sock.listen(128)
    return sock


def _warm(site: Any) -> None:
    """Precompute the slowest pages' data before the URL is printed, so no first visit waits for it (a
    failure only means a slower first visit: the pages compute it again, and report errors, when visited)."""
    try:
        site.warm()
    except Exception:  # noqa: BLE001 - the pages compute it again, and report errors, when visited
        pass


def serve(store: Any, host: str, port: int) -> None:
    """Serve the store until Ctrl-C; prints the URL once the slowest pages' data is ready."""
    import uvicorn

    from spt.view.app import create_app

    sock = bind(host, port)
    port = sock.getsockname()[1]
    loopback = host in _LOOPBACK
    app = create_app(store, allowed_hosts=None if loopback else ["*"])
    _warm(app.state.site)  # measured 1.5 s (a 100k-response sweep) to 3.6 s (two 50k evaluations), 2 loaded cores
    url = f"http://{_url_host(host)}:{port}/"
    if not loopback:
        err_console.print(f"warning: --host {host} serves the store to other machines (read-only, no login)",
                          markup=False, highlight=False)
    console.print(f"spt view: {store.path} (read-only) at {url}", markup=False, highlight=False)
    console.print("press Ctrl-C to stop", markup=False, highlight=False)
    console.file.flush()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled once it has shut down
        pass
    finally:
        sock.close()
    console.print("spt view: stopped", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("view")
    def view_cmd(
        ctx: typer.Context,
        port: Annotated[int, typer.Option("--port", help="Port to listen on (0: a free one).")] = DEFAULT_PORT,
        host: Annotated[str, typer.Option("--host", help="Address to bind; loopback by default (anything else "
                                          "shows the store to your network).")] = "127.0.0.1",
        export: Annotated[Path | None, typer.Option("--export", help="Write the pages as a static bundle into "
                                                    "this directory instead of serving them (opens from "
                                                    "file://).", show_default=False)] = None,
        where: Annotated[list[str] | None, typer.Option(
            "--where", "-w", help="With --export: the runs to include, KEY=VALUE (defense, lam, poison_ratio, "
            "model, task, kind, status, seed, tag); repeat a key to OR.", show_default=False)] = None,
        force: Annotated[bool, typer.Option("--force", help="With --export: write into a non-empty "
                                            "directory.")] = False,
        db: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Browse the store in a web page: runs, run details, the frontier, every response pair with its
        verdicts, and judge agreement. Read-only: the store is never written."""
        from spt.store.browse import open_readonly
        from spt.store.selection import parse_where

        if export is None and (where or force):
            raise SptError("--where and --force go with --export DIR; in the browser, filter on the pages")
        if not 0 <= port <= 65535:
            raise SptError(f"--port {port} is not a port; use 1-65535 (0 picks a free one)")
        if not host.strip():
            raise SptError("--host is empty; use 127.0.0.1 (the default)")
        if export is not None:
            from spt.view.export import check_out_dir

            check_out_dir(export, force)
            parse_where(where or [])
        store = open_readonly(db_path(ctx, db))
        try:
            if export is not None:
                from spt.view.export import export_site

                with ProgressDisplay(quiet=json_out) as display:
                    result = export_site(store, export, where=where or [], force=force, progress=display)
                if json_out:
                    print_json(result)
                    return
                console.print(f"wrote {len(result['files'])} files for {result['runs']} run(s) and "
                              f"{result['evaluations']} evaluation(s) to {result['out']}; open "
                              f"{Path(result['out']).absolute() / 'index.html'} in a browser", markup=False,
                              highlight=False)
                return
            serve(store, host, port)
        finally:
            store.close()
