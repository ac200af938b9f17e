"""Response compression through real HTTP and a real php-fpm: PHP pages, flushed output, static and precompressed files."""

from __future__ import annotations

import gzip
import os
import time
import zlib
from pathlib import Path
from typing import Any, Optional

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from fephp.web.compress import AVAILABLE
from fephp.web.static import SMALL_STATIC_FILE
from tests.support.docroot import make_docroot
from tests.support.h2client import H2Client
from tests.support.inprocess import InProcessFront, pool, stopped_at_teardown
from tests.support.rawhttp import Response, first_chunk
from tests.support.tls import self_signed_pem

try:
    import brotli
except ImportError:
    import brotlicffi as brotli  # type: ignore[no-redef]

pytestmark = pytest.mark.php

#: How long a test waits for flushed output before it fails.
FLUSH_DEADLINE = 5.0


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


def _decoded(r: Response) -> bytes:
    """*r*'s body with its Content-Encoding undone."""
    return decode(r.header("content-encoding"), r.body)


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    return make_docroot(tmp_path)


@pytest.fixture
def front(php_fpm, docroot):
    async def make(**config: Any) -> InProcessFront:
        return await InProcessFront.configured({"server": {"root": str(docroot)}, **config}, pool(php_fpm.unix_endpoint)).start()

    yield from stopped_at_teardown(make)


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
        assert _decoded(r) == plain.body
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
async def test_flushed_output_reaches_the_client_compressed_before_the_script_ends(front, docroot):
    """flushwait.php's first line, flushed by PHP, decodes at the client while the script still waits for the client to say go."""
    f = await front()

    # An event, not a window: the script cannot end before the go file exists
    # (or its 10 s run out, past FLUSH_DEADLINE), and the file is made only
    # after the first chunk came.
    request = b"GET /flushwait.php HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
    try:
        raw = await f.read_until(request, first_chunk, within=FLUSH_DEADLINE)
    finally:
        (docroot / "flushwait.go").write_bytes(b"")  # the script may end now
    head, _, _ = raw.partition(b"\r\n\r\n")
    first = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(first_chunk(raw))
    assert b"Content-Encoding: gzip" in head and b"Transfer-Encoding: chunked" in head
    assert first == b"first\n"


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
    assert _decoded(r) == (docroot / "static" / "site.css").read_bytes()
    r = await f.get("/static/big.txt", {"Accept-Encoding": "gzip"})
    assert (r.header("content-encoding"), r.header("transfer-encoding")) == ("gzip", "chunked")
    assert _decoded(r) == big
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
    assert _decoded(r) == js
    plain = await f.get("/static/app.js")
    assert (plain.header("content-encoding"), plain.body) == (None, js)


@pytest_twisted.ensureDeferred
async def test_http_1_0_keep_alive_with_a_streamed_compressed_body_is_closed(front):
    """An HTTP/1.0 keep-alive client gets a streamed gzip body delimited by the close (no chunking in 1.0)."""
    f = await front()

    timed = await f.timed(b"GET /stream.php?ms=100 HTTP/1.0\r\nConnection: keep-alive\r\nAccept-Encoding: gzip\r\n\r\n")
    # Closed at the end, not kept until a timeout: an event, since timed()
    # returns only on fephp's close, and a kept connection would outlast the
    # client's 10 s read timeout (keepalive is 60 s) and fail it.
    head, _, body = timed.raw.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head and b"Transfer-Encoding" not in head
    assert gzip.decompress(body) == b"first\nlast\n"


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
