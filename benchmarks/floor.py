"""The floor: the least a Twisted front does per PHP request, a raw Protocol that imports nothing of fephp.

Issue 18's yardstick (and STYLE.md's "The floor as a yardstick"): what any
PHP front written on Twisted must do for ``GET /hello.php``, and nothing
more, so that fephp's CPU per request can be read against it.  Per request
it parses a whole HTTP/1.1 head, builds the CGI environment that nginx's
``fastcgi_params`` (plus SCRIPT_FILENAME) give, makes one write on a kept
FastCGI connection to php-fpm (BEGIN_REQUEST with KEEP_CONN, PARAMS, the
empty PARAMS and STDIN), reads STDOUT up to END_REQUEST, and makes one write
of the response's head and body.  Keep-alive for HTTP/1.1 and 1.0, requests
one at a time per client connection (pipelined ones wait in the buffer),
at most ``--pool`` FastCGI connections, each opened once and reused, and a
FIFO of requests waiting for one, as fephp's pool has; a connection left
idle for between half of ``--idle`` and all of it is closed, as nginx's
keepalive_timeout and fephp's idle timeout close theirs (a kept connection
pins a php-fpm child, which the next front measured beside would wait for).

No features: no request bodies (refused with 501), no static files, no
routing (a path not ending in ``.php`` is a 404; ``..`` a 400), no stat of
the script (php-fpm answers "File not found." itself), no compression,
no timeouts, no limits beyond a 16 KiB head.  It runs on Twisted's own epoll
reactor, with its log context around each event (fephp's FrontReactor
skips that: the floor pays a little that fephp does not).  Runs on CPython
and PyPy (Python 3.9 and later)::

    python3 benchmarks/floor.py --fpm unix:$FPM_SOCKET --root benchmarks/docroot --port 0

and prints ``floor: listening on 127.0.0.1:PORT`` once it listens.
"""

from __future__ import annotations

import argparse
import collections
import os
import struct
import sys
import time
from email.utils import formatdate
from typing import Any, Deque, List, Optional, Tuple

from twisted.internet.protocol import Factory, Protocol, ServerFactory

# -------------------------------------------------------------------------
# FastCGI 1.0 framing: just what one responder request on a kept connection needs.

VERSION = 1
BEGIN_REQUEST = 1
END_REQUEST = 3
PARAMS = 4
STDIN = 5
STDOUT = 6
STDERR = 7
RESPONDER = 1
KEEP_CONN = 1
#: version, type, request id, content length, padding length, reserved.
HEADER = struct.Struct(">BBHHBx")
MAX_CONTENT = 65535

Pairs = List[Tuple[bytes, bytes]]
Record = Tuple[int, int, bytes]


def record(kind: int, request_id: int, content: bytes = b"") -> bytes:
    """*content* as records of *kind* of at most 65535 bytes each, unpadded; one empty record for no content."""
    if not content:
        return HEADER.pack(VERSION, kind, request_id, 0, 0)
    pieces = []
    for start in range(0, len(content), MAX_CONTENT):
        chunk = content[start:start + MAX_CONTENT]
        pieces.append(HEADER.pack(VERSION, kind, request_id, len(chunk), 0))
        pieces.append(chunk)
    return b"".join(pieces)


def _length(n: int) -> bytes:
    return bytes((n,)) if n < 128 else struct.pack(">I", n | 0x80000000)


def encode_params(pairs: Pairs) -> bytes:
    """Name-value pairs as FastCGI encodes them: lengths in 1 byte below 128, else 4 with the top bit set."""
    return b"".join([_length(len(name)) + _length(len(value)) + name + value for name, value in pairs])


def request(request_id: int, pairs: Pairs) -> bytes:
    """A bodiless request in one piece: BEGIN_REQUEST with KEEP_CONN, PARAMS, the empty PARAMS, the empty STDIN."""
    return b"".join((
        HEADER.pack(VERSION, BEGIN_REQUEST, request_id, 8, 0), struct.pack(">HB5x", RESPONDER, KEEP_CONN),
        record(PARAMS, request_id, encode_params(pairs)), record(PARAMS, request_id), record(STDIN, request_id),
    ))


