"""Fixtures of the fault suite: a test site of its own, and fephp fronts in this process that are stopped afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.support.docroot import make_docroot
from tests.support.faults import Served


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    return make_docroot(tmp_path)


@pytest.fixture
def served(docroot: Path) -> Iterator[Any]:
    """``await served(backend, pool={...}, **site_options)``: a started front, stopped at teardown."""
    fronts: list[Served] = []

    async def make(backend: str, **options: Any) -> Served:
        front = await Served(docroot, backend, **options).start()
        fronts.append(front)
        return front

    yield make
    for front in fronts:
        pytest_twisted.blockon(defer.ensureDeferred(front.stop()))
