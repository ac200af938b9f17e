"""The PHP worker backend (php.worker) in a real in-process fephp with real PHP CLI workers on php/fephp-worker.php."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThread

from fephp.backend.workers import WorkerBackend
from fephp.server.admin import AdminSite, LocalView
from tests.support.faults import wait_until
from tests.support.inprocess import InProcessFront, stopped_at_teardown
from tests.support.load import HTTPLoad
from tests.support.rawhttp import Response, dechunk, exchange
from tests.support.worker_pipes import php_cli, require_php_files

pytestmark = pytest.mark.php

APP = Path(__file__).resolve().parent.parent / "php" / "workers" / "app.php"


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    root = tmp_path / "public"
    root.mkdir()
    # The front controller: every PHP request is routed to it, and the workers run it.
    (root / "index.php").write_text("<?php // served by the workers\n")
    (root / "static.txt").write_text("static\n")
    return root


@pytest.fixture
def front(docroot: Path):
    require_php_files(["Nyholm/Psr7/autoload.php"], "nyholm/psr7 (php-nyholm-psr7)")

    async def make(**worker: Any) -> InProcessFront:
        worker.setdefault("script", str(APP))
        worker.setdefault("command", [php_cli()])
        worker.setdefault("count", 2)
        config = {"server": {"root": str(docroot)}, "php": {"worker": worker}, "timeouts": {"queue": 30}}
        f = InProcessFront.configured(config)
        assert isinstance(f.backend, WorkerBackend)
        return await f.start()

    yield from stopped_at_teardown(make)


async def get_json(f: InProcessFront, path: str, **headers: str) -> Any:
    r = await f.get(path, headers)
    assert r.status == 200, (r.status, r.body)
    return json.loads(r.body)


@pytest_twisted.ensureDeferred
async def test_a_request_reaches_a_worker_with_what_the_cgi_environment_carries(front):
    """The worker sees the method, the absolute URI, the client address, the cookies and the request id fephp gave."""
    f = await front()
    await f.backend.ready()
    answer = await get_json(f, "/hello?x=1", Cookie="c=v; d=w", **{"X-Request-Id": "abc-123"})
    assert answer == {
        "pid": answer["pid"],
        "served": answer["served"],
        "requestId": "abc-123",
        "remoteAddr": "127.0.0.1",
        "https": "",
        "uri": f"http://127.0.0.1:{f.port}/hello?x=1",
        "cookies": {"c": "v", "d": "w"},
        "method": "GET",
    }
    assert answer["pid"] in f.backend.pids()
    static = await f.get("/static.txt")
    assert (static.status, static.body) == (200, b"static\n")


@pytest_twisted.ensureDeferred
async def test_status_and_every_set_cookie_come_through(front):
    """The worker's status and headers reach the client, its two Set-Cookie headers apart."""
    f = await front()
    r = await f.get("/cookies")
    assert (r.status, r.body) == (200, b"two cookies")
    assert r.values("set-cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]
    assert r.header("content-type") == "text/plain"
    missing = await f.get("/nowhere")
    assert (missing.status, missing.body) == (404, b"no such route")


def _streamed(port: int, gate: Path) -> "tuple[bytes, bytes]":
    """GET /stream: what came before the gate was opened (the worker waits on it), and the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(f"GET /stream?gate={gate} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        first = b""
        while b"one\n" not in first:
            chunk = s.recv(65536)
            assert chunk, first
            first += chunk
        gate.write_text("open")
        rest = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return first, first + rest
            rest += chunk


@pytest_twisted.ensureDeferred
async def test_a_streamed_response_arrives_in_pieces(front, tmp_path: Path):
    """The first piece reaches the client while the worker still holds the second (it waits for the test's gate)."""
    f = await front()
    first, whole = await deferToThread(_streamed, f.port, tmp_path / "gate")
    head, _, body = first.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Transfer-Encoding: chunked" in head
    assert b"two" not in first
    assert dechunk(whole.partition(b"\r\n\r\n")[2]) == b"one\ntwo\n"


@pytest_twisted.ensureDeferred
async def test_max_jobs_restarts_under_load_drop_nothing(front):
    """Under a load of 4 clients, workers retired after 5 requests each: every request answered, none past its fifth."""
    f = await front(count=2, max_jobs=5)
    await f.backend.ready()
    load = HTTPLoad(None, ("127.0.0.1", f.port), "/hello", total=200, concurrency=4, timeout=10.0, within=60.0).start()
    outcomes = await deferToThread(load.wait)
    assert [o for o in outcomes if not o.ok] == []
    served = {json.loads(o.body)["served"] for o in outcomes}
    assert served == {0, 1, 2, 3, 4}
    live_jobs = sum(w.jobs for w in f.backend._workers if w.job is None and w.state.value in ("idle", "busy"))
    assert f.backend.restarts["max_jobs"] * 5 + live_jobs == 200
    assert f.backend.figures()["errors"] == {"500": 0, "502": 0, "503": 0, "504": 0}


@pytest_twisted.ensureDeferred
async def test_max_memory_restarts_under_load_drop_nothing(front):
    """Workers that keep 8 MiB more per request are retired once their RSS passes 96 MiB: every request answered."""
    f = await front(count=2, max_memory="96m")
    await f.backend.ready()
    first = await get_json(f, "/hello")
    load = HTTPLoad(None, ("127.0.0.1", f.port), "/grow?mb=8", total=60, concurrency=4, timeout=10.0, within=60.0).start()
    outcomes = await deferToThread(load.wait)
    assert [o for o in outcomes if not o.ok] == []
    pids = {json.loads(o.body)["pid"] for o in outcomes}
    # 60 x 8 MiB is 480 MiB: each worker holds at most 96 MiB, so at least four were replaced.
    assert f.backend.restarts["max_memory"] >= 4
    assert len(pids) >= 5 and first["pid"] in pids
    assert f.backend.restarts["max_jobs"] == f.backend.restarts["crash"] == 0


@pytest_twisted.ensureDeferred
async def test_a_stuck_request_gets_504_and_the_next_a_fresh_worker(front):
    """A request over exec_timeout is answered 504, its worker killed; the next request is served by another pid."""
    f = await front(count=1, exec_timeout=1)
    before = (await get_json(f, "/hello"))["pid"]
    stuck = await f.get("/stuck")
    assert stuck.status == 504
    after = await get_json(f, "/hello")
    assert after["pid"] != before and after["served"] == 0
    assert f.backend.restarts["exec_timeout"] == 1
    await wait_until(lambda: not os.path.exists(f"/proc/{before}"), "the stuck worker to be gone")


@pytest_twisted.ensureDeferred
async def test_a_worker_crashing_at_boot_makes_readyz_fail(front):
    """Workers that exit before the handshake: after max_consecutive_failures /readyz answers 503 and PHP requests 502."""
    f = await front(count=1, max_consecutive_failures=2, env={"CRASH_AT_BOOT": "1"})
    view = LocalView(f, config=lambda: None, config_text=lambda: None, fpm=lambda: None)
    admin = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(AdminSite(view, reactor))
    try:
        await wait_until(lambda: not f.backend.healthy, "the workers to be unhealthy")
        port = admin.getHost().port
        raw = await deferToThread(exchange, port, b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        ready = Response.parse(raw)
        assert ready.status == 503
        assert ready.body.startswith(b"php workers: 2 workers in a row failed to boot (the worker exited before the pid handshake:")
        r = await f.get("/hello")
        assert r.status == 502
    finally:
        await admin.stopListening()
