"""Response compression through real HTTP and a real php-fpm: PHP pages, flushed output, static and precompressed files."""

from __future__ import annotations

import gzip
import os
import socket
import time
import zlib
from pathlib import Path
from typing import Any, Optional

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread

from fephp.backend.endpoints import parse_client_endpoint
from fephp.backend.pool import FastCGIPool
from fephp.server.build import build_site
from fephp.server.config import config_from_dict
from fephp.web.compress import AVAILABLE
from fephp.web.static import SMALL_STATIC_FILE
from tests.support.docroot import make_docroot
from tests.support.h2client import H2Client
from tests.support.tls import self_signed_pem

try:
    import brotli
except ImportError:
    import brotlicffi as brotli  # type: ignore[no-redef]

pytestmark = pytest.mark.php

#: How long a test waits for flushed output before it fails.
FLUSH_DEADLINE = 5.0


class Front:
    """fephp from a configuration (compression as the config says), on 127.0.0.1."""

    def __init__(self, root: Path, fpm: str, config: dict[str, Any]) -> None:
        self.config = config_from_dict({"server": {"root": str(root)}, **config})
        self.pool = FastCGIPool(parse_client_endpoint(reactor, fpm), clock=reactor, size=4)
        _, self.site = build_site(self.config, reactor, self.pool)
        self.listening: Any = None

    async def start(self) -> "Front":
        self.listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.site)
        return self

    @property
    def port(self) -> int:
        return int(self.listening.getHost().port)

    async def start_tls(self, pem: Path) -> int:
        """An ssl: listener too (HTTP/2 by ALPN); its port."""
        from twisted.internet.endpoints import serverFromString

        self.tls = await serverFromString(reactor, f"ssl:0:interface=127.0.0.1:privateKey={pem}").listen(self.site)
        return int(self.tls.getHost().port)

    async def stop(self) -> None:
        await self.listening.stopListening()
        if getattr(self, "tls", None) is not None:
            await self.tls.stopListening()
        await self.site.close_connections()
        await self.pool.close()

    async def get(self, path: str, headers: Optional[dict[str, str]] = None, method: str = "GET") -> "Response":
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        raw = await deferToThread(_exchange, self.port, ("\r\n".join(lines) + "\r\n\r\n").encode())
        return Response(raw, head_only=method == "HEAD")


class Response:
    """One HTTP/1.1 response read whole: status, headers (lower-case names), body with chunking undone."""

    def __init__(self, raw: bytes, head_only: bool = False) -> None:
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.setdefault(name.strip().lower(), []).append(value.strip())
        if self.header("transfer-encoding") == "chunked":
            body = _dechunk(body)
        elif self.header("content-length") is not None and not head_only:
            assert len(body) == int(self.header("content-length") or 0)
        self.body = body

    def header(self, name: str) -> Optional[str]:
        values = self.headers.get(name)
        return None if values is None else ", ".join(values)

    def decoded(self) -> bytes:
        return decode(self.header("content-encoding"), self.body)


def decode(coding: Optional[str], data: bytes) -> bytes:
    if coding is None:
        return data
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        return brotli.decompress(data)  # type: ignore[no-any-return]
    if coding == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)  # type: ignore[no-any-return]
    raise AssertionError(f"unexpected coding {coding}")


def _dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size, _, data = data.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            return out
        out += data[:n]
        data = data[n + 2:]


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    return make_docroot(tmp_path)


@pytest.fixture
def front(php_fpm, docroot):
    fronts = []

    async def make(**config: Any) -> Front:
        f = await Front(docroot, php_fpm.unix_endpoint, config).start()
        fronts.append(f)
        return f

    yield make
    for f in fronts:
        pytest_twisted.blockon(defer.ensureDeferred(f.stop()))


@pytest_twisted.ensureDeferred
async def test_php_page_is_compressed_in_every_coding_we_have(front):
    """A 60 KB page from PHP comes back in the coding the client prefers, and decodes to the plain page."""
    f = await front()
    plain = await f.get("/page.php")
    assert plain.status == 200 and plain.header("content-encoding") is None
    assert plain.header("vary") == "Accept-Encoding"
    assert len(plain.body) > 60 * 1024
    for coding in AVAILABLE:
        r = await f.get("/page.php", {"Accept-Encoding": f"gzip;q=0.5, {coding}"})
        assert (r.status, r.header("content-encoding"), r.header("vary")) == (200, coding, "Accept-Encoding")
        assert r.decoded() == plain.body
        assert len(r.body) < len(plain.body) // 5


