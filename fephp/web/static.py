"""Static files from fephp's side: served by fephp itself, with nginx's validators and types.

Everything is said through an :class:`fephp.web.exchange.Exchange`.  A
small file is read whole (or taken from the memory cache) and sent with its
head in one write; a large file goes out with ``os.sendfile`` where the
exchange offers a socket, else a chunk at a time; Range requests go through
Twisted's File and its producers, shown the exchange as the few Request
members File uses (:class:`_FileRequest`).  Other methods than GET and HEAD get 405
with ``Allow: GET, HEAD`` (RFC 9110 15.5.6), as nginx refuses them.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from typing import Any, Optional, Union

from twisted.web import http, static
from twisted.web.http import NOT_MODIFIED, datetimeToString, stringToDatetime
from twisted.web.server import NOT_DONE_YET

from ..cgi.routing import StaticFile
from .compress import Compression, add_vary, weak_etag
from .errors import send_error
from .exchange import HeaderList

from .._compat import SLOTS

__all__ = ["CacheHeaders", "CacheRule", "FileCache", "PRECOMPRESSED_SUFFIXES", "SMALL_STATIC_FILE", "serve_static"]


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

#: The most one ``os.sendfile`` call sends of a large file: the reactor gets
#: a turn between calls, so one big download does not hold up the others.
SENDFILE_CHUNK = 1024 * 1024
#: What goes through Twisted's buffer when the socket is full: enough for
#: Twisted to wait for the socket and call the producer again once it drained.
_QUEUED_CHUNK = 64 * 1024

#: The file beside ``x`` that holds ``x`` in each content coding.
PRECOMPRESSED_SUFFIXES = {"zstd": ".zst", "br": ".br", "gzip": ".gz"}

_content_types: dict[str, bytes] = {}


def _content_type(path: str) -> bytes:
    """The Content-Type for *path* by its extension, from the same table as File's."""
    ext = os.path.splitext(path)[1].lower()
    found = _content_types.get(ext)
    if found is None:
        found = _content_types[ext] = _StaticFile.contentTypes.get(ext, _StaticFile.defaultType).encode("latin-1")
    return found


#: How many files' validators _validators keeps; a full table starts over.
VALIDATORS_KEPT = 4096
_validators: dict[tuple[int, int], tuple[bytes, bytes]] = {}


def _validators_of(mtime: int, size: int) -> tuple[bytes, bytes]:
    """A file's ETag (nginx's: modification time and size, in hex) and Last-Modified date, formatted once per (mtime, size).

    Formatting both cost several thousand instructions per small file on
    CPython (Last-Modified is a gmtime and a format); the same pair serves
    every file of that time and size, and a changed file has a new key.
    """
    key = (mtime, size)
    found = _validators.get(key)
    if found is None:
        if len(_validators) >= VALIDATORS_KEPT:
            _validators.clear()
        found = _validators[key] = (b'"%x-%x"' % (mtime, size), datetimeToString(mtime))
    return found


@dataclass(frozen=True, **SLOTS)
class CacheRule:
    """Caching headers for the static files under a URL ``prefix``, as nginx's ``expires`` and ``add_header``.

    ``expires`` is seconds from now (negative: already expired), ``"max"``
    or ``"epoch"``, or None for no Expires; ``cache_control`` is sent as
    written, or when None derived from ``expires`` as nginx does
    (``max-age=N``, or ``no-cache`` for a time in the past).
    """

    prefix: str
    cache_control: Optional[str] = None
    expires: Union[int, str, None] = None


#: nginx's ``expires max``: the last date 32-bit clocks can hold, and ten years.
_EXPIRES_MAX = b"Thu, 31 Dec 2037 23:55:55 GMT"
_MAX_AGE_MAX = b"max-age=315360000"
#: nginx's ``expires epoch``.
_EXPIRES_EPOCH = b"Thu, 01 Jan 1970 00:00:01 GMT"


