"""The web glue: route a request, serve a static file or run PHP, stream the answer.

Every failure becomes a short page from :func:`error_page`, which names the
status and nothing else: no path, no backend address, no PHP message.
"""

from __future__ import annotations

import os
from http import HTTPStatus
from typing import Any, Optional

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import static
from twisted.web.http import NO_BODY_CODES, NOT_MODIFIED, stringToDatetime
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from .backend import Backend
from .cgienv import RequestFacts, build_env
from .cgiresponse import CGIResponseError, HeadParser
from .errors import BackendError
from .routing import Forbidden, NotFound, Redirect, Router, Script, StaticFile

__all__ = ["PHPApp", "error_page"]

_SERVER = b"server"
#: Headers about PHP's connection to us, not ours to the client (RFC 9110 7.6.1);
#: Twisted frames the response itself.
_HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"proxy-connection"))
#: Methods whose empty body is still announced as CONTENT_LENGTH 0.
_BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))


def error_page(status: int) -> bytes:
    """A short HTML page for *status* that discloses nothing else."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    title = f"{status} {phrase}"
    return (
        f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>"
        f"<body><h1>{title}</h1></body></html>\n"
    ).encode()


def send_error(request: Request, status: int, headers: Optional[dict[bytes, bytes]] = None) -> bytes:
    """Set *status* with its page on *request*; returns the body for render()."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    body = error_page(status)
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


class _StaticFile(static.File):
    """Twisted's File (Range, a producer per response), as nginx serves.

    Twisted would label ``x.tar.gz`` with ``Content-Encoding: gzip`` and make
    browsers unpack it; nginx sends such files as they are, and so do we.
    Last-Modified is the modification time cut to the second, as nginx's
    (Twisted rounds it up), so that it is the same on a 200 and a 206.
    """

    contentEncodings: dict[str, str] = {}
    defaultType = "application/octet-stream"

    def getModificationTime(self) -> float:  # noqa: N802 - Twisted's name
        return int(super().getModificationTime())


#: Static files up to this size are read whole and sent with their head in
#: one piece; larger files and Range requests go through Twisted's File and
#: its producers, which read a chunk at a time.
SMALL_STATIC_FILE = 128 * 1024

_content_types: dict[str, bytes] = {}


def _content_type(path: str) -> bytes:
    """The Content-Type for *path* by its extension, from the same table as File's."""
    ext = os.path.splitext(path)[1].lower()
    found = _content_types.get(ext)
    if found is None:
        found = _content_types[ext] = _StaticFile.contentTypes.get(ext, _StaticFile.defaultType).encode("latin-1")
    return found


def _none_match(header: bytes, etag: bytes) -> bool:
    """Whether an If-None-Match list holds *etag* or ``*`` (weak comparison, RFC 9110 13.1.2)."""
    for tag in header.split(b","):
        tag = tag.strip()
        if tag == etag or tag == b"*" or tag == b"W/" + etag:
            return True
    return False


def _not_modified_since(header: bytes, mtime: int) -> bool:
    try:
        since = stringToDatetime(header.split(b";", 1)[0])
    except ValueError:
        return False  # an unreadable date is ignored (RFC 9110 13.1.3)
    return since >= mtime


