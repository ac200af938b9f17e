"""Uploads to PHP workers: fephp parses the multipart body (PHP's command line does not) into temp files and the form."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from fephp.backend.workers import WorkerBackend
from tests.support.faults import wait_until
from tests.support.inprocess import InProcessFront, stopped_at_teardown
from tests.support.processes import require_binary
from tests.support.worker_pipes import php_cli, require_php_files

pytestmark = pytest.mark.php

APP = Path(__file__).resolve().parent.parent / "php" / "workers" / "uploads.php"


@pytest.fixture
def uploads(tmp_path: Path) -> Path:
    folder = tmp_path / "uploads"
    folder.mkdir()
    return folder


@pytest.fixture
def front(tmp_path: Path, uploads: Path):
    require_php_files(["Nyholm/Psr7/autoload.php"], "nyholm/psr7 (php-nyholm-psr7)")
    root = tmp_path / "public"
    root.mkdir()
    (root / "index.php").write_text("<?php // served by the workers\n")

    async def make(**worker: Any) -> InProcessFront:
        worker.setdefault("script", str(APP))
        worker.setdefault("command", [php_cli()])
        worker.setdefault("count", 1)
        f = InProcessFront.configured({"server": {"root": str(root)}, "php": {"worker": worker}})
        assert isinstance(f.backend, WorkerBackend)
        f.backend.upload_dir = str(uploads)
        await f.start()
        await f.backend.ready()
        return f

    yield from stopped_at_teardown(make)


def curl(url: str, *args: str) -> tuple[int, bytes]:
    """curl's status and body for one request (curl builds the multipart body: an implementation not ours)."""
    binary = require_binary(shutil.which("curl"), "curl")
    done = subprocess.run([binary, "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "60", *args, url],
                          capture_output=True, check=True, timeout=90)
    body, _, status = done.stdout.rpartition(b"\n")
    return int(status), body


@pytest_twisted.ensureDeferred
async def test_a_5_mib_upload_arrives_whole_and_its_file_is_removed_after(front, tmp_path: Path, uploads: Path):
    """A 5 MiB file, two files under docs[] and nested fields reach the worker (SHA-256 computed in PHP), files go after."""
    f = await front()
    big = os.urandom(5 * 1024 * 1024)
    (tmp_path / "big.bin").write_bytes(big)
    (tmp_path / "a.txt").write_bytes(b"first\n")
    (tmp_path / "b.txt").write_bytes(b"second\r\n--not-a-boundary\r\n")
    status, body = await deferToThread(
        curl, f.base + "/api/upload",
        "-F", f"big=@{tmp_path / 'big.bin'};type=application/octet-stream",
        "-F", f"docs[]=@{tmp_path / 'a.txt'};type=text/plain",
        "-F", f"docs[]=@{tmp_path / 'b.txt'};type=text/plain",
        "-F", "title=héllo", "-F", "tags[]=x", "-F", "tags[]=y", "-F", "user[name]=ann",
    )
    assert status == 200, body
    answer = json.loads(body)
    tmps = [answer["files"]["big"]["tmp"], answer["files"]["docs"][0]["tmp"], answer["files"]["docs"][1]["tmp"]]
    for file in (answer["files"]["big"], *answer["files"]["docs"]):
        del file["tmp"]
    assert answer == {
        "form": {"title": "héllo", "tags": ["x", "y"], "user": {"name": "ann"}},
        "files": {
            "big": {"name": "big.bin", "type": "application/octet-stream", "size": len(big), "error": 0,
                    "sha256": hashlib.sha256(big).hexdigest()},
            "docs": [
                {"name": "a.txt", "type": "text/plain", "size": 6, "error": 0,
                 "sha256": hashlib.sha256(b"first\n").hexdigest()},
                {"name": "b.txt", "type": "text/plain", "size": 26, "error": 0,
                 "sha256": hashlib.sha256(b"second\r\n--not-a-boundary\r\n").hexdigest()},
            ],
        },
    }
    assert [os.path.dirname(t) for t in tmps] == [str(uploads)] * 3
    assert list(uploads.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_a_malformed_multipart_body_gets_400(front, uploads: Path):
    """A multipart body without its closing delimiter is refused with 400 before any worker sees it."""
    f = await front()
    body = b'--XyZ\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\nunfinished'
    raw = await f.exchange(
        b"POST /api/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    assert raw.split(b"\r\n", 1)[0] == b"HTTP/1.1 400 Bad Request"
    assert list(uploads.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_the_files_go_when_the_worker_dies_with_the_request(front, tmp_path: Path, uploads: Path):
    """A worker that exits in the middle of an upload's request: 502, and the upload's temp file is removed."""
    f = await front()
    (tmp_path / "a.txt").write_bytes(b"x" * 100_000)
    status, _ = await deferToThread(curl, f.base + "/api/crash", "-F", f"f=@{tmp_path / 'a.txt'}")
    assert status == 502
    assert list(uploads.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_the_files_go_when_the_client_went_away(front, tmp_path: Path, uploads: Path):
    """A client that leaves while the worker holds its upload: the file stays for the worker, then goes when it answers."""
    f = await front()
    started, gate = tmp_path / "started", tmp_path / "gate"
    body = (b'--B\r\nContent-Disposition: form-data; name="f"; filename="a.bin"\r\n\r\n' + b"x" * 50_000
            + b"\r\n--B--\r\n")
    head = (f"POST /api/gated?started={started}&gate={gate} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    client = socket.create_connection(("127.0.0.1", f.port))
    try:
        client.sendall(head + body)
        await wait_until(started.exists, "the worker to have the request")
        assert [p.stat().st_size for p in uploads.iterdir()] == [50_000]
    finally:
        client.close()
    gate.write_text("go")
    await wait_until(lambda: not any(uploads.iterdir()), "the upload's file to be removed")
    # The worker is free again: the next request is served.
    status, _ = await deferToThread(curl, f.base + "/api/pid")
    assert status == 200


SYMFONY = Path(__file__).resolve().parent.parent.parent / "examples" / "symfony-worker"


@pytest_twisted.ensureDeferred
async def test_a_symfony_app_gets_the_upload_as_uploaded_files(front, tmp_path: Path, uploads: Path):
    """examples/symfony-worker's /form (fephp's Symfony Runtime) sees a 5 MiB UploadedFile and the form (md5 in PHP)."""
    require_php_files(["Symfony/Component/Runtime/autoload.php", "Symfony/Component/HttpKernel/autoload.php"],
                      "Symfony's runtime and HttpKernel (php-symfony-runtime php-symfony-http-kernel)")
    f = await front(script=str(SYMFONY / "worker.php"))
    big = os.urandom(5 * 1024 * 1024 + 3)
    (tmp_path / "big.bin").write_bytes(big)
    status, body = await deferToThread(
        curl, f.base + "/form", "-F", f"doc[main]=@{tmp_path / 'big.bin'};type=application/pdf", "-F", "who=ann",
    )
    assert status == 200, body
    assert json.loads(body) == {
        "form": {"who": "ann"},
        "files": {"doc": {"main": {"name": "big.bin", "type": "application/pdf", "size": len(big),
                                   "md5": hashlib.md5(big).hexdigest()}}},
    }
    assert list(uploads.iterdir()) == []
