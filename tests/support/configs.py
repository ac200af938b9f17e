"""Configuration files for tests: written into a folder, with a php section that needs no PHP binary."""

from __future__ import annotations

from pathlib import Path

import pytest

from fephp.server.config import load_config
from fephp.server.settings import ConfigError

__all__ = ["EXTERNAL", "error_for", "write"]

#: An external php-fpm, so that tests do not depend on which PHP binaries are installed.
EXTERNAL = "php:\n  fpm_socket: 127.0.0.1:9000\n"


def write(folder: Path, text: str, name: str = "fephp.yaml") -> Path:
    """*text* as the file *name* in *folder*; returns its path."""
    path = folder / name
    path.write_text(text)
    return path


def error_for(folder: Path, text: str) -> str:
    """The message of the ConfigError that loading *text*, written as fephp.yaml in *folder*, raises."""
    with pytest.raises(ConfigError) as raised:
        load_config(str(write(folder, text)))
    return str(raised.value)
