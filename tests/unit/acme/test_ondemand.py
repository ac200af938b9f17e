"""On-demand TLS's names (fephp.acme.ondemand): asked of the operator's URL once each, within the rate, bounded."""

from __future__ import annotations

from typing import Any, cast

from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Request

from fephp.acme.ondemand import NameState, OnDemand


class Ask(Resource):
    """The operator's ask URL: 200 for the names in *approve*, 403 for the others; notes each domain asked."""

    isLeaf = True

    def __init__(self, approve: set[str]) -> None:
        super().__init__()
        self.approve = approve
        self.asked: list[bytes] = []

    def render_GET(self, request: Request) -> bytes:
        assert request.args is not None
        domain = request.args[b"domain"][0]
        self.asked.append(domain)
        request.setResponseCode(200 if domain.decode() in self.approve else 403)
        return b"ok"


def on_demand(ask: Ask, clock: Clock, rate: int = 2, period: float = 60.0) -> tuple[StubTreq, OnDemand, list[str]]:
    stub = StubTreq(ask)
    added: list[str] = []

    def approved(name: str) -> "Deferred[Any]":
        added.append(name)
        return succeed(None)

    demand = OnDemand("https://ops.test/ask?site=shop", cast(HTTPClient, stub), clock, approved, rate=rate,
                      period=period)
    return stub, demand, added


def test_an_approved_name_is_handed_on_once_and_a_denied_one_is_not() -> None:
    """200 approves (handed to approved() once, however many handshakes), 403 denies; the ask URL keeps its query."""
    ask = Ask({"a.shop.example"})
    stub, demand, added = on_demand(ask, Clock())
    for name in ("a.shop.example", "a.shop.example", "b.shop.example"):
        demand.seen(name)
    stub.flush()
    assert (ask.asked, added) == ([b"a.shop.example", b"b.shop.example"], ["a.shop.example"])
    assert demand.names == {"a.shop.example": NameState.APPROVED, "b.shop.example": NameState.DENIED}
    demand.seen("b.shop.example")
    stub.flush()
    assert len(ask.asked) == 2
    assert demand.figures() == {
        "ask": "https://ops.test/ask?site=shop", "names": {"asking": 0, "approved": 1, "denied": 1},
        "refused_by_rate": 0,
    }


def test_asks_past_the_rate_wait_for_the_period_to_move_on() -> None:
    """Rate 2 per 60 s: the third new name is not asked (nor remembered) until the first ask is 60 s old."""
    ask = Ask({"a.x", "b.x", "c.x"})
    clock = Clock()
    stub, demand, added = on_demand(ask, clock)
    demand.seen("a.x")
    clock.advance(30)
    demand.seen("b.x")
    demand.seen("c.x")
    stub.flush()
    assert (added, demand.refused_by_rate, "c.x" in demand.names) == (["a.x", "b.x"], 1, False)
    clock.advance(29.9)
    demand.seen("c.x")
    assert demand.refused_by_rate == 2
    clock.advance(0.1)
    demand.seen("c.x")
    stub.flush()
    assert added == ["a.x", "b.x", "c.x"]