class CacheHeaders:
    """The static files' caching rules of a site, longest matching prefix first."""

    def __init__(self, rules: "tuple[CacheRule, ...]", root: str) -> None:
        self._base = root.rstrip("/")
        self._rules = sorted(rules, key=lambda rule: len(rule.prefix), reverse=True)

    def rule_for(self, path: str) -> Optional[CacheRule]:
        """The rule for the file at *path* (under the root), by its URL path."""
        url = path[len(self._base):] if path.startswith(self._base + "/") else path
        for rule in self._rules:
            if url.startswith(rule.prefix):
                return rule
        return None

    def apply(self, headers: HeaderList, path: str) -> None:
        """Add Cache-Control and Expires to *headers*, a static file's 200, 206 or 304."""
        rule = self.rule_for(path)
        if rule is None:
            return
        control = rule.cache_control.encode("latin-1") if rule.cache_control is not None else None
        expires = rule.expires
        if expires is not None:
            if expires == "max":
                headers.append((b"expires", _EXPIRES_MAX))
                derived = _MAX_AGE_MAX
            elif expires == "epoch":
                headers.append((b"expires", _EXPIRES_EPOCH))
                derived = b"no-cache"
            else:
                assert isinstance(expires, int)
                headers.append((b"expires", datetimeToString(int(time.time()) + expires)))
                derived = b"max-age=%d" % expires if expires >= 0 else b"no-cache"
            if control is None:
                control = derived
        if control is not None:
            headers.append((b"cache-control", control))


class FileCache:
    """The bytes of small, hot static files, keyed by path, bounded in bytes (``static.memory_cache_size``).

    A hit is revalidated against the router's ``stat`` of the same request
    (modification time in nanoseconds and size): a file that changed is
    read again, so no request ever gets older bytes than a read would
    give, and a hit costs no system call beyond that ``stat`` (open, read
    and close are spared).  Files up to :data:`SMALL_STATIC_FILE` are kept;
    the least recently used go first when the bound is reached.
    """

    __slots__ = ("max_bytes", "_entries", "_bytes")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # path -> (mtime_ns, size, data); insertion order is recency (a hit moves it last).
        self._entries: dict[str, tuple[int, int, bytes]] = {}
        self._bytes = 0

    @property
    def size(self) -> int:
        """Bytes of file content held."""
        return self._bytes

    def get(self, path: str, st: os.stat_result) -> Optional[bytes]:
        """The cached content of *path* if it is still what *st* describes, else None (and it is dropped)."""
        entries = self._entries
        entry = entries.pop(path, None)
        if entry is None:
            return None
        if entry[0] != st.st_mtime_ns or entry[1] != st.st_size:
            self._bytes -= entry[1]
            return None
        entries[path] = entry  # now the most recently used
        return entry[2]

    def put(self, path: str, st: os.stat_result, data: bytes) -> None:
        """Keep *data*, the content of *path* as *st* describes it, if it fits the bounds."""
        size = len(data)
        if size != st.st_size or size > SMALL_STATIC_FILE or size > self.max_bytes:
            return
        entries = self._entries
        old = entries.pop(path, None)
        if old is not None:
            self._bytes -= old[1]
        while self._bytes + size > self.max_bytes:
            oldest = next(iter(entries))
            self._bytes -= entries.pop(oldest)[1]
        entries[path] = (st.st_mtime_ns, size, data)
        self._bytes += size


