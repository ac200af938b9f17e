"""The headers of a static file's 200, 206 and 304: what RFC 9110 15.3.7 and 15.4.5 require a 206 and a 304 to repeat from the 200."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import pytest
from twisted.internet.task import Clock

from fephp.backend.pool import FastCGIPool
from fephp.cgi.routing import Router
from fephp.testing import FakeEndpoint
from fephp.web.app import PHPApp
from fephp.web.compress import Compression
from fephp.web.sendfile import SendfileRoot, SendfileRoots
from fephp.web.site import FrontSite
from fephp.web.static import SMALL_STATIC_FILE, CacheRule
from tests.support.channel import CLIENT, client_transport

#: The clock of every test here (time.time), and the files' modification time.
NOW = 1_800_000_000
MTIME = 1_700_000_000
DATE = b"Fri, 15 Jan 2027 08:00:00 GMT"
LAST_MODIFIED = b"Tue, 14 Nov 2023 22:13:20 GMT"

PAGE = b"<!DOCTYPE html><p>" + b"Lorem ipsum dolor sit amet. " * 120 + b"</p>"
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 12
SMALL = b"body { color: #222; }\n"
BIG = b"/* big */\n" + b"a { color: red; }\n" * (SMALL_STATIC_FILE // 16)

#: The headers every answer here carries: the site's, the cache rule's (``expires: max``).
COMMON = {
    b"server": b"t",
    b"date": DATE,
    b"x-request-id": b"test-1",
    b"expires": b"Thu, 31 Dec 2037 23:55:55 GMT",
    b"cache-control": b"max-age=315360000",
}


def etag(data: bytes) -> bytes:
    """nginx's ETag of a file of *data* modified at MTIME."""
    return b'"%x-%x"' % (MTIME, len(data))


@pytest.fixture
def root() -> Any:
    """A document root with a compressible page, an image, a small stylesheet and a big one, all modified at MTIME."""
    path = Path(tempfile.mkdtemp())
    for name, data in (("page.html", PAGE), ("image.png", IMAGE), ("small.css", SMALL), ("big.css", BIG), ("index.php", b"<?php\n")):
        (path / name).write_bytes(data)
        os.utime(path / name, (MTIME, MTIME))
    yield path
    shutil.rmtree(path)


@pytest.fixture(autouse=True)
def fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Date (and any Expires from now) as of NOW."""
    monkeypatch.setattr(time, "time", lambda: float(NOW))


def get(
    root: Path, path: bytes, extra: bytes = b"", *, rule: Optional[CacheRule] = None, php_head: Optional[bytes] = None
) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """GET *path* with *extra* head lines from a site with gzip and *rule* (``expires: max`` by default): status line, headers, body.

    With *php_head*, *path* is a script and *php_head* its CGI head, as
    PHP's answer (X-Sendfile works for files under *root*).
    """
    clock = Clock()
    endpoint = FakeEndpoint(clock)
    pool = FastCGIPool(endpoint, clock=clock, size=1, idle_timeout=None)  # type: ignore[arg-type]  # a fake php-fpm end
    app = PHPApp(
        router=Router(root=str(root)),
        backend=pool,
        server_software="t",
        static_cache=(rule or CacheRule("/", expires="max"),),
        sendfile=SendfileRoots((SendfileRoot(os.path.realpath(root)),)),
    )
    site = FrontSite(app, timeout=None, reactor=clock, compression=Compression(algorithms=("gzip",)))
    channel = site.buildProtocol(CLIENT)
    transport = client_transport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\nX-Request-Id: test-1\r\n" + extra + b"\r\n")  # type: ignore[attr-defined]
    if php_head is not None:
        backend = endpoint.last.succeed()
        backend.received()
        backend.proto.dataReceived(backend.server.stdout(1, php_head + b"\r\n\r\n", close=True) + backend.server.end_request(1))
    for _ in range(100):  # a file's pull producer, pulled at each turn of the clock, as the reactor would
        if not any(call.getTime() <= clock.seconds() for call in clock.getDelayedCalls()):
            break
        clock.advance(0)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b": ")
        assert name.lower() not in headers, line
        headers[name.lower()] = value
    return lines[0], headers, body


GZIP = b"Accept-Encoding: gzip\r\n"


def test_compressible_file_gzipped_200_206_304(root: Path) -> None:
    """A client that takes gzip: the 206 (identity bytes, strong ETag) and the 304 carry the 200's Vary, Cache-Control, Expires and Date."""
    status, headers, body = get(root, b"/page.html", GZIP)
    assert status == b"HTTP/1.1 200 OK"
    assert gzip.decompress(body) == PAGE
    assert headers == {
        **COMMON,
        b"content-type": b"text/html",
        b"content-length": b"%d" % len(body),
        b"vary": b"Accept-Encoding",
        b"content-encoding": b"gzip",
        b"last-modified": LAST_MODIFIED,
        b"etag": b"W/" + etag(PAGE),
    }
    status, headers, body = get(root, b"/page.html", GZIP + b"Range: bytes=0-9\r\n")
    assert (status, body) == (b"HTTP/1.1 206 Partial Content", PAGE[:10])
    assert headers == {
        **COMMON,
        b"vary": b"Accept-Encoding",
        b"accept-ranges": b"bytes",
        b"content-range": b"bytes 0-9/%d" % len(PAGE),
        b"content-length": b"10",
        b"content-type": b"text/html",
        b"last-modified": LAST_MODIFIED,
        b"etag": etag(PAGE),
    }
    status, headers, body = get(root, b"/page.html", GZIP + b"If-None-Match: W/" + etag(PAGE) + b"\r\n")
    assert (status, body) == (b"HTTP/1.1 304 Not Modified", b"")
    assert headers == {**COMMON, b"vary": b"Accept-Encoding", b"last-modified": LAST_MODIFIED, b"etag": b"W/" + etag(PAGE)}


