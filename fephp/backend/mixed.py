"""A mixed site's two PHP backends as one, from the server's side: php-fpm for scripts, PHP workers for ``php.worker.match``.

The web layer routes each request to one of them (fephp.cgi.routing's
PHPWorkers); the server starts, drains and closes them together through
this one object, as it does a single backend.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, gatherResults

from .interface import Backend, Body, Params, ResponseSink

__all__ = ["MixedBackend"]


class MixedBackend:
    """*fpm* answers :meth:`request`; *workers* is there for the web layer's match routes; both close together."""

    def __init__(self, fpm: Backend, workers: Backend) -> None:
        self.fpm = fpm
        self.workers = workers

    @property
    def parts(self) -> tuple[Backend, Backend]:
        """Both backends, for the admin side's figures."""
        return (self.fpm, self.workers)

    def request(self, params: Params, body: Body, sink: ResponseSink) -> Deferred[int]:
        return self.fpm.request(params, body, sink)

    def close(self) -> Deferred[None]:
        return _both([self.fpm.close(), self.workers.close()])

    def drain(self) -> Deferred[None]:
        """Both drained: each backend's own drain, or its close when it has none."""
        return _both([getattr(part, "drain", part.close)() for part in self.parts])

    def ready(self) -> Deferred[None]:
        """The workers booted (php-fpm has no such wait)."""
        ready = getattr(self.workers, "ready", None)
        if ready is None:
            return _both([])
        result: Deferred[None] = ready()
        return result


def _both(waits: list[Deferred[Any]]) -> Deferred[None]:
    return gatherResults(waits).addCallback(lambda _: None)
