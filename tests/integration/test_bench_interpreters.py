"""The load generator on every interpreter fephp supports (CPython 3.11+, PyPy 3.9)."""

from __future__ import annotations

import subprocess
import sys

from tests.support import REPO


def test_bench_help_runs_on_this_interpreter() -> None:
    """``fephp bench --help`` lists its flags under whichever Python runs the tests, PyPy 3.9 included."""
    done = subprocess.run(
        [sys.executable, "-m", "fephp.cli", "bench", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "--rps" in done.stdout and "--concurrency" in done.stdout