class _Sendfile:
    """A large file sent with ``os.sendfile``, from the page cache to the socket without a copy in Python.

    A pull producer, as Twisted's own static producers: each
    ``resumeProducing`` sends up to :data:`SENDFILE_CHUNK` on the
    exchange's :meth:`~fephp.web.exchange.Exchange.sendfile_socket`.  When
    there is none (TLS, HTTP/2, a compressed body) or the socket is full,
    one chunk is read and written through the exchange as usual: the
    transport buffers it, and asks again once it drained.  The exchange's
    response is started (status and headers) before.
    """

    def __init__(self, exchange: Any, fd: int, size: int) -> None:
        self._exchange: Any = exchange
        self._fd = fd
        self._offset = 0
        self._size = size

    def start(self) -> None:
        self._exchange.register_producer(self, False)

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        exchange = self._exchange
        if exchange is None:
            return
        left = self._size - self._offset
        if left <= 0:
            self._done()
            return
        sock = exchange.sendfile_socket()
        sent = 0
        if sock is not None:
            try:
                sent = os.sendfile(sock.fileno(), self._fd, self._offset, min(SENDFILE_CHUNK, left))
            except BlockingIOError:
                sent = -1
            except OSError:
                self._abort()
                return
            if sent == 0:  # the file got shorter than its Content-Length: the client must see a cut
                self._abort()
                return
        if sent > 0:
            self._offset += sent
            exchange.sent_directly(sent)
            return  # Twisted calls again (a pull producer) while nothing is queued
        # No socket, the socket is full, or bytes are queued: a chunk behind them.
        try:
            chunk = os.pread(self._fd, min(_QUEUED_CHUNK, left), self._offset)
        except OSError:
            chunk = b""
        if not chunk:
            self._abort()
            return
        self._offset += len(chunk)
        exchange.write(chunk)

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        pass

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        self._close()

    def _done(self) -> None:
        exchange, self._exchange = self._exchange, None
        self._close()
        if exchange is not None:
            exchange.unregister_producer()
            exchange.finish()

    def _abort(self) -> None:
        exchange, self._exchange = self._exchange, None
        self._close()
        if exchange is not None:
            exchange.unregister_producer()
            exchange.abort()

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _Refusal:
    """What Twisted's File renders for a file gone or unreadable: fephp's error page on the exchange."""

    def __init__(self, status: int) -> None:
        self.status = status

    def render(self, request: "_FileRequest") -> Any:
        send_error(request.exchange, self.status)
        return NOT_DONE_YET


class _FileRequest:
    """The members of a twisted.web Request that Twisted's File uses for a Range request, over an Exchange.

    File sets its status and Content-* headers here, then writes through a
    producer; the exchange's response starts at the first write (or
    producer, or finish) with *headers* (what serve_static set: caching,
    coding, Vary) and File's, then Last-Modified and ETag.  *hidden* are
    request headers File must not see (If-Modified-Since when If-None-Match
    decided, Range when If-Range said no).
    """

    def __init__(self, exchange: Any, headers: HeaderList, hidden: "tuple[bytes, ...]", mtime: int, etag: bytes) -> None:
        self.exchange = exchange
        self.method = exchange.method
        self.code = 200
        self._headers = headers
        self._hidden = hidden
        self._mtime = mtime
        self._etag = etag
        self._started = False

    def getHeader(self, name: bytes) -> Optional[bytes]:  # noqa: N802 - Twisted's name
        lower = name.lower()
        return None if lower in self._hidden else self.exchange.header(lower)

    def setHeader(self, name: bytes, value: bytes) -> None:  # noqa: N802 - Twisted's name
        lower = name.lower()
        headers = self._headers
        headers[:] = [pair for pair in headers if pair[0] != lower]
        headers.append((lower, value))

    def setResponseCode(self, code: int, message: Optional[bytes] = None) -> None:  # noqa: N802 - Twisted's name
        self.code = code

    def setLastModified(self, when: float) -> Any:  # noqa: N802 - Twisted's name
        since = self.getHeader(b"if-modified-since")
        if since is not None and _not_modified_since(since, self._mtime):
            self.code = NOT_MODIFIED
            return http.CACHED
        return None

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._headers.append((b"last-modified", datetimeToString(self._mtime)))
            self._headers.append((b"etag", self._etag))
            self.exchange.start_response(self.code, self._headers)

    def registerProducer(self, producer: Any, streaming: bool) -> None:  # noqa: N802 - Twisted's name
        self._start()
        self.exchange.register_producer(producer, streaming)

    def unregisterProducer(self) -> None:  # noqa: N802 - Twisted's name
        self.exchange.unregister_producer()

    def write(self, data: bytes) -> None:
        self._start()
        self.exchange.write(data)

    def finish(self) -> None:
        self._start()
        self.exchange.finish()


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


def _if_range_holds(value: bytes, etag: bytes, mtime: int) -> bool:
    """Whether an If-Range *value* names the file as it is, so that its Range is served (RFC 9110 13.1.5).

    An entity-tag matches by the strong comparison (a weak one never does),
    a date only if it is the Last-Modified exactly, as nginx and Go's
    net/http compare it; anything else does not match.
    """
    value = value.strip()
    if value[:1] == b'"' or value[:2] == b"W/":
        return value == etag
    try:
        return stringToDatetime(value) == mtime
    except ValueError:
        return False


