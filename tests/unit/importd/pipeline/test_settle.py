from importd.items import FileStat
from importd.pipeline.settle import SettleTracker


def st(size: int, mtime: int = 1, ctime_s: float = 1000.0) -> FileStat:
    return FileStat(size, mtime, int(ctime_s * 1e9), 7, 1)


def test_settles_after_quiet_period_measured_from_ctime() -> None:
    t = SettleTracker[str](5.0)
    assert t.observe("a", st(10, ctime_s=1000.0), now=1001.0) is False
    assert t.next_deadline() == 1005.0
    assert t.due(1004.9) == []
    assert t.due(1005.0) == ["a"]
    assert t.observe("a", st(10, ctime_s=1000.0), now=1005.0) is True
    assert len(t) == 0


def test_old_ctime_is_settled_at_once() -> None:
    t = SettleTracker[str](5.0)
    assert t.observe("a", st(10, ctime_s=900.0), now=1000.0) is True


def test_growth_restarts_the_clock() -> None:
    t = SettleTracker[str](5.0)
    t.observe("a", st(10, ctime_s=1000.0), now=1000.0)
    assert t.due(1005.0) == ["a"]
    # grew meanwhile: ctime moved on
    assert t.observe("a", st(20, ctime_s=1004.0), now=1005.0) is False
    assert t.next_deadline() == 1009.0
    assert t.due(1008.0) == []
    assert t.observe("a", st(20, ctime_s=1004.0), now=1009.0) is True


def test_a_future_ctime_cannot_settle_early() -> None:
    t = SettleTracker[str](5.0)
    assert t.observe("a", st(10, ctime_s=5000.0), now=1000.0) is False
    assert t.next_deadline() == 1005.0


def test_forget_and_stale_heap_entries() -> None:
    t = SettleTracker[str](5.0)
    t.observe("a", st(1, ctime_s=1000.0), now=1000.0)
    t.observe("b", st(1, ctime_s=1001.0), now=1001.0)
    t.forget("a")
    assert t.next_deadline() == 1006.0
    assert t.due(2000.0) == ["b"]
    assert "a" not in t and "b" in t
