"""fephp's Symfony Runtime (php/fephp-symfony-runtime.php) in PHP CLI: examples/symfony-worker under fephp.roadrunner.

A Symfony HttpKernel built once (Debian's php-symfony-http-kernel and
php-symfony-runtime), served over blocking pipes (tests/support/worker_pipes.py).
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
    HeaderPairs,
    JobError,
    ResponseBody,
    ResponseEnd,
    ResponseHead,
    UploadedFile,
    UploadTree,
)
from tests.support import REPO
from tests.support.worker_pipes import PipeWorker, context, ready_worker, require_php_files

pytestmark = pytest.mark.php

WORKER = REPO / "examples" / "symfony-worker" / "worker.php"
#: HttpFoundation's ResponseHeaderBag adds these two to every response.
NO_CACHE = (b"Cache-Control", b"no-cache, private")
JSON_TYPE = (b"Content-Type", b"application/json")




@pytest.fixture
def worker() -> Iterator[PipeWorker]:
    require_php_files(["Symfony/Component/Runtime/autoload.php", "Symfony/Component/HttpKernel/autoload.php"], "Symfony's runtime and HttpKernel (php-symfony-runtime php-symfony-http-kernel)")
    yield from ready_worker(WORKER)




def without_date(events: list[Event]) -> tuple[int, HeaderPairs, list[Event]]:
    """The head's status and headers but Date (the time of the request), and the events after the head."""
    head = events[0]
    assert isinstance(head, ResponseHead), events
    dates = [value for name, value in head.headers if name == b"Date"]
    assert len(dates) == 1 and dates[0].endswith(b" GMT"), head.headers
    return head.status, tuple(pair for pair in head.headers if pair[0] != b"Date"), events[1:]


def json_of(events: list[Event]) -> object:
    status, headers, rest = without_date(events)
    assert (status, headers) == (200, (NO_CACHE, JSON_TYPE)) and rest[1:] == [ResponseEnd()], events
    assert isinstance(rest[0], ResponseBody)
    return json.loads(rest[0].data)


def test_get_reaches_the_kernel_as_a_request(worker: PipeWorker) -> None:
    """Query, cookies, client IP, host and the request id attribute reach the HttpFoundation Request."""
    events = worker.exchange(context("/hello", query="a=1&b[]=x", cookies={"sid": "abc"}))
    assert json_of(events) == {
        "query": {"a": "1", "b": ["x"]},
        "cookies": {"sid": "abc"},
        "clientIp": "192.0.2.7",
        "requestId": "req-42",
        "host": "app.test:8080",
        "handled": 1,
    }


def test_form_and_uploads(worker: PipeWorker, tmp_path: Path) -> None:
    """A parsed form and its uploads arrive as $request->request and UploadedFile objects."""
    data = os.urandom(50_000)
    (tmp_path / "upload").write_bytes(data)
    upload = UploadedFile("report.pdf", "application/pdf", 50_000, str(tmp_path / "upload"))
    uploads: dict[str, UploadTree] = {"doc": upload}
    events = worker.exchange(
        context("/form", method="POST", uploads=uploads, parsed=True), json.dumps({"title": "Q3"}).encode()
    )
    assert json_of(events) == {
        "form": {"title": "Q3"},
        "files": {"doc": {"name": "report.pdf", "type": "application/pdf", "size": 50_000,
                          "md5": hashlib.md5(data).hexdigest()}},
    }


def test_urlencoded_form(worker: PipeWorker) -> None:
    """A urlencoded POST body is parsed into $request->request."""
    form_type = (b"content-type", b"application/x-www-form-urlencoded")
    events = worker.exchange(context("/form", method="POST", headers=(form_type,)), b"a=1&b=two+words")
    assert json_of(events) == {"form": {"a": "1", "b": "two words"}, "files": []}


def test_cookies_become_several_set_cookie_headers(worker: PipeWorker) -> None:
    """Two cookies set on the response are two Set-Cookie values."""
    status, headers, rest = without_date(worker.exchange(context("/visit", cookies={"visits": "2"})))
    assert (status, headers, rest) == (
        200,
        (
            (b"Content-Type", b"text/plain"),
            NO_CACHE,
            (b"Set-Cookie", b"visits=3; path=/; httponly"),
            (b"Set-Cookie", b"theme=dark; path=/; samesite=lax"),
        ),
        [ResponseBody(b"visit 3"), ResponseEnd()],
    )


def test_streamed_response_arrives_in_several_frames(worker: PipeWorker) -> None:
    """Each echo of a StreamedResponse's callback is a frame of its own."""
    status, headers, rest = without_date(worker.exchange(context("/stream")))
    assert (status, headers, rest) == (
        200,
        ((b"Content-Type", b"text/plain"), NO_CACHE),
        [ResponseBody(b"one\n"), ResponseBody(b"two\n"), ResponseBody(b"three\n"), ResponseEnd()],
    )


def test_exception_is_an_error_frame_and_the_kernel_goes_on(worker: PipeWorker) -> None:
    """An exception out of the kernel is an ERROR frame; a 404 is the kernel's; the same kernel serves on."""
    assert worker.exchange(context("/fail")) == [JobError("RuntimeException: deliberate failure", False)]
    status, headers, rest = without_date(worker.exchange(context("/nowhere")))
    assert (status, headers, rest) == (
        404,
        (NO_CACHE, JSON_TYPE),
        [ResponseBody(b'{"error":"no route for \\/nowhere"}'), ResponseEnd()],
    )
    assert json_of(worker.exchange(context("/hello"))) == {
        "query": [], "cookies": [], "clientIp": "192.0.2.7", "requestId": "req-42", "host": "app.test:8080",
        "handled": 3,
    }
    worker.send(worker.client.stop())
    status_code, stderr = worker.wait_exit()
    assert status_code == 0
    assert stderr.startswith(b"RuntimeException: deliberate failure in ")


def test_stop_exits_zero(worker: PipeWorker) -> None:
    """The stop control frame ends the runner: the script exits 0, nothing on stderr."""
    worker.send(worker.client.stop())
    assert worker.wait_exit() == (0, b"")
