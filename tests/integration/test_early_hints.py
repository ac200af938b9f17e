"""Learned 103 Early Hints through real php-fpm: read by a raw HTTP/1.1 client and an HTTP/2 client, 103 first, then the answer."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThread

from fephp.backend.endpoints import parse_client_endpoint
from fephp.backend.pool import FastCGIPool
from fephp.server.build import build_site
from fephp.server.config import config_from_dict
from tests.support.docroot import make_docroot
from tests.support.h2client import H2Client
from tests.support.tls import self_signed_pem

pytestmark = pytest.mark.php

CSS = "</static/style.css>; rel=preload; as=style"
JS = "</static/app.js>; rel=preload; as=script"
CDN = "<https://cdn.example>; rel=preconnect"
HINTS = b"HTTP/1.1 103 Early Hints\r\nlink: " + CSS.encode() + b"\r\nlink: " + JS.encode() + b"\r\nlink: " + CDN.encode() + b"\r\n\r\n"


class Front:
    def __init__(self, root: Path, fpm: str, pem: Path, server: dict[str, Any]) -> None:
        config = config_from_dict({"server": {"root": str(root), **server}})
        self.pool = FastCGIPool(parse_client_endpoint(reactor, fpm), clock=reactor, size=4)
        _, self.site = build_site(config, reactor, self.pool)
        self.pem = pem
        self.plain: Any = None
        self.tls: Any = None

    async def start(self) -> "Front":
        self.plain = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(self.site)
        self.tls = await serverFromString(reactor, f"ssl:0:interface=127.0.0.1:privateKey={self.pem}").listen(self.site)
        return self

    async def stop(self) -> None:
        await self.plain.stopListening()
        await self.tls.stopListening()
        await self.site.close_connections()
        await self.pool.close()

    async def exchange(self, target: str, version: str = "HTTP/1.1", method: str = "GET") -> tuple[bytes, float, float]:
        """The raw bytes of one exchange, and when the first byte and the final status line arrived."""
        port = self.plain.getHost().port
        request = f"{method} {target} {version}\r\nHost: x\r\nConnection: close\r\n\r\n".encode()

        def run() -> tuple[bytes, float, float]:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                started = time.monotonic()
                s.sendall(request)
                out = b""
                first = final = 0.0
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        return out, first, final
                    if not out:
                        first = time.monotonic() - started
                    out += chunk
                    if not final and (b"HTTP/1.1 200" in out or b"HTTP/1.0 200" in out):
                        final = time.monotonic() - started

        return await deferToThread(run)


@pytest.fixture
def front(php_fpm, tmp_path: Path):
    root = make_docroot(tmp_path)
    pem = self_signed_pem(tmp_path)
    fronts = []

    async def make(**server: Any) -> Front:
        f = await Front(root, php_fpm.unix_endpoint, pem, {"early_hints": True, **server}).start()
        fronts.append(f)
        return f

    yield make
    for f in fronts:
        pytest_twisted.blockon(defer.ensureDeferred(f.stop()))


@pytest_twisted.ensureDeferred
async def test_learned_hints_come_first_while_php_runs(front):
    """After one answer with preloads, the next GET of the route gets 103 with them at once, then PHP's 200."""
    f = await front()
    raw, _, _ = await f.exchange("/hints.php")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")  # nothing learned yet
    raw, first, final = await f.exchange("/hints.php?ms=800")  # the same route: the query is not part of it
    assert raw.startswith(HINTS)
    assert raw[len(HINTS):].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"rel=next" not in raw[: len(HINTS)]
    assert raw.endswith(b"<!DOCTYPE html><title>hints</title>\n")
    assert first < 0.5 <= 0.8 <= final + 0.05  # the 103 while PHP still sleeps


@pytest_twisted.ensureDeferred
async def test_forgotten_when_php_stops_or_personalises(front):
    """An answer without preloads, with a cookie or with a Vary forgets the route's hints."""
    f = await front()
    for forget in ("?links=0", "?cookie=1", "?vary=1", "?status=404"):
        await f.exchange("/hints.php")
        raw, _, _ = await f.exchange("/hints.php" + forget)
        assert raw.startswith(HINTS), forget  # learned from the plain answer before
        raw, _, _ = await f.exchange("/hints.php")
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), forget


@pytest_twisted.ensureDeferred
async def test_only_get_and_never_to_http_1_0(front):
    """HEAD, POST and an HTTP/1.0 client get no 103 even for a learned route."""
    f = await front()
    await f.exchange("/hints.php")
    raw, _, _ = await f.exchange("/hints.php", version="HTTP/1.0")
    assert raw.startswith(b"HTTP/1.0 200 OK\r\n")
    raw, _, _ = await f.exchange("/hints.php", method="HEAD")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    raw, _, _ = await f.exchange("/hints.php", method="DELETE")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    raw, _, _ = await f.exchange("/hints.php")
    assert raw.startswith(HINTS)


@pytest_twisted.ensureDeferred
async def test_off_by_default(front):
    """Without server.early_hints nothing is learned or sent."""
    f = await front(early_hints=False)
    await f.exchange("/hints.php")
    raw, _, _ = await f.exchange("/hints.php")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")


@pytest_twisted.ensureDeferred
async def test_over_http2(front):
    """Over HTTP/2 the hints are an informational HEADERS frame (:status 103) before the response's own."""
    f = await front()
    port = f.tls.getHost().port

    def run() -> Any:
        client = H2Client(port)
        try:
            assert client.alpn == "h2"
            first = client.get("/hints.php")
            second = client.get("/hints.php?ms=500")
            return first, second
        finally:
            client.close()

    first, second = await deferToThread(run)
    assert (first.status, first.informational) == (200, [])
    assert second.status == 200 and len(second.informational) == 1
    status, headers, at = second.informational[0]
    assert (status, headers) == (103, [("link", CSS), ("link", JS), ("link", CDN)])
    assert at < 0.4 and second.head_time >= 0.5
