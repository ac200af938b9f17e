"""PHP from the HTTP side: a routed script sent to the backend, its CGI answer streamed to the client.

:class:`PHPHandler` builds the CGI environment of a request, hands it to the
backend (the FastCGI pool or php-cgi) with a :class:`_PHPResponse` as the
sink, and turns the outcome into the response: PHP's own, or an error page
when PHP could not answer.  A client that goes away cancels the backend
request.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._deferreds import Waiters
from ..backend.errors import BackendError
from ..backend.interface import Backend, Chunk
from ..cgi.environ import RequestFacts, build_env
from ..cgi.response import CGIResponseError, HeadParser
from ..cgi.routing import Script, StaticFile
from .errors import send_error
from .exchange import ExchangeState, HeaderList
from .hints import EarlyHints
from .sendfile import X_ACCEL_REDIRECT, X_SENDFILE, Refused, SendfileRoots
from .static import serve_static

__all__ = ["PHPHandler"]

_monotonic = time.monotonic
_RECEIVED = ExchangeState.RECEIVED
_LOST = ExchangeState.LOST
#: Headers about PHP's connection to us, not ours to the client (RFC 9110 7.6.1);
#: the exchange frames the response itself.
_HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"proxy-connection"))
#: Methods whose empty body is still announced as CONTENT_LENGTH 0.
_BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))
#: Statuses whose response has no body (RFC 9110 6.4.1): no Content-Length of PHP's empty one.
_NO_BODY_CODES = frozenset((204, 304))
#: What PHP's headers about a file handed over say of PHP's own (empty)
#: body, never of the file: dropped before the file is served.
_BODY_HEADERS = frozenset(
    (b"content-type", b"content-length", b"content-encoding", b"content-range", b"etag", b"last-modified", b"accept-ranges")
)
#: Request headers only fephp may set: a client's would tell PHP that X-Sendfile works.
_SENDFILE_REQUEST = (b"x-sendfile-type", b"x-accel-mapping")


class _PHPResponse:
    """A :class:`fephp.backend.interface.ResponseSink` that turns CGI output into the exchange's response.

    PHP's head is held until body bytes go out, and body bytes until the
    backend has passed on all it read (``flush``) or the response ends
    (``complete``).  A response that PHP produced in one piece, most small
    pages, then goes out with a Content-Length, head and body in one send,
    instead of a chunked head, a chunk and a terminating chunk.
    """

    __slots__ = ("_exchange", "_parser", "_producer", "_held", "_sendfile", "_handover", "_hints", "_route", "_head")

    log = Logger()

    def __init__(
        self,
        exchange: Any,
        max_head_size: int,
        sendfile: Optional[SendfileRoots] = None,
        hints: Optional[EarlyHints] = None,
        route: bytes = b"",
    ) -> None:
        self._exchange = exchange
        #: Where this GET's answer teaches the route's Early Hints (None: not learning).
        self._hints = hints
        self._route = route
        self._parser: Optional[HeadParser] = HeadParser(max_head_size)
        self._producer: Optional[IPushProducer] = None
        self._held: list[Chunk] = []
        self._sendfile = sendfile
        #: (header, value) of an X-Sendfile or X-Accel-Redirect to act on: PHP's body is dropped.
        self._handover: Optional[tuple[bytes, bytes]] = None
        #: PHP's status, reason and headers (lowercase names), until the response starts.
        self._head: Optional[tuple[int, Optional[bytes], HeaderList]] = None

    def response_started(self, producer: IPushProducer) -> None:
        self._producer = producer
        # The HTTP transport pauses the FastCGI connection when the client is slow.
        self._exchange.register_producer(producer, True)

    def stdout_received(self, data: Chunk) -> None:
        parser = self._parser
        if parser is None:
            if self._handover is None:
                self._held.append(data)
            return
        parsed = parser.feed(data if type(data) is bytes else bytes(data))
        if parsed is None:
            return
        head, rest = parsed
        self._send_head(head)
        if rest and self._handover is None:
            self._held.append(rest)

    def flush(self) -> None:
        held = self._held
        if held:
            self._held = []
            if self._head is not None:
                self._start()
            # Large pieces are memoryviews into the FastCGI reads: sent gathered where the transport can.
            self._exchange.write_pieces(held)

    def _start(self) -> None:
        head = self._head
        assert head is not None
        self._head = None
        self._exchange.start_response(head[0], head[2], head[1])

    def _send_head(self, head: Any) -> None:
        self._parser = None
        if self._hints is not None:
            self._hints.learn(self._route, head.status, head.headers)
        # HeadParser's names are tokens and its values hold no CR or LF.
        headers: HeaderList = []
        for name, value in head.headers:
            lower = name.lower()
            if lower in _HOP_BY_HOP:
                continue
            if lower[:2] == b"x-" and (lower == X_SENDFILE or lower.startswith(b"x-accel-")):
                # Never for the client, as behind nginx; acted on only with roots configured.
                if self._sendfile is not None and (lower == X_SENDFILE or lower == X_ACCEL_REDIRECT):
                    self._handover = (lower, value)
                continue
            headers.append((lower, value))
        self._head = (head.status, head.reason or None, headers)

    def stderr_received(self, data: bytes) -> None:
        exchange = self._exchange
        for line in data.decode("utf-8", "replace").splitlines():
            if line:
                self.log.warn(
                    "[{request_id}] PHP: {php_stderr}",
                    php_stderr=line,
                    uri=exchange.target.decode("latin-1"),
                    request_id=_request_id(exchange),
                )

    def complete(self) -> bool:
        """The response ended: start a pending head and write what is held.

        Returns False when the response is a file PHP handed over, which
        finishes the exchange itself; True when the caller is to finish it.
        Raises CGIResponseError for a head that never completed.
        """
        if self._parser is not None:
            self._parser.finish()  # raises: the output ended inside the head
        if self._handover is not None:
            self._serve_file(*self._handover)
            return False
        head = self._head
        if head is not None:
            status, _, headers = head
            if self._exchange.method != b"HEAD" and status not in _NO_BODY_CODES:
                for name, _ in headers:
                    if name == b"content-length":
                        break
                else:
                    # The whole body is here: its length is known.
                    held = self._held
                    headers.append((b"content-length", b"%d" % (len(held[0]) if len(held) == 1 else sum(map(len, held)))))
            self._head = None
            self._exchange.start_response(status, headers, head[1])
        self.flush()
        return True

    def _serve_file(self, header: bytes, value: bytes) -> None:
        """Send the file PHP named instead of its body, with the static path's Range, validators and compression."""
        exchange = self._exchange
        assert self._sendfile is not None and self._head is not None
        _, _, php_headers = self._head
        self._head = None
        types = [v for name, v in php_headers if name == b"content-type"]
        # PHP's other headers (Cache-Control, Content-Disposition, cookies...) go out with the file or the refusal.
        exchange.response_headers += [(name, v) for name, v in php_headers if name not in _BODY_HEADERS]
        target = self._sendfile.resolve(header, value)
        if isinstance(target, Refused):
            self.log.warn(
                "[{request_id}] {header} refused for {uri}: {reason}",
                header=header.decode("latin-1"),
                uri=exchange.target.decode("latin-1"),
                reason=target.reason,
                request_id=_request_id(exchange),
            )
            send_error(exchange, target.status)
            return
        # The file's own status: 200, 206, 304, 416.
        serve_static(exchange, StaticFile(target.path, target.stat), content_type=types[0] if types else None, as_get=True)

    def unregister(self) -> None:
        if self._producer is not None:
            self._producer = None
            self._exchange.unregister_producer()


