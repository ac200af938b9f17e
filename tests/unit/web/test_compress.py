"""Response compression: the negotiation and the decision alone, then through a real FrontSite with a fake php-fpm."""

from __future__ import annotations

import gzip
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Optional

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from fephp.backend.pool import FastCGIPool
from fephp.cgi.routing import Router
from fephp.testing import FakeEndpoint, FakeFastCGIServer
from fephp.web.app import PHPApp
from fephp.web.compress import (
    AVAILABLE,
    Compression,
    accepted_codings,
    add_vary,
    compressible,
    weak_etag,
)
from fephp.web.site import FrontSite
from tests.support.channel import CLIENT, client_transport

try:
    import brotli
except ImportError:
    import brotlicffi as brotli  # type: ignore[no-redef]


ALL = ("zstd", "br", "gzip")


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, ()),
        (b"", ()),
        (b"gzip", ("gzip",)),
        (b"gzip, deflate, br, zstd", ("zstd", "br", "gzip")),  # equal q: our order
        (b"gzip;q=1, br;q=0.5", ("gzip", "br")),  # q decides first
        (b"br;q=0, gzip", ("gzip",)),  # q=0 refuses
        (b"GZIP ; Q=0.8", ("gzip",)),  # case-insensitive, spaces
        (b"x-gzip", ("gzip",)),  # RFC 9110 8.4.1.3
        (b"*", ("zstd", "br", "gzip")),
        (b"*;q=0.5, gzip;q=0", ("zstd", "br")),
        (b"identity", ()),
        (b"deflate, compress", ()),
        (b"gzip;q=abc, br", ("br",)),  # an unreadable q counts as 0
        (b"gzip;q=2", ()),  # out of range: refused
        (b"gzip;q=0.001", ("gzip",)),
        (b",,gzip,,", ("gzip",)),
    ],
)
def test_accepted_codings(accept: Optional[bytes], expected: tuple[str, ...]) -> None:
    """Accept-Encoding with q-values picks the acceptable codings, best first, ties in our order."""
    assert accepted_codings(accept, ALL) == expected


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (b"text/html; charset=UTF-8", True),
        (b"TEXT/CSS", True),
        (b"application/json", True),
        (b"image/svg+xml", True),
        (b"image/png", False),
        (b"application/zip", False),
        (b"font/woff2", False),
        (b"application/octet-stream", False),
        (b"", False),
        (b"html", False),
    ],
)
def test_compressible_types(content_type: bytes, expected: bool) -> None:
    """Only text-like types of the default list are compressed; text/* covers every text subtype."""
    assert Compression().type_compressible(content_type) is expected


def test_a_type_list_of_our_own() -> None:
    """A configured list replaces the default one; type/* covers every subtype of type."""
    types = ("text/html", "application/*")
    assert compressible(b"application/zip", types)
    assert compressible(b"text/html; charset=utf-8", types)
    assert not compressible(b"text/css", types)


def test_weak_etag() -> None:
    """A strong ETag becomes weak, a weak one stays as it is (RFC 9110 8.8.1)."""
    assert weak_etag(b'"abc"') == b'W/"abc"'
    assert weak_etag(b'W/"abc"') == b'W/"abc"'


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        (None, [b"Accept-Encoding"]),
        ([b"Cookie"], [b"Cookie", b"Accept-Encoding"]),
        ([b"cookie, accept-encoding"], [b"cookie, accept-encoding"]),
        ([b"*"], [b"*"]),
    ],
)
def test_add_vary(vary: Optional[list[bytes]], expected: list[bytes]) -> None:
    """Accept-Encoding joins Vary once, and never a Vary of *."""
    headers = [(b"vary", value) for value in vary or ()]
    add_vary(headers)
    assert [value for name, value in headers if name == b"vary"] == expected


@pytest.mark.parametrize(
    ("code", "extra", "length", "expected"),
    [
        (200, {}, None, True),
        (200, {}, 600, True),
        (200, {}, 100, False),  # under min_size
        (404, {}, None, True),
        (204, {}, None, False),
        (304, {}, None, False),
        (206, {}, None, False),
        (200, {b"content-encoding": b"gzip"}, None, False),
        (200, {b"content-range": b"bytes 0-1/2"}, None, False),
        (200, {b"cache-control": b"public, No-Transform"}, None, False),
        (200, {b"cache-control": b"max-age=60"}, None, True),
        (200, {b"content-type": b"image/png"}, None, False),
    ],
)
def test_varies(code: int, extra: dict[bytes, bytes], length: Optional[int], expected: bool) -> None:
    """The decision: status, PHP's own coding or no-transform, type and known length."""
    headers = [(b"content-type", b"text/html")]
    for name, value in extra.items():
        headers = [pair for pair in headers if pair[0] != name] + [(name, value)]
    assert Compression(min_size=512).varies(code, headers, length) is expected


