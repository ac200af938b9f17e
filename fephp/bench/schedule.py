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

# Float rounding must not make a count of zero sends negative.
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
        # The float estimate can be one off either way; settle it against
        # intended() itself, so that a send is due exactly at its own time
        # (a timer armed for intended(i) always finds send i due).
        last = min(self.total - 1, math.floor((now - self.start) * self.rps))
        while last + 1 < self.total and self.intended(last + 1) <= now:
            last += 1
        while last >= 0 and self.intended(last) > now:
            last -= 1
        return last + 1

    def before(self, moment: float) -> int:
        """How many sends are intended strictly before *moment*."""
        count = self.due(moment)
        if count and self.intended(count - 1) == moment:
            count -= 1
        return count

    @property
    def end(self) -> float:
        """The intended time of the last send, or ``start`` when there is none."""
        return self.intended(max(0, self.total - 1))
