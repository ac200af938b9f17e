"""fephp.web.PHPResource mounted in a plain twisted.web Site beside a Python resource, in front of a real php-fpm."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import Site

from fephp.cgi.routing import Router
from fephp.web import PHPResource
from tests.support.docroot import SITE
from tests.support.inprocess import LOOPBACK, pool
from tests.support.rawhttp import Response, exchange, flushed_then_rest, request_bytes

pytestmark = pytest.mark.php


class Hello(Resource):
    """A Python resource: says which path it was asked for."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:  # noqa: N802 - Twisted's name
        request.setHeader(b"content-type", b"text/plain")
        return b"python says hello to " + request.uri


class Mounted:
    """A plain Site: / holds "php" (a PHPResource over the test site, copied under php/ of its root) and "py"."""

    def __init__(self, root: Path, backend: Any) -> None:
        self.backend = backend
        self.app = PHPResource(router=Router(root=str(root)), backend=backend, server_software="mounted")
        tree = Resource()
        tree.putChild(b"php", self.app)
        tree.putChild(b"py", Hello())
        self.site = Site(tree)
        self.port: Any = None

    async def start(self) -> "Mounted":
        self.port = await serverFromString(reactor, LOOPBACK).listen(self.site)
        return self

    @property
    def number(self) -> int:
        return int(self.port.getHost().port)

    async def send(self, data: bytes) -> bytes:
        return await deferToThread(exchange, self.number, data)

    async def get(self, target: str, headers: Any = None, method: str = "GET", body: bytes = b"") -> Response:
        if body:
            lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{self.number}", "Connection: close"]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()] + [f"Content-Length: {len(body)}"]
            data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        else:
            data = request_bytes(method, target, headers, host=f"127.0.0.1:{self.number}")
        return Response.parse(await deferToThread(exchange, self.number, data), head_only=method == "HEAD")

    async def stop(self) -> None:
        await self.port.stopListening()
        await self.backend.close()


@pytest.fixture
def mounted(php_fpm: Any, tmp_path: Path) -> Iterator[Mounted]:
    root = tmp_path / "outer"
    shutil.copytree(SITE, root / "php")
    made = Mounted(root, pool(php_fpm.unix_endpoint))
    pytest_twisted.blockon(defer.ensureDeferred(made.start()))
    yield made
    pytest_twisted.blockon(defer.ensureDeferred(made.stop()))


@pytest_twisted.ensureDeferred
async def test_php_and_python_resources_answer_side_by_side(mounted: Mounted) -> None:
    """/php/env.php runs PHP with the query and headers; /py/x is the Python resource's own answer."""
    r = await mounted.get("/php/env.php?a=1&b=two", {"X-Custom": "yes"})
    env = json.loads(r.body)
    assert (r.status, r.header("content-type")) == (200, "application/json")
    assert {key: env[key] for key in ("REQUEST_METHOD", "QUERY_STRING", "REQUEST_URI", "SCRIPT_NAME", "HTTP_X_CUSTOM")} == {
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": "a=1&b=two",
        "REQUEST_URI": "/php/env.php?a=1&b=two",
        "SCRIPT_NAME": "/php/env.php",
        "HTTP_X_CUSTOM": "yes",
    }
    assert (env["REMOTE_ADDR"], env["SERVER_PORT"], env["SERVER_PROTOCOL"]) == ("127.0.0.1", str(mounted.number), "HTTP/1.1")
    py = await mounted.get("/py/x?y=1")
    assert (py.status, py.body) == (200, b"python says hello to /py/x?y=1")


@pytest_twisted.ensureDeferred
async def test_post_body_reaches_php(mounted: Mounted) -> None:
    """A 300 KiB POST body reaches PHP byte for byte (its length, sha256 and CONTENT_LENGTH echoed)."""
    body = bytes(range(256)) * 1200
    r = await mounted.get(
        "/php/echo.php", {"Content-Type": "application/octet-stream"}, "POST", body
    )
    assert (r.status, r.body) == (200, b"%d %s %d" % (len(body), hashlib.sha256(body).hexdigest().encode(), len(body)))


@pytest_twisted.ensureDeferred
async def test_php_headers_and_errors_through_a_plain_request(mounted: Mounted) -> None:
    """PHP's cookies arrive as two Set-Cookie headers; a missing script is fephp's 404 page; a form POST reaches $_POST."""
    r = await mounted.get(
        "/php/form.php", {"Content-Type": "application/x-www-form-urlencoded"}, "POST", b"x=1&y=2"
    )
    assert r.status == 200
    assert r.values("set-cookie") == ["a=1", "b=2"]
    assert json.loads(r.body) == {"post": {"x": "1", "y": "2"}, "cookies": [], "method": "POST"}
    missing = await mounted.get("/php/nothing-here.php")
    assert (missing.status, missing.header("content-type")) == (404, "text/html; charset=utf-8")
    assert b"<h1>404 Not Found</h1>" in missing.body


@pytest_twisted.ensureDeferred
async def test_flushed_output_streams_through_a_plain_request(mounted: Mounted, tmp_path: Path) -> None:
    """PHP's flushed first line reaches the client while the script runs: it ends only once the client has read it."""
    go = tmp_path / "outer" / "php" / "flushwait.go"
    port = mounted.number

    early, rest = await deferToThread(flushed_then_rest, port, "/php/flushwait.php", go)
    assert early.startswith(b"HTTP/1.1 200 OK\r\n") and early.endswith(b"\r\n\r\n6\r\nfirst\n\r\n")
    assert b"\r\nTransfer-Encoding: chunked\r\n" in early
    assert rest == b"5\r\nlast\n\r\n0\r\n\r\n"


@pytest_twisted.ensureDeferred
async def test_static_file_and_range_through_a_plain_request(mounted: Mounted, tmp_path: Path) -> None:
    """A static file under the mount is served with its validators; a Range gets its 206."""
    data = (tmp_path / "outer" / "php" / "static" / "hello.txt").read_bytes()
    r = await mounted.get("/php/static/hello.txt")
    assert (r.status, r.body, r.header("accept-ranges")) == (200, data, "bytes")
    assert r.header("etag") is not None and r.header("last-modified") is not None
    part = await mounted.get("/php/static/hello.txt", {"Range": "bytes=0-3"})
    assert (part.status, part.body, part.header("content-range")) == (206, data[:4], f"bytes 0-3/{len(data)}")
