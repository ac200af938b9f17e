"""Running ``fephp bench`` in tests: its small test server in a subprocess, a closed port, the real command."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tests.support import REPO, TESTS

SERVER = TESTS / "support" / "bench_server.py"
#: Upper bound on any one bench subprocess; the tests' runs last 1 to 3 s.
RUN_TIMEOUT = 60


@contextmanager
def bench_server(*args: str) -> Iterator[int]:
    """A test server in a subprocess; yields its port, stops it by closing its stdin."""
    process = subprocess.Popen(
        [sys.executable, str(SERVER), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        line = process.stdout.readline()  # "PORT n" once listening; "" if it died
        assert line.startswith("PORT "), f"server did not start: {line!r}"
        yield int(line.split()[1])
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench(tmp_path: Path, *args: str) -> tuple[int, str, str, dict[str, Any]]:
    """Run ``fephp bench`` with --json; returns exit status, stdout, stderr and the JSON report."""
    out = tmp_path / f"report-{time.monotonic_ns()}.json"
    done = subprocess.run(
        [sys.executable, "-m", "fephp.cli", "bench", *args, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    report = json.loads(out.read_text()) if out.exists() else {}
    return done.returncode, done.stdout, done.stderr, report
