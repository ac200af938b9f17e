"""php.worker.watch in the configuration: globs made absolute from the config's folder, a bad one named with its line."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fephp.server.config import load_config
from fephp.server.settings import ConfigError
from tests.support.configs import write


@pytest.fixture
def php(site: Path) -> Path:
    binary = site / "php"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    (site / "worker.php").write_text("<?php\n")
    return binary


def test_watch_globs_are_absolute(site: Path, php: Path) -> None:
    """Relative globs are read from the config file's folder, absolute ones kept; none by default."""
    config = load_config(str(write(site, """
php:
  worker:
    script: worker.php
    command: [./php]
    watch: ["src/**/*.php", "/etc/app/*.{yaml,php}"]
""")))
    assert config.php.worker is not None
    assert config.php.worker.watch == (f"{site}/src/**/*.php", "/etc/app/*.{yaml,php}")
    bare = load_config(str(write(site, "php:\n  worker:\n    script: worker.php\n    command: [./php]\n")))
    assert bare.php.worker is not None and bare.php.worker.watch == ()


#: (id, watch value as YAML, the key named, its line, the problem)
ERRORS = [
    ("unbalanced-brace", '["src/*.{php"]', "php.worker.watch[0]", 6, "unbalanced {{ in '{site}/src/*.{{php'"),
    ("not-a-list", "{a: b}", "php.worker.watch", 6, "must be a list of strings, not a mapping"),
    ("empty", '[""]', "php.worker.watch[0]", 6, "must not be empty"),
]


@pytest.mark.parametrize(("value", "key", "line", "problem"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_watch_error_names_file_key_and_line(site: Path, php: Path, value: str, key: str, line: int, problem: str) -> None:
    """A bad php.worker.watch gives exactly "<file>, line <n>: <key>: <problem>"."""
    path = write(site, f"php:\n  worker:\n    script: worker.php\n    command: [./php]\n    count: 1\n    watch: {value}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(str(path))
    assert str(raised.value) == f"{path}, line {line}: {key}: {problem.format(site=site)}"
