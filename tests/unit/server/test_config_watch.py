"""php.worker.watch in the configuration: globs made absolute from the config's folder, a bad one named with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from fephp.server.config import load_config
from fephp.server.settings import ConfigError
from tests.support.configs import write


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


def test_upload_keys(site: Path, php: Path) -> None:
    """upload_dir is made absolute from the config's folder; the max_form_* bounds are read as counts and sizes."""
    (site / "uploads").mkdir()
    config = load_config(str(write(site, """
php:
  worker:
    script: worker.php
    command: [./php]
    upload_dir: uploads
    max_form_parts: 50
    max_form_header_size: 4k
    max_form_field_size: 2m
""")))
    worker = config.php.worker
    assert worker is not None
    assert (worker.upload_dir, worker.max_form_parts, worker.max_form_header_size, worker.max_form_field_size) == (
        str(site / "uploads"), 50, 4096, 2 * 1024 * 1024,
    )
    bare = load_config(str(write(site, "php:\n  worker:\n    script: worker.php\n    command: [./php]\n")))
    assert bare.php.worker is not None
    assert (bare.php.worker.upload_dir, bare.php.worker.max_form_parts, bare.php.worker.max_form_header_size,
            bare.php.worker.max_form_field_size) == (None, 1000, 8192, 1024 * 1024)


UPLOAD_ERRORS = [
    ("missing-folder", "upload_dir: nope", "php.worker.upload_dir", "{site}/nope is not an existing folder"),
    ("no-parts", "max_form_parts: 0", "php.worker.max_form_parts", "must be at least 1, not 0"),
    ("bad-size", "max_form_field_size: lots", "php.worker.max_form_field_size",
     "must be a size in bytes (like 65536 or 64m), not 'lots'"),
]


@pytest.mark.parametrize(("line_text", "key", "problem"), [e[1:] for e in UPLOAD_ERRORS], ids=[e[0] for e in UPLOAD_ERRORS])
def test_upload_key_errors(site: Path, php: Path, line_text: str, key: str, problem: str) -> None:
    """A bad upload key gives exactly "<file>, line 5: <key>: <problem>"."""
    path = write(site, f"php:\n  worker:\n    script: worker.php\n    command: [./php]\n    {line_text}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(str(path))
    assert str(raised.value) == f"{path}, line 5: {key}: {problem.format(site=site)}"