def test_compressible_file_identity_200_206_304(root: Path) -> None:
    """A client that takes no coding gets the page as it is: its 200, 206 and 304 all carry Vary and the strong ETag."""
    status, headers, body = get(root, b"/page.html")
    assert (status, body) == (b"HTTP/1.1 200 OK", PAGE)
    assert headers == {
        **COMMON,
        b"content-type": b"text/html",
        b"accept-ranges": b"bytes",
        b"content-length": b"%d" % len(PAGE),
        b"vary": b"Accept-Encoding",
        b"last-modified": LAST_MODIFIED,
        b"etag": etag(PAGE),
    }
    status, headers, body = get(root, b"/page.html", b"Range: bytes=5-9\r\n")
    assert (status, body) == (b"HTTP/1.1 206 Partial Content", PAGE[5:10])
    assert headers == {
        **COMMON,
        b"vary": b"Accept-Encoding",
        b"accept-ranges": b"bytes",
        b"content-range": b"bytes 5-9/%d" % len(PAGE),
        b"content-length": b"5",
        b"content-type": b"text/html",
        b"last-modified": LAST_MODIFIED,
        b"etag": etag(PAGE),
    }
    status, headers, body = get(root, b"/page.html", b"If-Modified-Since: " + LAST_MODIFIED + b"\r\n")
    assert (status, body) == (b"HTTP/1.1 304 Not Modified", b"")
    assert headers == {**COMMON, b"vary": b"Accept-Encoding", b"last-modified": LAST_MODIFIED, b"etag": etag(PAGE)}


@pytest.mark.parametrize("name, data, content_type", [("image.png", IMAGE, b"image/png"), ("small.css", SMALL, b"text/css")])
def test_uncompressed_file_200_206_304(root: Path, name: str, data: bytes, content_type: bytes) -> None:
    """An image, or a stylesheet under compression's min_size: no Vary on its 200, so none on its 206 and 304."""
    path = b"/" + name.encode()
    status, headers, body = get(root, path, GZIP)
    assert (status, body) == (b"HTTP/1.1 200 OK", data)
    assert headers == {
        **COMMON,
        b"content-type": content_type,
        b"accept-ranges": b"bytes",
        b"content-length": b"%d" % len(data),
        b"last-modified": LAST_MODIFIED,
        b"etag": etag(data),
    }
    status, headers, body = get(root, path, GZIP + b"Range: bytes=2-4\r\n")
    assert (status, body) == (b"HTTP/1.1 206 Partial Content", data[2:5])
    assert headers == {
        **COMMON,
        b"accept-ranges": b"bytes",
        b"content-range": b"bytes 2-4/%d" % len(data),
        b"content-length": b"3",
        b"content-type": content_type,
        b"last-modified": LAST_MODIFIED,
        b"etag": etag(data),
    }
    status, headers, body = get(root, path, GZIP + b"If-None-Match: " + etag(data) + b"\r\n")
    assert (status, body) == (b"HTTP/1.1 304 Not Modified", b"")
    assert headers == {**COMMON, b"last-modified": LAST_MODIFIED, b"etag": etag(data)}


