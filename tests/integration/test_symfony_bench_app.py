"""examples/symfony-bench (FrameworkBundle's micro kernel, Twig) served by fephp's PHP workers, its cache warmed first."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import pytest_twisted

from fephp.backend.workers import WorkerBackend
from tests.support import REPO
from tests.support.inprocess import InProcessFront, stopped_at_teardown
from tests.support.worker_pipes import php_cli, require_php_files

pytestmark = pytest.mark.php

APP = REPO / "examples" / "symfony-bench"


@pytest.fixture
def front(tmp_path: Path):
    require_php_files(
        ["Symfony/Bundle/FrameworkBundle/autoload.php", "Symfony/Bundle/TwigBundle/autoload.php",
         "Symfony/Component/Routing/autoload.php", "Symfony/Component/Runtime/autoload.php"],
        "Symfony's FrameworkBundle, TwigBundle, routing and runtime (php-symfony-framework-bundle"
        " php-symfony-twig-bundle php-symfony-routing php-twig php-symfony-runtime)",
    )
    cache = tmp_path / "cache"
    warmed = subprocess.run([php_cli(), str(APP / "bin" / "warmup.php")], env={"APP_CACHE_DIR": str(cache)},
                            capture_output=True, timeout=120)
    assert (warmed.returncode, warmed.stdout, warmed.stderr) == (0, f"{cache}/prod\n".encode(), b"")

    async def make() -> InProcessFront:
        worker = {"script": str(APP / "worker.php"), "command": [php_cli()], "count": 1,
                  "env": {"APP_CACHE_DIR": str(cache)}}
        f = InProcessFront.configured({"server": {"root": str(APP / "public")}, "php": {"worker": worker}})
        assert isinstance(f.backend, WorkerBackend)
        await f.start()
        await f.backend.ready()
        return f

    yield from stopped_at_teardown(make)


@pytest_twisted.ensureDeferred
async def test_the_json_and_html_pages_from_one_booted_kernel(front):
    """The JSON page, the Twig page and /api/pid all come from the one worker, the kernel booted once."""
    f = await front()
    (pid,) = f.backend.pids()
    page = await f.get("/api/catalog?name=Ann")
    assert (page.status, page.headers["content-type"], json.loads(page.body)) == (200, "application/json", {
        "greeting": "Hello, Ann",
        "items": [
            {"sku": "SKU-1001", "name": "Espresso cup", "price": "12.50 EUR"},
            {"sku": "SKU-1002", "name": "Milk jug", "price": "19.90 EUR"},
            {"sku": "SKU-1003", "name": "Tamper", "price": "24.75 EUR"},
        ],
    })
    html = await f.get("/catalog")
    assert (html.status, html.headers["content-type"]) == (200, "text/html; charset=UTF-8")
    assert b"<h1>Hello, guest</h1>" in html.body
    assert html.body.count(b"<li id=") == 5
    for _ in range(3):
        again = await f.get("/api/pid")
        assert (again.status, json.loads(again.body)) == (200, {"pid": pid, "sapi": "cli"})
    missing = await f.get("/nope")
    assert missing.status == 404
