"""fephp.acme's load_or_obtain: the stored certificate while it is not due, a new order saved when it is."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, Coroutine, Sequence

import pytest
from twisted.internet.defer import ensureDeferred
from twisted.python.failure import Failure

from fephp.acme import CAProblem, Issued, Problem, Storage, Stored, load_or_obtain
from tests.support.acme_fakes import JAN_1, issued

NAMES = ["example.test"]
DAY = datetime.timedelta(days=1)


class Orders:
    """An obtain() that counts its calls and gives fresh certificates (or raises *error*)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.error = error

    async def __call__(self, names: Sequence[str]) -> Issued:
        self.calls.append(tuple(names))
        if self.error is not None:
            raise self.error
        return issued(names, JAN_1 + 60 * DAY)


def result(coroutine: Coroutine[Any, Any, Stored]) -> Stored | Failure:
    """The result of a coroutine that finishes without waiting (every await here is already done)."""
    found: list[Stored | Failure] = []
    ensureDeferred(coroutine).addBoth(found.append)
    assert len(found) == 1
    return found[0]


def test_nothing_stored_orders_once_and_saves(tmp_path: Path) -> None:
    """An empty state folder: one order, and what it gave is what load() now finds."""
    storage, orders = Storage(tmp_path), Orders()
    got = result(load_or_obtain(storage, NAMES, orders, JAN_1, 0.0))
    assert orders.calls == [("example.test",)]
    assert got == storage.load(NAMES)


def test_a_stored_certificate_not_yet_due_is_reused_without_an_order(tmp_path: Path) -> None:
    """On day 59 of 90 (due on day 60 at jitter 0) the stored one is returned and nothing is ordered."""
    storage, orders = Storage(tmp_path), Orders()
    first = issued(NAMES)
    storage.save(NAMES, first.key_pem, first.chain_pem)
    got = result(load_or_obtain(storage, NAMES, orders, JAN_1 + 59 * DAY, 0.0))
    assert (orders.calls, isinstance(got, Stored) and got.chain_pem) == ([], first.chain_pem)


def test_a_due_certificate_is_replaced_by_a_new_order(tmp_path: Path) -> None:
    """On day 59 with jitter 0.5 (due on day 58.5) one order is placed and its certificate replaces the stored one."""
    storage, orders = Storage(tmp_path), Orders()
    first = issued(NAMES)
    storage.save(NAMES, first.key_pem, first.chain_pem)
    got = result(load_or_obtain(storage, NAMES, orders, JAN_1 + 59 * DAY, 0.5))
    assert isinstance(got, Stored)
    assert (len(orders.calls), got.not_before) == (1, JAN_1 + 60 * DAY)
    assert storage.load(NAMES) == got


def test_a_failed_order_leaves_the_stored_certificate_in_place(tmp_path: Path) -> None:
    """The CA refusing a renewal raises its problem, and the old certificate still loads, to be served meanwhile."""
    storage = Storage(tmp_path)
    first = issued(NAMES)
    stored = storage.save(NAMES, first.key_pem, first.chain_pem)
    refusal = CAProblem("POST https://ca/new-order answered 503", Problem("urn:ietf:params:acme:error:serverInternal"))
    got = result(load_or_obtain(storage, NAMES, Orders(refusal), JAN_1 + 80 * DAY, 0.0))
    assert isinstance(got, Failure) and got.value is refusal
    assert storage.load(NAMES) == stored
    with pytest.raises(CAProblem):
        got.raiseException()
