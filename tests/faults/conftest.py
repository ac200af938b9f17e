"""Fixtures of the fault suite: a test site of its own, and fephp fronts in this process that are stopped afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support.docroot import make_docroot
from tests.support.faults import Served
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
