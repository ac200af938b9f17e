"""The HTTP/2 attacks of 2023-2024 against fephp as its own process, over TLS with ALPN h2 and a real php-fpm behind, each with its bound asserted.

fephp runs as ``twistd -n fephp`` (:class:`tests.support.h2target.FephpH2`)
so that its RSS and CPU are its own, not the attacking threads'.  PHP's
side effects are counted from ``once.php``'s ``runs.log``.  Every attack is
bounded in connections, frames, bytes and seconds (tests.support.h2attacks).
Memory bounds are fephp's VmRSS after the attack against its VmRSS after a
warm-up (a PHP request and a static one), 32 MiB as in issue 22; on PyPy,
whose heap is not collected in full below PYPY_GC_MIN (64 MB, as deployed),
that much more.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.h2attacks import (
    CONTROL_FLOODS,
    Prober,
    continuation_flood,
    control_flood,
    oversized_data,
    php_runs,
    rapid_reset,
    settle_php,
)
from tests.support.h2raw import (
    CANCEL,
    ENHANCE_YOUR_CALM,
    FRAME_SIZE_ERROR,
    NO_ERROR,
    SETTINGS_INITIAL_WINDOW_SIZE,
    RawH2,
    continuation,
    headers,
    pad_field,
    raw_frame,
    rst_stream,
)
from tests.support.h2target import FephpH2

pytestmark = [pytest.mark.faults, pytest.mark.php]

#: What an attack may add to fephp's resident memory (issue 22's target).
RSS_BOUND_MIB = 32.0
#: fephp's php.worker_pool_size in these tests.
POOL = 4


def _warm(front: FephpH2) -> float:
    """One PHP and one static request answered (modules loaded, buffers made), then fephp's RSS in MiB."""
    settle_php(front.port, 1)
    prober = Prober(front.port).run(5)
    assert (len(prober.latencies), prober.failures) == (5, 0)
    return front.rss_mib()


def _still_serves(front: FephpH2) -> None:
    """A fresh client's PHP request is answered after the attack."""
    client = RawH2(front.port)
    try:
        client.request(1, "/once.php?tag=after")
        answer = client.response(1, 10.0)
        assert (answer.status, answer.body) == (200, b"ran after 0")
    finally:
        client.close()


# -- 1. rapid reset (CVE-2023-44487) ----------------------------------------------------


def test_rapid_reset_from_many_connections_reaches_php_for_under_one_percent(h2_front, docroot: Path):
    """50 connections x 100 streams, each HEADERS(END_STREAM) followed by its RST_STREAM(CANCEL) in one write: fewer than 1 % of the streams run in PHP, and each connection is closed with ENHANCE_YOUR_CALM."""
    front = h2_front()
    rss = _warm(front)
    floods = rapid_reset(front.port, connections=50, streams=100, tag="rr")
    # A reset of a stream not answered yet costs INSTANT_RESET_COST of the
    # control budget, whichever read it comes in: about 30, then GOAWAY.
    assert [f.goaway for f in floods] == [ENHANCE_YOUR_CALM] * 50
    settle_php(front.port, POOL)
    ran = php_runs(docroot, "rr")
    assert ran < 50, f"{ran} of 5000 cancelled streams ran in PHP"
    assert front.rss_mib() - rss < RSS_BOUND_MIB + front.gc_slack_mib
    _still_serves(front)
    assert front.problems() == []


def test_streams_reset_in_the_same_write_never_reach_php(h2_front, docroot: Path):
    """4 connections x 50 streams, each RST_STREAM in the same write as its HEADERS, while fephp's pool is idle: none of them runs in PHP (dispatch waits for the whole read), and the connections end with ENHANCE_YOUR_CALM."""
    front = h2_front()
    floods = rapid_reset(front.port, connections=4, streams=50, tag="same")
    assert [f.goaway for f in floods] == [ENHANCE_YOUR_CALM] * 4
    settle_php(front.port, POOL)
    assert php_runs(docroot, "same") == 0


def test_a_connection_over_the_reset_budget_gets_enhance_your_calm(h2_front, docroot: Path):
    """One connection resetting 1000 streams in a row is closed with GOAWAY(ENHANCE_YOUR_CALM) before it sends them all."""
    front = h2_front()
    [flood] = rapid_reset(front.port, connections=1, streams=1000, tag="budget")
    assert (flood.goaway, flood.closed) == (ENHANCE_YOUR_CALM, True), flood
    settle_php(front.port, POOL)
    assert php_runs(docroot, "budget") < 10


