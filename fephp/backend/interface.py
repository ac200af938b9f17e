"""What the web layer needs from a way of running PHP, from the web layer's side: Backend and ResponseSink.

Both the FastCGI pool (:mod:`fephp.backend.pool`) and the php-cgi fallback
(:mod:`fephp.backend.phpcgi`) provide :class:`Backend`; the resource hands each
request's output to a :class:`ResponseSink`.
"""

from __future__ import annotations

from typing import IO, Protocol, Sequence, Union

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer

from ..fastcgi import Chunk

__all__ = ["Backend", "ResponseSink", "Params", "Body", "Chunk"]

#: The CGI environment, in the order it is sent.
Params = Sequence[tuple[bytes, bytes]]
#: A request body: bytes, or a readable, seekable binary file (read in chunks,
#: rewound to where it was if the request has to be retried).
Body = Union[bytes, IO[bytes], None]


class ResponseSink(Protocol):
    """Receives one request's output as it arrives."""

    def response_started(self, producer: IPushProducer) -> None:
        """Called once before the first ``stdout_received``.

        *producer* pauses and resumes the backend's output: a sink that cannot
        keep up (a slow HTTP client) calls ``producer.pauseProducing()``.
        """

    def stdout_received(self, data: Chunk) -> None:
        """A piece of the CGI response (headers, then body), never empty.

        A long piece may be a read-only memoryview into the bytes read from
        the backend (:data:`fephp.fastcgi.VIEW_FROM`); it stays valid.
        """

    def stderr_received(self, data: bytes) -> None:
        """A piece of PHP's error output for this request."""

    def flush(self) -> None:
        """All output received so far has been passed on: send what is held.

        Called after each read that brought stdout; a sink may hold the
        pieces of one read to send them together.
        """


class Backend(Protocol):
    def request(self, params: Params, body: Body, sink: ResponseSink) -> "Deferred[int]":
        """Run one request; fires with the app status once the response is complete.

        Fails with a :class:`fephp.backend.errors.BackendError`.  Cancelling the
        Deferred aborts the request (the HTTP client went away).
        """

    def close(self) -> "Deferred[None]":
        """Stop: drop idle connections, fail queued requests; fires when done."""
