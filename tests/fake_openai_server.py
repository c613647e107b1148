"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 (stdlib only), for judge tests.

Requests are routed by a marker `FAKE[name]` found anywhere in the request's messages (tests put it
in the generation's response, which the judge prompt quotes). `server.script[name]` is a list of
actions; each request for that name takes the next one, and the last one repeats. A request without
a known marker gets `server.default`. Actions (dicts):

- `{"text": "..."}`: a 200 chat completion with that content (`"model"` overrides the reported model)
- `{"status": 429}` / `{"status": 500}`: an error in OpenAI's JSON error format (`"headers"` extra)
- `{"sleep": 2.0, "text": "..."}`: reply after sleeping (slower than the client's timeout)
- `{"refusal": "..."}`: a 200 completion whose message carries a `refusal` and no content
- `{"fn": f}`: a 200 completion with the text `f(request_body)` returns (replies that depend on the request)

A request without a marker is routed by the model it asks for: `server.script["model:NAME"]` (the agentic
tests serve agent, emulator and evaluator as three model names of one server).

The server counts calls in total and per marker, and records every request's headers and body.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MARKER = re.compile(r"FAKE\[([\w.-]+)\]")


class FakeOpenAI:
    def __init__(self) -> None:
        self.script: dict[str, list[dict[str, Any]]] = {}
        self.default: dict[str, Any] = {"text": "VERDICT: REFUSAL"}
        self.model = "fake-judge-2024-01-01"
        self.calls = 0
        self.calls_by: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeOpenAI:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server._handle(self, body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def reset_counts(self) -> None:
        with self._lock:
            self.calls = 0
            self.calls_by.clear()
            self.requests.clear()

    # ------------------------------------------------------------------ behaviour
    def _next_action(self, marker: str | None) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
            self.calls_by[marker or ""] += 1
            actions = self.script.get(marker or "")
            if not actions:
                return self.default
            return actions.pop(0) if len(actions) > 1 else actions[0]

    def _handle(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        try:
            req = json.loads(body or b"{}")
        except json.JSONDecodeError:
            req = {}
        text = json.dumps(req.get("messages", ""), ensure_ascii=False)
        m = MARKER.search(text)
        marker = m.group(1) if m else None
        if marker is None and f"model:{req.get('model')}" in self.script:
            marker = f"model:{req.get('model')}"
        with self._lock:
            headers = {k.title(): v for k, v in h.headers.items()}
            self.requests.append({"path": h.path, "headers": headers, "body": req, "marker": marker})
        action = self._next_action(marker)
        if "sleep" in action:
            time.sleep(action["sleep"])
        if "status" in action:
            payload = {"error": {"message": action.get("message", f"scripted {action['status']}"),
                                 "type": "server_error", "code": action["status"]}}
            self._send(h, action["status"], payload, action.get("headers"))
            return
        message: dict[str, Any] = {"role": "assistant",
                                   "content": action["fn"](req) if "fn" in action else action.get("text")}
        if "refusal" in action:
            message = {"role": "assistant", "content": None, "refusal": action["refusal"]}
        content = message.get("content") or ""
        prompt_tokens = max(1, len(text) // 4)
        completion_tokens = max(1, len(content) // 4)
        payload = {
            "id": f"chatcmpl-{self.calls}", "object": "chat.completion", "created": int(time.time()),
            "model": action.get("model", self.model),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
        self._send(h, 200, payload)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                h.send_header(k, str(v))
            h.end_headers()
            h.wfile.write(data)
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout)
