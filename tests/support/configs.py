"""Configuration files for tests: written into a folder, with a php section that needs no PHP binary."""

from __future__ import annotations

from pathlib import Path

__all__ = ["EXTERNAL", "write"]

#: An external php-fpm, so that tests do not depend on which PHP binaries are installed.
EXTERNAL = "php:\n  fpm_socket: 127.0.0.1:9000\n"


def write(folder: Path, text: str, name: str = "fephp.yaml") -> Path:
    """*text* as the file *name* in *folder*; returns its path."""
    path = folder / name
    path.write_text(text)
    return path
