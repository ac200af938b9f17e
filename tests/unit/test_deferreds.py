"""Waiters and chained: Deferreds that wait for one event together."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from fephp._deferreds import Waiters, chained


def test_waiters_fire_each_once_and_skip_the_given_up() -> None:
    """fire() calls back every waiting Deferred with the result, skips one already fired, and forgets them all."""
    waiters: Waiters[str] = Waiters()
    first, gone, last = waiters.wait(), waiters.wait(), waiters.wait()
    gone.callback("timed out")
    results: list[str] = []
    for d in (first, last):
        d.addCallback(results.append)
    waiters.fire("done")
    assert results == ["done", "done"]
    assert len(waiters) == 0
    waiters.fire("again")  # nobody waits any more
    assert results == ["done", "done"]


def test_waiters_fail() -> None:
    """fail() errbacks every waiting Deferred with the error."""
    waiters: Waiters[None] = Waiters()
    d = waiters.wait()
    errors: list[str] = []
    d.addErrback(lambda f: errors.append(f.getErrorMessage()))
    waiters.fail(RuntimeError("stopped"))
    assert errors == ["stopped"]


def test_chained_gives_each_caller_its_own_deferred() -> None:
    """Each chained() Deferred fires with None when the original does, and the original keeps its result."""
    original: Deferred[int] = Deferred()
    a, b = chained(original), chained(original)
    original.callback(7)
    assert (a.called, b.called) == (True, True)
    kept: list[int] = []
    original.addCallback(kept.append)
    assert kept == [7]
