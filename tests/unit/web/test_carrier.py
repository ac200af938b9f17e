"""What fephp's two Exchange carriers share (fephp.web.carrier), alone: the body buffer, addresses, X-Request-Id, rendering."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.logger import Logger, LogLevel
from twisted.web.server import NOT_DONE_YET

from fephp.web.carrier import (
    BODY_IN_MEMORY,
    CarriedExchange,
    RequestBody,
    address,
    render,
    take_request_id,
)
from fephp.web.exchange import Address, ExchangeState


class Site:
    """The two things of a FrontSite these helpers read: a request id source and a resource."""

    def __init__(self, resource: Any = None) -> None:
        self.resource = resource

    def new_request_id(self) -> bytes:
        return b"new-id"


class Probe(CarriedExchange):
    """A CarriedExchange whose response calls are noted instead of framed."""

    def __init__(self, target: bytes, headers: "list[tuple[bytes, bytes]]") -> None:
        self.target = target
        self.path, _, self.query = target.partition(b"?")
        self.headers = headers
        self.version = b"HTTP/1.1"
        self.client = Address("192.0.2.1", 5000)
        self.response_headers = []
        self.calls: list[Any] = []

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def finish(self) -> None:
        self.state = ExchangeState.FINISHED
        self.calls.append(("finish",))

    def abort(self) -> None:
        self.calls.append(("abort",))

    def unregister_producer(self) -> None:
        self._producer = None


class Records:
    """A Logger observer keeping each event's level and format."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def __call__(self, event: Any) -> None:
        self.events.append((event["log_level"], event["log_format"], event["target"]))


def no_logger() -> Logger:
    """A logger source for renders that must log nothing."""
    raise AssertionError("a logger was read")


def test_a_body_spills_to_a_file_past_body_in_memory() -> None:
    """Up to BODY_IN_MEMORY bytes a body is bytes; one byte more and it is a file holding the same bytes from its start."""
    small, large = RequestBody(), RequestBody()
    small.add(b"a" * (BODY_IN_MEMORY - 1))
    small.add(b"b")
    large.add(b"a" * BODY_IN_MEMORY)
    large.add(b"b")
    kept = small.whole()
    spilt = large.whole()
    assert (kept, large.size) == (b"a" * (BODY_IN_MEMORY - 1) + b"b", BODY_IN_MEMORY + 1)
    assert spilt is not None and not isinstance(spilt, bytes)
    assert spilt.read() == b"a" * BODY_IN_MEMORY + b"b"


def test_addresses_are_host_and_port_or_unix() -> None:
    """An IPv4 address is (host, port); a UNIX socket's is ("unix:", 0)."""
    assert address(IPv4Address("TCP", "127.0.0.1", 8080)) == Address("127.0.0.1", 8080)
    assert address(UNIXAddress(b"/run/x.sock")) == Address("unix:", 0)


def test_a_valid_request_id_is_kept_and_hosts_returned() -> None:
    """One valid X-Request-Id is the exchange's id, its headers untouched; the Host values come back."""
    headers = [(b"host", b"a"), (b"x-request-id", b"abc-1"), (b"host", b"b")]
    exchange = Probe(b"/", headers)
    assert take_request_id(exchange, Site()) == [b"a", b"b"]
    assert (exchange.request_id, exchange.headers) == (b"abc-1", headers)


def test_an_invalid_request_id_is_replaced_at_the_end() -> None:
    """An X-Request-Id with a space is dropped and the site's new id added last, as PHP will see it."""
    exchange = Probe(b"/", [(b"x-request-id", b"a b"), (b"host", b"a")])
    assert take_request_id(exchange, Site()) == [b"a"]
    assert (exchange.request_id, exchange.headers) == (b"new-id", [(b"host", b"a"), (b"x-request-id", b"new-id")])


def test_render_makes_the_absolute_form_origin_form_and_sends_returned_bytes() -> None:
    """An absolute-form target reaches the resource as origin form; bytes it returns become a 200 with Content-Length."""

    class Whole:
        def render(self, exchange: Any) -> bytes:
            return b"seen " + exchange.target + b" " + exchange.path + b" " + exchange.query

    exchange = Probe(b"http://h:81/p?q=1", [])
    render(exchange, Site(Whole()), no_logger)
    assert exchange.response_headers == [(b"content-length", b"18")]
    assert exchange.calls == [("write", b"seen /p?q=1 /p q=1"), ("finish",)]


def test_render_leaves_a_pending_response_alone() -> None:
    """NOT_DONE_YET from the resource sends nothing and reads no logger."""

    class Later:
        def render(self, exchange: Any) -> object:
            return NOT_DONE_YET

    exchange = Probe(b"/", [])
    render(exchange, Site(Later()), no_logger)
    assert (exchange.state, exchange.calls) == (ExchangeState.RECEIVED, [])


def test_a_failure_after_the_response_began_is_logged_and_aborts() -> None:
    """A resource raising once it started a response is logged at critical through the carrier's logger, and aborted."""
    records: Any = Records()

    class Failing:
        def render(self, exchange: Any) -> object:
            exchange.start_response(200, [])
            raise RuntimeError("boom")

    exchange = Probe(b"/f", [])
    render(exchange, Site(Failing()), lambda: Logger(namespace="test", observer=records))
    assert records.events == [(LogLevel.critical, "rendering {target!r}", b"/f")]
    assert exchange.calls == [("abort",)]
