"""php.worker.match: one site whose /api/ paths go to PHP workers while its classic scripts and files stay with php-fpm."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytest_twisted

from fephp.backend.mixed import MixedBackend
from fephp.backend.workers import WorkerBackend
from tests.support.inprocess import InProcessFront, stopped_at_teardown
from tests.support.worker_pipes import php_cli, require_php_files

pytestmark = pytest.mark.php

APP = Path(__file__).resolve().parent.parent / "php" / "workers" / "uploads.php"


@pytest.fixture
def front(tmp_path: Path, php_fpm):
    require_php_files(["Nyholm/Psr7/autoload.php"], "nyholm/psr7 (php-nyholm-psr7)")
    root = tmp_path / "public"
    (root / "api").mkdir(parents=True)
    (root / "legacy.php").write_text('<?php header("Content-Type: application/json");'
                                     ' echo json_encode(["pid" => getmypid(), "sapi" => php_sapi_name()]);\n')
    (root / "index.php").write_text('<?php echo "front controller of php-fpm";\n')
    (root / "style.css").write_text("body{}\n")
    # A real file under the match prefix: the workers get its path all the same (match overrides files).
    (root / "api" / "real.php").write_text('<?php echo "not run";\n')

    async def make() -> InProcessFront:
        worker = {"script": str(APP), "command": [php_cli()], "count": 1, "match": ["/api/"]}
        config = {"server": {"root": str(root)}, "php": {"fpm_socket": php_fpm.unix_path, "worker": worker}}
        f = InProcessFront.configured(config)
        assert isinstance(f.backend, MixedBackend) and isinstance(f.backend.workers, WorkerBackend)
        await f.start()
        await f.backend.ready()
        return f

    yield from stopped_at_teardown(make)


@pytest_twisted.ensureDeferred
async def test_api_goes_to_the_workers_and_legacy_php_to_php_fpm(front):
    """/api/ paths are answered by the worker (CLI, its pid), /legacy.php by php-fpm, files and the rest as before."""
    f = await front()
    (worker_pid,) = f.backend.workers.pids()
    api = await f.get("/api/pid")
    assert (api.status, json.loads(api.body)) == (200, {"pid": worker_pid, "sapi": "cli"})
    legacy = await f.get("/legacy.php")
    answer = json.loads(legacy.body)
    assert (legacy.status, answer["sapi"]) == (200, "fpm-fcgi")
    assert answer["pid"] != worker_pid
    for path, seen in (("/api/users/7?x=1", "/api/users/7"), ("/api/real.php", "/api/real.php"),
                       ("/api", "/api"), ("/x/../api/%75sers", "/x/../api/%75sers")):
        # Matched on the decoded path without dot segments; the app sees the target as received (REQUEST_URI).
        r = await f.get(path)
        assert (r.status, json.loads(r.body)) == (200, {"pid": worker_pid, "path": seen}), path
    css = await f.get("/style.css")
    assert (css.status, css.body) == (200, b"body{}\n")
    other = await f.get("/apix")
    assert (other.status, other.body) == (200, b"front controller of php-fpm")
    hidden = await f.get("/api/.env")
    assert hidden.status == 403
