"""X-Sendfile and X-Accel-Redirect through real HTTP and a real php-fpm: files served, PHP's body dropped, escapes refused."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Optional
from urllib.parse import quote

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from fephp.web.errors import error_page
from fephp.web.static import SMALL_STATIC_FILE
from tests.support.docroot import make_docroot
from tests.support.h2client import H2Client
from tests.support.inprocess import InProcessFront, pool, stopped_at_teardown
from tests.support.rawhttp import Response
from tests.support.tls import self_signed_pem

pytestmark = pytest.mark.php

PHP_BODY = b"PHP's own body!\n"
REPORT = b"%PDF-1.4 not really a pdf\n" * 50
BIG = bytes(range(256)) * (SMALL_STATIC_FILE // 256 * 3)


async def _hand(front: InProcessFront, header: str, value: str, **query: str) -> Response:
    """sendfile.php's answer when it hands *value* over in *header* (its other query fields from *query*)."""
    extra = "".join(f"&{k}={quote(v)}" for k, v in query.items())
    return await front.get(f"/sendfile.php?h={header}&v={quote(value)}{extra}")


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    root = make_docroot(tmp_path)
    private = tmp_path / "private"
    (private / "sub").mkdir(parents=True)
    (private / "report.pdf").write_bytes(REPORT)
    (private / "big.bin").write_bytes(BIG)
    (private / "notes.txt").write_bytes(b"plain text notes, compressible. " * 100)
    (private / "sub" / "x.txt").write_bytes(b"in a sub folder\n")
    (private / "app.php").write_bytes(b"<?php // private source\n")
    (private / ".hidden").write_bytes(b"hidden\n")
    (private / "link_out").symlink_to(tmp_path / "outside" / "linked.txt")
    (private / "link_in").symlink_to(private / "report.pdf")
    return {"root": root, "private": private, "base": tmp_path}


@pytest.fixture
def front(php_fpm, site):
    async def make(roots: Optional[list[str]] = None) -> InProcessFront:
        if roots is None:
            roots = [f"{site['private']}=/protected/"]
        config = {"server": {"root": str(site["root"]), "x_sendfile_roots": roots}}
        return await InProcessFront.configured(config, pool(php_fpm.unix_endpoint)).start()

    yield from stopped_at_teardown(make)


def _is_the_file(r: Response, data: bytes) -> None:
    assert r.status == 200, (r.status, r.body[:200])
    assert r.body == data
    assert PHP_BODY not in r.body
    assert "x-sendfile" not in r.headers and "x-accel-redirect" not in r.headers


@pytest_twisted.ensureDeferred
async def test_x_sendfile_serves_the_file_with_phps_headers(front, site):
    """X-Sendfile: the file instead of PHP's body, PHP's Content-Type and Content-Disposition kept, file validators."""
    f = await front()
    path = site["private"] / "report.pdf"
    r = await _hand(f, "X-Sendfile", str(path), type="application/pdf", disp='attachment; filename="r.pdf"')
    _is_the_file(r, REPORT)
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"] == 'attachment; filename="r.pdf"'
    assert r.headers["cache-control"] == "private, max-age=60"
    st = os.stat(path)
    assert r.headers["etag"] == '"%x-%x"' % (int(st.st_mtime), st.st_size)
    assert r.headers["content-length"] == str(len(REPORT))
    assert "last-modified" in r.headers


@pytest_twisted.ensureDeferred
async def test_x_accel_redirect_range_conditional_and_head(front, site):
    """X-Accel-Redirect through the mapped prefix, with Range, If-None-Match and HEAD as for a static file."""
    f = await front()
    r = await _hand(f, "X-Accel-Redirect", "/protected/report.pdf", type="application/pdf")
    _is_the_file(r, REPORT)
    etag = r.headers["etag"]
    target = "/sendfile.php?h=X-Accel-Redirect&v=/protected/report.pdf&type=application/pdf"
    part = await f.get(target, {"Range": "bytes=5-14"})
    assert (part.status, part.body, part.headers["content-range"]) == (206, REPORT[5:15], f"bytes 5-14/{len(REPORT)}")
    again = await f.get(target, {"If-None-Match": etag})
    assert (again.status, again.body) == (304, b"")
    head = await f.get(target, method="HEAD")
    assert (head.status, head.body, head.headers["content-length"]) == (200, b"", str(len(REPORT)))
    posted = await f.get(target, method="POST")  # served as GET, as nginx does
    _is_the_file(posted, REPORT)


@pytest_twisted.ensureDeferred
async def test_big_file_and_compression(front, site):
    """A file over the one-read size streams whole; a text file is gzipped for a client that asks."""
    f = await front()
    r = await _hand(f, "X-Accel-Redirect", "/protected/big.bin", type="application/octet-stream")
    assert r.status == 200 and hashlib.sha256(r.body).digest() == hashlib.sha256(BIG).digest()
    target = "/sendfile.php?h=X-Sendfile&v=" + quote(str(site["private"] / "notes.txt")) + "&type=text/plain"
    r = await f.get(target, {"Accept-Encoding": "gzip"})
    assert (r.status, r.headers["content-encoding"]) == (200, "gzip")
    assert gzip.decompress(r.body) == (site["private"] / "notes.txt").read_bytes()


