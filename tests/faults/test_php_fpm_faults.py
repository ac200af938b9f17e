"""Real php-fpm under faults, through fephp's HTTP front: killed, recycled, frozen, killing its own children, and left by its clients.

Each test runs a php-fpm of its own (the generated config of
tests/support/php_fpm.py) and a front in this process, does harm under
load, and then checks what must hold (:meth:`tests.support.faults.Served.check_after`).
Writes go through ``once.php?tag=``, so that a POST run twice shows.
"""

from __future__ import annotations

import collections
import os
import signal
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.logger import LogLevel

from tests.support.faults import mixed, wait_until
from tests.support.php_fpm import PHPFPM

pytestmark = [pytest.mark.faults, pytest.mark.php]


@pytest.fixture
def fpm_factory(tmp_path, php_fpm_binary):
    started: list[PHPFPM] = []

    def make(**options) -> PHPFPM:
        fpm = PHPFPM(tmp_path / f"fpm{len(started)}", binary=php_fpm_binary, **options)
        started.append(fpm)
        return fpm

    yield make
    for fpm in started:
        if fpm.process is not None:
            os.killpg(fpm.process.pid, signal.SIGCONT)
        fpm.stop()


@pytest_twisted.ensureDeferred
async def test_php_fpm_killed_and_restarted_under_load(served, fpm_factory):
    """php-fpm SIGKILLed mid-load and started again: every request is answered (200 or a quick 502/503), none runs twice, and service comes back."""
    fpm = fpm_factory(children=4).start()
    front = await served(fpm.unix_endpoint, pool={"size": 4, "connect_timeout": 1.0})
    load = defer.ensureDeferred(front.load(mixed(400, ms=20), concurrency=8, timeout=10.0))
    await wait_until(lambda: len(front.runs.counts()) >= 60, "60 requests run")
    fpm.kill()
    killed_at = time.monotonic()
    await deferLater(reactor, 0.5)
    fpm.start()
    outcomes = await load
    assert [o for o in outcomes if o.status is None] == []
    assert {o.status for o in outcomes} <= {200, 502, 503}
    failed = [o for o in outcomes if o.status != 200]
    # Quick as a bound generous enough to be honest: half the pool's 10 s
    # response and queue timeouts, so a failure came from the kill, not a timer.
    assert all(o.seconds < 5.0 for o in failed), max(o.seconds for o in failed)
    assert len(outcomes) - len(failed) >= 300, collections.Counter((o.status, round(o.seconds, 1)) for o in failed)  # the outage lasted half a second
    assert time.monotonic() - killed_at < 60
    await front.check_after()


@pytest.mark.parametrize("kind", ["unix", "tcp"])
@pytest_twisted.ensureDeferred
async def test_children_recycled_under_load_with_get_and_post(served, fpm_factory, kind):
    """pm.max_requests=3 under load: GETs all succeed; no POST runs twice; over a UNIX socket every POST succeeds too."""
    fpm = fpm_factory(children=2, max_requests=3).start()
    front = await served(fpm.unix_endpoint if kind == "unix" else fpm.tcp_endpoint, pool={"size": 2})
    outcomes = await front.load(mixed(300, ms=2), concurrency=6, timeout=10.0)
    gets = [o for o in outcomes if o.tag.startswith("g")]
    posts = [o for o in outcomes if o.tag.startswith("p")]
    assert {o.status for o in gets} == {200}
    if kind == "unix":
        assert {o.status for o in posts} == {200}
    else:
        # Over TCP a POST that crosses a child's last answer cannot be told
        # from one PHP ran: 502, never a second run (docs/fastcgi.md).
        assert {o.status for o in posts} <= {200, 502}
    counts = front.runs.counts()
    assert [o.tag for o in posts if o.status == 200 and counts[o.tag] != 1] == []  # a failed one ran at most once: check_after
    await front.check_after()