def read_records(buffer: bytes) -> Tuple[List[Record], bytes]:
    """The whole records at the start of *buffer* as (type, request id, content), and the bytes after the last one."""
    records = []
    pos = 0
    end = len(buffer)
    while end - pos >= 8:
        _version, kind, request_id, length, padding = HEADER.unpack_from(buffer, pos)
        stop = pos + 8 + length
        if stop + padding > end:
            break
        records.append((kind, request_id, buffer[pos + 8:stop]))
        pos = stop + padding
    return records, buffer[pos:]


# -------------------------------------------------------------------------
# HTTP/1.1 in, CGI out, and back.

MAX_HEAD = 16384
SERVER_SOFTWARE = b"floor"


class BadRequest(Exception):
    """The head cannot be served: carries the status line's code and reason."""


def cgi_params(head: bytes, root: bytes, server_name: bytes, server: Tuple[bytes, bytes],
               client: Tuple[bytes, bytes]) -> Tuple[Pairs, bool]:
    """nginx's fastcgi_params for a whole head (without its blank line), and whether the connection stays open.

    *server* and *client* are (address, port) as bytes.  Raises BadRequest.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise BadRequest(b"400 Bad Request")
    method, target, version = parts
    path, _, query = target.partition(b"?")
    if not path.startswith(b"/"):
        raise BadRequest(b"400 Bad Request")
    if b"/.." in path:
        raise BadRequest(b"400 Bad Request")
    if not path.endswith(b".php"):
        raise BadRequest(b"404 Not Found")
    keep_alive = version == b"HTTP/1.1"
    content_type = b""
    http: Pairs = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name[-1:] in (b" ", b"\t"):
            raise BadRequest(b"400 Bad Request")
        value = value.strip(b" \t")
        key = name.upper().replace(b"-", b"_")
        if key == b"CONNECTION":
            token = value.lower()
            if b"close" in token:
                keep_alive = False
            elif b"keep-alive" in token:
                keep_alive = True
        elif key == b"CONTENT_TYPE":
            content_type = value
        elif key == b"TRANSFER_ENCODING" or (key == b"CONTENT_LENGTH" and value != b"0"):
            raise BadRequest(b"501 Not Implemented")
        http.append((b"HTTP_" + key, value))
    pairs = [
        (b"QUERY_STRING", query),
        (b"REQUEST_METHOD", method),
        (b"CONTENT_TYPE", content_type),
        (b"CONTENT_LENGTH", b""),
        (b"SCRIPT_NAME", path),
        (b"SCRIPT_FILENAME", root + path),
        (b"REQUEST_URI", target),
        (b"DOCUMENT_URI", path),
        (b"DOCUMENT_ROOT", root),
        (b"SERVER_PROTOCOL", version),
        (b"REQUEST_SCHEME", b"http"),
        (b"GATEWAY_INTERFACE", b"CGI/1.1"),
        (b"SERVER_SOFTWARE", SERVER_SOFTWARE),
        (b"REMOTE_ADDR", client[0]),
        (b"REMOTE_PORT", client[1]),
        (b"SERVER_ADDR", server[0]),
        (b"SERVER_PORT", server[1]),
        (b"SERVER_NAME", server_name),
        (b"REDIRECT_STATUS", b"200"),
    ]
    pairs.extend(http)
    return pairs, keep_alive


def http_response(stdout: bytes, date: bytes, keep_alive: bool, http10: bool) -> bytes:
    """The HTTP/1.1 response for a CGI response (PHP's STDOUT): its Status, its other fields, a Content-Length."""
    head, blank, body = stdout.partition(b"\r\n\r\n")
    if not blank:
        head, body = b"", stdout
    status = b"200 OK"
    fields = []
    if head:
        for line in head.split(b"\r\n"):
            name = line[:line.find(b":")].lower()
            if name == b"status":
                status = line[7:].strip()
            elif name != b"content-length":
                fields.append(line + b"\r\n")
    if not keep_alive:
        fields.append(b"Connection: close\r\n")
    elif http10:
        fields.append(b"Connection: keep-alive\r\n")
    return b"".join((
        b"HTTP/1.1 ", status, b"\r\nServer: ", SERVER_SOFTWARE, b"\r\nDate: ", date,
        b"\r\nContent-Length: ", str(len(body)).encode("ascii"), b"\r\n", *fields, b"\r\n", body,
    ))


def error_response(status: bytes) -> bytes:
    """A short text answer that closes the connection."""
    body = status + b"\n"
    return b"".join((b"HTTP/1.1 ", status, b"\r\nContent-Type: text/plain\r\nContent-Length: ",
                     str(len(body)).encode("ascii"), b"\r\nConnection: close\r\n\r\n", body))


class Clock:
    """The Date field's value, formatted once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.value = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = formatdate(now, usegmt=True).encode("ascii")
        return self.value


# -------------------------------------------------------------------------
# The two protocols and the pool between them.


class Upstream(Protocol):
    """One kept FastCGI connection: one request at a time, STDOUT gathered up to END_REQUEST."""

    def __init__(self, pool: "Pool") -> None:
        self.pool = pool
        self.client: Optional[Front] = None
        self.buffer = b""
        self.stdout: List[bytes] = []
        self.used = True

    def send(self, payload: bytes, client: "Front") -> None:
        self.client = client
        self.used = True
        self.transport.write(payload)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        records, self.buffer = read_records(self.buffer + data if self.buffer else data)
        for kind, _request_id, content in records:
            if kind == STDOUT:
                self.stdout.append(content)
            elif kind == END_REQUEST:
                client, self.client = self.client, None
                stdout = b"".join(self.stdout)
                self.stdout = []
                if client is not None:
                    client.respond(stdout)
                self.pool.release(self)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 - Twisted's name
        client, self.client = self.client, None
        self.pool.lost(self)
        if client is not None:
            client.fail(b"502 Bad Gateway")


class Pool:
    """At most *size* Upstreams, opened when needed and kept; requests beyond them wait in order."""

    def __init__(self, connect: Any, size: int) -> None:
        self.connect = connect  # () -> Deferred firing with a connected Upstream
        self.size = size
        self.opened = 0
        self.idle: List[Upstream] = []
        self.waiting: Deque[Tuple[bytes, Front]] = collections.deque()

    def submit(self, payload: bytes, client: "Front") -> None:
        if self.idle:
            self.idle.pop().send(payload, client)
        elif self.opened < self.size:
            self.open(payload, client)
        else:
            self.waiting.append((payload, client))

    def open(self, payload: bytes, client: "Front") -> None:
        self.opened += 1

        def failed(reason: Any) -> None:
            self.opened -= 1
            client.fail(b"502 Bad Gateway")

        self.connect().addCallbacks(lambda upstream: upstream.send(payload, client), failed)

    def release(self, upstream: Upstream) -> None:
        while self.waiting:
            payload, client = self.waiting.popleft()
            if client.connected:
                upstream.send(payload, client)
                return
        self.idle.append(upstream)

    def sweep(self) -> None:
        """Close the idle connections unused since the last sweep: each pins a php-fpm child (nginx's
        keepalive_timeout and fephp's idle timeout do the same), which other fronts of the pool wait for."""
        for upstream in [u for u in self.idle if not u.used]:
            upstream.transport.loseConnection()  # type: ignore[union-attr]
        for upstream in self.idle:
            upstream.used = False

    def lost(self, upstream: Upstream) -> None:
        self.opened -= 1
        if upstream in self.idle:
            self.idle.remove(upstream)
        while self.waiting and self.opened < self.size:
            payload, client = self.waiting.popleft()
            if client.connected:
                self.open(payload, client)


class Front(Protocol):
    """One HTTP/1.x client connection: a request at a time, answered by the pool."""

    def __init__(self, factory: "FrontFactory") -> None:
        self.factory = factory
        self.buffer = b""
        self.busy = False
        self.keep_alive = True
        self.http10 = False
        self.server = (b"", b"")
        self.client = (b"", b"")

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        host: Any = self.transport.getHost()  # type: ignore[union-attr]
        peer: Any = self.transport.getPeer()  # type: ignore[union-attr]
        self.server = (host.host.encode("ascii"), str(host.port).encode("ascii"))
        self.client = (peer.host.encode("ascii"), str(peer.port).encode("ascii"))

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 - Twisted's name
        self.connected = 0  # Twisted's Protocol leaves it set

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        self.buffer += data
        if not self.busy:
            self.next_request()

    def next_request(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self.fail(b"431 Request Header Fields Too Large")
            return
        head = self.buffer[:end]
        self.buffer = self.buffer[end + 4:]
        factory = self.factory
        try:
            pairs, self.keep_alive = cgi_params(head, factory.root, factory.server_name, self.server, self.client)
        except BadRequest as e:
            self.fail(e.args[0])
            return
        self.http10 = pairs[9][1] == b"HTTP/1.0"  # SERVER_PROTOCOL
        self.busy = True
        factory.pool.submit(request(1, pairs), self)

    def respond(self, stdout: bytes) -> None:
        if not self.connected:
            return
        answer = http_response(stdout, self.factory.clock.date(), self.keep_alive, self.http10)
        self.transport.write(answer)  # type: ignore[union-attr]
        self.busy = False
        if not self.keep_alive:
            self.transport.loseConnection()  # type: ignore[union-attr]
        elif self.buffer:
            self.next_request()

    def fail(self, status: bytes) -> None:
        if self.connected:
            self.transport.write(error_response(status))  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]
        self.busy = True  # nothing more is read from this connection


class FrontFactory(ServerFactory):
    """Makes Front protocols sharing one pool, one document root and one Date clock."""

    def __init__(self, pool: Pool, root: bytes, server_name: bytes) -> None:
        self.pool = pool
        self.root = root
        self.server_name = server_name
        self.clock = Clock()

    def buildProtocol(self, addr: Any) -> Front:  # noqa: N802 - Twisted's name
        return Front(self)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fpm", required=True, help="php-fpm's address: unix:PATH or tcp:HOST:PORT")
    parser.add_argument("--root", required=True, help="the document root (SCRIPT_FILENAME is ROOT + path)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: any free one, printed)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--pool", type=int, default=8, help="FastCGI connections kept at most (default 8)")
    parser.add_argument("--idle", type=float, default=1.0,
                        help="a FastCGI connection idle this long is closed (default 1; swept every half of it)")
    parser.add_argument("--server-name", default="localhost", help="SERVER_NAME (default localhost, as nginx's)")
    args = parser.parse_args(argv)
    if not 1 <= args.pool <= 1024 or not 0 <= args.port <= 65535:
        parser.error("--pool 1..1024, --port 0..65535")

    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
    from twisted.internet.task import LoopingCall

    kind, _, where = args.fpm.partition(":")
    if kind == "unix":
        endpoint: Any = UNIXClientEndpoint(reactor, where)
    elif kind == "tcp":
        host, _, port = where.rpartition(":")
        endpoint = TCP4ClientEndpoint(reactor, host, int(port))
    else:
        parser.error("--fpm unix:PATH or tcp:HOST:PORT")

    pool: Pool

    class UpstreamFactory(Factory):
        def buildProtocol(self, addr: Any) -> Upstream:  # noqa: N802 - Twisted's name
            return Upstream(pool)

    upstreams = UpstreamFactory()
    pool = Pool(lambda: endpoint.connect(upstreams), args.pool)
    LoopingCall(pool.sweep).start(args.idle / 2, now=False)
    root = os.path.abspath(args.root).encode()
    listening = reactor.listenTCP(  # type: ignore[attr-defined]
        args.port, FrontFactory(pool, root, args.server_name.encode()), backlog=1024, interface=args.host)
    address: Any = listening.getHost()
    print(f"floor: listening on {address.host}:{address.port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
