"""fephp's PHP worker library (php/fephp-worker.php) in real PHP CLI: examples/worker/app.php under fephp.roadrunner.

The example app runs as `php examples/worker/app.php`, as the worker
backend will start it, over blocking pipes (tests/support/worker_pipes.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

import pytest

from fephp.roadrunner import (
    Event,
    JobError,
    Ping,
    ResponseBody,
    ResponseEnd,
    ResponseHead,
    UploadedFile,
    UploadTree,
)
from tests.support import REPO
from tests.support.worker_pipes import PipeWorker, context, ready_worker, require_php_files

pytestmark = pytest.mark.php

APP = REPO / "examples" / "worker" / "app.php"
MIB = 1 << 20
JSON_HEAD = ResponseHead(200, ((b"Content-Type", b"application/json"),))


def require_nyholm() -> None:
    """Skip (fail under CI) without Debian's php-nyholm-psr7, which the library finds on PHP's include_path."""
    require_php_files(["Nyholm/Psr7/autoload.php"], "nyholm/psr7 (php-nyholm-psr7)")


@pytest.fixture
def worker() -> Iterator[PipeWorker]:
    require_nyholm()
    yield from ready_worker(APP)




def json_body(events: list[Event]) -> object:
    """The JSON of a one-frame answer with the JSON head."""
    assert events[0] == JSON_HEAD and events[2:] == [ResponseEnd()], events
    assert isinstance(events[1], ResponseBody)
    return json.loads(events[1].data)


def test_get_with_query_cookies_and_attributes(worker: PipeWorker) -> None:
    """A GET's query, cookies, client address, request id, headers and protocol reach the app's PSR-7 request."""
    events = worker.exchange(
        context(
            "/hello",
            query="name=J%C3%BCrgen&tags[]=a&tags[]=b",
            headers=((b"accept", b"text/html"), (b"Accept", b"application/json"), (b"cookie", b"sid=abc; lang=fr")),
            cookies={"sid": "abc", "lang": "fr"},
        )
    )
    assert json_body(events) == {
        "query": {"name": "Jürgen", "tags": ["a", "b"]},
        "cookies": {"sid": "abc", "lang": "fr"},
        "remoteAddr": "192.0.2.7",
        "requestUri": "/hello?name=J%C3%BCrgen&tags[]=a&tags[]=b",
        "requestId": "req-42",
        "accept": "text/html, application/json",
        "host": "app.test",
        "protocol": "1.1",
        "served": 1,
        "streamsStopped": 0,
    }


def test_urlencoded_form_post_is_parsed_by_the_library(worker: PipeWorker) -> None:
    """A urlencoded POST body the front did not parse becomes the parsed body, as PHP's $_POST would."""
    form_type = b"application/x-www-form-urlencoded; charset=utf-8"
    events = worker.exchange(
        context("/form", method="POST", headers=((b"content-type", form_type),)),
        b"title=Hello+world&n[]=1&n[]=2&empty=",
    )
    assert json_body(events) == {"form": {"title": "Hello world", "n": ["1", "2"], "empty": ""}, "files": []}


def test_parsed_form_with_uploads(worker: PipeWorker, tmp_path: Path) -> None:
    """A form the front parsed (JSON body) and its uploads tree arrive as the parsed body and UploadedFileInterface."""
    photo, note = os.urandom(100_000), b"plain text\n"
    (tmp_path / "photo").write_bytes(photo)
    (tmp_path / "note").write_bytes(note)
    uploads: dict[str, UploadTree] = {
        "avatar": UploadedFile("me.jpg", "image/jpeg", len(photo), str(tmp_path / "photo")),
        "docs": [
            UploadedFile("note.txt", "text/plain", len(note), str(tmp_path / "note")),
            UploadedFile("big.iso", "application/octet-stream", 0, "", error=1),
        ],
    }
    body = json.dumps({"title": "Holiday", "tags": ["sea", "sun"]}).encode()
    events = worker.exchange(
        context("/form", method="POST", headers=((b"content-type", b"multipart/form-data; boundary=x"),),
                uploads=uploads, parsed=True),
        body,
    )
    assert json_body(events) == {
        "form": {"title": "Holiday", "tags": ["sea", "sun"]},
        "files": {
            "avatar": {"name": "me.jpg", "type": "image/jpeg", "size": 100_000, "error": 0,
                       "md5": hashlib.md5(photo).hexdigest()},
            "docs": [
                {"name": "note.txt", "type": "text/plain", "size": 11, "error": 0,
                 "md5": hashlib.md5(note).hexdigest()},
                {"name": "big.iso", "type": "application/octet-stream", "size": 0, "error": 1, "md5": None},
            ],
        },
    }


def test_five_mib_request_body_by_hash(worker: PipeWorker) -> None:
    """A 5 MiB request body reaches the app whole and unchanged (binary-safe framing)."""
    body = os.urandom(5 * MIB)
    events = worker.exchange(context("/hash", method="POST"), body)
    assert json_body(events) == {"length": 5 * MIB, "sha256": hashlib.sha256(body).hexdigest()}


