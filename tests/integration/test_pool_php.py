"""The FastCGI client and pool against a real php-fpm, over UNIX and TCP sockets."""

from __future__ import annotations

import hashlib
import io
import json
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from fephp.backend.endpoints import parse_client_endpoint
from fephp.backend.errors import BackendClosed, ConnectError
from fephp.backend.pool import FastCGIPool
from fephp.process.fpmconfig import PING_PATH, STATUS_PATH
from fephp.testing import RecordingSink
from tests.support.php_fpm import PHPFPM

pytestmark = pytest.mark.php


def params_for(script: str, *, method: str = "GET", query: str = "", length: int = 0) -> list:
    return [
        (b"SCRIPT_FILENAME", script.encode()),
        (b"SCRIPT_NAME", b"/" + script.rsplit("/", 1)[1].encode()),
        (b"REQUEST_METHOD", method.encode()),
        (b"QUERY_STRING", query.encode()),
        (b"CONTENT_LENGTH", str(length).encode()),
        (b"CONTENT_TYPE", b"application/octet-stream"),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"GATEWAY_INTERFACE", b"CGI/1.1"),
        (b"REDIRECT_STATUS", b"200"),
    ]


def make_pool(address: str, **kwargs) -> FastCGIPool:
    kwargs.setdefault("size", 4)
    kwargs.setdefault("connect_timeout", 2.0)
    kwargs.setdefault("response_timeout", 20.0)
    return FastCGIPool(parse_client_endpoint(reactor, address), clock=reactor, **kwargs)


@pytest.fixture(params=["unix", "tcp"])
def address(request, php_fpm) -> str:
    return php_fpm.unix_endpoint if request.param == "unix" else php_fpm.tcp_endpoint


@pytest_twisted.ensureDeferred
async def test_hello_world(php_fpm, address):
    """A script's CGI headers and body arrive whole, with app status 0."""
    pool = make_pool(address)
    sink = RecordingSink()
    status = await pool.request(params_for(php_fpm.script("hello.php")), None, sink)
    head, body = sink.split()
    assert status == 0
    assert body == b"Hello, world!"
    assert b"Content-type: text/plain" in head or b"Content-Type: text/plain" in head
    await pool.close()


@pytest_twisted.ensureDeferred
async def test_connection_is_kept_and_reused(php_fpm, address):
    """Sequential requests run on one kept connection, served by one php-fpm child."""
    pool = make_pool(address)
    pids = set()
    for _ in range(5):
        sink = RecordingSink()
        await pool.request(params_for(php_fpm.script("sleep.php"), query="ms=0"), None, sink)
        pids.add(sink.split()[1])
    assert len(pids) == 1
    assert pool.stats()["idle"] == 1
    await pool.close()


@pytest_twisted.ensureDeferred
async def test_one_mib_body_echoed_by_hash(php_fpm, address):
    """A 1 MiB request body, streamed from a file, reaches PHP byte for byte."""
    pool = make_pool(address)
    payload = bytes(range(256)) * 4096 + b"tail"
    sink = RecordingSink()
    await pool.request(
        params_for(php_fpm.script("echo.php"), method="POST", length=len(payload)),
        io.BytesIO(payload),
        sink,
    )
    assert sink.split()[1] == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}".encode()
    await pool.close()


@pytest_twisted.ensureDeferred
async def test_eight_mib_response_by_hash(php_fpm, address):
    """An 8 MiB response arrives complete and in order."""
    pool = make_pool(address)
    sink = RecordingSink()
    await pool.request(params_for(php_fpm.script("big.php")), None, sink)
    body = sink.split()[1]
    expected = bytes(range(256)) * 256 * 128
    assert len(body) == 8 * 1024 * 1024
    assert hashlib.sha256(body).digest() == hashlib.sha256(expected).digest()
    await pool.close()


@pytest_twisted.ensureDeferred
async def test_flushed_output_arrives_before_the_script_ends(php_fpm, address):
    """What PHP flush()es reaches the sink while the script still sleeps."""
    pool = make_pool(address)
    sink = RecordingSink()
    d = pool.request(params_for(php_fpm.script("stream.php"), query="ms=800"), None, sink)
    await sink.wait_for(b"first\n")
    assert not d.called
    assert sink.split()[1] == b"first\n"
    await d
    assert sink.split()[1] == b"first\nlast\n"
    await pool.close()


@pytest_twisted.ensureDeferred
async def test_stderr_reaches_the_sink(php_fpm, address):
    """PHP's stderr comes back as STDERR records, apart from the response."""
    pool = make_pool(address)
    sink = RecordingSink()
    await pool.request(params_for(php_fpm.script("stderr.php"), query="tag=abc"), None, sink)
    assert b"to-stderr: abc" in sink.stderr
    assert sink.split()[1] == b"ok"
    await pool.close()