# -- 2. CONTINUATION floods (CVE-2024-27316 and siblings) -----------------------------------


def test_a_header_block_crossing_max_header_size_ends_the_connection_at_once(h2_front):
    """HEADERS without END_HEADERS, then CONTINUATION frames 32 KiB past limits.max_header_size (16 KiB), then nothing: GOAWAY with an error code and the TCP close, without waiting for the block's end."""
    # keepalive far off: its GOAWAY(NO_ERROR) and close must not pass for the bound's.
    front = h2_front(limits={"max_header_size": 16384}, timeouts={"keepalive": 60})
    client = RawH2(front.port)
    client.handshake()
    first = headers(1, client.block("/static/hello.txt"), end_headers=False)
    client.send(first + continuation(1, pad_field(16000)) * 3)
    client.read_until(lambda c: c.closed, 5.0)
    assert (client.goaway not in (None, NO_ERROR), client.closed) == (True, True), (client.goaway, client.closed)


def test_continuation_floods_from_four_connections_leave_memory_bounded(h2_front):
    """Four connections sending CONTINUATION frames without end (up to 64 MiB or 5 s each): each is closed with a GOAWAY, and fephp grows by less than 32 MiB."""
    front = h2_front()
    rss = _warm(front)
    with ThreadPoolExecutor(4) as pool:
        floods = list(pool.map(lambda _: continuation_flood(front.port), range(4)))
    assert [(f.goaway is not None, f.closed) for f in floods] == [(True, True)] * 4, floods
    assert front.rss_mib() - rss < RSS_BOUND_MIB + front.gc_slack_mib
    _still_serves(front)


def test_an_empty_continuation_flood_is_closed(h2_front):
    """Zero-length CONTINUATION frames without end (up to 5 s): the connection is closed with a GOAWAY."""
    front = h2_front()
    flood = continuation_flood(front.port, empty=True)
    assert (flood.goaway is not None, flood.closed) == (True, True), flood
    _still_serves(front)


# -- 3. oversized frames -------------------------------------------------------------------


def test_a_data_frame_over_max_frame_size_is_a_frame_size_error_after_its_header(h2_front):
    """A DATA frame header announcing 16 MiB - 1 (SETTINGS_MAX_FRAME_SIZE is 16384), none of its payload: GOAWAY(FRAME_SIZE_ERROR) and the TCP close."""
    front = h2_front()
    client = RawH2(front.port)
    client.send(headers(1, client.block("/once.php?tag=big", "POST"), end_stream=False) + raw_frame(0x0, 0x0, 1, b"", length=2**24 - 1))
    client.read_until(lambda c: c.closed, 5.0)
    assert (client.goaway, client.closed) == (FRAME_SIZE_ERROR, True)


def test_oversized_data_frames_are_not_buffered_nor_read_after_the_goaway(h2_front):
    """Four connections each announcing a 16 MiB - 1 DATA frame and sending its payload: GOAWAY(FRAME_SIZE_ERROR), the TCP close within 2 s of it while the client still sends, fephp grown by less than 32 MiB."""
    front = h2_front()
    rss = _warm(front)
    with ThreadPoolExecutor(4) as pool:
        floods = list(pool.map(lambda _: oversized_data(front.port), range(4)))
    assert [(f.goaway, f.closed) for f in floods] == [(FRAME_SIZE_ERROR, True)] * 4, floods
    # The close is fephp's own, not an answer to a close_notify (the client
    # never sends one): at the latest the abort after its 1 s grace
    # (fephp.web.http2.CLOSE_GRACE), so 2 s with room for a busy machine.
    assert all(f.close_after_goaway is not None and f.close_after_goaway < 2.0 for f in floods), floods
    assert all(f.bytes_sent < 2**24 for f in floods), floods
    assert front.rss_mib() - rss < RSS_BOUND_MIB + front.gc_slack_mib
    _still_serves(front)


# -- 4. control-frame floods -------------------------------------------------------------------

#: The latency a flood may add to a fresh client's p99.  Issue 22's target is
#: 50 ms; the flooders, the prober and fephp share this machine's 2 cores with
#: other people's work, so the baseline is measured in the same test just
#: before the flood, and the prober runs 100 requests (a p99 over 100 samples
#: is its second-worst: one unlucky scheduling stall cannot fail the test).
LATENCY_ADDED = 0.050