def test_no_transform_rule_means_no_vary_on_any(root: Path) -> None:
    """A cache rule with no-transform keeps the page uncompressed: neither its 200 nor its 206 nor its 304 carries Vary."""
    rule = CacheRule("/", cache_control="public, no-transform")
    answers = [
        get(root, b"/page.html", GZIP, rule=rule),
        get(root, b"/page.html", GZIP + b"Range: bytes=0-0\r\n", rule=rule),
        get(root, b"/page.html", GZIP + b"If-None-Match: " + etag(PAGE) + b"\r\n", rule=rule),
    ]
    assert [(status, headers.get(b"vary"), headers[b"cache-control"], headers[b"etag"]) for status, headers, _ in answers] == [
        (b"HTTP/1.1 200 OK", None, b"public, no-transform", etag(PAGE)),
        (b"HTTP/1.1 206 Partial Content", None, b"public, no-transform", etag(PAGE)),
        (b"HTTP/1.1 304 Not Modified", None, b"public, no-transform", etag(PAGE)),
    ]


@pytest.mark.parametrize(
    "path, extra, status, body",
    [
        (b"/page.html", b"Range: bytes=0-3\r\n", b"HTTP/1.1 206 Partial Content", PAGE[:4]),
        (b"/big.css", b"", b"HTTP/1.1 200 OK", BIG),
    ],
    ids=["range", "big-file"],
)
def test_if_none_match_overrides_if_modified_since_on_files_path(root: Path, path: bytes, extra: bytes, status: bytes, body: bytes) -> None:
    """A stale If-None-Match beside a fresh If-Modified-Since gets the content, not 304 (RFC 9110 13.2.2), on Twisted's File path too."""
    conditions = b'If-None-Match: "old"\r\nIf-Modified-Since: ' + LAST_MODIFIED + b"\r\n"
    got_status, headers, got_body = get(root, path, extra + conditions)
    assert (got_status, got_body, headers[b"vary"]) == (status, body, b"Accept-Encoding")


@pytest.mark.parametrize(
    "if_range, status",
    [
        (etag(PAGE), b"HTTP/1.1 206 Partial Content"),
        (b"W/" + etag(PAGE), b"HTTP/1.1 200 OK"),  # a weak tag never matches (strong comparison)
        (b'"6553f100-1"', b"HTTP/1.1 200 OK"),  # the tag of the file before it changed
        (LAST_MODIFIED, b"HTTP/1.1 206 Partial Content"),
        (b"Tue, 14 Nov 2023 22:13:21 GMT", b"HTTP/1.1 200 OK"),  # a second later: not the Last-Modified
        (b"yesterday", b"HTTP/1.1 200 OK"),
    ],
    ids=["etag", "weak-etag", "old-etag", "date", "other-date", "garbage"],
)
@pytest.mark.parametrize("name", ["page.html", "big.css"])
def test_if_range(root: Path, name: str, if_range: bytes, status: bytes) -> None:
    """If-Range that names the file as it is gets the range; any other gets the whole file, 200 (RFC 9110 13.1.5)."""
    data = {"page.html": PAGE, "big.css": BIG}[name]
    if if_range.startswith(b'"'):
        if_range = if_range.replace(etag(PAGE), etag(data))
    got, headers, body = get(root, b"/" + name.encode(), b"Range: bytes=3-7\r\nIf-Range: " + if_range + b"\r\n")
    assert (got, body, headers.get(b"content-range")) == (
        (status, data[3:8], b"bytes 3-7/%d" % len(data)) if status.endswith(b"Partial Content") else (status, data, None)
    )