class _PHPResponse:
    """A :class:`fephp.backend.ResponseSink` that turns CGI output into the HTTP response.

    Body bytes are held until the backend has passed on all it read
    (``flush``) or the response ends (``complete``).  A response that PHP
    produced in one piece, most small pages, then goes out with a
    Content-Length, head and body in one send, instead of a chunked head,
    a chunk and a terminating chunk.
    """

    __slots__ = ("_request", "_parser", "_producer", "_held")

    log = Logger()

    def __init__(self, request: Request, max_head_size: int) -> None:
        self._request = request
        self._parser: Optional[HeadParser] = HeadParser(max_head_size)
        self._producer: Optional[IPushProducer] = None
        self._held: list[bytes] = []

    def response_started(self, producer: IPushProducer) -> None:
        self._producer = producer
        # The HTTP transport pauses the FastCGI connection when the client is slow.
        self._request.registerProducer(producer, True)

    def stdout_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            self._held.append(data)
            return
        parsed = parser.feed(data)
        if parsed is None:
            return
        head, rest = parsed
        self._send_head(head)
        if rest:
            self._held.append(rest)

    def flush(self) -> None:
        held = self._held
        if held:
            self._held = []
            self._request.write(held[0] if len(held) == 1 else b"".join(held))

    def _send_head(self, head: Any) -> None:
        self._parser = None
        request = self._request
        request.setResponseCode(head.status, head.reason or None)
        add = request.responseHeaders.addRawHeader
        for name, value in head.headers:
            if name.lower() not in _HOP_BY_HOP:
                add(name, value)

    def stderr_received(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            if line:
                self.log.warn(
                    "PHP: {php_stderr}", php_stderr=line, uri=self._request.uri.decode("latin-1")
                )

    def complete(self) -> None:
        """The response ended: finish a pending head and write what is held.

        Raises CGIResponseError for a head that never completed.
        """
        if self._parser is not None:
            head, rest = self._parser.finish()
            self._send_head(head)
            if rest:
                self._held.append(rest)
        request = self._request
        if (
            not request.startedWriting  # type: ignore[attr-defined]
            and request.method != b"HEAD"
            and request.code not in NO_BODY_CODES
            and not request.responseHeaders.hasHeader(b"content-length")
        ):
            # The whole body is here: its length is known.
            request.setHeader(b"content-length", b"%d" % sum(map(len, self._held)))
        self.flush()

    def unregister(self) -> None:
        if self._producer is not None:
            self._producer = None
            self._request.unregisterProducer()


class PHPApp(Resource):
    """The whole site as one leaf resource: static files and PHP scripts under one root."""

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        *,
        router: Router,
        backend: Backend,
        server_software: str = "fephp",
        server_name: Optional[str] = None,
        max_cgi_head_size: int = 64 * 1024,
    ) -> None:
        super().__init__()
        self.router = router
        self.backend = backend
        self.server_software = server_software
        self._server_header = server_software.encode("latin-1", "replace")
        self.server_name = server_name
        self.max_cgi_head_size = max_cgi_head_size
        self.document_root = router.root
        #: Requests handed to PHP and not yet finished (for a graceful stop).
        self.in_flight = 0
        self._idle_waiters: list[Any] = []

    def render(self, request: Request) -> Any:
        uri = request.uri
        path, _, query = uri.partition(b"?")
        if not path.startswith(b"/"):
            # "*" (OPTIONS *) and absolute-form targets are not for PHP.
            return send_error(request, 400)
        route = self.router.route(path)
        kind = type(route)
        if kind is Script:
            return self._run_php(request, route, query)  # type: ignore[arg-type]
        if kind is StaticFile:
            return self._static(request, route)  # type: ignore[arg-type]
        if kind is Redirect:
            location = route.location.encode("utf-8")  # type: ignore[union-attr]
            if query:
                location += b"?" + query
            return send_error(request, 301, {b"location": location})
        if kind is Forbidden:
            return send_error(request, 403)
        return send_error(request, 404)

    def _static(self, request: Request, route: StaticFile) -> Any:
        """Send a static file, with nginx's validators: ETag and Last-Modified.

        A small file is read whole and sent with its head in one write.
        Other methods than GET and HEAD, Range requests and big files go to
        Twisted's File.
        """
        st = route.stat
        method = request.method
        if st is None or (method != b"GET" and method != b"HEAD"):
            return _StaticFile(route.path).render(request)
        mtime = int(st.st_mtime)
        size = st.st_size
        # nginx's ETag: the modification time and the size, in hex.
        etag = b'"%x-%x"' % (mtime, size)
        request.etag = etag  # type: ignore[attr-defined]
        request.lastModified = mtime  # type: ignore[attr-defined]
        headers = request.requestHeaders
        tags = headers.getRawHeaders(b"if-none-match")
        if tags is not None:
            # RFC 9110 13.2.2: If-None-Match, when present, decides alone.
            fresh = _none_match(b",".join(tags), etag)
        else:
            since = headers.getRawHeaders(b"if-modified-since")
            fresh = since is not None and _not_modified_since(since[0], mtime)
        if fresh:
            request.setResponseCode(NOT_MODIFIED)
            request.write(b"")
            request.finish()
            return NOT_DONE_YET
        if size > SMALL_STATIC_FILE or headers.hasHeader(b"range"):
            return _StaticFile(route.path).render(request)
        try:
            fd = os.open(route.path, os.O_RDONLY | os.O_CLOEXEC)
        except PermissionError:
            return send_error(request, 403)
        except OSError:  # gone since the router looked
            return send_error(request, 404)
        try:
            data = b"" if method == b"HEAD" else os.read(fd, size)
        except OSError:  # a directory now, or an I/O error
            return send_error(request, 404)
        finally:
            os.close(fd)
        request.setHeader(b"content-type", _content_type(route.path))
        request.setHeader(b"accept-ranges", b"bytes")
        if method == b"HEAD":
            request.setHeader(b"content-length", b"%d" % size)
        return data  # Twisted's render() adds Content-Length and writes it

    def _run_php(self, request: Request, route: Script, query: bytes) -> Any:
        content = request.content
        length: Optional[int]
        if content is None:
            length = None
        else:
            content.seek(0, os.SEEK_END)
            length = content.tell()
            content.seek(0)
        headers = [(name, value) for name, values in request.requestHeaders.getAllRawHeaders() for value in values]
        client = request.getClientAddress()
        host = request.getHost()
        facts = RequestFacts(
            method=request.method,
            raw_uri=request.uri,
            query_string=query,
            headers=headers,
            content_length=length if length or request.method in _BODY_METHODS else None,
            content_type=request.getHeader(b"content-type"),
            server_protocol=request.clientproto,
            https=request.isSecure(),
            # A UNIX-socket listener has no IP or port: "unix:" and 0, as
            # nginx's $remote_addr and $server_addr say for one.
            remote_addr=getattr(client, "host", "unix:"),
            remote_port=getattr(client, "port", 0),
            server_addr=getattr(host, "host", "unix:"),
            server_port=getattr(host, "port", 0),
            host=request.getHeader(b"host"),
        )
        env = build_env(
            facts,
            route,
            document_root=self.document_root,
            server_software=self.server_software,
            server_name=self.server_name,
        )
        sink = _PHPResponse(request, self.max_cgi_head_size)
        body = content if length else None
        self.in_flight += 1
        d = self.backend.request(env, body, sink)
        finished = request.notifyFinish()
        # The client went away: abort the FastCGI request and free its connection.
        finished.addErrback(lambda _: d.cancel())
        d.addCallbacks(self._php_done, self._php_failed, (request, sink), None, (request, sink))
        d.addBoth(self._request_over)
        return NOT_DONE_YET

    def _php_done(self, app_status: int, request: Request, sink: _PHPResponse) -> None:
        sink.unregister()
        if request._disconnected:  # type: ignore[attr-defined]
            return
        try:
            sink.complete()
        except CGIResponseError as e:
            self.log.error("bad CGI response from PHP for {uri}: {error}", uri=request.uri, error=str(e))
            self._fail(request, sink, 502)
            return
        request.finish()

    def _php_failed(self, failure: Failure, request: Request, sink: _PHPResponse) -> None:
        sink.unregister()
        if request._disconnected or failure.check(CancelledError):  # type: ignore[attr-defined]
            return  # the client went away; nobody to answer
        error = failure.value
        if isinstance(error, (BackendError, CGIResponseError)):
            status = error.http_status
            self.log.error(
                "{uri}: {status} ({kind}: {error})",
                uri=request.uri,
                status=status,
                kind=type(error).__name__,
                error=str(error),
            )
        else:
            status = 502
            self.log.failure("unexpected error while running {uri}", failure, uri=request.uri)
        self._fail(request, sink, status)

    def _fail(self, request: Request, sink: _PHPResponse, status: int) -> None:
        if request.startedWriting:  # type: ignore[attr-defined]
            # Part of the answer is out: the client must see it truncated,
            # never a short response that looks complete.
            request.channel.transport.abortConnection()  # type: ignore[union-attr]
            return
        request.responseHeaders = Headers()
        request.setHeader(_SERVER, self._server_header)
        body = send_error(request, status)
        request.write(body)
        request.finish()

    def _request_over(self, _: object) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                if not d.called:  # a stop's grace period may have given up on it
                    d.callback(None)

    def wait_idle(self) -> "Deferred[None]":
        """A Deferred that fires when no PHP request is in flight."""
        if self.in_flight == 0:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        return d