def _negotiated(compression: Optional[Compression], coding: Optional[str], size: int, *headers: HeaderList) -> bool:
    """Whether this file's 200 is compressed on the fly for some client, so carries ``Vary: Accept-Encoding``.

    Its 206 and 304 then carry that Vary too (RFC 9110 15.3.7, 15.4.5).
    *compression* is the site's policy when the file's type is compressible
    (else None), *coding* the precompressed sibling chosen (its Vary is set
    already), *headers* the response headers so far.  The rule of
    :meth:`Compression.varies` for a file of *size* bytes: at least
    ``min_size``, and no ``Cache-Control: no-transform`` (a cache rule's or,
    for X-Sendfile, PHP's).
    """
    if compression is None or coding is not None or size < compression.min_size:
        return False
    control = [value for pairs in headers for name, value in pairs if name == b"cache-control"]
    if not control:
        return True
    return not any(token.strip().lower() == b"no-transform" for value in control for token in value.split(b","))


def _precompressed(codings: tuple[str, ...], path: str, original: os.stat_result) -> Optional[tuple[str, os.stat_result, str]]:
    """The first of *codings* with a regular file beside *path* not older than it: (its path, stat, coding)."""
    for coding in codings:
        candidate = path + PRECOMPRESSED_SUFFIXES[coding]
        try:
            st = os.stat(candidate)
        except (OSError, ValueError):
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mtime >= original.st_mtime:
            return candidate, st, coding
    return None


