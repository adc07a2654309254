"""When to try a request again: `429` and `5xx`, timeouts, dropped connections and answers that
are not JSON are passing failures; anything else (404, 401...) is final. A passing failure waits
`Retry-After` plus half a second when the provider says how long, else an exponential back-off
with jitter (`base * 2**(try - 1)`, times 1 to 2), so workers that failed together do not come
back together. Each request is tried `TRIES` times."""

from __future__ import annotations

import email.utils
import time

TRIES = 3
RETRY_AFTER_EXTRA_S = 0.5
MAX_WAIT_S = 300.0


def retryable_status(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


def retry_after_seconds(header: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds: a number, or an HTTP date; None when absent or unreadable."""
    if not header:
        return None
    text = header.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def delay(tries_done: int, retry_after: float | None, base: float, jitter: float) -> float:
    """Seconds to wait before the next try; `jitter` is a random number in [0, 1)."""
    if retry_after is not None:
        return min(MAX_WAIT_S, retry_after + RETRY_AFTER_EXTRA_S)
    return min(MAX_WAIT_S, base * 2.0 ** (tries_done - 1) * (1.0 + jitter))


__all__ = ["RETRY_AFTER_EXTRA_S", "TRIES", "delay", "retry_after_seconds", "retryable_status"]