@pytest_twisted.ensureDeferred
async def test_children_killed_by_request_terminate_timeout_under_load(served, fpm_factory):
    """request_terminate_timeout kills slow POSTs mid-script: each fails with 502 having run once; the quick requests around them succeed."""
    fpm = fpm_factory(children=3, request_terminate_timeout=1).start()
    front = await served(fpm.unix_endpoint, pool={"size": 3})
    await front.request("GET", "/once.php?tag=warm")  # kept connections first
    slow = [("POST", f"/once.php?tag=pslow{i}&ms=4000", b"x=1", f"pslow{i}") for i in range(3)]
    quick = mixed(60, ms=1, prefix="q")
    outcomes = await front.load(slow + quick, concurrency=5, timeout=15.0)
    by_tag = {o.tag: o for o in outcomes}
    counts = front.runs.counts()
    for i in range(3):
        assert (by_tag[f"pslow{i}"].status, counts[f"pslow{i}"]) == (502, 1)
    assert {by_tag[t].status for _, _, _, t in quick} == {200}
    await front.check_after()


@pytest_twisted.ensureDeferred
async def test_frozen_php_fpm(served, fpm_factory):
    """php-fpm stopped with SIGSTOP: requests fail with 504 after timeouts.response (or 503 from a full queue), none hangs; after SIGCONT service resumes and nothing ran twice."""
    fpm = fpm_factory(children=2).start()
    front = await served(fpm.unix_endpoint, pool={"size": 2, "response_timeout": 1.0, "queue_size": 4, "queue_timeout": 2.0})
    await front.request("GET", "/once.php?tag=warm")
    os.killpg(fpm.process.pid, signal.SIGSTOP)
    try:
        outcomes = await front.load(mixed(12, prefix="f"), concurrency=8, timeout=10.0)
    finally:
        os.killpg(fpm.process.pid, signal.SIGCONT)
    assert [o for o in outcomes if o.status is None] == []
    assert {o.status for o in outcomes} <= {503, 504}
    # None hangs: a bound twice the longest wait configured (1 s response, then
    # 2 s in the queue), well inside the client's own 10 s.
    assert max(o.seconds for o in outcomes) < 6.0
    # The children wake up to requests whose clients are long gone: they may
    # run them now, once.
    await front.check_after()


@pytest_twisted.ensureDeferred
async def test_clients_that_go_away_keep_their_children_counted(served, fpm_factory):
    """Clients leaving slow requests never push a later request into php-fpm's backlog: it waits in fephp's queue and is served, not timed out."""
    fpm = fpm_factory(children=2).start()
    front = await served(fpm.unix_endpoint, pool={"size": 2, "response_timeout": 3.0})
    leaving = [
        defer.ensureDeferred(front.exchange(b"POST /once.php?tag=pleft%d&ms=1500 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n" % i, timeout=0.3))
        for i in range(2)
    ]
    for d in leaving:
        assert (await d).timed_out  # the client gave up and closed
    await wait_until(lambda: front.pool.stats()["draining"] == 2, "both requests draining")
    started = time.monotonic()
    after = await front.request("GET", "/once.php?tag=next", timeout=10.0)
    assert after.status == 200
    # A bound, generous but telling: twice the slow scripts' 1.5 s, which is
    # as long as the request should wait in fephp's queue for a freed child.
    assert time.monotonic() - started < 3.0
    stats = front.pool.stats()
    assert stats["idle"] + stats["busy"] + stats["draining"] <= 2
    assert front.runs.counts()["pleft0"] == front.runs.counts()["pleft1"] == 1
    await front.check_after()


@pytest.mark.parametrize(
    ("kind", "cause"),
    [
        ("big", "response head larger than 65536 bytes"),
        ("ctl", "control character in the response head"),
        ("nocolon", "malformed header line b'NoColon'"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_cgi_heads_from_real_php(served, fpm_factory, kind, cause):
    """A head real PHP lets through and HTTP does not is a 502 with one log line naming the cause and the URI; the FastCGI connection is kept and serves the next request."""
    fpm = fpm_factory(children=1).start()
    front = await served(fpm.unix_endpoint, pool={"size": 1})
    got = await front.exchange(b"GET /badhead.php?kind=%s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % kind.encode())
    assert got.status == 502 and got.closed and not got.timed_out
    lines = [line for line in front.log.lines(LogLevel.warn) if "badhead.php" in line]
    assert len(lines) == 1 and cause in lines[0] and f"/badhead.php?kind={kind}" in lines[0], lines
    await wait_until(lambda: front.pool.stats()["idle"] == 1, "the connection back from draining")
    await front.check_after()
    assert front.pool.stats()["failures"] == 0
