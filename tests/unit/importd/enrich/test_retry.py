from __future__ import annotations

import pytest

from importd.enrich.retry import RETRY_AFTER_EXTRA_S, delay, retry_after_seconds, retryable_status


def test_which_statuses_are_passing() -> None:
    assert retryable_status(429) and retryable_status(500) and retryable_status(503)
    assert not retryable_status(404) and not retryable_status(401) and not retryable_status(200)


def test_retry_after_is_honoured_plus_half_a_second() -> None:
    assert RETRY_AFTER_EXTRA_S == 0.5
    assert delay(1, 2.0, base=1.0, jitter=0.9) == 2.5
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_backoff_doubles_with_jitter() -> None:
    assert delay(1, None, base=1.0, jitter=0.0) == 1.0
    assert delay(2, None, base=1.0, jitter=0.0) == 2.0
    assert delay(2, None, base=1.0, jitter=0.5) == 3.0
    assert delay(30, None, base=1.0, jitter=0.0) == 300.0  # capped
