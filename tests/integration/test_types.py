"""mypy over the package: the type hints hold together, Twisted's interfaces read through mypy-zope."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from tests.support import REPO


@pytest.mark.skipif(platform.python_implementation() != "CPython", reason="mypy checks the package once, on CPython")
def test_mypy_finds_no_issues(tmp_path: os.PathLike[str]) -> None:
    """``mypy fephp twisted/plugins`` with setup.cfg's settings reports no issue."""
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path), "fephp", "twisted/plugins"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Success: no issues found")
