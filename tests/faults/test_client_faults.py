"""Hostile and unlucky clients against fephp over real sockets, a real php-fpm behind: smuggling shapes, bad framing, floods, slow and stalled clients.

Every request that fephp must refuse targets ``once.php?tag=p...``, and
most carry a second, smuggled request for ``once.php?tag=psmuggled``: the
test checks that PHP ran neither.
"""

from __future__ import annotations

import socket
import time

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.support.faults import HeldClient, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.php]

LIMIT = 1024 * 1024
SMUGGLED = b"GET /once.php?tag=psmuggled HTTP/1.1\r\nHost: t\r\n\r\n"
FRONT = b"POST /once.php?tag=pfront HTTP/1.1\r\nHost: t\r\n"
CHUNKED = FRONT + b"Transfer-Encoding: chunked\r\n\r\n"

HOSTILE = [
    # (id, bytes, status)
    ("cl-with-te-identity", FRONT + b"Content-Length: %d\r\nTransfer-Encoding: identity\r\n\r\n" % len(SMUGGLED) + SMUGGLED, 400),
    ("te-chunked-with-cl", FRONT + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("cl-with-te-chunked", FRONT + b"Transfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("te-space-before-colon", FRONT + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("te-folded", FRONT + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("te-xchunked", FRONT + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("te-chunked-then-identity", FRONT + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("te-on-two-lines", FRONT + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("te-on-http-1.0", b"POST /once.php?tag=pfront HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("te-gzip-chunked", FRONT + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 501),
    ("two-different-lengths", FRONT + b"Content-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED, 400),
    ("length-with-plus", FRONT + b"Content-Length: +%d\r\n\r\n" % len(SMUGGLED) + SMUGGLED, 400),
    ("length-absurd", FRONT + b"Content-Length: 1" + b"0" * 30 + b"\r\n\r\n" + SMUGGLED, 413),
    ("chunk-size-absurd", CHUNKED + b"1" + b"0" * 40 + b"\r\n" + SMUGGLED, 413),
    ("chunks-crossing-the-limit", CHUNKED + b"80000\r\n" + b"a" * 0x80000 + b"\r\n80001\r\n", 413),
    ("chunk-size-not-hex", CHUNKED + b"zz\r\nabc\r\n0\r\n\r\n" + SMUGGLED, 400),
    ("chunk-size-line-too-long", CHUNKED + b"1;" + b"a" * 2000 + b"\r\nx\r\n0\r\n\r\n", 400),
    ("chunk-without-its-crlf", CHUNKED + b"3\r\nabc0\r\n\r\n" + SMUGGLED, 400),
    ("nul-in-a-header", b"GET /once.php?tag=pnul HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n", 400),
    ("control-byte-in-the-target", b"GET /once.php?tag=p\x01c HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("del-in-the-target", b"GET /once.php?tag=p\x7fd HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("bare-lf-line-ends", b"GET /once.php?tag=plf HTTP/1.1\nHost: t\n\n", 400),
    ("bare-lf-inside-a-head", b"GET /once.php?tag=plf2 HTTP/1.1\r\nHost: t\nX: 1\r\n\r\n", 400),
    ("bare-cr-inside-a-head", b"GET /once.php?tag=pcr HTTP/1.1\r\nHost: t\rX: 1\r\n\r\n", 400),
    ("request-line-too-long", b"GET /once.php?tag=plong&x=" + b"a" * 20000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    ("header-line-too-long", b"GET /once.php?tag=plong2 HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    ("too-many-headers", b"GET /once.php?tag=pmany HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X%d: v\r\n" % i for i in range(600)) + b"\r\n", 400),
    ("http-0.9", b"GET /once.php?tag=p09\r\n\r\n", 400),
    ("unknown-http-version", b"GET /once.php?tag=pv HTTP/1.2\r\nHost: t\r\n\r\n", 400),
    ("length-over-the-limit-with-expect", FRONT + b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (LIMIT + 1), 413),
]


@pytest.mark.parametrize(("data", "status"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
@pytest_twisted.ensureDeferred
async def test_hostile_framing(served, php_fpm, data, status):
    """Each shape is refused at once with its status, one answer, Connection: close and the connection closed; PHP runs nothing of it."""
    front = await served(php_fpm.unix_endpoint, max_body_size=LIMIT)
    got = await front.exchange(data, timeout=5.0)
    # "At once" as an event, not a window: every server timeout here is 60 s,
    # so a close before the client's own 5 s can only be the refusal's.
    assert (got.status, got.closed, got.timed_out) == (status, True, False), got.raw[:300]
    assert got.raw.count(b"HTTP/1.1 ") == 1 and b"\r\nConnection: close\r\n" in got.raw
    assert front.runs.counts() == {}
    await front.check_after()


@pytest_twisted.ensureDeferred
async def test_a_smuggling_shape_behind_a_good_request_on_one_connection(served, php_fpm):
    """A good request, then a smuggling shape on the same connection: the first is answered, the second refused, the smuggled one never runs."""
    front = await served(php_fpm.unix_endpoint)
    data = (
        b"GET /once.php?tag=gfirst HTTP/1.1\r\nHost: t\r\n\r\n"
        + FRONT + b"Content-Length: %d\r\nTransfer-Encoding: identity\r\n\r\n" % len(SMUGGLED) + SMUGGLED
    )
    got = await front.exchange(data)
    assert got.raw.startswith(b"HTTP/1.1 200 OK\r\n") and b"HTTP/1.1 400 Bad Request\r\n" in got.raw and got.closed
    assert dict(front.runs.counts()) == {"gfirst": 1}
    await front.check_after()


@pytest_twisted.ensureDeferred
async def test_floods_of_idle_and_slow_clients(served, php_fpm):
    """300 idle connections and 50 clients dripping a head byte by byte: normal requests are served meanwhile; the slow ones get 408 at client_header, the idle ones are closed at keepalive."""
    front = await served(php_fpm.unix_endpoint, timeout=4.0, client_header_timeout=2.0)
    idle = [await HeldClient.open(front.port) for _ in range(300)]
    slow = [await HeldClient.open(front.port) for _ in range(50)]
    started = time.monotonic()
    for client in slow:
        client.drip(b"GET /once.php?tag=pslow HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * 1000, 0.1)
    normal = await front.load(
        [("GET", f"/once.php?tag=g{i}", b"", f"g{i}") for i in range(100)], concurrency=4, timeout=5.0
    )
    assert {o.status for o in normal} == {200}
    # A bound, as generous as it can be and still tell: a request held up by
    # the slow ones would wait for their cut-off, 2 s (client_header).
    assert max(o.seconds for o in normal) < 2.0
    await wait_until(lambda: all(c.closed_at is not None for c in slow), "every slow client cut off", within=6.0)
    # Which timer cut them is told by the 408 (keepalive closes without one);
    # only the lower bound is a time: not before client_header's 2 s.
    assert {c.status for c in slow} == {408}
    assert all(c.closed_at - started > 1.9 for c in slow)  # type: ignore[operator]
    await wait_until(lambda: all(c.closed_at is not None for c in idle), "every idle client closed", within=8.0)
    assert {c.received for c in idle} == {b""}
    assert "pslow" not in front.runs.counts()
    await front.check_after()


@pytest_twisted.ensureDeferred
async def test_a_body_that_stops_coming(served, php_fpm):
    """A POST whose body stops half-way gets 408 after client_body seconds of silence, and PHP never runs it."""
    front = await served(php_fpm.unix_endpoint, client_body_timeout=1.0)
    client = await HeldClient.open(front.port)
    client.send(b"POST /once.php?tag=pstalled HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"a" * 400)
    started = time.monotonic()
    await wait_until(lambda: client.closed_at is not None, "the stalled upload cut off", within=5.0)
    # The 408 names the timer (the others are 60 s); the time only as a lower
    # bound, client_body's 1 s, and the upper one is wait_until's.
    assert client.status == 408
    assert client.closed_at - started > 0.9  # type: ignore[operator]
    assert front.runs.counts() == {}
    await front.check_after()


def _connect_and_never_read(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /big.php?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (64 * 1024 * 1024))
    return s


@pytest_twisted.ensureDeferred
async def test_a_client_that_stops_reading_a_large_response(served, php_fpm):
    """A client that reads nothing of a 64 MiB answer is cut off after client_send; fephp buffers little of it, and PHP's connection comes back."""
    front = await served(php_fpm.unix_endpoint, client_send_timeout=2.0, pool={"size": 1})
    s = await deferToThread(_connect_and_never_read, front.port)
    try:
        started = time.monotonic()
        await wait_until(lambda: front.pool.stats()["busy"] == 1, "the request running")

        await wait_until(lambda: front.pool.stats()["busy"] == 0, "the client cut off", within=8.0)
        # Only client_send (2 s) can end it before wait_until's 8 s: every
        # other timeout is 60 s.  The time is asserted as a lower bound only.
        assert time.monotonic() - started > 1.9
        await wait_until(lambda: front.pool.stats()["idle"] == 1, "PHP's connection back, drained", within=20.0)
        assert front.pool.stats()["failures"] == 0
    finally:
        s.close()
    await front.check_after(memory_mib=32.0)
