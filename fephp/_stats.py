"""Figures the request path keeps as it goes, read whole at scrape time: a leaf, the standard library only.

The hot path only adds to plain integers and lists; turning them into
Prometheus metric families (``fephp.server.metrics``), JSON for ``/status``,
or a sum over worker processes happens when someone asks.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Sequence

__all__ = ["DURATION_BOUNDS", "QUEUE_WAIT_BOUNDS", "Histogram"]

#: Request durations, in seconds: 1 ms to a minute (``timeouts.response``'s default).
DURATION_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Waits for a pooled connection, in seconds: up to ``timeouts.queue``'s default.
QUEUE_WAIT_BOUNDS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0)


class Histogram:
    """Observations counted per bucket (the value at most each bound, one past the last bound) and summed.

    ``counts`` are per bucket, not cumulative: the exposition adds them up.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # The first bound >= value: Prometheus's "le" buckets.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def figures(self) -> dict[str, Any]:
        """A JSON-able copy: ``{"bounds": [...], "counts": [...], "sum": s}``."""
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.sum}
