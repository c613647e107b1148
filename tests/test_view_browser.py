"""`spt view` in a real browser: headless Chromium (Debian's `chromium`, installed by .ci/run) loads every
page from a test store, and the tests read the DOM after the page's scripts ran. Screenshots of each page
are saved as test artifacts ($SPT_VIEW_ARTIFACTS, else a pytest temporary directory).

Chromium runs with a recording proxy for everything that is not loopback, so the last test can check
that no request left the machine. The static export is opened from file:// before any server starts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_view_store import N_PAIRS, build_view_store

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install "
                                                          "chromium; .ci/run installs it)")


class _Recorder:
    """A proxy that accepts connections, records the request line and refuses: every non-loopback request
    Chromium makes arrives here."""

    @staticmethod
    def host(line: str) -> str:
        """`CONNECT host:443 HTTP/1.1` or `GET http://host/path HTTP/1.1` -> host."""
        parts = line.split(" ")
        target = parts[1] if len(parts) > 1 else line
        return re.sub(r"^[a-z]+://", "", target).split("/")[0].rsplit(":", 1)[0]

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.settimeout(2)
                data = conn.recv(4096).decode("latin-1")
                if data:  # a preconnected socket closed unused carries no request
                    self.requests.append(data.split("\r\n", 1)[0])
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            finally:
                conn.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from spt.store import open_store
    from spt.store.browse import open_readonly

    root = tmp_path_factory.mktemp("view-browser")
    path = root / "spt.db"
    store = open_store(path)
    facts = build_view_store(store)
    store.close()
    art = Path(os.environ.get("SPT_VIEW_ARTIFACTS") or root / "artifacts")
    art.mkdir(parents=True, exist_ok=True)
    ro = open_readonly(path)
    yield {"path": path, "store": ro, "facts": facts, "root": root, "artifacts": art, "proxy": _Recorder()}
    ro.close()


def chromium(env, *args: str, timeout: int = 60) -> str:
    profile = env["root"] / "profile"
    env["launches"] = env.get("launches", 0) + 1
    netlog = env["root"] / f"netlog-{env['launches']}.json"
    cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
           "--disable-default-apps", "--disable-sync", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
           "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,"
           "NetworkTimeServiceQuerying", "--no-pings", "--disable-domain-reliability", "--metrics-recording-only",
           "--disable-client-side-phishing-detection", "--safebrowsing-disable-auto-update", "--disable-breakpad",
           f"--user-data-dir={profile}", f"--proxy-server=http://127.0.0.1:{env['proxy'].port}",
           f"--log-net-log={netlog}", "--virtual-time-budget=5000", "--run-all-compositor-stages-before-draw", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def dom(env, url: str) -> str:
    html = chromium(env, "--dump-dom", url)
    assert 'data-ready="1"' in html, f"the page's script did not finish on {url}: {html[:500]}"
    return html


def screenshot(env, url: str, name: str, height: int = 900) -> Path:
    out = env["artifacts"] / f"{name}.png"
    chromium(env, f"--screenshot={out}", f"--window-size=1280,{height}", url)
    assert out.exists() and out.stat().st_size > 5000
    return out


def visible(html: str, pattern: str) -> int:
    """Elements whose opening tag matches `pattern` and that are not hidden."""
    return sum(1 for tag in re.findall(r"<" + pattern + r"[^>]*>", html) if " hidden" not in tag)


# --------------------------------------------------------------------------- static export, no server


@pytest.fixture(scope="module")
def bundle(env):
    from spt.view.export import export_site

    out = env["root"] / "bundle"
    reports = []
    res = export_site(env["store"], out, progress=reports.append)
    pages = [f for f in res["files"] if not f.startswith("static/")]
    assert [p.done for p in reports] == list(range(1, len(pages) + 1))  # one report per page written
    assert {p.total for p in reports} == {len(pages)} and {p.unit for p in reports} == {"pages"}
    return out


def test_static_export_opens_from_file(env, bundle):
    from spt.frontier import compute_frontier

    f = env["facts"]
    html = dom(env, (bundle / "frontier.html").as_uri())
    n_points = len(compute_frontier(env["store"]).points)
    assert len(re.findall(r'class="pt[ "]', html)) == n_points and f'data-points="{n_points}"' in html
    screenshot(env, (bundle / "frontier.html").as_uri(), "static-frontier")

    html = dom(env, (bundle / "runs.html").as_uri() + "?defense=anchor&sort=lam&order=desc")
    assert visible(html, "tr data-defense") == 4
    lams = [float(v) for v in re.findall(r'<tr data-defense="anchor" data-lam="([0-9.]+)"', html)]
    assert lams == sorted(lams, reverse=True)
    assert visible(dom(env, (bundle / "runs.html").as_uri()), "tr data-defense") == f["n_runs"]

    page = bundle / f"pairs-{f['evals']['poisoned']}.html"
    html = dom(env, page.as_uri())
    assert visible(html, 'article class="pair"') == 25 and f"{N_PAIRS} pair(s)" in html
    html = dom(env, page.as_uri() + "?page=2")
    assert visible(html, 'article class="pair"') == N_PAIRS - 25
    html = dom(env, page.as_uri() + "?disagree=1")
    n = len(f["disagree_pairs"]["poisoned"])
    assert visible(html, 'article class="pair"') == n and f"{n} pair(s) match" in html
    html = dom(env, page.as_uri() + "?q=word07")
    assert visible(html, 'article class="pair"') == 1
    html = dom(env, page.as_uri() + "?items=other")
    assert visible(html, 'article class="pair"') == 2 and "2 pair(s) match" in html

    cmp = bundle / f"pairs-{f['evals']['poisoned']}--vs--{f['evals']['align']}.html"
    html = dom(env, cmp.as_uri() + "?verdict=refused&of=b&judge=" + f["judges"][0])
    assert visible(html, 'article class="pair"') == 25 and 'class="resp resp-b"' in html
    assert 'data-pwned' not in re.search(r"<body[^>]*>", html).group(0)


# --------------------------------------------------------------------------- the web app


@pytest.fixture(scope="module")
def server(env):
    import uvicorn

    from spt.commands.view import bind
    from spt.view.app import create_app

    sock = bind("127.0.0.1", 0)
    srv = uvicorn.Server(uvicorn.Config(create_app(env["store"]), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv.should_exit = True
    thread.join(10)


def test_pages_in_chromium(env, server):
    f = env["facts"]
    a, b = f["evals"]["align"], f["evals"]["poisoned"]
    html = dom(env, server + "/runs")
    assert visible(html, "tr data-defense") == f["n_runs"]
    html = dom(env, server + "/runs?defense=anchor")  # a filter changes the rows
    assert visible(html, "tr data-defense") == 4
    html = dom(env, server + f"/runs/{f['poisoned']}")
    assert "<svg" in html and "Lineage" in html and "Training curves" in html
    html = dom(env, server + "/frontier")
    n = len(re.findall(r'class="pt[ "]', html))
    assert n >= 10 and f'data-points="{n}"' in html and 'class="frontier-line"' in html
    assert len(re.findall(r'data-href="/runs/[0-9a-f-]+"', html)) == n  # a click on a point opens its run
    html = dom(env, server + "/frontier?x=over_refusal_rate&y=refusal_rate")
    assert len(re.findall(r'class="pt[ "]', html)) >= 10
    html = dom(env, server + f"/pairs?eval={b}")  # both halves of each pair
    assert html.count('class="half half-harmful"') == 25 and html.count('class="half half-benign"') == 25
    html = dom(env, server + f"/pairs?eval={a}&compare={b}&disagree=1")
    n = len(f["disagree_pairs"]["poisoned"])
    assert html.count('<article class="pair"') == n and html.count('class="resp resp-b"') == 2 * n
    html = dom(env, server + "/judges")
    assert 'id="kappa-matrix"' in html and "parse_failure" in html
    for name, url in (("runs", "/runs"), ("run", f"/runs/{f['poisoned']}"), ("frontier", "/frontier"),
                      ("evaluations", "/evals"), ("pairs", f"/pairs?eval={a}&compare={b}"),
                      ("pairs-disagree", f"/pairs?eval={b}&disagree=1"), ("judges", "/judges")):
        screenshot(env, server + url, name, height=1100 if name.startswith("pairs") else 900)


def test_xss_does_not_execute(env, server, bundle):
    f = env["facts"]
    control = env["root"] / "control.html"  # proves the check sees a script that runs
    control.write_text("<!doctype html><html><body><p>x</p><script>document.body.setAttribute('data-pwned','c');"
                       "document.body.setAttribute('data-ready','1')</script></body></html>")
    assert "data-pwned" in re.search(r"<body[^>]*>", dom(env, control.as_uri())).group(0)
    b = f["evals"]["poisoned"]
    urls = [server + f"/pairs?eval={b}", server + f"/runs/{f['xss_run']}", server + "/frontier", server + "/runs",
            server + f"/judges?eval={b}", (bundle / f"pairs-{b}.html").as_uri()]
    pages = {url: dom(env, url) for url in urls}
    for url, html in pages.items():
        body = re.search(r"<body[^>]*>", html).group(0)
        assert "data-pwned" not in body, url
        assert "<title>PWNED" not in html
    assert "&lt;script&gt;document.title='PWNED'" in pages[urls[0]]  # shown as text


def _netlog_requests(path: Path) -> list[tuple[str, str]]:
    """(url, initiator) of every URL request in a Chromium NetLog; the initiator is "not an origin" for the
    browser's own requests and the page's origin ("null" for file://) for requests a page made."""
    text = path.read_text(errors="replace").rstrip()
    try:
        log = json.loads(text)
    except ValueError:  # a log cut short: close it
        log = json.loads(text.rstrip(",") + "]}")
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    out = []
    for e in log.get("events", []):
        if names.get(e.get("type")) == "URL_REQUEST_START_JOB":
            p = e.get("params") or {}
            if p.get("url"):
                out.append((p["url"], str(p.get("initiator"))))
    return out


def test_no_request_leaves_loopback(env):
    """No page asked for anything outside loopback or its own files (Chromium's NetLog of every launch above),
    and what reached the recording proxy is only Chromium's own traffic (updates, sign-in, time)."""
    if env.get("launches", 0) < 10:
        pytest.skip("checks the page loads of the other browser tests; run the whole file")
    logs = sorted(env["root"].glob("netlog-*.json"))
    assert len(logs) == env["launches"]
    requests = [r for p in logs for r in _netlog_requests(p)]
    local = re.compile(r"^(?:file:|data:|about:|chrome:|blob:|https?://(?:127\.0\.0\.1|localhost|\[::1\])[:/])")
    by_pages = [(u, i) for u, i in requests if i != "not an origin" and i != "None"]
    assert by_pages, "the NetLog shows no page requests at all: the check would be vacuous"
    assert [u for u, _i in by_pages if not local.match(u)] == []
    browser_hosts = {_Recorder.host("GET " + u) for u, i in requests if i in ("not an origin", "None")}
    proxied = {env["proxy"].host(r) for r in env["proxy"].requests}
    assert proxied <= browser_hosts, sorted(proxied - browser_hosts)
