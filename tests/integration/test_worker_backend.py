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
from twisted.internet.threads import deferToThread

from fephp.backend.workers import WorkerBackend
from fephp.server.admin import LocalView
from tests.support.faults import wait_until
from tests.support.inprocess import InProcessFront, stopped_at_teardown
from tests.support.load import HTTPLoad
from tests.support.rawhttp import dechunk
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