def serve_static(
    exchange: Any,
    route: StaticFile,
    *,
    content_type: Optional[bytes] = None,
    as_get: bool = False,
    cache: Optional[CacheHeaders] = None,
    files: Optional[FileCache] = None,
) -> None:
    """Answer *exchange* with a static file, with nginx's validators: ETag and Last-Modified.

    A small file is read whole and sent with its head in one write; a big
    one goes out by :class:`_Sendfile`; Range requests go to Twisted's
    File; other methods than GET and HEAD get 405.  With compression on, a
    client that accepts a coding gets ``x.zst``, ``x.br`` or ``x.gz``
    instead of ``x`` when one is there and not older, labelled with ``x``'s
    Content-Type; it is a representation of its own, with its own ETag,
    Last-Modified and ranges.

    *content_type* replaces the one of the file's extension; *as_get* serves
    any method but HEAD as GET (a file named by X-Sendfile, as nginx does);
    *cache* adds the Cache-Control and Expires of the file's prefix;
    *files* keeps small files' bytes in memory.  Headers already in the
    exchange's ``response_headers`` (PHP's, for X-Sendfile) go out too.
    """
    st = route.stat
    method = exchange.method
    if as_get and method != b"HEAD":
        method = b"GET"
    if method != b"GET" and method != b"HEAD":
        # nginx's static handler: 405 for POST, OPTIONS, PUT...
        send_error(exchange, 405, [(b"allow", b"GET, HEAD")])
        return
    path = route.path
    if st is None:
        try:
            st = os.stat(path)
        except OSError:
            send_error(exchange, 404)
            return
    ctype = content_type or _content_type(path)
    compression: Optional[Compression] = exchange.compression
    given = exchange.response_headers
    headers: HeaderList = []
    coding = None
    codings: tuple[str, ...] = ()
    if compression is not None and compression.type_compressible(ctype):
        codings = compression.codings_for(exchange.header(b"accept-encoding"))
        found = _precompressed(codings, path, st) if codings and compression.precompressed else None
        if found is not None:
            path, st, coding = found
            headers.append((b"content-encoding", coding.encode()))
            add_vary(headers)
    else:
        compression = None
    mtime = int(st.st_mtime)
    size = st.st_size
    etag, last_modified = _validators_of(mtime, size)
    tags = exchange.header(b"if-none-match")
    if tags is not None:
        # RFC 9110 13.2.2: If-None-Match, when present, decides alone.
        fresh = _none_match(tags, etag)
    else:
        since = exchange.header(b"if-modified-since")
        fresh = since is not None and _not_modified_since(since, mtime)
    if cache is not None:
        cache.apply(headers, route.path)
    if (
        coding is None
        and compression is not None
        and compression.precompressed
        and len(codings) < len(compression.algorithms)  # a coding whose sibling was not looked for
        # Only a small file, or a no-transform from a cache rule or PHP, lacks the Vary of compression on the fly.
        and (size < compression.min_size or cache is not None or as_get)
        and not _negotiated(compression, None, size, headers, given)
        and _precompressed(tuple(c for c in compression.algorithms if c not in codings), path, st) is not None
    ):
        # A client accepting another coding gets a sibling: this answer
        # varies by Accept-Encoding too (RFC 9110 12.5.5), as nginx's
        # gzip_static with gzip_vary marks it.
        add_vary(headers)
    if fresh:
        if _negotiated(compression, coding, size, headers, given):
            # RFC 9110 15.4.5: the 304 carries the Vary and ETag the 200 would.
            add_vary(headers)
            if codings:
                etag = weak_etag(etag)
        if content_type is not None:
            headers.append((b"content-type", content_type))  # PHP's, for the file it named
        headers.append((b"last-modified", last_modified))
        headers.append((b"etag", etag))
        exchange.start_response(NOT_MODIFIED, headers)
        exchange.finish()
        return
    ranged = exchange.header(b"range") is not None
    hidden: tuple[bytes, ...] = ()
    if ranged:
        if_range = exchange.header(b"if-range")
        if if_range is not None and not _if_range_holds(if_range, etag, mtime):
            # RFC 9110 13.1.5: the file changed since the part the client
            # holds; it gets the whole file, not a piece of another one.
            hidden = (b"range",)
            ranged = False
    if ranged:
        if _negotiated(compression, coding, size, headers, given):
            # RFC 9110 15.3.7: a 206 carries the Vary its 200 would.  Its
            # bytes are the identity file's, under that file's strong ETag
            # (a 200 gzipped for this client would carry the weak one).
            add_vary(headers)
        if tags is not None:
            # If-None-Match decided (RFC 9110 13.2.2): File must not answer
            # 304 by an If-Modified-Since that If-None-Match overrides.
            hidden += (b"if-modified-since",)
        big = _StaticFile(path)
        big.type = ctype.decode("latin-1")  # type: ignore[assignment]
        big.encoding = None  # File sets both or neither
        shim = _FileRequest(exchange, headers, hidden, mtime, etag)
        big.childNotFound = _Refusal(404)  # type: ignore[assignment]  # gone since the router looked
        big.forbidden = _Refusal(403)  # type: ignore[assignment]
        try:
            body = big.render_GET(shim)
        except OSError:
            send_error(exchange, 404)
            return
        if body is not NOT_DONE_YET:
            # What twisted.web's Request.render does with a body returned (HEAD, 304).
            if method != b"HEAD":
                shim.setHeader(b"content-length", b"%d" % len(body))
            shim.write(body)
            shim.finish()
        return
    if size > SMALL_STATIC_FILE and method == b"GET":
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except PermissionError:
            send_error(exchange, 403)
            return
        except OSError:  # gone since the router looked
            send_error(exchange, 404)
            return
        headers += (
            (b"content-type", ctype),
            (b"accept-ranges", b"bytes"),
            (b"content-length", b"%d" % size),
            (b"last-modified", last_modified),
            (b"etag", etag),
        )
        exchange.start_response(200, headers)
        _Sendfile(exchange, fd, size).start()
        return
    data = files.get(path, st) if files is not None else None
    if data is None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except PermissionError:
            send_error(exchange, 403)
            return
        except OSError:  # gone since the router looked
            send_error(exchange, 404)
            return
        try:
            data = b"" if method == b"HEAD" else os.read(fd, size)
        except OSError:  # a directory now, or an I/O error
            send_error(exchange, 404)
            return
        finally:
            os.close(fd)
        if files is not None and method != b"HEAD":
            files.put(path, st, data)
    elif method == b"HEAD":
        data = b""
    headers += (
        (b"content-type", ctype),
        (b"accept-ranges", b"bytes"),
        (b"content-length", b"%d" % (size if method == b"HEAD" else len(data))),
        (b"last-modified", last_modified),
        (b"etag", etag),
    )
    exchange.start_response(200, headers)
    exchange.write(data)
    exchange.finish()
