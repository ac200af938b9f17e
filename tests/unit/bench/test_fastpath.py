"""The load generator's hot path: remembered header blocks, the closed-loop recorder, the choice of reactor."""

from __future__ import annotations

from typing import Any

import pytest

from fephp.bench.client import MAX_CACHED_HEADS, MalformedResponse, ResponseParser
from fephp.bench.reactor import SELECT_MAX_CONNECTIONS, BenchEPollReactor, BenchSelectReactor, choose
from fephp.bench.report import Recorder

HEAD = b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 5"


def test_a_header_block_seen_before_is_read_from_the_cache() -> None:
    """Two connections reading the same header block share one entry, and both read the same response from it."""
    cache: dict[bytes, Any] = {}
    first, second = ResponseParser(cache), ResponseParser(cache)
    for parser in (first, second):
        parser.expect()
        assert parser.feed(HEAD + b"\r\n\r\nhello") is True
        assert (parser.status, parser.keep_alive, parser.received) == (200, True, len(HEAD) + 9)
    assert cache == {HEAD: (200, True, 5, False)}


def test_the_cache_holds_what_the_head_says_not_what_the_request_was() -> None:
    """A HEAD answer read from a cached block still has no body, and a GET answer from the same block has one."""
    parser = ResponseParser({})
    parser.expect(no_body=True)
    assert parser.feed(HEAD + b"\r\n\r\n") is True
    parser.expect()
    assert parser.feed(HEAD + b"\r\n\r\n") is False
    assert parser.feed(b"hello") is True


def test_the_cache_is_bounded() -> None:
    """Past MAX_CACHED_HEADS distinct blocks the cache starts afresh instead of growing."""
    cache: dict[bytes, Any] = {}
    parser = ResponseParser(cache)
    for i in range(MAX_CACHED_HEADS + 10):
        parser.expect()
        assert parser.feed(b"HTTP/1.1 204 No Content\r\nX-N: %d\r\n\r\n" % i) is True
    assert 0 < len(cache) <= MAX_CACHED_HEADS


def test_interim_and_malformed_blocks_are_not_cached() -> None:
    """A 100 Continue block is not remembered, and a malformed one is refused again the second time."""
    cache: dict[bytes, Any] = {}
    parser = ResponseParser(cache)
    parser.expect()
    assert parser.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n") is True
    assert list(cache) == [b"HTTP/1.1 204 No Content"]
    for _ in range(2):
        parser.expect()
        with pytest.raises(MalformedResponse):
            parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
    assert len(cache) == 1


def test_closed_loop_recorder_counts_each_latency_once() -> None:
    """In a closed loop the from-sent histogram is the from-intended one, and warmup stays out of both."""
    recorder = Recorder(rate_mode=False)
    assert recorder.service is recorder.intended
    recorder.response(False, 200, 10, intended=0.0, sent=0.0, done=0.002)  # warmup
    recorder.response(True, 200, 10, intended=1.0, sent=1.0, done=1.002)  # the same latency, measured
    recorder.response(True, 404, 10, intended=1.0, sent=1.0, done=1.005)
    stats = recorder.close_interval(1.0, 1.0, keep=True)
    assert stats.requests == 3
    assert recorder.intended.get_total_count() == 2
    assert recorder.intended.get_min_value() == pytest.approx(2000, rel=0.001)
    assert recorder.intended.get_max_value() == pytest.approx(5000, rel=0.001)
    assert recorder.status_codes == {200: 1, 404: 1}
    assert recorder.bytes_received == 20


def test_rate_recorder_leaves_warmup_out_of_every_total() -> None:
    """A warmup response shows in its second's slice only, in rate mode too."""
    recorder = Recorder(rate_mode=True)
    recorder.response(False, 200, 10, intended=0.0, sent=0.001, done=0.003)
    recorder.response(True, 200, 10, intended=1.0, sent=1.001, done=1.003)
    assert recorder.close_interval(1.0, 1.0, keep=True).requests == 2
    assert [h.get_total_count() for h in (recorder.intended, recorder.service, recorder.lateness)] == [1, 1, 1]


def test_reactor_choice() -> None:
    """A fixed rate takes select() for its microsecond timer up to SELECT_MAX_CONNECTIONS; a closed loop takes epoll."""
    assert choose(10, rate_mode=True) is BenchSelectReactor
    assert choose(SELECT_MAX_CONNECTIONS + 1, rate_mode=True) is BenchEPollReactor
    assert choose(10, rate_mode=False) is BenchEPollReactor
