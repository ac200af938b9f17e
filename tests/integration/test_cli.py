"""The ``fephp`` command line: ``check-config`` as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import REPO


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fephp.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_check_config_accepts_the_shipped_example() -> None:
    """etc/fephp.yaml is valid: exit 0 and an OK line naming the file."""
    result = run("check-config", "etc/fephp.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"OK: {REPO / 'etc' / 'fephp.yaml'}"


def test_check_config_names_file_key_and_line(tmp_path: Path) -> None:
    """A wrong type exits 1 with one message naming the file, the line and the dotted key."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"server:\n  root: {tmp_path}\nphp:\n  worker_pool_size: many\n")
    result = run("check-config", str(bad))
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"{bad}, line 4: php.worker_pool_size:" in result.stderr


def test_unknown_subcommand_is_a_usage_error() -> None:
    """An unknown subcommand exits 2, as argparse usage errors do."""
    assert run("serve-everything").returncode == 2
