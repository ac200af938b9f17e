"""The arithmetic of open-loop send times."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fephp.bench.schedule import Schedule


def test_total_counts_sends_in_the_half_open_window() -> None:
    """Five seconds at 200 req/s is exactly 1000 sends, the last at 4.995 s."""
    schedule = Schedule.for_run(10.0, 200.0, 5.0)
    assert schedule.total == 1000
    assert schedule.intended(999) == pytest.approx(14.995)
    assert schedule.end == pytest.approx(14.995)


def test_fractional_rate_rounds_the_count_up() -> None:
    """A window that ends between two sends includes the send that starts inside it."""
    assert Schedule.for_run(0.0, 3.0, 1.1).total == 4
    assert Schedule.for_run(0.0, 0.5, 3.0).total == 2


def test_intended_times_do_not_depend_on_what_happened_before() -> None:
    """Send i is due at start + i / rps."""
    schedule = Schedule.for_run(100.0, 4.0, 2.0)
    assert [schedule.intended(i) for i in range(schedule.total)] == [
        100.0, 100.25, 100.5, 100.75, 101.0, 101.25, 101.5, 101.75,
    ]


def test_due_counts_sends_at_or_before_now() -> None:
    """Nothing is due before start; the first send is due at start; a send is due exactly at its time."""
    schedule = Schedule.for_run(1.0, 10.0, 1.0)
    assert schedule.due(0.999) == 0
    assert schedule.due(1.0) == 1
    assert schedule.due(1.0999) == 1
    assert schedule.due(1.1) == 2
    assert schedule.due(5.0) == 10


def test_before_excludes_a_send_at_the_moment() -> None:
    """before(t) counts sends strictly earlier than t: the first measured send after a warmup is index before(t)."""
    schedule = Schedule.for_run(0.0, 4.0, 2.0)
    assert schedule.before(0.0) == 0
    assert schedule.before(0.5) == 2
    assert schedule.before(0.6) == 3
    assert schedule.before(99.0) == 8


def test_bad_arguments_are_refused() -> None:
    """A zero rate has no schedule (it is the closed-loop mode) and time does not run backwards."""
    with pytest.raises(ValueError):
        Schedule.for_run(0.0, 0.0, 1.0)
    with pytest.raises(ValueError):
        Schedule.for_run(0.0, 1.0, -1.0)


@given(
    rps=st.floats(min_value=0.1, max_value=100_000),
    seconds=st.floats(min_value=0, max_value=100),
    index=st.integers(min_value=0, max_value=10_000_000),
)
def test_each_send_is_due_at_its_own_time_and_not_before(rps: float, seconds: float, index: int) -> None:
    """At a send's intended time it is due, and the next one is not yet (float rounding included)."""
    schedule = Schedule.for_run(1000.0, rps, seconds)
    if index >= schedule.total:
        assert schedule.due(schedule.intended(index)) == schedule.total
        return
    at = schedule.intended(index)
    assert schedule.due(at) == index + 1
    if index + 1 < schedule.total:
        assert schedule.due(schedule.intended(index + 1)) == index + 2
