"""php.worker in the configuration: its keys parsed into a WorkerConfig, and one exact message per kind of error."""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType

import pytest

from fephp.server.build import worker_argv
from fephp.server.config import load_config
from fephp.server.settings import ConfigError, WorkerConfig
from tests.support.configs import write


def test_every_worker_key(site: Path, php: Path) -> None:
    """Each php.worker key lands in WorkerConfig, paths resolved against the config's folder, sizes in bytes."""
    config = load_config(str(write(site, """
php:
  ini: {memory_limit: 256M}
  worker:
    script: worker.php
    command: [./php, -d, opcache.enable_cli=1]
    count: 3
    max_jobs: 500
    max_memory: 128m
    ttl: 3600
    idle_ttl: 60
    exec_timeout: 30
    max_consecutive_failures: 5
    env: {APP_ENV: prod, WORKERS: 3}
    match: [/api/, /graphql]
""")))
    assert config.php.worker == WorkerConfig(
        script=str(site / "worker.php"),
        command=(str(php), "-d", "opcache.enable_cli=1"),
        count=3,
        max_jobs=500,
        max_memory=128 * 1024**2,
        ttl=3600.0,
        idle_ttl=60.0,
        exec_timeout=30.0,
        max_consecutive_failures=5,
        env=MappingProxyType({"APP_ENV": "prod", "WORKERS": "3"}),
        match=("/api/", "/graphql"),
    )
    assert config.php.workers_only is False
    assert worker_argv(config) == [str(php), "-dmemory_limit=256M", "-d", "opcache.enable_cli=1", str(site / "worker.php")]


def test_worker_defaults_need_no_php_fpm(site: Path, php: Path) -> None:
    """Without match every PHP request goes to the workers: php-fpm is not looked for, the limits are off."""
    config = load_config(str(write(site, f"php:\n  php_fpm_binary: /nonexistent/php-fpm8.2\n  worker:\n    script: worker.php\n    command: {php}\n")))
    assert config.php.worker == WorkerConfig(script=str(site / "worker.php"), command=(str(php),))
    assert config.php.workers_only is True


def test_command_defaults_to_php_fpms_sibling(site: Path, php: Path) -> None:
    """Without command, the php command line beside php_fpm_binary, of the same version, runs the workers."""
    sbin, bin_ = site / "sbin", site / "bin"
    sbin.mkdir()
    bin_.mkdir()
    for path in (sbin / "php-fpm8.2", bin_ / "php8.2"):
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    config = load_config(str(write(site, f"php:\n  php_fpm_binary: {sbin}/php-fpm8.2\n  worker:\n    script: worker.php\n    match: [/api/]\n")))
    assert config.php.worker is not None and config.php.worker.command == (str(bin_ / "php8.2"),)


ERRORS = [
    ("  worker: yes\n", "php.worker", 3, "must be a mapping (script, command, count...), not the boolean true"),
    ("  worker:\n    count: 2\n", "php.worker", 3, "needs a script (the worker's PHP entry point)"),
    ("  worker:\n    script: nope.php\n", "php.worker.script", 4, "the worker script {site}/nope.php is not an existing file"),
    ("  worker:\n    script: worker.php\n    count: 0\n", "php.worker.count", 5, "must be at least 1, not 0"),
    ("  worker:\n    script: worker.php\n    max_memory: lots\n", "php.worker.max_memory", 5,
     "must be a size in bytes (like 65536 or 64m), not 'lots'"),
    ("  worker:\n    script: worker.php\n    exec_timeout: 0\n", "php.worker.exec_timeout", 5, "must be more than zero seconds, not 0"),
    ("  worker:\n    script: worker.php\n    ttl: -1\n", "php.worker.ttl", 5, "must be zero or more seconds, not -1"),
    ("  worker:\n    script: worker.php\n    match: [api]\n", "php.worker.match[0]", 5, "must start with '/', not 'api'"),
    ("  worker:\n    script: worker.php\n    env: {1A: x}\n", "php.worker.env.1A", 5,
     "is not an environment variable name (letters, digits, '_', not first a digit)"),
    ("  worker:\n    script: worker.php\n    command: []\n", "php.worker.command", 5,
     "must be the php binary and its arguments, as a list or a string, not a list"),
    ("  worker:\n    script: worker.php\n    command: /nonexistent/php\n", "php.worker.command[0]", 5,
     "'/nonexistent/php' is not an existing file"),
    ("  worker:\n    script: worker.php\n    max_job: 3\n", "php.worker.max_job", 5, "unknown key; did you mean 'max_jobs'?"),
]


@pytest.mark.parametrize(("tail", "key", "line", "problem"), ERRORS, ids=[e[1] + ":" + e[3][:30] for e in ERRORS])
def test_worker_error_names_file_key_and_line(site: Path, php: Path, tail: str, key: str, line: int, problem: str) -> None:
    """Each invalid php.worker value gives exactly "<file>, line <n>: <key>: <problem>"."""
    path = write(site, "php:\n  fpm_socket: 127.0.0.1:9000\n" + tail)
    with pytest.raises(ConfigError) as raised:
        load_config(str(path))
    assert str(raised.value) == f"{path}, line {line}: {key}: {problem.format(site=site)}"
    assert os.path.isfile(path)