@pytest_twisted.ensureDeferred
async def test_two_hundred_concurrent_requests_through_eight_connections(php_fpm, address):
    """200 requests at once all succeed while never more than 8 connections exist."""
    pool = make_pool(address, size=8)
    most = 0
    sinks = [RecordingSink() for _ in range(200)]
    pending = [
        pool.request(params_for(php_fpm.script("sleep.php"), query="ms=5"), None, s) for s in sinks
    ]
    stats = pool.stats()
    most = stats["busy"] + stats["idle"] + stats["connecting"]
    assert stats["waiting"] == 200
    results = await defer.gatherResults(pending)
    assert results == [0] * 200
    assert most <= 8
    assert all(s.split()[1].isdigit() for s in sinks)
    assert pool.stats()["idle"] <= 8
    await pool.close()


@pytest_twisted.ensureDeferred
async def test_connection_refused_is_a_connect_error_within_the_timeout(tmp_path):
    """A socket nobody listens on gives ConnectError no later than the connect timeout allows."""
    pool = make_pool(f"unix:path={tmp_path / 'nobody.sock'}", connect_timeout=0.5)
    # Not a window: a ConnectError can only come from the refusal or the 0.5 s
    # connect timeout; a hang meets the 10 s guard's TimeoutError instead.
    with pytest.raises(ConnectError):
        await defer.ensureDeferred(pool.request(params_for("/nonexistent.php"), None, RecordingSink())).addTimeout(10, reactor)
    await pool.close()


@pytest_twisted.ensureDeferred
async def test_kill_and_restart_recovers(own_php_fpm):
    """php-fpm killed mid-run fails in-flight requests fast; after a restart the pool serves again."""
    fpm = own_php_fpm.start()
    pool = make_pool(fpm.unix_endpoint, size=4, connect_timeout=1.0)
    sink = RecordingSink()
    await pool.request(params_for(fpm.script("hello.php")), None, sink)
    in_flight = [
        pool.request(params_for(fpm.script("sleep.php"), query="ms=3000"), None, RecordingSink())
        for _ in range(4)
    ]
    fpm.kill()
    outcomes = await defer.DeferredList(in_flight, consumeErrors=True)
    assert all(not ok for ok, _ in outcomes)
    assert all(f.check(BackendClosed, ConnectError) for _, f in outcomes)
    # While it is down: a clear connect error, no hang.
    with pytest.raises(ConnectError):
        await pool.request(params_for(fpm.script("hello.php")), None, RecordingSink())
    fpm.start()
    sink = RecordingSink()
    await pool.request(params_for(fpm.script("hello.php")), None, sink)
    assert sink.split()[1] == b"Hello, world!"
    assert pool.stats()["failures"] == 0
    await pool.close()


@pytest_twisted.ensureDeferred
async def test_stale_kept_connection_is_retried(tmp_path, php_fpm_binary):
    """A child that exits after pm.max_requests leaves a stale connection; the next request still succeeds."""
    fpm = PHPFPM(tmp_path / "fpm", binary=php_fpm_binary, children=1, max_requests=1).start()
    try:
        pool = make_pool(fpm.unix_endpoint, size=1)
        for _ in range(4):
            sink = RecordingSink()
            status = await pool.request(params_for(fpm.script("hello.php")), None, sink)
            assert (status, sink.split()[1]) == (0, b"Hello, world!")
        await pool.close()
    finally:
        fpm.stop()


@pytest_twisted.ensureDeferred
async def test_get_values_probe(php_fpm, address):
    """php-fpm answers GET_VALUES with FCGI_MPXS_CONNS=0."""
    pool = make_pool(address)
    values = await pool.probe()
    assert values.get(b"FCGI_MPXS_CONNS") == b"0"
    await pool.close()


@pytest_twisted.ensureDeferred
async def test_the_pool_answers_its_status_page_and_ping(php_fpm, address):
    """A pool rendered by fephp answers pm.status_path with its JSON figures and ping.path with "pong"."""
    pool = make_pool(address)
    sink = RecordingSink()
    await pool.request(
        [(b"SCRIPT_NAME", STATUS_PATH.encode()), (b"SCRIPT_FILENAME", STATUS_PATH.encode()),
         (b"QUERY_STRING", b"json"), (b"REQUEST_METHOD", b"GET")],
        None,
        sink,
    )
    status = json.loads(sink.split()[1])
    assert status["process manager"] == "static"
    assert status["total processes"] == php_fpm.children
    ping = RecordingSink()
    await pool.request(
        [(b"SCRIPT_NAME", PING_PATH.encode()), (b"SCRIPT_FILENAME", PING_PATH.encode()), (b"REQUEST_METHOD", b"GET")],
        None,
        ping,
    )
    assert ping.split()[1] == b"pong"
    await pool.close()