@pytest_twisted.ensureDeferred
async def test_strong_php_etag_is_weakened_and_no_transform_is_respected(front):
    """PHP's strong ETag becomes weak on a gzipped body; Cache-Control: no-transform keeps it plain."""
    f = await front()
    r = await f.get("/page.php?etag=1", {"Accept-Encoding": "gzip"})
    assert (r.header("content-encoding"), r.header("etag")) == ("gzip", 'W/"page-v1"')
    r = await f.get("/page.php?etag=1&cc=no-transform", {"Accept-Encoding": "gzip"})
    assert (r.header("content-encoding"), r.header("etag"), r.header("vary")) == (None, '"page-v1"', None)


@pytest_twisted.ensureDeferred
async def test_compression_off(front):
    """compression.enabled: false sends every body as it is, with no Vary."""
    f = await front(compression={"enabled": False})
    r = await f.get("/page.php", {"Accept-Encoding": "gzip, br, zstd"})
    assert (r.header("content-encoding"), r.header("vary")) == (None, None)


@pytest_twisted.ensureDeferred
async def test_head_and_small_bodies_are_not_compressed(front):
    """HEAD gets the plain head (with Vary); a body under min_size is sent as it is."""
    f = await front()
    r = await f.get("/page.php", {"Accept-Encoding": "gzip"}, method="HEAD")
    assert (r.status, r.header("content-encoding"), r.header("vary")) == (200, None, "Accept-Encoding")
    r = await f.get("/page.php?kb=0", {"Accept-Encoding": "gzip"})
    assert r.header("content-encoding") is None and r.body.startswith(b"<!DOCTYPE html>")


