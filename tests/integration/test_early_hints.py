"""Learned 103 Early Hints through real php-fpm: read by a raw HTTP/1.1 client and an HTTP/2 client, 103 first, then the answer."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.support.docroot import make_docroot
from tests.support.h2client import H2Client
from tests.support.inprocess import InProcessFront, pool, stopped_at_teardown
from tests.support.rawhttp import request_bytes
from tests.support.tls import self_signed_pem

pytestmark = pytest.mark.php

CSS = "</static/style.css>; rel=preload; as=style"
JS = "</static/app.js>; rel=preload; as=script"
CDN = "<https://cdn.example>; rel=preconnect"
HINTS = b"HTTP/1.1 103 Early Hints\r\nlink: " + CSS.encode() + b"\r\nlink: " + JS.encode() + b"\r\nlink: " + CDN.encode() + b"\r\n\r\n"


#: What the final answer's status line starts with: when it came is when PHP answered.
FINAL = (b"HTTP/1.1 200", b"HTTP/1.0 200")


async def _exchange(front: InProcessFront, target: str, version: str = "HTTP/1.1", method: str = "GET") -> tuple[bytes, float, float]:
    """The raw bytes of one exchange, and when the first byte and the final status line arrived."""
    timed = await front.timed(request_bytes(method, target, version=version), FINAL)
    return timed.raw, timed.first, timed.marked


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    return make_docroot(tmp_path)


@pytest.fixture
def front(php_fpm, docroot: Path, tmp_path: Path):
    root = docroot
    pem = self_signed_pem(tmp_path)

    async def make(**server: Any) -> InProcessFront:
        config = {"server": {"root": str(root), "early_hints": True, **server}}
        f = await InProcessFront.configured(config, pool(php_fpm.unix_endpoint)).start()
        await f.start_tls(pem)
        return f

    yield from stopped_at_teardown(make)


@pytest_twisted.ensureDeferred
async def test_learned_hints_come_first_while_php_runs(front, docroot):
    """After one answer with preloads, the next GET of the route gets 103 with them while PHP still runs, then PHP's 200."""
    f = await front()
    raw, _, _ = await _exchange(f, "/hints.php")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")  # nothing learned yet
    go = docroot / "hints.go"

    def exchange() -> tuple[bytes, bytes]:
        # An event, not a window: hints.php?wait=1 answers only once hints.go
        # exists, made here after the 103 came (it gives up after 10 s).
        with socket.create_connection(("127.0.0.1", f.port), timeout=20) as s:
            s.sendall(request_bytes("GET", "/hints.php?wait=1"))  # the same route: the query is not part of it
            early = b""
            while len(early) < len(HINTS) and (chunk := s.recv(65536)):
                early += chunk
            go.write_bytes(b"")  # PHP may answer now
            rest = b""
            while chunk := s.recv(65536):
                rest += chunk
        return early, rest

    early, rest = await deferToThread(exchange)
    assert early == HINTS  # the 103 and nothing of the 200, which PHP could not have sent yet
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"rel=next" not in early
    assert rest.endswith(b"<!DOCTYPE html><title>hints</title>\n")


@pytest_twisted.ensureDeferred
async def test_forgotten_when_php_stops_or_personalises(front):
    """An answer without preloads, with a cookie or with a Vary forgets the route's hints."""
    f = await front()
    for forget in ("?links=0", "?cookie=1", "?vary=1", "?status=404"):
        await _exchange(f, "/hints.php")
        raw, _, _ = await _exchange(f, "/hints.php" + forget)
        assert raw.startswith(HINTS), forget  # learned from the plain answer before
        raw, _, _ = await _exchange(f, "/hints.php")
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), forget


@pytest_twisted.ensureDeferred
async def test_only_get_and_never_to_http_1_0(front):
    """HEAD, POST and an HTTP/1.0 client get no 103 even for a learned route."""
    f = await front()
    await _exchange(f, "/hints.php")
    raw, _, _ = await _exchange(f, "/hints.php", version="HTTP/1.0")
    assert raw.startswith(b"HTTP/1.0 200 OK\r\n")
    raw, _, _ = await _exchange(f, "/hints.php", method="HEAD")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    raw, _, _ = await _exchange(f, "/hints.php", method="DELETE")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    raw, _, _ = await _exchange(f, "/hints.php")
    assert raw.startswith(HINTS)


@pytest_twisted.ensureDeferred
async def test_off_by_default(front):
    """Without server.early_hints nothing is learned or sent."""
    f = await front(early_hints=False)
    await _exchange(f, "/hints.php")
    raw, _, _ = await _exchange(f, "/hints.php")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")


@pytest_twisted.ensureDeferred
async def test_over_http2(front):
    """Over HTTP/2 the hints are an informational HEADERS frame (:status 103) before the response's own."""
    f = await front()
    port = f.tls_port

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