def test_x_sendfile_206_and_304_carry_vary(root: Path) -> None:
    """A compressible file PHP hands over with X-Sendfile: its 200, 206 and 304 from fephp all carry Vary and the file's validators."""
    php = b"Content-Type: text/html\r\nX-Sendfile: " + os.path.realpath(root / "page.html").encode()
    answers = [
        get(root, b"/index.php", php_head=php),
        get(root, b"/index.php", b"Range: bytes=0-4\r\n", php_head=php),
        get(root, b"/index.php", b"If-None-Match: " + etag(PAGE) + b"\r\n", php_head=php),
    ]
    site = {b"server": b"t", b"date": DATE, b"x-request-id": b"test-1", b"content-type": b"text/html"}
    validators = {b"last-modified": LAST_MODIFIED, b"etag": etag(PAGE)}
    assert answers == [
        (b"HTTP/1.1 200 OK", {**site, b"accept-ranges": b"bytes", b"content-length": b"%d" % len(PAGE), b"vary": b"Accept-Encoding", **validators}, PAGE),
        (
            b"HTTP/1.1 206 Partial Content",
            {**site, b"vary": b"Accept-Encoding", b"accept-ranges": b"bytes", b"content-range": b"bytes 0-4/%d" % len(PAGE), b"content-length": b"5", **validators},
            PAGE[:5],
        ),
        (b"HTTP/1.1 304 Not Modified", {**site, b"vary": b"Accept-Encoding", **validators}, b""),
    ]


@pytest.mark.parametrize("accept", [b"", GZIP], ids=["identity", "gzip"])
def test_small_file_with_a_gzip_sibling_varies_for_every_client(root: Path, accept: bytes) -> None:
    """A stylesheet under min_size with small.css.gz beside it: its 200, 206 and 304 carry Vary for every client, not only the one that gets the sibling."""
    sibling = gzip.compress(SMALL)
    (root / "small.css.gz").write_bytes(sibling)
    os.utime(root / "small.css.gz", (MTIME, MTIME))
    data = sibling if accept else SMALL
    coded = {b"content-encoding": b"gzip"} if accept else {}
    full = {**COMMON, b"content-type": b"text/css", **coded, b"vary": b"Accept-Encoding", b"accept-ranges": b"bytes", b"last-modified": LAST_MODIFIED, b"etag": etag(data)}
    assert get(root, b"/small.css", accept) == (b"HTTP/1.1 200 OK", {**full, b"content-length": b"%d" % len(data)}, data)
    assert get(root, b"/small.css", accept + b"Range: bytes=1-2\r\n") == (
        b"HTTP/1.1 206 Partial Content",
        {**full, b"content-range": b"bytes 1-2/%d" % len(data), b"content-length": b"2"},
        data[1:3],
    )
    assert get(root, b"/small.css", accept + b"If-None-Match: " + etag(data) + b"\r\n") == (
        b"HTTP/1.1 304 Not Modified",
        {**COMMON, **coded, b"vary": b"Accept-Encoding", b"last-modified": LAST_MODIFIED, b"etag": etag(data)},
        b"",
    )


@pytest.mark.parametrize(
    "name, sibling_mtime, rule, vary",
    [
        ("page.html", MTIME, CacheRule("/", cache_control="no-transform"), b"Accept-Encoding"),  # never compressed on the fly, yet page.html.gz is there
        ("small.css", MTIME - 1, None, None),  # a sibling older than the file is never sent
        ("image.png", MTIME, None, None),  # not a compressible type: a sibling is never sent
    ],
    ids=["no-transform", "stale-sibling", "image"],
)
def test_vary_of_an_identity_answer_beside_a_sibling(root: Path, name: str, sibling_mtime: int, rule: Optional[CacheRule], vary: Optional[bytes]) -> None:
    """A client without Accept-Encoding gets x as it is; it carries Vary exactly when another client would get x.gz."""
    (root / (name + ".gz")).write_bytes(b"not read")
    os.utime(root / (name + ".gz"), (sibling_mtime, sibling_mtime))
    status, headers, _ = get(root, b"/" + name.encode(), rule=rule)
    assert (status, headers.get(b"content-encoding"), headers.get(b"vary")) == (b"HTTP/1.1 200 OK", None, vary)
