"""The RoadRunner codec against real PHP: a plain-PHP worker (tests/php/roadrunner/worker.php) over its pipes.

A blocking subprocess driven by tests/support/worker_pipes.py, no reactor:
the codec is what is under test, the Twisted glue comes with the worker
backend.  Every read waits on the pipe with a deadline, never on the clock.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

import pytest

from fephp.roadrunner import (
    JobError,
    Ping,
    ProtocolError,
    ResponseBody,
    ResponseEnd,
    ResponseHead,
    WorkerReady,
    WorkerStopping,
    encode_request_context,
)
from tests.support import PHP_DIR
from tests.support.worker_pipes import PipeWorker, is_end

pytestmark = pytest.mark.php

WORKER = PHP_DIR / "roadrunner" / "worker.php"
#: PHP's CLI prints errors to stdout by default, where they would corrupt the frames.
PHP_ARGS = ("-n", "-d", "display_errors=stderr")


def spawn(script: Path) -> PipeWorker:
    """*script* under php -n with its errors on stderr."""
    return PipeWorker(script, PHP_ARGS)


@pytest.fixture
def worker() -> Iterator[PipeWorker]:
    w = spawn(WORKER)
    try:
        yield w
    finally:
        w.close()


def request(w: PipeWorker, path: str, body: bytes = b"", method: str = "POST") -> None:
    """Send one request for *path* (query q=1, a cookie, an attribute, a header twice) to *w*."""
    context = encode_request_context(
        method=method,
        uri="http://worker.test" + path + "?q=1",
        headers=[(b"content-type", b"text/plain"), (b"x-many", b"1"), (b"X-Many", b"2")],
        remote_addr="127.0.0.1",
        raw_query="q=1",
        cookies={"sid": "s1"},
        attributes={"requestId": "r-7"},
    )
    w.send(w.client.send_request(context, body))


def test_life_of_a_php_worker(worker: PipeWorker) -> None:
    """Handshake, two Set-Cookie, the context as PHP decodes it, a stream, an error, then stop: exit 0."""
    assert worker.handshake() == [WorkerReady(worker.proc.pid)]

    body = os.urandom(300_000)
    request(worker, "/hello", body)
    assert worker.until(is_end) == [
        ResponseHead(200, ((b"Content-Type", b"text/plain"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"))),
        ResponseBody(b"hello POST " + hashlib.md5(body).hexdigest().encode()),
        ResponseEnd(),
    ]

    request(worker, "/echo", b"abc", method="PUT")
    events = worker.until(is_end)
    assert events[0] == ResponseHead(200, ((b"Content-Type", b"application/json"),))
    assert isinstance(events[1], ResponseBody) and events[2:] == [ResponseEnd()]
    assert json.loads(events[1].data) == {
        "context": {
            "remoteAddr": "127.0.0.1",
            "protocol": "HTTP/1.1",
            "method": "PUT",
            "uri": "http://worker.test/echo?q=1",
            "headers": {"Content-Type": ["text/plain"], "X-Many": ["1", "2"]},
            "cookies": {"sid": "s1"},
            "rawQuery": "q=1",
            "parsed": False,
            "uploads": None,
            "attributes": {"requestId": "r-7"},
        },
        "bodyLength": 3,
    }

    request(worker, "/stream")
    assert worker.until(is_end) == [
        ResponseHead(200, ((b"Content-Type", b"text/plain"),)),
        ResponseBody(b"one"),
        ResponseBody(b"two"),
        ResponseBody(b"three"),
        ResponseEnd(),
    ]

    request(worker, "/error")
    assert worker.until(is_end) == [JobError("boom", response_started=False)]
    assert worker.client.idle is True

    worker.send(worker.client.stop())
    status, err = worker.wait_exit()
    assert status == 0, err


def test_stopping_an_endless_stream(worker: PipeWorker) -> None:
    """A PING answered with a PONG, then stop_stream(): PHP acknowledges the STOP and serves the next request."""
    worker.handshake()
    request(worker, "/endless")
    events = worker.until(lambda e: isinstance(e, Ping))
    # The head's frame and five more, the fifth with PING (the reads may hold more frames after it).
    assert events[: events.index(Ping()) + 1] == [
        ResponseHead(200, ((b"Content-Type", b"text/plain"),)),
        *[ResponseBody(b"tick")] * 6,
        Ping(),
    ]
    worker.send(worker.client.pong() + worker.client.stop_stream())
    events = worker.until(is_end)
    assert events[-1] == ResponseEnd(stopped=True)
    assert all(isinstance(e, (ResponseBody, Ping)) for e in events[:-1])
    request(worker, "/hello", b"x")
    assert worker.until(is_end)[-1] == ResponseEnd()


def test_worker_that_asks_to_stop(worker: PipeWorker) -> None:
    """A worker answering {"stop":true} gives WorkerStopping and exits; the request is left for another worker."""
    worker.handshake()
    request(worker, "/stop")
    assert worker.until(is_end) == [WorkerStopping()]
    status, err = worker.wait_exit()
    assert status == 0, err


def test_missing_script_is_a_protocol_error_that_shows_php_s_words() -> None:
    """PHP on a missing script prints "Could not open input file" to stdout: a ProtocolError quoting it."""
    w = spawn(PHP_DIR / "roadrunner" / "no-such-worker.php")
    try:
        w.client.start()  # not written: PHP may already be gone, and its stdin with it
        with pytest.raises(ProtocolError, match="Could not open input file"):
            w.until(is_end)
    finally:
        w.close()
