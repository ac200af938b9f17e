"""Errors of the FastCGI codec."""

from __future__ import annotations

__all__ = ["ProtocolError"]


class ProtocolError(Exception):
    """The peer broke the FastCGI protocol; the connection cannot be used again.

    ``error_status_hint`` is what an HTTP front should answer: a backend that
    speaks broken FastCGI is a bad gateway.
    """

    error_status_hint = 502
