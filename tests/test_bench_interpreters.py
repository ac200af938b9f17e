"""The load generator on every interpreter fephp supports (CPython 3.11+, PyPy 3.9)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fephp.bench.report import ErrorKind

ROOT = Path(__file__).resolve().parent.parent


def test_error_kinds_read_as_their_values() -> None:
    """An ErrorKind prints, formats, compares and serializes as its plain value, as 3.11's StrEnum would."""
    kind = ErrorKind.CONNECT_REFUSED
    assert (str(kind), f"{kind}", "{}".format(kind)) == ("connect_refused",) * 3
    assert kind == "connect_refused" and {"connect_refused": 1}[kind] == 1
    assert json.dumps({kind: 1}) == '{"connect_refused": 1}'


def test_bench_help_runs_on_this_interpreter() -> None:
    """``fephp bench --help`` lists its flags under whichever Python runs the tests, PyPy 3.9 included."""
    done = subprocess.run(
        [sys.executable, "-m", "fephp.cli", "bench", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "--rps" in done.stdout and "--concurrency" in done.stdout