@pytest_twisted.ensureDeferred
async def test_symlink_inside_the_root_is_followed(front, site):
    """A symlink that stays inside the roots is served like the file it names."""
    f = await front()
    _is_the_file(await _hand(f, "X-Sendfile", str(site["private"] / "link_in")), REPORT)
    _is_the_file(await _hand(f, "X-Accel-Redirect", "/protected/sub/x.txt"), b"in a sub folder\n")


ESCAPES = [
    ("X-Sendfile", "/etc/passwd"),
    ("X-Sendfile", "{private}/../outside/linked.txt"),
    ("X-Sendfile", "{private}/link_out"),
    ("X-Sendfile", "{private}/app.php"),
    ("X-Sendfile", "{private}/.hidden"),
    ("X-Sendfile", "{private}"),
    ("X-Sendfile", "report.pdf"),
    ("X-Sendfile", "{root}/index.php"),
    ("X-Sendfile", "{root}/static/hello.txt"),
    ("X-Sendfile", "{private}/report.pdf%00.txt"),
    ("X-Accel-Redirect", "/protected/../outside/linked.txt"),
    ("X-Accel-Redirect", "/protected/%2e%2e/outside/linked.txt"),
    ("X-Accel-Redirect", "/protected/link_out"),
    ("X-Accel-Redirect", "/protected/app.php"),
    ("X-Accel-Redirect", "/protected/APP.PHP"),
    ("X-Accel-Redirect", "/protected//etc/passwd"),
    ("X-Accel-Redirect", "/other/report.pdf"),
    ("X-Accel-Redirect", "{private}/report.pdf"),
]


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(("header", "value"), ESCAPES, ids=[f"{h}:{v}" for h, v in ESCAPES])
async def test_escapes_are_refused(front, site, header, value):
    """A path outside the roots, through a symlink out, to PHP source or a hidden file: 404, nothing of the file or PHP."""
    f = await front()
    r = await _hand(f, header, value.format(private=site["private"], root=site["root"]))
    assert (r.status, r.body) == (404, error_page(404))
    assert "x-sendfile" not in r.headers and "x-accel-redirect" not in r.headers


@pytest_twisted.ensureDeferred
async def test_off_sends_phps_body_and_never_the_header(front, site):
    """Without x_sendfile_roots PHP's own answer is sent, without the header; PHP is told nothing."""
    f = await front(roots=[])
    r = await _hand(f, "X-Sendfile", str(site["private"] / "report.pdf"))
    assert (r.status, r.body) == (200, PHP_BODY)
    assert "x-sendfile" not in r.headers
    env = json.loads((await f.get("/env.php", {"X-Sendfile-Type": "X-Sendfile", "X-Accel-Mapping": "/=/"})).body)
    assert "HTTP_X_SENDFILE_TYPE" not in env and "HTTP_X_ACCEL_MAPPING" not in env


@pytest_twisted.ensureDeferred
async def test_php_is_told_the_mapping_and_symfony_style_works(front, site):
    """PHP sees fephp's X-Sendfile-Type and X-Accel-Mapping (never a client's), and a BinaryFileResponse-style script works."""
    f = await front()
    env = json.loads((await f.get("/env.php", {"X-Sendfile-Type": "X-Sendfile", "X-Accel-Mapping": "/=/"})).body)
    assert env["HTTP_X_SENDFILE_TYPE"] == "X-Accel-Redirect"
    assert env["HTTP_X_ACCEL_MAPPING"] == f"{os.path.realpath(site['private'])}/=/protected/"
    r = await f.get("/sendfile.php?symfony=" + quote(str(site["private"] / "report.pdf")))
    _is_the_file(r, REPORT)
    g = await front(roots=[str(site["private"])])
    env = json.loads((await g.get("/env.php")).body)
    assert env["HTTP_X_SENDFILE_TYPE"] == "X-Sendfile" and "HTTP_X_ACCEL_MAPPING" not in env
    _is_the_file(await g.get("/sendfile.php?symfony=" + quote(str(site["private"] / "report.pdf"))), REPORT)


@pytest_twisted.ensureDeferred
async def test_a_refusal_is_logged_with_its_reason(front, site):
    """A refused hand-over is one warn line naming the header, the URI and the reason, never the path's content."""
    from twisted.logger import LogLevel, globalLogPublisher

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        f = await front()
        r = await _hand(f, "X-Sendfile", str(site["private"] / "link_out"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert r.status == 404
    refused = [e for e in events if e.get("reason")]
    assert [(e["log_level"], e["header"], e["reason"]) for e in refused] == [(LogLevel.warn, "x-sendfile", "resolves outside the roots")]
    assert refused[0]["uri"].startswith("/sendfile.php?h=X-Sendfile")


@pytest_twisted.ensureDeferred
async def test_over_http2(front, site, tmp_path):
    """Over HTTP/2 the handed-over file arrives whole (and by range), PHP's body never, the header never."""
    f = await front()
    port = await f.start_tls(self_signed_pem(tmp_path))
    target = "/sendfile.php?h=X-Accel-Redirect&v=/protected/big.bin&type=application/octet-stream"

    def run():  # type: ignore[no-untyped-def]
        client = H2Client(port)
        try:
            assert client.alpn == "h2"
            return client.get(target), client.get(target, (("range", "bytes=100-199"),))
        finally:
            client.close()

    whole, part = await deferToThread(run)
    assert whole.status == 200 and hashlib.sha256(whole.body).digest() == hashlib.sha256(BIG).digest()
    assert whole.header("x-accel-redirect") == [] and PHP_BODY not in whole.body[:100]
    assert (part.status, part.body) == (206, BIG[100:200])