@pytest.mark.parametrize("coding", AVAILABLE)
def test_streamed_encoder_output_decodes_at_every_flush(coding: str) -> None:
    """What the encoder returned after each write decodes to everything written so far."""
    compression = Compression()
    encoder = compression.encoder(coding)
    decoder = _decoder(coding)
    # brotlicffi 1.1's Decompressor (PyPy) returns at most 5x its input per
    # call and holds the rest back: there only the whole stream is checked.
    held_back = coding == "br" and brotli.__name__ == "brotlicffi"
    sent = out = b""
    for part in (b"<html>" * 50, b"second part " * 30, b"x"):
        sent += part
        piece = encoder.compress(part)
        assert piece
        out += piece
        if not held_back:
            assert decoder(piece) == part
    out += encoder.finish()
    assert _decode(coding, out) == sent


@pytest.mark.parametrize("coding", AVAILABLE)
def test_whole_body_round_trip(coding: str) -> None:
    """A body compressed whole decodes to itself."""
    body = b"<p>hello</p>" * 200
    assert _decode(coding, Compression().compress_whole(coding, body)) == body


def _decoder(coding: str):  # type: ignore[no-untyped-def]
    """A function that decodes the next piece of one stream."""
    if coding == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress
    if coding == "br":
        return brotli.Decompressor().process
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj().decompress


def _decode(coding: str, data: bytes) -> bytes:
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        return brotli.decompress(data)  # type: ignore[no-any-return]
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj().decompress(data)  # type: ignore[no-any-return]


def _dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size, _, data = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return out
        out += data[:n]
        data = data[n + 2:]


def _split(response: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b": ")
        headers[name.lower()] = value
    return lines[0], headers, body


IMAGE = b"\x89PNG" + b"\0" * 4000
PAGE = b"<!DOCTYPE html><html><body>" + b"<p>Lorem ipsum dolor sit amet.</p>" * 100 + b"</body></html>"