def test_large_response_body_goes_in_several_frames(worker: PipeWorker) -> None:
    """A body over the 1 MiB chunk size leaves in frames of 1 MiB with STREAM, then an empty last frame."""
    size = 3 * MIB + 5
    expected = (b"0123456789" * (size // 10 + 1))[:size]
    events = worker.exchange(context("/big", query=f"size={size}"))
    assert events == [
        ResponseHead(200, ((b"Content-Type", b"application/octet-stream"),)),
        ResponseBody(expected[:MIB]),
        ResponseBody(expected[MIB : 2 * MIB]),
        ResponseBody(expected[2 * MIB : 3 * MIB]),
        ResponseBody(expected[3 * MIB :]),
        ResponseEnd(),
    ]


def test_one_mib_response_body_goes_in_one_frame(worker: PipeWorker) -> None:
    """A body of exactly the chunk size is one frame: the threshold is inclusive."""
    events = worker.exchange(context("/big", query=f"size={MIB}"))
    assert events == [
        ResponseHead(200, ((b"Content-Type", b"application/octet-stream"),)),
        ResponseBody((b"0123456789" * (MIB // 10 + 1))[:MIB]),
        ResponseEnd(),
    ]


def test_several_set_cookie_headers(worker: PipeWorker) -> None:
    """Two Set-Cookie headers stay two values of one name, in order, and the request's cookie was read."""
    events = worker.exchange(context("/visit", cookies={"visits": "4"}))
    assert events == [
        ResponseHead(
            200,
            (
                (b"Content-Type", b"text/plain"),
                (b"Set-Cookie", b"visits=5; Path=/; HttpOnly"),
                (b"Set-Cookie", b"theme=dark; Path=/; SameSite=Lax"),
            ),
        ),
        ResponseBody(b"visit 5"),
        ResponseEnd(),
    ]


def test_streamed_response_arrives_in_several_frames(worker: PipeWorker) -> None:
    """Each piece a generator yields is a frame of its own, with STREAM on all but the last."""
    events = worker.exchange(context("/stream"))
    assert events == [
        ResponseHead(200, ((b"Content-Type", b"text/plain"),)),
        ResponseBody(b"one\n"),
        ResponseBody(b"two\n"),
        ResponseBody(b"three\n"),
        ResponseEnd(),
    ]


def test_streamed_piece_over_the_chunk_size_is_cut(worker: PipeWorker) -> None:
    """A piece of 2 MiB + 1 yielded at once leaves in frames of at most 1 MiB."""
    events = worker.exchange(context("/bigstream"))
    assert events == [
        ResponseHead(200, ((b"Content-Type", b"text/plain"),)),
        ResponseBody(b"x" * MIB),
        ResponseBody(b"x" * MIB),
        ResponseBody(b"x"),
        ResponseEnd(),
    ]


def test_front_stops_an_endless_stream(worker: PipeWorker) -> None:
    """A STOP in the middle of a stream ends it with an acknowledgement, and the worker serves the next request."""
    worker.send(worker.client.send_request(context("/endless")))
    first = worker.until(lambda e: isinstance(e, ResponseBody))
    assert first[:2] == [ResponseHead(200, ((b"Content-Type", b"text/plain"),)), ResponseBody(b"tick\n")]
    worker.send(worker.client.stop_stream())
    rest = worker.until(lambda e: isinstance(e, ResponseEnd))
    assert rest[-1] == ResponseEnd(stopped=True)
    assert set(rest[:-1]) <= {ResponseBody(b"tick\n")} and Ping() not in first + rest
    # The client drops what follows its STOP either way: the app says whether its generator was cut short.
    hello = json_body(worker.exchange(context("/hello")))
    assert isinstance(hello, dict) and (hello["served"], hello["streamsStopped"]) == (1, 1)


def test_exception_gives_an_error_frame_and_the_worker_goes_on(worker: PipeWorker) -> None:
    """An exception in the app is an ERROR frame with its class and message; the next request is served."""
    assert worker.exchange(context("/fail")) == [JobError("RuntimeException: deliberate failure", False)]
    assert worker.client.idle is True
    assert json_body(worker.exchange(context("/hello")))["served"] == 2  # type: ignore[index]
    worker.send(worker.client.stop())
    status, stderr = worker.wait_exit()
    assert status == 0
    assert b"RuntimeException: deliberate failure in " in stderr


def test_echo_in_the_app_goes_to_stderr_not_among_the_frames(worker: PipeWorker) -> None:
    """What the app echoes is moved to stderr: the frames stay intact."""
    assert worker.exchange(context("/noisy")) == [ResponseHead(200, ()), ResponseBody(b"quiet"), ResponseEnd()]
    worker.send(worker.client.stop())
    assert worker.wait_exit() == (0, b"stray output from the app\n")


def test_stop_exits_zero(worker: PipeWorker) -> None:
    """The stop control frame ends the loop: the script exits 0 and writes nothing to stderr."""
    worker.send(worker.client.stop())
    assert worker.wait_exit() == (0, b"")


def test_closed_stdin_exits_zero(worker: PipeWorker) -> None:
    """The front closing the worker's stdin (it died) ends the loop like stop."""
    assert worker.proc.stdin is not None
    worker.proc.stdin.close()
    assert worker.wait_exit() == (0, b"")


def test_corrupted_frame_is_refused() -> None:
    """A request frame whose header CRC does not match makes the worker exit 255 with the reason on stderr."""
    require_nyholm()
    w = PipeWorker(APP)
    try:
        w.handshake()
        frame = bytearray(w.client.send_request(context("/hello")))
        frame[6] ^= 0xFF
        w.send(bytes(frame))
        status, stderr = w.wait_exit()
        assert status == 255
        assert b"Fephp\\Worker\\ProtocolError: frame header CRC mismatch" in stderr
    finally:
        w.close()


def test_missing_nyholm_is_a_clear_error() -> None:
    """Without nyholm/psr7 on the include_path the worker exits 1 saying which package to install."""
    w = PipeWorker(APP, ["-d", "include_path=."])
    status, stderr = w.wait_exit()
    assert status == 1
    assert b"nyholm/psr7 not found" in stderr and b"apt-get install php-nyholm-psr7" in stderr
