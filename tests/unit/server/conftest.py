"""Fixtures of the server tests."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder with public/ (the default document root) and a file that is not a folder."""
    (tmp_path / "public").mkdir()
    (tmp_path / "afile").write_text("x")
    return tmp_path


@pytest.fixture
def php(site: Path) -> Path:
    """An executable stand-in for the php binary, and a worker script beside the config."""
    binary = site / "php"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    (site / "worker.php").write_text("<?php\n")
    return binary
