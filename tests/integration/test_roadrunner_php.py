"""The RoadRunner codec against real PHP: a plain-PHP worker (tests/php/roadrunner/worker.php) over its pipes.

A blocking subprocess, no reactor: the codec is what is under test, the
Twisted glue comes with the worker backend.  Every read waits on the pipe
with a deadline, never on the clock.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import subprocess
import time
from typing import Callable, Iterator

import pytest

from fephp.roadrunner import (
    ClientConnection,
    Event,
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
from tests.support.processes import require_binary

pytestmark = pytest.mark.php

WORKER = PHP_DIR / "roadrunner" / "worker.php"
#: Bound on any one wait for the worker.
DEADLINE = 15.0


def php_cli() -> str:
    """The PHP command-line binary, unversioned or 8.x."""
    names = ["php"] + [f"php8.{minor}" for minor in (4, 3, 2, 1, 0)]
    return require_binary(next(filter(None, map(shutil.which, names)), None), "php (the CLI)")


def spawn(script: str) -> subprocess.Popen[bytes]:
    # PHP's CLI prints errors to stdout by default, where they would corrupt the frames.
    return subprocess.Popen(
        [php_cli(), "-n", "-d", "display_errors=stderr", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def worker() -> Iterator[subprocess.Popen[bytes]]:
    proc = spawn(str(WORKER))
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(DEADLINE)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def until(client: ClientConnection, proc: subprocess.Popen[bytes], done: Callable[[Event], bool]) -> list[Event]:
    """Feed the worker's stdout to *client* until an event satisfies *done*; fail at the deadline or at EOF."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    events: list[Event] = []
    end = time.monotonic() + DEADLINE
    while not any(done(event) for event in events):
        left = end - time.monotonic()
        readable, _, _ = select.select([fd], [], [], max(left, 0))
        assert readable, f"the worker said nothing for {DEADLINE} s; events so far: {events}"
        data = os.read(fd, 65536)
        assert data, f"the worker closed its stdout; stderr: {proc.stderr.read() if proc.stderr else b''!r}"
        events += client.receive_data(data)
    return events


def send(proc: subprocess.Popen[bytes], data: bytes) -> None:
    assert proc.stdin is not None
    proc.stdin.write(data)
    proc.stdin.flush()


def request(client: ClientConnection, path: str, body: bytes = b"", method: str = "POST") -> bytes:
    context = encode_request_context(
        method=method,
        uri="http://worker.test" + path + "?q=1",
        headers=[(b"content-type", b"text/plain"), (b"x-many", b"1"), (b"X-Many", b"2")],
        remote_addr="127.0.0.1",
        raw_query="q=1",
        cookies={"sid": "s1"},
        attributes={"requestId": "r-7"},
    )
    return client.send_request(context, body)


def is_end(event: Event) -> bool:
    return isinstance(event, (ResponseEnd, JobError, WorkerStopping))


def test_life_of_a_php_worker(worker: subprocess.Popen[bytes]) -> None:
    """Handshake, two Set-Cookie, the context as PHP decodes it, a stream, an error, then stop: exit 0."""
    client = ClientConnection()
    send(worker, client.start())
    assert until(client, worker, lambda e: isinstance(e, WorkerReady)) == [WorkerReady(worker.pid)]

    body = os.urandom(300_000)
    send(worker, request(client, "/hello", body))
    assert until(client, worker, is_end) == [
        ResponseHead(200, ((b"Content-Type", b"text/plain"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"))),
        ResponseBody(b"hello POST " + hashlib.md5(body).hexdigest().encode()),
        ResponseEnd(),
    ]

    send(worker, request(client, "/echo", b"abc", method="PUT"))
    events = until(client, worker, is_end)
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

    send(worker, request(client, "/stream"))
    assert until(client, worker, is_end) == [
        ResponseHead(200, ((b"Content-Type", b"text/plain"),)),
        ResponseBody(b"one"),
        ResponseBody(b"two"),
        ResponseBody(b"three"),
        ResponseEnd(),
    ]

    send(worker, request(client, "/error"))
    assert until(client, worker, is_end) == [JobError("boom", response_started=False)]
    assert client.idle is True

    send(worker, client.stop())
    assert worker.wait(DEADLINE) == 0


def test_stopping_an_endless_stream(worker: subprocess.Popen[bytes]) -> None:
    """A PING answered with a PONG, then stop_stream(): PHP acknowledges the STOP and serves the next request."""
    client = ClientConnection()
    send(worker, client.start())
    until(client, worker, lambda e: isinstance(e, WorkerReady))
    send(worker, request(client, "/endless"))
    events = until(client, worker, lambda e: isinstance(e, Ping))
    # The head's frame and five more, the fifth with PING (the reads may hold more frames after it).
    assert events[: events.index(Ping()) + 1] == [
        ResponseHead(200, ((b"Content-Type", b"text/plain"),)),
        *[ResponseBody(b"tick")] * 6,
        Ping(),
    ]
    send(worker, client.pong() + client.stop_stream())
    events = until(client, worker, is_end)
    assert events[-1] == ResponseEnd(stopped=True)
    assert all(isinstance(e, (ResponseBody, Ping)) for e in events[:-1])
    send(worker, request(client, "/hello", b"x"))
    assert until(client, worker, is_end)[-1] == ResponseEnd()


def test_worker_that_asks_to_stop(worker: subprocess.Popen[bytes]) -> None:
    """A worker answering {"stop":true} gives WorkerStopping and exits; the request is left for another worker."""
    client = ClientConnection()
    send(worker, client.start())
    until(client, worker, lambda e: isinstance(e, WorkerReady))
    send(worker, request(client, "/stop"))
    assert until(client, worker, is_end) == [WorkerStopping()]
    assert worker.wait(DEADLINE) == 0


def test_missing_script_is_a_protocol_error_that_shows_php_s_words() -> None:
    """PHP on a missing script prints "Could not open input file" to stdout: a ProtocolError quoting it."""
    proc = spawn(str(PHP_DIR / "roadrunner" / "no-such-worker.php"))
    try:
        client = ClientConnection()
        client.start()  # not written: PHP may already be gone, and its stdin with it
        with pytest.raises(ProtocolError, match="Could not open input file"):
            until(client, proc, is_end)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=DEADLINE)