def runs(log) -> int:
    """How many times once.php ran with this log file."""
    return log.read_text().count("\n") if log.exists() else 0


@pytest.mark.parametrize("kind", ["unix", "tcp"])
@pytest_twisted.ensureDeferred
async def test_post_killed_by_request_terminate_timeout_runs_once(tmp_path, php_fpm_binary, kind):
    """A POST whose child php-fpm kills mid-script (request_terminate_timeout) on a kept connection fails, and PHP ran it once."""
    fpm = PHPFPM(tmp_path / "fpm", binary=php_fpm_binary, children=2, request_terminate_timeout=1).start()
    try:
        pool = make_pool(fpm.unix_endpoint if kind == "unix" else fpm.tcp_endpoint, size=1)
        await pool.request(params_for(fpm.script("hello.php")), None, RecordingSink())
        assert pool.stats()["idle"] == 1  # the POST goes out on a kept connection
        log = tmp_path / "runs.log"
        with pytest.raises(BackendClosed):
            await pool.request(
                params_for(fpm.script("once.php"), method="POST", query=f"log={log}&ms=4000", length=4),
                b"body",
                RecordingSink(),
            )
        assert runs(log) == 1
        await pool.close()
    finally:
        fpm.stop()


@pytest_twisted.ensureDeferred
async def test_posts_through_pm_max_requests_recycling_run_once_and_succeed(tmp_path, php_fpm_binary):
    """Over a UNIX socket, POSTs meeting php-fpm's pm.max_requests close are sent again only when php-fpm threw them away unread: all succeed, each ran once."""
    fpm = PHPFPM(tmp_path / "fpm", binary=php_fpm_binary, children=2, max_requests=2).start()
    try:
        pool = make_pool(fpm.unix_endpoint, size=2)
        logs = [tmp_path / f"run-{i}.log" for i in range(60)]
        pending = [
            pool.request(
                params_for(fpm.script("once.php"), method="POST", query=f"log={log}", length=4), b"body", RecordingSink()
            )
            for log in logs
        ]
        results = await defer.DeferredList(pending, consumeErrors=True)
        assert [(ok, r if ok else repr(r.value)) for ok, r in results if not ok] == []
        assert [runs(log) for log in logs] == [1] * len(logs)
        await pool.close()
    finally:
        fpm.stop()


class CountingEndpoint:
    """A client endpoint that counts its connects (each one a php-fpm child taken)."""

    def __init__(self, endpoint) -> None:
        self.endpoint = endpoint
        self.connects = 0

    def connect(self, factory):
        self.connects += 1
        return self.endpoint.connect(factory)


@pytest_twisted.ensureDeferred
async def test_aborted_requests_keep_their_children_counted_until_php_ends_them(tmp_path, php_fpm_binary):
    """A pool of 2 over 2 children: 2 slow requests aborted, the next request waits in fephp's queue (no new connection into php-fpm's backlog) and is served once a script ends."""
    fpm = PHPFPM(tmp_path / "fpm", binary=php_fpm_binary, children=2).start()
    try:
        endpoint = CountingEndpoint(parse_client_endpoint(reactor, fpm.unix_endpoint))
        pool = FastCGIPool(endpoint, clock=reactor, size=2, connect_timeout=2.0, response_timeout=5.0, queue_timeout=10.0)
        slow = [
            pool.request(params_for(fpm.script("sleep.php"), query="ms=1500"), None, RecordingSink()) for _ in range(2)
        ]
        await wait_until(lambda: pool.stats()["busy"] == 2, "both slow requests on their connections")
        for d in slow:
            d.cancel()
        outcomes = await defer.DeferredList(slow, consumeErrors=True)
        assert all(f.check(defer.CancelledError) for _, f in outcomes)
        sink = RecordingSink()
        nxt = pool.request(params_for(fpm.script("sleep.php"), query="ms=0"), None, sink)
        assert (pool.stats()["waiting"], endpoint.connects) == (1, 2)
        assert pool.stats()["draining"] == 2
        assert await nxt == 0
        # It waited for a slow script to end, shown by events rather than a
        # window: no third connection, so it ran on one a script's end freed.
        assert (endpoint.connects, pool.stats()["draining"] <= 1) == (2, True)
        await wait_until(lambda: pool.stats()["idle"] == 2, "the other slow script to end")
        assert endpoint.connects == 2
        await pool.close()
    finally:
        fpm.stop()


async def wait_until(predicate, what: str, within: float = 10.0) -> None:
    """Poll *predicate* on the reactor until it holds, failing after *within* seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.01)
