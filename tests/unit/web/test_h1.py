"""fephp's own HTTP/1.x protocol (fephp.web.h1) from the client's side, over an in-memory transport and a Clock: its Exchanges, pipelining, timeouts, stop and reload."""

from __future__ import annotations

import os
from typing import Any, Optional

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from fephp.cgi.realip import RealIP, parse_trusted
from fephp.web.exchange import Address, Exchange, ExchangeState
from fephp.web.h1 import BODY_IN_MEMORY, H1Exchange, H1Protocol
from fephp.web.site import FrontSite
from tests.support.channel import CLIENT, SERVER

GET = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
POST = b"POST /p HTTP/1.1\r\nHost: a\r\n"
DATE = b"Thu, 01 Jan 1970 00:00:00 GMT"


class Writes(StringTransport):
    """A StringTransport that counts its writes (one write: one send on a real socket)."""

    writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


class App(Resource):
    """An Exchange-speaking leaf: notes each exchange and, unless told to hold it, answers *body* with a Content-Length."""

    isLeaf = True

    def __init__(self, body: bytes = b"hello", hold: bool = False) -> None:
        super().__init__()
        self.body = body
        self.hold = hold
        self.seen: list[H1Exchange] = []

    def render(self, exchange: Any) -> Any:
        self.seen.append(exchange)
        if not self.hold:
            answer(exchange, self.body)
        return NOT_DONE_YET


def answer(exchange: H1Exchange, body: bytes) -> None:
    """200, text/plain, *body* with its Content-Length."""
    exchange.start_response(200, [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))])
    exchange.write(body)
    exchange.finish()


def connect(resource: Resource, **options: Any) -> "tuple[FrontSite, H1Protocol, Writes, Clock]":
    clock = options.pop("reactor", None) or Clock()
    options.setdefault("timeout", None)
    site = FrontSite(resource, reactor=clock, **options)
    site.http_date = lambda: DATE  # type: ignore[method-assign]
    site.new_request_id = lambda: b"rid"  # type: ignore[method-assign]
    protocol = site.buildProtocol(CLIENT)
    transport = Writes(hostAddress=SERVER, peerAddress=CLIENT)
    protocol.makeConnection(transport)
    return site, protocol, transport, clock


OK = (
    b"HTTP/1.1 200 OK\r\nServer: fephp\r\nDate: " + DATE + b"\r\nX-Request-Id: rid\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
)


def test_a_small_response_is_one_send_and_the_exchange_is_complete() -> None:
    """Head and body of a small response leave in one write; the app got an Exchange with every request member."""
    app = App()
    _, protocol, transport, _ = connect(app)
    transport.writes = 0
    protocol.dataReceived(b"GET /a/b?c=d HTTP/1.1\r\nHost: a\r\nX-Two: 1\r\nx-two: 2\r\n\r\n")
    assert (transport.value(), transport.writes) == (OK, 1)
    exchange = app.seen[0]
    assert isinstance(exchange, Exchange)
    assert (exchange.method, exchange.target, exchange.path, exchange.query, exchange.version) == (
        b"GET", b"/a/b?c=d", b"/a/b", b"c=d", b"HTTP/1.1"
    )
    assert exchange.headers == [(b"host", b"a"), (b"x-two", b"1"), (b"x-two", b"2"), (b"x-request-id", b"rid")]
    assert (exchange.header(b"x-two"), exchange.body, exchange.scheme) == (b"1, 2", b"", b"http")
    assert (exchange.client, exchange.server) == (Address("127.0.0.1", 5000), Address("127.0.0.1", 80))
    assert (exchange.state, exchange.status, exchange.bytes_sent, exchange.request_id) == (
        ExchangeState.FINISHED, 200, 5, b"rid"
    )


def test_a_request_behind_a_body_in_the_same_read_is_answered() -> None:
    """A POST with a body and a GET behind it in one read, both answered at once inside render: both answers go out (no stall)."""
    app = App()
    _, protocol, transport, _ = connect(app)
    protocol.dataReceived(POST + b"Content-Length: 3\r\n\r\nabc" + GET)
    assert transport.value() == OK + OK
    assert [(e.method, e.body) for e in app.seen] == [(b"POST", b"abc"), (b"GET", b"")]