@pytest_twisted.ensureDeferred
async def test_flushed_output_reaches_the_client_compressed_before_the_script_ends(front):
    """stream.php's first line, flushed by PHP, decodes at the client while the script still sleeps."""
    f = await front()

    def read_first() -> tuple[bytes, bytes]:
        with socket.create_connection(("127.0.0.1", f.port), timeout=10) as s:
            s.sendall(b"GET /stream.php?ms=3000 HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
            raw = b""
            deadline = time.monotonic() + FLUSH_DEADLINE
            while b"\r\n\r\n" not in raw or not _first_chunk(raw):
                assert time.monotonic() < deadline, raw
                raw += s.recv(65536)
            head, _, _ = raw.partition(b"\r\n\r\n")
            return head, zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(_first_chunk(raw))

    started = time.monotonic()
    head, first = await deferToThread(read_first)
    assert time.monotonic() - started < 2.5  # the script sleeps 3 s before its last line
    assert b"Content-Encoding: gzip" in head and b"Transfer-Encoding: chunked" in head
    assert first == b"first\n"


def _first_chunk(raw: bytes) -> bytes:
    """The data of the first whole chunk after the head, or b"" while it is incomplete."""
    body = raw.partition(b"\r\n\r\n")[2]
    size, sep, rest = body.partition(b"\r\n")
    if not sep:
        return b""
    n = int(size, 16)
    return rest[:n] if len(rest) >= n + 2 else b""


@pytest_twisted.ensureDeferred
async def test_static_files_small_and_big(front, docroot):
    """A small CSS file and a file over the one-read size are gzipped; a Range gets plain bytes."""
    f = await front()
    css = (docroot / "static" / "style.css").read_bytes()
    (docroot / "static" / "site.css").write_bytes(css * (600 // len(css) + 1))
    big = b"".join(b"line %d of a big text file\n" % i for i in range(SMALL_STATIC_FILE // 20))
    (docroot / "static" / "big.txt").write_bytes(big)
    r = await f.get("/static/site.css", {"Accept-Encoding": "gzip"})
    assert (r.status, r.header("content-type"), r.header("content-encoding")) == (200, "text/css", "gzip")
    assert r.header("etag").startswith('W/"') and r.header("accept-ranges") is None
    assert r.decoded() == (docroot / "static" / "site.css").read_bytes()
    r = await f.get("/static/big.txt", {"Accept-Encoding": "gzip"})
    assert (r.header("content-encoding"), r.header("transfer-encoding")) == ("gzip", "chunked")
    assert r.decoded() == big
    r = await f.get("/static/big.txt", {"Accept-Encoding": "gzip", "Range": "bytes=10-19"})
    assert (r.status, r.header("content-encoding"), r.body) == (206, None, big[10:20])


@pytest_twisted.ensureDeferred
async def test_precompressed_siblings(front, docroot):
    """app.js.br and app.js.gz are sent to clients that accept them, with app.js's type and their own validators."""
    f = await front()
    js = b"function hello() { return 'hello, world'; }\n" * 40
    static = docroot / "static"
    (static / "app.js").write_bytes(js)
    (static / "app.js.br").write_bytes(brotli.compress(js))
    (static / "app.js.gz").write_bytes(gzip.compress(js))
    r = await f.get("/static/app.js", {"Accept-Encoding": "gzip, br"})
    assert (r.status, r.header("content-encoding"), r.header("content-type")) == (200, "br", "text/javascript")
    assert r.header("vary") == "Accept-Encoding"
    assert r.body == (static / "app.js.br").read_bytes()
    st = os.stat(static / "app.js.br")
    assert r.header("etag") == '"%x-%x"' % (int(st.st_mtime), st.st_size)
    r = await f.get("/static/app.js", {"Accept-Encoding": "gzip"})
    assert (r.header("content-encoding"), r.body) == ("gzip", (static / "app.js.gz").read_bytes())
    etag = r.header("etag")
    again = await f.get("/static/app.js", {"Accept-Encoding": "gzip", "If-None-Match": etag})
    assert (again.status, again.header("etag"), again.header("vary")) == (304, etag, "Accept-Encoding")
    part = await f.get("/static/app.js", {"Accept-Encoding": "gzip", "Range": "bytes=0-9"})
    assert (part.status, part.header("content-encoding"), part.body) == (206, "gzip", r.body[:10])
    # A sibling older than the original is stale: the original is compressed on the fly instead.
    old = time.time() - 3600
    os.utime(static / "app.js.gz", (old, old))
    r = await f.get("/static/app.js", {"Accept-Encoding": "gzip"})
    assert r.header("content-encoding") == "gzip" and r.body != (static / "app.js.gz").read_bytes()
    assert r.decoded() == js
    plain = await f.get("/static/app.js")
    assert (plain.header("content-encoding"), plain.body) == (None, js)


@pytest_twisted.ensureDeferred
async def test_http_1_0_keep_alive_with_a_streamed_compressed_body_is_closed(front):
    """An HTTP/1.0 keep-alive client gets a streamed gzip body delimited by the close (no chunking in 1.0)."""
    f = await front()

    def run() -> tuple[bytes, float]:
        with socket.create_connection(("127.0.0.1", f.port), timeout=10) as s:
            s.sendall(b"GET /stream.php?ms=100 HTTP/1.0\r\nConnection: keep-alive\r\nAccept-Encoding: gzip\r\n\r\n")
            started = time.monotonic()
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out, time.monotonic() - started
                out += chunk

    raw, took = await deferToThread(run)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head and b"Transfer-Encoding" not in head
    assert gzip.decompress(body) == b"first\nlast\n"
    assert took < 5  # closed at the end, not kept until a timeout


@pytest_twisted.ensureDeferred
async def test_over_http2(front, docroot, tmp_path):
    """Over HTTP/2 a PHP page and a CSS file come compressed in the preferred coding, with Vary, and decode."""
    f = await front()
    port = await f.start_tls(self_signed_pem(tmp_path))
    plain = await f.get("/page.php")
    css = (docroot / "static" / "style.css").read_bytes() * 40
    (docroot / "static" / "site.css").write_bytes(css)
    coding = AVAILABLE[0]

    def run():  # type: ignore[no-untyped-def]
        client = H2Client(port)
        try:
            headers = (("accept-encoding", f"gzip;q=0.5, {coding}"),)
            return client.get("/page.php", headers), client.get("/static/site.css", headers)
        finally:
            client.close()

    page, sheet = await deferToThread(run)
    for r, body in ((page, plain.body), (sheet, css)):
        assert (r.status, r.header("content-encoding"), r.header("vary")) == (200, [coding], ["Accept-Encoding"])
        assert decode(coding, r.body) == body
