"""Shared fixtures: a real php-fpm, started from a generated config in a temp dir.

A missing php-fpm skips the tests that need it, except under CI (``CI`` set),
where it fails them: CI must prove the real thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from fephp.process.binaries import find_php
from tests.support.daemon import stop_leftovers
from tests.support.php_fpm import PHPFPM
from tests.support.processes import require_binary

#: Fixtures defined beside the machinery they drive: simulated hosts, HAProxy.
pytest_plugins = ["tests.support.netns", "tests.support.haproxy"]


@pytest.fixture(scope="session")
def php_fpm_binary() -> str:
    return require_binary(find_php("php-fpm"), "php-fpm")


@pytest.fixture(scope="session")
def php_fpm(tmp_path_factory: pytest.TempPathFactory, php_fpm_binary: str) -> Iterator[PHPFPM]:
    """One php-fpm for the whole session; tests must not kill it."""
    fpm = PHPFPM(tmp_path_factory.mktemp("php-fpm"), binary=php_fpm_binary).start()
    yield fpm
    fpm.stop()


@pytest.fixture
def own_php_fpm(tmp_path: Path, php_fpm_binary: str) -> Iterator[PHPFPM]:
    """A php-fpm of the test's own, which it may kill and restart (not yet started)."""
    fpm = PHPFPM(tmp_path / "php-fpm", binary=php_fpm_binary, children=4)
    yield fpm
    fpm.stop()


@pytest.fixture(autouse=True)
def _no_daemon_left() -> Iterator[None]:
    """A twistd daemon that its test failed to stop is stopped after the test, and the test fails for it."""
    yield
    left = stop_leftovers()
    assert left == [], f"daemons left running by the test: {left}"