class PHPHandler:
    """Runs scripts for one site through *backend*, counting the requests in flight."""

    log = Logger()

    def __init__(
        self,
        backend: Backend,
        *,
        document_root: str,
        server_software: str = "fephp",
        server_name: Optional[str] = None,
        max_cgi_head_size: int = 64 * 1024,
        sendfile: Optional[SendfileRoots] = None,
        early_hints: Optional[EarlyHints] = None,
    ) -> None:
        self.backend = backend
        #: The backend's Deferred-free way (FastCGIPool.send), when it has one.
        self._send = getattr(backend, "send", None)
        #: Learned 103 Early Hints (``server.early_hints``), or None when off.
        self.early_hints = early_hints
        #: X-Sendfile and X-Accel-Redirect roots, or None when they are off.
        self.sendfile = sendfile
        self.document_root = document_root
        self.server_software = server_software
        self._server_header = server_software.encode("latin-1", "replace")
        #: The access log's "backend" field.
        self.backend_name: str = getattr(backend, "name", type(backend).__name__)
        self.server_name = server_name
        self.max_cgi_head_size = max_cgi_head_size
        #: Requests handed to PHP and not yet finished (for a graceful stop).
        self.in_flight = 0
        self._idle_waiters: Waiters[None] = Waiters()

    def run(self, exchange: Any, route: Script, query: bytes) -> None:
        """Send *route* to PHP with the CGI environment of *exchange*; PHP's answer is streamed to it."""
        content = exchange.body
        length: Optional[int]
        if content is None:
            length = None
        elif type(content) is bytes:
            length = len(content)
        else:
            content.seek(0, os.SEEK_END)
            length = content.tell()
            content.seek(0)
        method = exchange.method
        headers = exchange.headers
        content_type = host = None
        strip = False
        for name, value in headers:
            # The last of each, as Twisted's getHeader gave them.
            if name == b"content-type":
                content_type = value
            elif name == b"host":
                host = value
            elif name in _SENDFILE_REQUEST:
                strip = True
        if strip:
            headers = [(name, value) for name, value in headers if name not in _SENDFILE_REQUEST]
        if self.sendfile is not None:
            headers = headers + self.sendfile.request_headers()
        client = exchange.client
        server = exchange.server
        version = exchange.version
        facts = RequestFacts(
            method=method,
            raw_uri=exchange.target,
            query_string=query,
            headers=headers,
            content_length=length if length or method in _BODY_METHODS else None,
            content_type=content_type,
            server_protocol=version,
            https=exchange.scheme == b"https",
            # A UNIX-socket listener has no IP or port: "unix:" and 0, as
            # nginx's $remote_addr and $server_addr say for one.
            remote_addr=client.host,
            remote_port=client.port,
            server_addr=server.host,
            server_port=server.port,
            host=host,
        )
        env = build_env(
            facts,
            route,
            document_root=self.document_root,
            server_software=self.server_software,
            server_name=self.server_name,
        )
        hints = self.early_hints
        if hints is not None and method == b"GET":
            path = exchange.path
            links = hints.hints_for(path)
            if links is not None:
                exchange.informational(103, [(b"link", link) for link in links])
            sink = _PHPResponse(exchange, self.max_cgi_head_size, self.sendfile, hints, path)
        else:
            sink = _PHPResponse(exchange, self.max_cgi_head_size, self.sendfile)
        body = content if length else None
        self.in_flight += 1
        # For the access log and the figures.
        exchange.kind = "php"
        exchange.backend_name = self.backend_name
        exchange.php_started_at = _monotonic()
        send = self._send
        if send is not None:
            handle = send(env, body, sink, lambda result: self._php_outcome(result, exchange, sink))
            # The client went away: abort the FastCGI request and free its connection.
            exchange.when_lost(handle.cancel)
            return
        d = self.backend.request(env, body, sink)
        exchange.when_lost(d.cancel)
        # One callback pair: each ends with _request_over.
        d.addCallbacks(self._php_done, self._php_failed, (exchange, sink), {}, (exchange, sink))

    def _php_outcome(self, result: Any, exchange: Any, sink: _PHPResponse) -> None:
        if type(result) is Failure:
            self._php_failed(result, exchange, sink)
        else:
            self._php_done(result, exchange, sink)

    def _php_done(self, app_status: int, exchange: Any, sink: _PHPResponse) -> None:
        try:
            self._answer(exchange, sink)
        finally:
            self._request_over()

    def _answer(self, exchange: Any, sink: _PHPResponse) -> None:
        """PHP's response ended: finish the exchange with it (or 502 for a head that never completed)."""
        exchange.php_ended_at = _monotonic()
        sink.unregister()
        if exchange.state is _LOST:
            return
        try:
            finish = sink.complete()
        except CGIResponseError as e:
            self.log.error(
                "[{request_id}] bad CGI response from PHP for {uri}: {error}",
                uri=exchange.target.decode("latin-1"), error=str(e), request_id=_request_id(exchange),
            )
            self._fail(exchange, 502)
            return
        if finish:
            exchange.finish()

    def _php_failed(self, failure: Failure, exchange: Any, sink: _PHPResponse) -> None:
        try:
            self._answer_failure(failure, exchange, sink)
        finally:
            self._request_over()

    def _answer_failure(self, failure: Failure, exchange: Any, sink: _PHPResponse) -> None:
        """PHP could not answer: an error page, or a cut connection when part of the answer is out."""
        exchange.php_ended_at = _monotonic()
        sink.unregister()
        if exchange.state is _LOST or failure.check(CancelledError):
            return  # the client went away; nobody to answer
        error = failure.value
        if isinstance(error, (BackendError, CGIResponseError)):
            status = error.http_status
            self.log.error(
                "[{request_id}] {uri}: {status} ({kind}: {error})",
                uri=exchange.target.decode("latin-1"),
                status=status,
                kind=type(error).__name__,
                error=str(error),
                request_id=_request_id(exchange),
            )
        else:
            status = 502
            self.log.failure(
                "[{request_id}] unexpected error while running {uri}", failure,
                uri=exchange.target.decode("latin-1"), request_id=_request_id(exchange),
            )
        self._fail(exchange, status)

    def _fail(self, exchange: Any, status: int) -> None:
        if exchange.state is not _RECEIVED:
            # Part of the answer is out: the client must see it truncated,
            # never a short response that looks complete.
            # An HTTP/1.1 connection is cut, an HTTP/2 stream is reset.
            exchange.abort()
            return
        send_error(exchange, status)

    def _request_over(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle_waiters.fire(None)  # a stop's grace period may have given up on some

    def wait_idle(self) -> "Deferred[None]":
        """A Deferred that fires when no PHP request is in flight."""
        if self.in_flight == 0:
            return succeed(None)
        return self._idle_waiters.wait()


def _request_id(exchange: Any) -> str:
    """The exchange's X-Request-Id for a log line ("-" for none)."""
    return (exchange.request_id or b"-").decode("ascii", "replace")
