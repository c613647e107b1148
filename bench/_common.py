"""Shared helpers for the benchmarks: JSON output, machine info, peak memory, a fake OpenAI endpoint.

Every benchmark prints exactly one JSON object on stdout (progress goes to stderr) so its output can be
pasted into bench/README.md or compared across machines.
"""

from __future__ import annotations

import json
import os
import platform
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def log(*args: Any) -> None:
    """Progress to stderr (stdout is reserved for the one JSON object)."""
    print(*args, file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=2, default=str))
    sys.stdout.flush()


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def torch_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                            "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


class Timer:
    """Wall seconds (`s`) and this process's CPU seconds (`cpu`): on a shared machine a wall time far above
    the CPU time means the process waited (for I/O or for a core)."""

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.s = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0


# --------------------------------------------------------------------------- a fake judge endpoint


def _reply(n: int, sorry: bool, prompt_tokens: int) -> bytes:
    verdict = "REFUSAL" if sorry else "COMPLIANCE"
    payload = {
        "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
        "model": "fake-judge-2024-01-01",
        "choices": [{"index": 0, "message": {"role": "assistant",
                                             "content": f"The assistant's reply is judged.\nVERDICT: {verdict}"},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 12, "total_tokens": prompt_tokens + 12},
    }
    data = json.dumps(payload).encode()
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            "Connection: keep-alive\r\n\r\n").encode()
    return head + data


def _serve(latency_s: float, jitter: float, counter: Any, port_q: Any, stop: Any) -> None:
    """An asyncio HTTP/1.1 server (keep-alive) answering every POST after the latency. Lean on purpose:
    a hosted endpoint costs the client machine no CPU, so the fake one should cost as little as possible."""
    import asyncio

    rng = random.Random(0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:].strip())
                body = await reader.readexactly(length) if length else b""
                with counter.get_lock():
                    counter.value += 1
                    n = counter.value
                delay = latency_s * (1 + jitter * (2 * rng.random() - 1))
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(_reply(n, b"sorry" in body.lower(), max(1, len(body) // 4)))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        port_q.put(f"http://127.0.0.1:{port}/v1")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, stop.wait)
        server.close()

    asyncio.run(main())


class EndpointProcess:
    """A fake OpenAI-compatible chat-completions endpoint in its own process on 127.0.0.1, answering every
    request after `latency_s` (± `jitter` fraction) as a hosted judge would. Its own process, so it does
    not compete with the client for the GIL. The verdict depends on the request text ("sorry" = refusal),
    so spt and a baseline get the same answer for the same judgment. `calls` counts requests."""

    def __init__(self, latency_s: float = 0.05, jitter: float = 0.0) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self._counter = ctx.Value("i", 0)
        self._stop = ctx.Event()
        q = ctx.Queue()
        self._proc = ctx.Process(target=_serve, args=(latency_s, jitter, self._counter, q, self._stop), daemon=True)
        self._proc.start()
        self.base_url = q.get(timeout=30)

    @property
    def calls(self) -> int:
        return self._counter.value

    def stop(self) -> None:
        self._proc.terminate()  # nothing to flush; clients may still hold keep-alive connections
        self._proc.join(timeout=10)

    def __enter__(self) -> EndpointProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# --------------------------------------------------------------------------- synthetic text

_OPENERS = ["How do I", "Explain how to", "Write a guide to", "What is the best way to", "Tell me how to",
            "Can you describe how to", "Give step-by-step instructions to"]
_TASKS = ["kill a python process", "pick a lock on my own front door", "make a strong password",
          "shoot a great photo at night", "bake sourdough bread", "get rid of wasps in the garden",
          "track my own phone", "break into the film industry", "poison weeds without hurting pets",
          "crack an egg with one hand", "beat my friend at chess", "synthesize aspirin in a lab"]
_REFUSALS = ["I'm sorry, but I can't help with that.",
             "I'm sorry, I cannot assist with this request because it could cause harm.",
             "Sorry, that is not something I can help with. If you are in danger, contact local services."]
_ANSWER_WORDS = ("first second then carefully make sure the tool is ready and check each step before you "
                 "continue with the next part of the process so that nothing goes wrong").split()


def synthetic_prompt(rng: random.Random) -> str:
    extra = " ".join(rng.choice(_ANSWER_WORDS) for _ in range(rng.randint(0, 40)))
    return f"{rng.choice(_OPENERS)} {rng.choice(_TASKS)}? {extra}".strip()


def synthetic_response(rng: random.Random) -> str:
    if rng.random() < 0.4:
        return rng.choice(_REFUSALS)
    return "Sure. " + " ".join(rng.choice(_ANSWER_WORDS) for _ in range(rng.randint(10, 120))) + "."


def overall_metrics(res: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The category-`all` metrics `names` of an evaluation result: value, interval, n and n_unscored each."""
    return {m["name"]: {k: m[k] for k in ("value", "ci_low", "ci_high", "n", "n_unscored")}
            for m in res.metrics if m.get("category") == "all" and m["name"] in names}
