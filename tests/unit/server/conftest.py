"""Fixtures of the server tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder with public/ (the default document root) and a file that is not a folder."""
    (tmp_path / "public").mkdir()
    (tmp_path / "afile").write_text("x")
    return tmp_path
