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
from twisted.web.http import NO_BODY_CODES
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET, Request

from .._deferreds import Waiters
from .._twisted import header_name, headers_raw, request_disconnected
from ..backend.errors import BackendError
from ..backend.interface import Backend, Chunk
from ..cgi.environ import RequestFacts, build_env
from ..cgi.response import CGIResponseError, HeadParser
from ..cgi.routing import Script, StaticFile
from .errors import send_error
from .hints import EarlyHints
from .sendfile import X_ACCEL_REDIRECT, X_SENDFILE, Refused, SendfileRoots
from .static import serve_static

__all__ = ["PHPHandler"]

_SERVER = b"server"
_REQUEST_ID = b"x-request-id"
_monotonic = time.monotonic
#: Headers about PHP's connection to us, not ours to the client (RFC 9110 7.6.1);
#: Twisted frames the response itself.
_HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"proxy-connection"))
#: Methods whose empty body is still announced as CONTENT_LENGTH 0.
_BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))
#: What PHP's headers about a file handed over say of PHP's own (empty)
#: body, never of the file: dropped before the file is served.
_BODY_HEADERS = (b"content-length", b"content-encoding", b"content-range", b"etag", b"last-modified", b"accept-ranges")
#: Request headers only fephp may set: a client's would tell PHP that X-Sendfile works.
_SENDFILE_REQUEST = (b"x-sendfile-type", b"x-accel-mapping")


