"""Pure arithmetic of an open-loop send schedule.

The i-th request of a run at ``rps`` requests per second is *intended* to
leave at ``start + i / rps``, whatever happened to the requests before it.
Latency is measured from that intended time, so a server that stalls makes
every request scheduled during the stall look slow, not only the few that
were in flight (the "coordinated omission" that wrk2 corrects).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Schedule"]

# Float rounding must not make the request due at exactly ``now`` wait a tick.
_EPSILON = 1e-9


@dataclass(frozen=True)
class Schedule:
    """``total`` sends at ``rps`` per second from ``start`` (seconds on any monotonic clock)."""

    start: float
    rps: float
    total: int

    @classmethod
    def for_run(cls, start: float, rps: float, seconds: float) -> "Schedule":
        """The sends whose intended time falls in ``[start, start + seconds)``."""
        if rps <= 0:
            raise ValueError(f"rps must be positive, not {rps!r}")
        if seconds < 0:
            raise ValueError(f"seconds must not be negative, not {seconds!r}")
        return cls(start, rps, max(0, math.ceil(seconds * rps - _EPSILON)))

    def intended(self, index: int) -> float:
        """When send number *index* (from 0) is due."""
        return self.start + index / self.rps

    def due(self, now: float) -> int:
        """How many sends are due by *now*: indexes ``0 .. due(now) - 1``."""
        if now < self.start:
            return 0
        return min(self.total, math.floor((now - self.start) * self.rps + _EPSILON) + 1)

    @property
    def end(self) -> float:
        """The intended time of the last send, or ``start`` when there is none."""
        return self.intended(max(0, self.total - 1))
