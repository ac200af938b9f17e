"""Fixtures of the fault suite: a test site of its own, fephp fronts in this process that are stopped afterwards, and fephp as its own process for the HTTP/2 attacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.support.docroot import make_docroot
from tests.support.faults import Served
from tests.support.h2target import FephpH2
from tests.support.inprocess import stopped_at_teardown


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    return make_docroot(tmp_path)


@pytest.fixture
def served(docroot: Path) -> Iterator[Any]:
    """``await served(backend, pool={...}, **site_options)``: a started front, stopped at teardown."""

    async def make(backend: str, **options: Any) -> Served:
        return await Served(docroot, backend, **options).start()

    yield from stopped_at_teardown(make)


@pytest.fixture
def h2_front(php_fpm: Any, docroot: Path, tmp_path: Path) -> Iterator[Callable[..., FephpH2]]:
    """``h2_front(timeouts={...}, limits={...})``: fephp as its own process (this interpreter) over TLS with ALPN h2, serving the fault site through the session's php-fpm, stopped at teardown."""
    started: list[FephpH2] = []

    def make(**options: Any) -> FephpH2:
        front = FephpH2(tmp_path / f"fephp{len(started)}", docroot, php_fpm.unix_path, **options)
        started.append(front)
        return front.start()

    yield make
    for front in started:
        front.stop()
