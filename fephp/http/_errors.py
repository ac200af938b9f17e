"""Errors of the HTTP/1.1 codec: what the client did wrong carries the status to answer it with."""

from __future__ import annotations

__all__ = ["BodyError", "HTTPCodecError", "HeadError", "LocalProtocolError", "RemoteProtocolError"]


class HTTPCodecError(Exception):
    """Base of the codec's errors.

    ``status`` (also ``error_status_hint``, h11's name) is the HTTP status a
    server answers the connection with before closing it; ``reason`` says
    which rule was broken, for the log.
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status

    @property
    def error_status_hint(self) -> int:
        return self.status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, status={self.status})"


class RemoteProtocolError(HTTPCodecError):
    """The client broke HTTP/1.1 (or a limit): the request cannot be read on; answer ``status`` and close."""


class HeadError(RemoteProtocolError):
    """A request head refused: 400, 414 (request line too long), 431 (head too large), 501, 505, or 413 (body announced too large)."""


class BodyError(RemoteProtocolError):
    """A request body refused while it was read: 400 (chunk framing) or 413 (over ``max_body_size``)."""


class LocalProtocolError(HTTPCodecError):
    """Our side asked the codec for something HTTP/1.1 does not allow now (a body before a head, too many bytes...).

    A bug of the caller, not of the client: ``status`` is 500.
    """

    def __init__(self, reason: str, status: int = 500) -> None:
        super().__init__(reason, status)
