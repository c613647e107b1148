"""What the OpenAI-compatible clients of spt share (the `openai` engine and the `openai:MODEL` judge):
which HTTP statuses are worth another attempt, the backoff policy, and running a coroutine from any caller."""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass
from typing import Any


def scrub(text: str, key: str | None, limit: int | None = 500) -> str:
    """Replies and errors are stored and printed: make sure the key never is (and cap the length)."""
    if key and len(key) >= 4 and key != "EMPTY":
        text = text.replace(key, "***")
    return text[:limit] if limit else text


# Statuses worth another attempt; anything else 4xx is the request's fault (no retry).
RETRY_STATUS = {408, 409, 425, 429}


@dataclass
class RetryPolicy:
    max_retries: int = 4
    base_s: float = 1.0
    cap_s: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Exponential backoff with full jitter around base * 2^(attempt-1), honouring Retry-After."""
        d = min(self.cap_s, self.base_s * (2 ** (attempt - 1)))
        d = d * (0.5 + random.random())
        if retry_after is not None:
            d = max(d, min(retry_after, self.cap_s))
        return d


def retry_after(err: Any) -> float | None:
    try:
        value = err.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except Exception:
        return None


def run_coroutine(coro: Any) -> Any:
    """asyncio.run, also from inside a running loop (notebooks): then in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as e:  # re-raised in the caller's thread
            result["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")
