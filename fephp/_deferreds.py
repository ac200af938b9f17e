"""Deferreds that wait for one event together: a leaf every layer may use."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred

__all__ = ["Waiters", "chained"]

T = TypeVar("T")


class Waiters(Generic[T]):
    """Callers waiting for one event, each with a Deferred of its own, fired together.

    A Deferred that has already fired by the time the event comes (a
    timeout given up on it, a cancel) is skipped.
    """

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: list[Deferred[T]] = []

    def __len__(self) -> int:
        return len(self._waiting)

    def wait(self) -> "Deferred[T]":
        """A new Deferred that fires with the event."""
        d: Deferred[T] = Deferred()
        self._waiting.append(d)
        return d

    def fire(self, result: Any = None) -> None:
        """The event happened: fire every waiting Deferred with *result*."""
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if not d.called:
                d.callback(result)

    def fail(self, error: BaseException) -> None:
        """The event will not happen: fail every waiting Deferred with *error*."""
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if not d.called:
                d.errback(error)


def chained(d: "Deferred[Any]") -> "Deferred[None]":
    """A new Deferred that fires with None when *d* does, leaving *d*'s own result to its callbacks.

    For a stop that several callers may ask for: each gets a Deferred of its own.
    """
    out: Deferred[None] = Deferred()

    def fire(result: Any) -> Any:
        out.callback(None)
        return result

    d.addBoth(fire)
    return out