class CompressedResponseTests(SynchronousTestCase):
    """Through a FrontSite with compression, PHP's fake answer and static files."""

    def setUp(self) -> None:
        root = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, root)
        (root / "index.php").write_text("<?php\n")
        (root / "page.html").write_bytes(PAGE)
        (root / "image.png").write_bytes(IMAGE)
        self.clock = Clock()
        self.endpoint = FakeEndpoint(self.clock)
        self.pool = FastCGIPool(self.endpoint, clock=self.clock, size=1, idle_timeout=None)
        app = PHPApp(router=Router(root=str(root)), backend=self.pool, server_software="t")
        self.site = FrontSite(app, timeout=None, reactor=self.clock, compression=Compression(algorithms=("gzip",)))
        self.backend: Optional[FakeFastCGIServer] = None

    def connect(self) -> tuple[object, StringTransport, list[bytes]]:
        channel = self.site.buildProtocol(CLIENT)
        transport = client_transport()
        writes: list[bytes] = []
        write = transport.write
        transport.write = lambda data: (writes.append(data), write(data))  # type: ignore[method-assign]
        channel.makeConnection(transport)  # type: ignore[attr-defined]
        return channel, transport, writes

    def php(self, head: bytes, body: bytes, accept: bytes = b"gzip, br", method: bytes = b"GET") -> tuple[bytes, list[bytes]]:
        channel, transport, writes = self.connect()
        request = method + b" /index.php HTTP/1.1\r\nHost: a\r\n"
        if accept:
            request += b"Accept-Encoding: " + accept + b"\r\n"
        channel.dataReceived(request + b"\r\n")  # type: ignore[attr-defined]
        if self.backend is None:
            self.backend = self.endpoint.last.succeed()
        backend = self.backend
        backend.received()
        backend.proto.dataReceived(backend.server.stdout(1, head + b"\r\n\r\n" + body, close=True) + backend.server.end_request(1))
        return transport.value(), writes

    def static(self, path: bytes, extra: bytes = b"", accept: bytes = b"gzip") -> tuple[bytes, list[bytes]]:
        channel, transport, writes = self.connect()
        request = b"GET " + path + b" HTTP/1.1\r\nHost: a\r\nAccept-Encoding: " + accept + b"\r\n" + extra
        channel.dataReceived(request + b"\r\n")  # type: ignore[attr-defined]
        return transport.value(), writes

    def test_whole_php_page_is_compressed_with_a_length_in_one_write(self) -> None:
        """A page that came in one read is gzipped whole: Content-Length of the compressed bytes, one write."""
        out, writes = self.php(b"Content-Type: text/html; charset=UTF-8\r\nETag: \"v1\"", PAGE)
        self.assertEqual(len(writes), 1)
        status, headers, body = _split(out)
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(headers[b"content-encoding"], b"gzip")
        self.assertEqual(headers[b"vary"], b"Accept-Encoding")
        self.assertEqual(headers[b"etag"], b'W/"v1"')
        self.assertEqual(int(headers[b"content-length"]), len(body))
        self.assertNotIn(b"transfer-encoding", headers)
        self.assertEqual(gzip.decompress(body), PAGE)
        self.assertLess(len(body), len(PAGE) // 5)

    def test_no_accept_encoding_gets_identity_with_vary(self) -> None:
        """A client that accepts no coding gets the page as it is, still marked Vary: Accept-Encoding."""
        out, _ = self.php(b"Content-Type: text/html", PAGE, accept=b"")
        _, headers, body = _split(out)
        self.assertNotIn(b"content-encoding", headers)
        self.assertEqual(headers[b"vary"], b"Accept-Encoding")
        self.assertEqual(body, PAGE)

    def test_not_compressed(self) -> None:
        """HEAD, a small body, an image, PHP's own coding and no-transform are sent as they are."""
        cases = [
            (b"Content-Type: text/html", PAGE, b"HEAD"),
            (b"Content-Type: text/html", b"<p>small</p>", b"GET"),
            (b"Content-Type: image/png", PAGE, b"GET"),
            (b"Content-Type: text/html\r\nContent-Encoding: br", PAGE, b"GET"),
            (b"Content-Type: text/html\r\nCache-Control: no-transform", PAGE, b"GET"),
            (b"Status: 204 No Content\r\nContent-Type: text/html", b"", b"GET"),
        ]
        for head, body, method in cases:
            out, _ = self.php(head, body, method=method)
            _, headers, sent = _split(out)
            self.assertNotEqual(headers.get(b"content-encoding"), b"gzip", head)
            if method == b"GET":
                self.assertEqual(sent, body, head)

    def test_streamed_php_output_is_compressed_and_flushed_at_each_read(self) -> None:
        """Output in several reads goes out chunked, each chunk decodable at once (PHP's flush() arrives)."""
        channel, transport, _ = self.connect()
        channel.dataReceived(b"GET /index.php HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n")  # type: ignore[attr-defined]
        backend = self.endpoint.last.succeed()
        backend.received()
        backend.send_output(b"Content-Type: text/html\r\nContent-Length: 99999\r\n\r\n<p>first</p>")
        status, headers, body = _split(transport.value())
        self.assertEqual(headers[b"content-encoding"], b"gzip")
        self.assertEqual(headers[b"transfer-encoding"], b"chunked")
        self.assertNotIn(b"content-length", headers)  # PHP's length is of the identity body
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        size, _, rest = body.partition(b"\r\n")
        self.assertEqual(decoder.decompress(rest[: int(size, 16)]), b"<p>first</p>")
        backend.proto.dataReceived(backend.server.stdout(1, b"<p>second</p>", close=True) + backend.server.end_request(1))
        _, _, body = _split(transport.value())
        self.assertEqual(gzip.decompress(_dechunk(body)), b"<p>first</p><p>second</p>")

    def test_small_static_file_is_compressed_whole_in_one_write(self) -> None:
        """A small compressible static file: gzipped, weak ETag, compressed length, one write."""
        out, writes = self.static(b"/page.html")
        self.assertEqual(len(writes), 1)
        _, headers, body = _split(out)
        self.assertEqual(headers[b"content-encoding"], b"gzip")
        self.assertTrue(headers[b"etag"].startswith(b'W/"'))
        self.assertNotIn(b"accept-ranges", headers)
        self.assertEqual(int(headers[b"content-length"]), len(body))
        self.assertEqual(gzip.decompress(body), PAGE)

    def test_images_are_not_compressed(self) -> None:
        """An image (zeros here, which gzip would shrink) is a 200 of its own bytes, without Vary."""
        out, _ = self.static(b"/image.png")
        status, headers, body = _split(out)
        self.assertEqual(
            (status, headers[b"content-type"], headers[b"content-length"], body),
            (b"HTTP/1.1 200 OK", b"image/png", b"4004", IMAGE),
        )
        self.assertNotIn(b"content-encoding", headers)
        self.assertNotIn(b"vary", headers)

    def test_revalidation_of_a_compressed_file_matches_its_weak_etag(self) -> None:
        """If-None-Match with the weak ETag of the gzipped file is a 304 that carries Vary and that ETag."""
        out, _ = self.static(b"/page.html")
        etag = _split(out)[1][b"etag"]
        out, _ = self.static(b"/page.html", b"If-None-Match: " + etag + b"\r\n")
        status, headers, _ = _split(out)
        self.assertEqual(status, b"HTTP/1.1 304 Not Modified")
        self.assertEqual(headers[b"etag"], etag)
        self.assertEqual(headers[b"vary"], b"Accept-Encoding")