@pytest.mark.parametrize("kind", sorted(CONTROL_FLOODS))
def test_a_control_frame_flood_is_closed_and_costs_others_little(h2_front, kind: str):
    """Two connections flooding one kind of control frame (up to 3 s each) both get GOAWAY(ENHANCE_YOUR_CALM), and a fresh client's p99 meanwhile stays within 50 ms of its own baseline."""
    front = h2_front()
    _warm(front)
    baseline = Prober(front.port).run(100, within=10.0)
    with ThreadPoolExecutor(2) as pool:
        flooding = [pool.submit(control_flood, front.port, kind, within=3.0) for _ in range(2)]
        during = Prober(front.port).run(100, within=10.0)
        floods = [f.result() for f in flooding]
    assert [(f.goaway, f.closed) for f in floods] == [(ENHANCE_YOUR_CALM, True)] * 2, floods
    assert (len(during.latencies), during.failures) == (100, 0)
    assert during.quantile(0.99) <= baseline.quantile(0.99) + LATENCY_ADDED, (
        f"p99 {during.quantile(0.99) * 1000:.1f} ms under the flood, {baseline.quantile(0.99) * 1000:.1f} ms before"
    )


# -- 5. zero window, stalled uploads -------------------------------------------------------------


def _zero_window_client(front: FephpH2, paths: list[str]) -> RawH2:
    """A client that gives the server no window (SETTINGS_INITIAL_WINDOW_SIZE 0, no WINDOW_UPDATE) with a GET of each of *paths* open."""
    client = RawH2(front.port, initial_settings={SETTINGS_INITIAL_WINDOW_SIZE: 0}, auto_window=False)
    client.send(b"".join(headers(2 * i + 1, client.block(p)) for i, p in enumerate(paths)))
    return client


def test_zero_window_php_streams_do_not_pin_the_pool(h2_front):
    """Eight PHP streams that may send nothing (256 KiB answers): four PHP requests of a fresh client are still answered, and the zero-window client's leaving logs no error."""
    front = h2_front(timeouts={"client_send": 1})
    zero = _zero_window_client(front, ["/big.php?n=262144"] * 8)
    zero.read_until(lambda c: sum(1 for s in c.streams.values() if s.status == 200) == 8, 10.0)
    assert [zero.stream(2 * i + 1).status for i in range(8)] == [200] * 8
    fresh = RawH2(front.port, timeout=15.0)
    try:
        ids = [2 * i + 1 for i in range(POOL)]
        fresh.send(b"".join(headers(s, fresh.block(f"/once.php?tag=fresh{s}")) for s in ids))
        fresh.read_until(lambda c: all(c.stream(s).done for s in ids), 15.0)
        assert [(fresh.stream(s).status, fresh.stream(s).body) for s in ids] == [(200, b"ran fresh%d 0" % s) for s in ids]
    finally:
        fresh.close()
    zero.close()
    settle_php(front.port, POOL)
    assert front.problems() == []


def test_zero_window_streams_are_cancelled_after_client_send(h2_front):
    """Four PHP and four static streams that may send nothing are reset with CANCEL once timeouts.client_send (1 s) has passed."""
    front = h2_front(timeouts={"client_send": 1})
    zero = _zero_window_client(front, ["/big.php?n=262144"] * 4 + ["/static/hello.txt"] * 4)
    ids = [2 * i + 1 for i in range(8)]
    zero.read_until(lambda c: all(c.stream(s).done for s in ids), 8.0)
    try:
        assert [zero.stream(s).reset for s in ids] == [CANCEL] * 8
    finally:
        zero.close()
    settle_php(front.port, POOL)
    assert front.problems() == []


def test_stalled_uploads_are_timed_out_after_client_body(h2_front):
    """Eight POSTs whose HEADERS promise a body that never comes are ended (RST_STREAM or 408) once timeouts.client_body (1 s) has passed."""
    front = h2_front(timeouts={"client_body": 1})
    client = RawH2(front.port)
    ids = [2 * i + 1 for i in range(8)]
    blocks = [client.block(f"/once.php?tag=stalled{s}", "POST", [("content-length", "100")]) for s in ids]
    client.send(b"".join(headers(s, b, end_stream=False) for s, b in zip(ids, blocks)))
    client.read_until(lambda c: all(c.stream(s).done for s in ids), 8.0)
    try:
        ended = [client.stream(s).reset is not None or client.stream(s).status == 408 for s in ids]
        assert ended == [True] * 8, [client.stream(s) for s in ids]
    finally:
        client.send(b"".join(rst_stream(s) for s in ids))
        client.close()
