"""Errors of the RoadRunner worker-protocol codec."""

from __future__ import annotations

__all__ = ["ProtocolError"]


class ProtocolError(Exception):
    """The worker broke the goridge frame format or the HTTP payload; the worker cannot be used again.

    ``error_status_hint`` is what an HTTP front should answer: a worker that
    speaks a broken protocol is a bad gateway, as a broken FastCGI backend is.
    """

    error_status_hint = 502