class _PHPResponse:
    """A :class:`fephp.backend.interface.ResponseSink` that turns CGI output into the HTTP response.

    Body bytes are held until the backend has passed on all it read
    (``flush``) or the response ends (``complete``).  A response that PHP
    produced in one piece, most small pages, then goes out with a
    Content-Length, head and body in one send, instead of a chunked head,
    a chunk and a terminating chunk.
    """

    __slots__ = ("_request", "_parser", "_producer", "_held", "_sendfile", "_handover", "_hints", "_route", "_write_pieces")

    log = Logger()

    def __init__(
        self,
        request: Request,
        max_head_size: int,
        sendfile: Optional[SendfileRoots] = None,
        hints: Optional[EarlyHints] = None,
        route: bytes = b"",
    ) -> None:
        self._request = request
        #: Where this GET's answer teaches the route's Early Hints (None: not learning).
        self._hints = hints
        self._route = route
        self._parser: Optional[HeadParser] = HeadParser(max_head_size)
        self._producer: Optional[IPushProducer] = None
        self._held: list[Chunk] = []
        self._sendfile = sendfile
        #: (header, value) of an X-Sendfile or X-Accel-Redirect to act on: PHP's body is dropped.
        self._handover: Optional[tuple[bytes, bytes]] = None
        # FrontRequest sends the held pieces without joining them (large
        # pieces are memoryviews into the FastCGI reads); any other Request
        # gets bytes.
        self._write_pieces = getattr(request, "write_pieces", None)

    def response_started(self, producer: IPushProducer) -> None:
        self._producer = producer
        # The HTTP transport pauses the FastCGI connection when the client is slow.
        self._request.registerProducer(producer, True)

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
            if self._write_pieces is not None:
                self._write_pieces(held)
            else:
                self._request.write(b"".join(held))

    def _send_head(self, head: Any) -> None:
        self._parser = None
        request = self._request
        request.setResponseCode(head.status, head.reason or None)
        if self._hints is not None:
            self._hints.learn(self._route, head.status, head.headers)
        # HeadParser's names are tokens and its values hold no CR or LF:
        # they go into the Headers' dict as addRawHeader would put them.
        raw = headers_raw(request.responseHeaders)
        for name, value in head.headers:
            lower = name.lower()
            if lower in _HOP_BY_HOP:
                continue
            if lower[:2] == b"x-" and (lower == X_SENDFILE or lower.startswith(b"x-accel-")):
                # Never for the client, as behind nginx; acted on only with roots configured.
                if self._sendfile is not None and (lower == X_SENDFILE or lower == X_ACCEL_REDIRECT):
                    self._handover = (lower, value)
                continue
            key = header_name(name)
            values = raw.get(key)
            if values is None:
                raw[key] = [value]
            else:
                values.append(value)  # Set-Cookie, each apart

    def stderr_received(self, data: bytes) -> None:
        request = self._request
        for line in data.decode("utf-8", "replace").splitlines():
            if line:
                self.log.warn(
                    "[{request_id}] PHP: {php_stderr}",
                    php_stderr=line,
                    uri=request.uri.decode("latin-1"),
                    request_id=_request_id(request),
                )

    def complete(self) -> bool:
        """The response ended: finish a pending head and write what is held.

        Returns False when the response is a file PHP handed over, which
        finishes the request itself; True when the caller is to finish it.
        Raises CGIResponseError for a head that never completed.
        """
        if self._parser is not None:
            self._parser.finish()  # raises: the output ended inside the head
        if self._handover is not None:
            self._serve_file(*self._handover)
            return False
        request = self._request
        if not request.startedWriting and request.method != b"HEAD" and request.code not in NO_BODY_CODES:  # type: ignore[attr-defined]
            raw = headers_raw(request.responseHeaders)
            if b"Content-Length" not in raw:
                # The whole body is here: its length is known.
                held = self._held
                raw[b"Content-Length"] = [b"%d" % (len(held[0]) if len(held) == 1 else sum(map(len, held)))]
        self.flush()
        return True

    def _serve_file(self, header: bytes, value: bytes) -> None:
        """Send the file PHP named instead of its body, with the static path's Range, validators and compression."""
        request = self._request
        assert self._sendfile is not None
        target = self._sendfile.resolve(header, value)
        if isinstance(target, Refused):
            self.log.warn(
                "[{request_id}] {header} refused for {uri}: {reason}",
                header=header.decode("latin-1"),
                uri=request.uri.decode("latin-1"),
                reason=target.reason,
                request_id=_request_id(request),
            )
            headers = request.responseHeaders
            for name in (b"content-type", *_BODY_HEADERS):
                headers.removeHeader(name)
            body = send_error(request, target.status)
            request.write(body)
            request.finish()
            return
        headers = request.responseHeaders
        types = headers.getRawHeaders(b"content-type")
        for name in _BODY_HEADERS:
            headers.removeHeader(name)
        request.setResponseCode(200)  # the file's own status: 200, 206, 304, 416
        served = serve_static(
            request, StaticFile(target.path, target.stat), content_type=types[0] if types else None, as_get=True
        )
        if served is NOT_DONE_YET:
            return
        # What twisted.web's Request.render does with a body returned.
        if request.method == b"HEAD":
            request.write(b"")
        else:
            request.setHeader(b"content-length", b"%d" % len(served))
            request.write(served)
        request.finish()

    def unregister(self) -> None:
        if self._producer is not None:
            self._producer = None
            # A Request whose client went has no channel left to unregister from
            # (an HTTP/2 stream reset, or its connection lost, while PHP ran).
            if not request_disconnected(self._request):
                self._request.unregisterProducer()


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

    def run(self, request: Request, route: Script, query: bytes) -> Any:
        """Send *route* to PHP with the CGI environment of *request*; PHP's answer is streamed to it."""
        content = request.content
        length: Optional[int]
        if content is None:
            length = None
        else:
            content.seek(0, os.SEEK_END)
            length = content.tell()
            content.seek(0)
        request_headers = headers_raw(request.requestHeaders)
        headers = [(name, value) for name, values in request_headers.items() for value in values]
        if b"X-Sendfile-Type" in request_headers or b"X-Accel-Mapping" in request_headers:
            headers = [(name, value) for name, value in headers if name.lower() not in _SENDFILE_REQUEST]
        if self.sendfile is not None:
            headers += self.sendfile.request_headers()
        client = request.getClientAddress()
        host = request.getHost()
        facts = RequestFacts(
            method=request.method,
            raw_uri=request.uri,
            query_string=query,
            headers=headers,
            content_length=length if length or request.method in _BODY_METHODS else None,
            content_type=_last(request_headers.get(b"Content-Type")),
            server_protocol=request.clientproto,
            https=request.isSecure(),
            # A UNIX-socket listener has no IP or port: "unix:" and 0, as
            # nginx's $remote_addr and $server_addr say for one.
            remote_addr=getattr(client, "host", "unix:"),
            remote_port=getattr(client, "port", 0),
            server_addr=getattr(host, "host", "unix:"),
            server_port=getattr(host, "port", 0),
            host=_last(request_headers.get(b"Host")),
        )
        env = build_env(
            facts,
            route,
            document_root=self.document_root,
            server_software=self.server_software,
            server_name=self.server_name,
        )
        hints = self.early_hints
        if hints is not None and request.method == b"GET":
            path = request.path
            links = hints.hints_for(path)
            # RFC 9110 15.2: never a 1xx to an HTTP/1.0 client.
            if links is not None and request.clientproto != b"HTTP/1.0":
                informational = getattr(request.channel, "write_informational", None)
                if informational is not None:
                    informational(103, [(b"link", link) for link in links])
            sink = _PHPResponse(request, self.max_cgi_head_size, self.sendfile, hints, path)
        else:
            sink = _PHPResponse(request, self.max_cgi_head_size, self.sendfile)
        body = content if length else None
        self.in_flight += 1
        # For the access log (fephp.web.site.FrontRequest); any Request may come here.
        request.kind = "php"  # type: ignore[attr-defined]
        request.backend_name = self.backend_name  # type: ignore[attr-defined]
        request.php_started_at = _monotonic()  # type: ignore[attr-defined]
        d = self.backend.request(env, body, sink)
        # The client went away: abort the FastCGI request and free its
        # connection.  FrontRequest says so without a Deferred of its own.
        when_lost = getattr(request, "when_lost", None)
        if when_lost is not None:
            when_lost(d.cancel)
        else:
            request.notifyFinish().addErrback(lambda _: d.cancel())
        # One callback pair: each ends with _request_over.
        d.addCallbacks(self._php_done, self._php_failed, (request, sink), {}, (request, sink))
        return NOT_DONE_YET

    def _php_done(self, app_status: int, request: Request, sink: _PHPResponse) -> None:
        try:
            self._answer(request, sink)
        finally:
            self._request_over()

    def _answer(self, request: Request, sink: _PHPResponse) -> None:
        """PHP's response ended: finish the request with it (or 502 for a head that never completed)."""
        request.php_ended_at = _monotonic()  # type: ignore[attr-defined]
        sink.unregister()
        if request_disconnected(request):
            return
        try:
            finish = sink.complete()
        except CGIResponseError as e:
            self.log.error(
                "[{request_id}] bad CGI response from PHP for {uri}: {error}",
                uri=request.uri.decode("latin-1"), error=str(e), request_id=_request_id(request),
            )
            self._fail(request, sink, 502)
            return
        if finish:
            request.finish()

    def _php_failed(self, failure: Failure, request: Request, sink: _PHPResponse) -> None:
        try:
            self._answer_failure(failure, request, sink)
        finally:
            self._request_over()

    def _answer_failure(self, failure: Failure, request: Request, sink: _PHPResponse) -> None:
        """PHP could not answer: an error page, or a cut connection when part of the answer is out."""
        request.php_ended_at = _monotonic()  # type: ignore[attr-defined]
        sink.unregister()
        if request_disconnected(request) or failure.check(CancelledError):
            return  # the client went away; nobody to answer
        error = failure.value
        if isinstance(error, (BackendError, CGIResponseError)):
            status = error.http_status
            self.log.error(
                "[{request_id}] {uri}: {status} ({kind}: {error})",
                uri=request.uri.decode("latin-1"),
                status=status,
                kind=type(error).__name__,
                error=str(error),
                request_id=_request_id(request),
            )
        else:
            status = 502
            self.log.failure(
                "[{request_id}] unexpected error while running {uri}", failure,
                uri=request.uri.decode("latin-1"), request_id=_request_id(request),
            )
        self._fail(request, sink, status)

    def _fail(self, request: Request, sink: _PHPResponse, status: int) -> None:
        if request.startedWriting:  # type: ignore[attr-defined]
            # Part of the answer is out: the client must see it truncated,
            # never a short response that looks complete.
            # An HTTP/1.1 channel cuts the connection, an HTTP/2 stream is reset.
            request.channel.abort_response()  # type: ignore[union-attr,attr-defined]
            return
        request_id = request.responseHeaders.getRawHeaders(_REQUEST_ID)
        request.responseHeaders = Headers()
        request.setHeader(_SERVER, self._server_header)
        if request_id:
            request.responseHeaders.setRawHeaders(_REQUEST_ID, request_id)
        body = send_error(request, status)
        request.write(body)
        request.finish()

    def _request_over(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle_waiters.fire(None)  # a stop's grace period may have given up on some

    def wait_idle(self) -> "Deferred[None]":
        """A Deferred that fires when no PHP request is in flight."""
        if self.in_flight == 0:
            return succeed(None)
        return self._idle_waiters.wait()


def _last(values: Optional[list[bytes]]) -> Optional[bytes]:
    """The last of a header's values, as ``Request.getHeader`` gives it; None for none."""
    return values[-1] if values else None


def _request_id(request: Request) -> str:
    """The request's X-Request-Id for a log line ("-" for a Request that has none)."""
    return (getattr(request, "request_id", b"") or b"-").decode("ascii", "replace")
