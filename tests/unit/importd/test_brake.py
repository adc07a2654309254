"""The brake's decision (pure: counts injected) and the burst window (the clock passed in)."""

from importd.brake import MASS_MIN_FILES, BurstWindow, VanishLimits, should_hold
from importd.config import SafetyConfig

LIMITS = VanishLimits(max_files=1000, max_percent=20.0)


def test_a_single_file_is_never_held_even_in_a_tiny_root() -> None:
    assert not should_hold(1, 2, LIMITS)
    assert not should_hold(MASS_MIN_FILES - 1, MASS_MIN_FILES, LIMITS), "below the floor: 100 %, not held"


def test_over_the_percentage_is_held_at_or_under_is_not() -> None:
    assert should_hold(30, 100, LIMITS)
    assert not should_hold(20, 100, LIMITS), "exactly 20 % is not more than 20 %"
    assert should_hold(21, 100, LIMITS)


def test_over_the_file_count_is_held_whatever_the_share() -> None:
    assert not should_hold(1000, 1_000_000, LIMITS)
    assert should_hold(1001, 1_000_000, LIMITS)
    assert should_hold(11, 1_000_000, VanishLimits(max_files=10, max_percent=100.0))


def test_limits_come_from_the_config() -> None:
    assert VanishLimits.of(SafetyConfig(max_vanish_files=5, max_vanish_percent=50.0)) == VanishLimits(5, 50.0)


def test_a_burst_closes_after_a_quiet_second_or_at_most_five() -> None:
    window: BurstWindow[int, str] = BurstWindow(quiet_s=1.0, max_s=5.0)
    assert window.next_deadline() is None
    window.add(1, "a", 10.0)
    window.add(1, "b", 10.5)
    window.add(2, "x", 10.6)
    assert window.next_deadline() == 11.5
    assert window.due(11.4) == []
    assert window.due(11.5) == [(1, ["a", "b"])]
    assert len(window) == 1 and window.due(11.6) == [(2, ["x"])]
    # A steady trickle, one event every 0.9 s, is still cut at 5 s.
    for i in range(10):
        window.add(3, str(i), 20.0 + 0.9 * i)
        if 0.9 * i >= 5.0:
            break
    assert window.next_deadline() == 25.0
    assert [k for k, _ in window.due(25.0)] == [3]
    window.add(4, "y", 30.0)
    assert window.take_all() == [(4, ["y"])] and len(window) == 0