def test_a_thousand_pipelined_requests_in_one_read_are_answered_in_order() -> None:
    """Requests answered inside render are followed by a loop, not by recursion: 1000 in one read, 1000 answers."""
    app = App()
    _, protocol, transport, _ = connect(app)
    protocol.dataReceived(b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(1000)))
    assert transport.value() == OK * 1000
    assert [e.target for e in app.seen] == [b"/%d" % i for i in range(1000)]


def test_pipelined_bytes_pause_reading_until_the_request_in_hand_is_answered() -> None:
    """While the app holds a request, later bytes stop the transport's reading; the answer resumes it and serves them."""
    app = App(hold=True)
    _, protocol, transport, _ = connect(app)
    protocol.dataReceived(GET)
    protocol.dataReceived(GET)
    assert (len(app.seen), transport.producerState) == (1, "paused")
    answer(app.seen[0], b"hello")
    assert (len(app.seen), transport.producerState) == (2, "producing")
    answer(app.seen[1], b"hello")
    assert transport.value() == OK + OK


def test_a_body_past_the_memory_bound_is_a_file() -> None:
    """A body up to BODY_IN_MEMORY bytes is bytes; a longer one, chunked here, is a file holding the same bytes from its start."""
    app = App()
    _, protocol, _, _ = connect(app)
    small = b"s" * BODY_IN_MEMORY
    protocol.dataReceived(POST + b"Content-Length: %d\r\n\r\n" % len(small) + small)
    large = os.urandom(BODY_IN_MEMORY + 1)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(large[i : i + 4096]), large[i : i + 4096]) for i in range(0, len(large), 4096))
    protocol.dataReceived(POST + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
    first, second = app.seen
    assert first.body == small
    assert not isinstance(second.body, (bytes, type(None))) and second.body.read() == large


def test_expect_100_continue_is_answered_before_the_body() -> None:
    """An HTTP/1.1 Expect: 100-continue gets its 100 at the end of the head, the response after the body."""
    app = App()
    _, protocol, transport, _ = connect(app)
    protocol.dataReceived(POST + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    protocol.dataReceived(b"abc")
    assert transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n" + OK


def test_an_announced_body_over_the_limit_is_413_and_never_rendered() -> None:
    """A Content-Length over max_body_size: fephp's 413 page and close, before any of the body, the app never called."""
    app = App()
    _, protocol, transport, _ = connect(app, max_body_size=10)
    protocol.dataReceived(POST + b"Content-Length: 11\r\nExpect: 100-continue\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")
    assert (app.seen, transport.disconnecting) == ([], True)


def test_an_idle_kept_connection_closes_quietly_after_keepalive() -> None:
    """Between requests the keep-alive timeout closes the connection without a status; a fresh one too."""
    _, protocol, transport, clock = connect(App(), timeout=5.0)
    protocol.dataReceived(GET)
    transport.clear()
    clock.advance(4.9)
    assert transport.disconnecting is False
    clock.advance(0.1)
    assert (transport.value(), transport.disconnecting) == (b"", True)
    _, _, fresh, clock = connect(App(), timeout=5.0)
    clock.advance(5)
    assert (fresh.value(), fresh.disconnecting) == (b"", True)


def test_the_keepalive_time_runs_from_the_last_answer_on_one_timer() -> None:
    """A request at 3 s moves the 5 s keep-alive close to 8 s, and one delayed call serves all the connection's requests."""
    _, protocol, transport, clock = connect(App(), timeout=5.0)
    timer = protocol._idle_timer
    clock.advance(3)
    for _ in range(3):
        protocol.dataReceived(GET)
    assert (clock.getDelayedCalls(), protocol._idle_timer) == ([timer], timer)
    transport.clear()
    clock.advance(4.9)
    assert transport.disconnecting is False
    clock.advance(0.1)
    assert (transport.value(), transport.disconnecting) == (b"", True)


def test_a_head_gets_408_at_client_header_even_past_keepalive_then_is_aborted() -> None:
    """A head has client_header seconds in all (keep-alive does not cut it), then 408 and close; abortTimeout later, an abort."""
    _, protocol, transport, clock = connect(App(), timeout=5.0, client_header_timeout=30.0)
    protocol.dataReceived(b"GET /x HTTP/1.1\r\n")
    clock.advance(29)
    assert transport.disconnecting is False
    protocol.dataReceived(b"Host: a\r\n")
    clock.advance(1)
    assert transport.value().startswith(b"HTTP/1.1 408 Request Timeout\r\n") and transport.disconnecting
    clock.advance(protocol.abortTimeout)
    assert transport.disconnected is True


def test_a_body_that_stops_coming_gets_408_after_client_body_seconds() -> None:
    """Each body read restarts the body's idle time; client_body seconds without one: 408, close, nothing rendered."""
    app = App()
    _, protocol, transport, clock = connect(app, client_body_timeout=10.0)
    protocol.dataReceived(POST + b"Content-Length: 10\r\n\r\nabc")
    clock.advance(9)
    protocol.dataReceived(b"def")
    clock.advance(9)
    assert transport.disconnecting is False
    clock.advance(1)
    assert transport.value().startswith(b"HTTP/1.1 408 Request Timeout\r\n") and transport.disconnecting
    assert app.seen == []


def test_a_client_that_takes_nothing_for_client_send_seconds_is_cut_and_the_app_told() -> None:
    """The transport paused us; client_send seconds later the connection is aborted and when_lost runs, the producer stopped."""
    app = App(hold=True)
    _, protocol, transport, clock = connect(app, client_send_timeout=10.0)
    protocol.dataReceived(GET)
    exchange = app.seen[0]
    events: list[str] = []
    exchange.when_lost(lambda: events.append("lost"))
    exchange.register_producer(_Producer(events), True)
    exchange.start_response(200, [])
    exchange.write(b"x")
    protocol.pauseProducing()
    assert events == ["pause"]
    clock.advance(9)
    protocol.resumeProducing()
    protocol.pauseProducing()
    clock.advance(9.9)
    assert transport.disconnected is False
    clock.advance(0.1)
    assert transport.disconnected is True
    protocol.connectionLost(None)  # type: ignore[arg-type]
    assert (events, exchange.state) == (["pause", "resume", "pause", "stop", "lost"], ExchangeState.LOST)


class _Producer:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.events.append("pause")

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.events.append("resume")

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.events.append("stop")


def test_when_lost_runs_only_before_finish() -> None:
    """The client gone before finish: when_lost's call runs once; after finish it does not."""
    app = App(hold=True)
    _, protocol, _, _ = connect(app)
    protocol.dataReceived(GET + GET)
    calls: list[int] = []
    app.seen[0].when_lost(lambda: calls.append(0))
    answer(app.seen[0], b"hello")
    app.seen[1].when_lost(lambda: calls.append(1))
    protocol.connectionLost(None)  # type: ignore[arg-type]
    protocol.connectionLost(None)  # type: ignore[arg-type]
    assert calls == [1]


def test_http_10_keep_alive_is_kept_when_the_response_is_delimited() -> None:
    """An HTTP/1.0 client asking keep-alive keeps the connection for a Content-Length response (Connection: keep-alive), not for one without."""
    app = App(hold=True)
    _, protocol, transport, _ = connect(app)
    protocol.dataReceived(b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    answer(app.seen[0], b"hello")
    assert transport.value().endswith(b"Content-Length: 5\r\nConnection: keep-alive\r\n\r\nhello")
    assert transport.disconnecting is False
    protocol.dataReceived(b"GET /2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    transport.clear()
    exchange = app.seen[1]
    exchange.start_response(200, [])
    exchange.write(b"to the end")
    exchange.finish()
    assert transport.value() == b"HTTP/1.0 200 OK\r\nServer: fephp\r\nDate: " + DATE + b"\r\nX-Request-Id: rid\r\n\r\nto the end"
    assert transport.disconnecting is True


def test_write_pieces_is_one_chunk_per_call_and_head_gets_no_body() -> None:
    """Pieces after the head are one chunk per call; to HEAD nothing of the body goes out."""
    app = App(hold=True)
    _, protocol, transport, _ = connect(app)
    protocol.dataReceived(GET)
    exchange = app.seen[0]
    exchange.start_response(200, [])
    exchange.write(b"a")
    exchange.write_pieces([b"bc", memoryview(b"de")])
    exchange.finish()
    assert transport.value().endswith(b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n4\r\nbcde\r\n0\r\n\r\n")
    assert exchange.bytes_sent == 5
    transport.clear()
    protocol.dataReceived(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n")
    head = app.seen[1]
    head.start_response(200, [(b"content-length", b"4")])
    head.write_pieces([b"ab", b"cd"])
    head.finish()
    assert transport.value().endswith(b"Content-Length: 4\r\n\r\n") and head.bytes_sent == 0


def test_early_hints_go_before_the_response_and_not_to_http_10() -> None:
    """informational(103) sends its head at once on HTTP/1.1; an HTTP/1.0 client gets none."""
    app = App(hold=True)
    _, protocol, transport, _ = connect(app)
    protocol.dataReceived(GET)
    app.seen[0].informational(103, [(b"link", b"</s.css>; rel=preload")])
    assert transport.value() == b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\n"
    answer(app.seen[0], b"hello")
    transport.clear()
    protocol.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
    app.seen[1].informational(103, [(b"link", b"</s.css>; rel=preload")])
    assert transport.value() == b""


def test_sendfile_socket_flushes_the_head_and_counts_what_went_past() -> None:
    """No socket on a non-TCP transport, but the head is sent; bytes sent past the codec count against the Content-Length."""
    app = App(hold=True)
    _, protocol, transport, _ = connect(app)
    protocol.dataReceived(GET)
    exchange = app.seen[0]
    exchange.start_response(200, [(b"content-length", b"4")])
    assert exchange.sendfile_socket() is None
    assert transport.value().endswith(b"Content-Length: 4\r\n\r\n")
    exchange.sent_directly(3)
    exchange.write(b"d")
    exchange.finish()
    assert (exchange.bytes_sent, exchange.state, transport.disconnecting) == (4, ExchangeState.FINISHED, False)


def test_a_response_shorter_than_its_length_is_cut() -> None:
    """finish() with fewer bytes than the Content-Length aborts the connection: the client must not take it as whole."""
    app = App(hold=True)
    _, protocol, transport, _ = connect(app)
    protocol.dataReceived(GET)
    exchange = app.seen[0]
    exchange.start_response(200, [(b"content-length", b"4")])
    exchange.write(b"abc")
    exchange.finish()
    assert (transport.disconnected, exchange.state) == (True, ExchangeState.LOST)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
        (b"GET / HTTP/1.0\r\n\r\n", 200),
    ],
    ids=["no-host", "two-hosts", "host-with-a-path", "http-1.0-without-host"],
)
def test_the_host_rule(head: bytes, status: int) -> None:
    """RFC 9112 3.2: HTTP/1.1 needs one Host, a host[:port]; the refusal is fephp's page with Connection: close."""
    app = App()
    _, protocol, transport, _ = connect(app)
    protocol.dataReceived(head)
    assert transport.value().split(b"\r\n")[0].split(b" ")[1] == b"%d" % status
    assert (len(app.seen), transport.disconnecting) == ((0, True) if status == 400 else (1, True))


def test_absolute_form_and_raw_utf8_targets() -> None:
    """An absolute-form target reaches the app in origin form; raw UTF-8 bytes in a target reach it as sent."""
    app = App()
    _, protocol, _, _ = connect(app)
    protocol.dataReceived(b"GET http://a:8080/p/q?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    protocol.dataReceived("GET /ünï?q=✓ HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    assert [(e.target, e.path, e.query) for e in app.seen] == [
        (b"/p/q?x=1", b"/p/q", b"x=1"),
        ("/ünï?q=✓".encode(), "/ünï".encode(), "q=✓".encode()),
    ]


def test_a_trusted_proxy_gives_the_client_and_scheme() -> None:
    """From a trusted peer, X-Forwarded-For's client and X-Forwarded-Proto's scheme become the exchange's."""
    app = App()
    _, protocol, _, _ = connect(app, real_ip=RealIP((parse_trusted("127.0.0.1"),)))
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\r\n")
    assert (app.seen[0].client.host, app.seen[0].scheme) == ("203.0.113.7", b"https")


def test_a_graceful_stop_closes_idle_connections_and_finishes_the_others() -> None:
    """close_connections: an idle kept connection closes at once; a fresh one answers its request with Connection: close."""
    site, protocol, transport, _ = connect(App())
    protocol.dataReceived(GET)
    site2, fresh, fresh_transport, _ = connect(App())
    site.close_connections()
    assert transport.disconnecting is True
    closed = site2.close_connections()
    assert fresh_transport.disconnecting is False
    fresh.dataReceived(GET)
    assert fresh_transport.value().startswith(b"HTTP/1.1 200 OK\r\nConnection: close\r\n")
    assert fresh_transport.disconnecting is True
    fresh.connectionLost(None)  # type: ignore[arg-type]
    assert closed.called


def test_a_reloaded_site_serves_the_next_request_of_an_open_connection() -> None:
    """After adopt_channels, the connection's next request is rendered by the new site's resource, and counted there."""
    old_app, new_app = App(), App(body=b"howdy")
    old, protocol, transport, clock = connect(old_app)
    protocol.dataReceived(GET)
    new = FrontSite(new_app, reactor=clock, timeout=None)
    new.adopt_channels(old)
    protocol.dataReceived(GET)
    assert (len(old_app.seen), len(new_app.seen), new.activity()) == (1, 1, (1, 0))
    assert transport.value().endswith(b"howdy")


def test_a_failing_app_is_a_500_page() -> None:
    """An exception from render before any response is fephp's 500 page; the connection serves on."""

    class Failing(Resource):
        isLeaf = True

        def render(self, exchange: Any) -> Any:
            raise RuntimeError("boom")

    _, protocol, transport, _ = connect(Failing())
    protocol.dataReceived(GET)
    assert transport.value().startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"boom" not in transport.value() and transport.disconnecting is False


def test_start_response_again_before_any_byte_starts_anew() -> None:
    """A second start_response while nothing went out replaces the first one's status and fields, the site's kept."""
    app = App(hold=True)
    _, protocol, transport, _ = connect(app)
    protocol.dataReceived(GET)
    exchange = app.seen[0]
    exchange.start_response(200, [(b"x-php", b"began"), (b"content-length", b"100")])
    exchange.start_response(502, [(b"content-length", b"3")])
    exchange.write(b"bad")
    exchange.finish()
    assert transport.value() == (
        b"HTTP/1.1 502 Bad Gateway\r\nServer: fephp\r\nDate: " + DATE + b"\r\nX-Request-Id: rid\r\n"
        b"Content-Length: 3\r\n\r\nbad"
    )
    exchange.start_response(200, [])
    assert exchange.status == 502


class _TLS(Writes):
    """A transport whose TLS handshake chose *negotiatedProtocol* by ALPN (None: no ALPN)."""

    def __init__(self, negotiated: Optional[bytes]) -> None:
        super().__init__(hostAddress=SERVER, peerAddress=CLIENT)
        self.negotiatedProtocol = negotiated


@pytest.mark.parametrize("negotiated", [b"h2", b"http/1.1", None])
def test_alpn_h2_hands_the_connection_to_http2_and_anything_else_stays_http1(negotiated: Optional[bytes]) -> None:
    """ALPN "h2": the first bytes go to an H2Connection (its SETTINGS come back); http/1.1 or none: served here, as https."""
    app = App()
    site = FrontSite(app, reactor=Clock(), timeout=None)
    protocol = site.buildProtocol(CLIENT)
    transport = _TLS(negotiated)
    protocol.makeConnection(transport)
    if negotiated == b"h2":
        protocol.dataReceived(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert type(protocol._h2).__name__ == "H2Connection"
        assert transport.value()[3:4] == b"\x04"  # the server's SETTINGS frame first
        return
    protocol.dataReceived(GET)
    assert transport.value().startswith(b"HTTP/1.1 200 OK\r\n")
    assert app.seen[0].scheme == b"https"


def test_a_malformed_request_id_is_replaced_not_added_to() -> None:
    """A client's X-Request-Id that is no valid id is dropped from the request's fields and ours takes its place."""
    app = App()
    _, protocol, _, _ = connect(app)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: two words\r\n\r\n")
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: fine-id\r\n\r\n")
    assert [(e.request_id, e.headers[1:]) for e in app.seen] == [
        (b"rid", [(b"x-request-id", b"rid")]),
        (b"fine-id", [(b"x-request-id", b"fine-id")]),
    ]


class _Proxied(Writes):
    """A transport that learns its peer late, as a PROXY protocol wrapper does once the header is read."""

    peer: Any = CLIENT

    def getPeer(self) -> Any:  # noqa: N802 - Twisted's name
        return self.peer


def test_the_client_address_is_read_at_the_first_request() -> None:
    """The peer is asked for when the first request is whole, not at connectionMade (a PROXY header comes first)."""
    app = App()
    site = FrontSite(app, reactor=Clock(), timeout=None)
    protocol = site.buildProtocol(CLIENT)
    transport = _Proxied(hostAddress=SERVER, peerAddress=CLIENT)
    protocol.makeConnection(transport)
    transport.peer = IPv4Address("TCP", "198.51.100.9", 4242)
    protocol.dataReceived(GET)
    assert app.seen[0].client == Address("198.51.100.9", 4242)


def test_a_pull_producer_is_pulled_once_a_reactor_turn_while_the_client_takes_bytes() -> None:
    """A pull producer gets resumeProducing on the site's reactor while the transport takes bytes, none while it is paused or once unregistered."""
    app = App(hold=True)
    _, protocol, _, clock = connect(app)
    protocol.dataReceived(GET)
    pulls: list[int] = []

    class Filling:
        """Each pull fills the transport's buffer (the transport pauses us)."""

        def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
            pulls.append(len(pulls))
            protocol.pauseProducing()

        def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
            pulls.append(-1)

    app.seen[0].register_producer(Filling(), False)
    assert pulls == []
    clock.advance(0)
    clock.advance(0)
    assert pulls == [0]
    protocol.resumeProducing()
    clock.advance(0)
    assert pulls == [0, 1]
    app.seen[0].unregister_producer()
    protocol.resumeProducing()
    clock.advance(0)
    assert pulls == [0, 1]


def test_a_client_that_takes_no_answers_is_not_read() -> None:
    """While the transport has paused us (the client takes no bytes), the socket is not read: pipelined requests cannot pile up answers."""
    app = App()
    _, protocol, transport, _ = connect(app)
    protocol.dataReceived(GET)
    protocol.pauseProducing()
    assert transport.producerState == "paused"
    protocol.resumeProducing()
    assert transport.producerState == "producing"
    app.hold = True
    protocol.dataReceived(GET + GET)
    protocol.pauseProducing()
    protocol.resumeProducing()
    assert (transport.producerState, len(app.seen)) == ("paused", 2)  # a request still waits behind the one answered
    answer(app.seen[1], b"hello")
    assert (transport.producerState, len(app.seen)) == ("producing", 3)


def test_a_reloaded_site_s_body_limit_holds_once_it_answered_there() -> None:
    """Once an adopted connection has answered a request on the new site, its next is held to that site's max_body_size."""
    old_app, new_app = App(), App()
    old, protocol, transport, clock = connect(old_app, max_body_size=100)
    protocol.dataReceived(POST + b"Content-Length: 50\r\n\r\n" + b"a" * 50)
    new = FrontSite(new_app, reactor=clock, timeout=None, max_body_size=10)
    new.adopt_channels(old)
    protocol.dataReceived(GET)
    protocol.dataReceived(POST + b"Content-Length: 50\r\n\r\n")
    assert transport.value().endswith(b"<h1>413 Request Entity Too Large</h1></body></html>\n")
    assert (len(old_app.seen), len(new_app.seen), transport.disconnecting) == (1, 1, True)
