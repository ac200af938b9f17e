"""The site's own figures, from the HTTP side: requests by method, status class and kind, their durations and bytes.

:meth:`SiteFigures.request_done` runs once per finished request and only adds
to integers; the admin side reads :meth:`SiteFigures.figures` when scraped.
"""

from __future__ import annotations

from typing import Any, Optional

from .._stats import DURATION_BOUNDS, Histogram

__all__ = ["KINDS", "SiteFigures", "method_label"]

#: What served a request: PHP, a static file, or the site itself (a redirect, an error page).
KINDS = ("php", "static", "other")
#: Methods counted under their own name; any other is "other", so a client cannot grow the label set.
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}


def method_label(method: bytes) -> str:
    return _METHODS.get(method, "other")


class SiteFigures:
    """Counters and histograms of the requests one site finished."""

    __slots__ = ("requests", "duration", "first_byte", "bytes_sent")

    def __init__(self) -> None:
        #: (method, status class "2xx", kind) -> requests
        self.requests: dict[tuple[str, str, str], int] = {}
        self.duration = {kind: Histogram(DURATION_BOUNDS) for kind in KINDS}
        self.first_byte = {kind: Histogram(DURATION_BOUNDS) for kind in KINDS}
        self.bytes_sent = dict.fromkeys(KINDS, 0)

    def request_done(
        self, method: bytes, status: int, kind: str, duration: float, first_byte: Optional[float], sent: int
    ) -> None:
        key = (_METHODS.get(method, "other"), "%dxx" % (status // 100), kind)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        self.duration[kind].observe(duration)
        if first_byte is not None:
            self.first_byte[kind].observe(first_byte)
        self.bytes_sent[kind] += sent

    def exchange_done(self, exchange: Any, now: float) -> None:
        """*exchange* (an :class:`fephp.web.exchange.Exchange`) finished at *now* (monotonic)."""
        started = exchange.started_at
        first = exchange.first_byte_at
        self.request_done(
            exchange.method, exchange.status, exchange.kind, now - started,
            None if first is None else first - started, exchange.bytes_sent,
        )

    def figures(self) -> dict[str, Any]:
        """A JSON-able copy, as worker processes send it to their parent."""
        return {
            "requests": [[method, code, kind, n] for (method, code, kind), n in sorted(self.requests.items())],
            "duration": {kind: h.figures() for kind, h in self.duration.items()},
            "first_byte": {kind: h.figures() for kind, h in self.first_byte.items()},
            "bytes_sent": dict(self.bytes_sent),
        }
