"""Request ids and the access log through real HTTP and a real php-fpm: kept or made, passed to PHP, returned, logged."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher

from fephp.server.config import config_from_dict
from fephp.web.site import MAX_REQUEST_ID
from tests.support.docroot import make_docroot
from tests.support.inprocess import InProcessFront, stopped_at_teardown

pytestmark = pytest.mark.php


@pytest.fixture
def make_front(tmp_path: Path, php_fpm):
    root = make_docroot(tmp_path)

    async def make(logging: dict[str, Any], fpm_socket: str | None = None) -> InProcessFront:
        config = config_from_dict(
            {
                "server": {"root": str(root)},
                "php": {"fpm_socket": fpm_socket or php_fpm.unix_endpoint, "worker_pool_size": 2},
                "logging": logging,
            },
            base_dir=str(tmp_path),
        )
        return await InProcessFront.configured(config).start()

    yield from stopped_at_teardown(make)


@pytest.fixture
def events():
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def _request_id(response: Any) -> str:
    (value,) = response.headers.getRawHeaders("x-request-id")
    return value.decode() if isinstance(value, bytes) else value


def _poll_lines(path: Path, count: int, within: float = 5.0) -> list[str]:
    deadline = time.monotonic() + within
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


@pytest_twisted.ensureDeferred
async def test_an_id_is_made_passed_to_php_returned_and_logged(make_front, tmp_path, events):
    """Without X-Request-Id, fephp makes one: PHP's HTTP_X_REQUEST_ID, the response header, the access log and PHP's stderr line all carry it."""
    log = tmp_path / "access.json"
    front = await make_front({"access_log": str(log), "access_log_format": "json"})
    response, body = await front.fetch("/env.php")
    rid = _request_id(response)
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert json.loads(body)["HTTP_X_REQUEST_ID"] == rid
    response, _ = await front.fetch("/stderr.php?tag=t1")
    stderr_rid = _request_id(response)
    assert stderr_rid != rid
    (line,) = [e for e in events if "to-stderr: t1" in e.get("php_stderr", "")]
    assert line["request_id"] == stderr_rid
    assert line["log_format"].startswith("[{request_id}]")
    logged = [json.loads(x) for x in await deferToThread(_poll_lines, log, 2)]
    assert [(e["uri"], e["request_id"]) for e in logged] == [("/env.php", rid), ("/stderr.php?tag=t1", stderr_rid)]


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("4bf92f35-77b3-4da6-a3ce-929d0e0e4736", True),
        ("trace:abc/DEF+1=", True),
        ("a" * MAX_REQUEST_ID, True),
        ("a" * (MAX_REQUEST_ID + 1), False),
        ("two words", False),
        ('quote"d', False),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_well_formed_id_is_kept_any_other_replaced(make_front, given, kept):
    """A client's X-Request-Id of the allowed length and characters reaches PHP and comes back as sent; any other is replaced by ours."""
    front = await make_front({})
    response, body = await front.fetch("/env.php", headers={"X-Request-Id": given})
    rid = _request_id(response)
    assert (rid == given) is kept
    assert json.loads(body)["HTTP_X_REQUEST_ID"] == rid
    if not kept:
        assert re.fullmatch(r"[0-9a-f]{32}", rid)


@pytest_twisted.ensureDeferred
async def test_json_access_log_fields_and_what_it_never_holds(make_front, tmp_path):
    """A JSON line has the request's facts and times, the secret query value redacted, and no Cookie or Authorization."""
    log = tmp_path / "access.json"
    front = await make_front({"access_log": str(log), "access_log_format": "json", "secret_query": ["token"]})
    response, body = await front.fetch(
        "/status.php?code=201&token=s3cret",
        headers={"Cookie": "session=c00kie", "Authorization": "Basic dTpzM2NyZXQ=", "Referer": "http://r.test/",
                 "User-Agent": "probe/1"},
    )
    assert response.code == 201
    # An event, not a window: the line comes with no request after it (the
    # log's own flush timer), within _poll_lines' bound; the timer's period
    # belongs to a unit test on a Clock.
    (line,) = await deferToThread(_poll_lines, log, 1)
    assert "c00kie" not in line and "dTpzM2NyZXQ" not in line and "s3cret" not in line
    entry = json.loads(line)
    assert entry["uri"] == "/status.php?code=201&token=REDACTED"
    assert (entry["method"], entry["status"], entry["bytes"], entry["protocol"]) == ("GET", 201, len(body), "HTTP/1.1")
    assert (entry["remote"], entry["referer"], entry["user_agent"]) == ("127.0.0.1", "http://r.test/", "probe/1")
    assert entry["backend"] == front.backend.name
    assert entry["request_id"] == _request_id(response)
    assert 0 < entry["php_ms"] <= entry["duration_ms"] < 10_000
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])


@pytest_twisted.ensureDeferred
async def test_combined_access_log_with_the_duration(make_front, tmp_path):
    """A combined line ends with the request id in quotes and, when asked, the total time in ms; a static file has no PHP time."""
    log = tmp_path / "access.log"
    front = await make_front({"access_log": str(log), "access_log_duration": True})
    response, _ = await front.fetch("/static/hello.txt", headers={"User-Agent": "probe/1"})
    (line,) = await deferToThread(_poll_lines, log, 1)
    rid = _request_id(response)
    match = re.fullmatch(
        r'"127\.0\.0\.1" - - \[[^]]+\] "GET /static/hello\.txt HTTP/1\.1" 200 11 "-" "probe/1" "(\w+)" (\d+\.\d{3})', line
    )
    assert match is not None, line
    assert match[1] == rid and 0 < float(match[2]) < 10_000


@pytest_twisted.ensureDeferred
async def test_an_error_page_keeps_the_id_and_the_log_line_names_it(make_front, tmp_path, events):
    """With php-fpm unreachable the 502 page carries the request's id, and the error logged about it names the id."""
    front = await make_front({}, fpm_socket=f"unix:path={tmp_path / 'nothing.sock'}")
    response, _ = await front.fetch("/env.php", headers={"X-Request-Id": "err-1"})
    assert response.code == 502
    assert _request_id(response) == "err-1"
    assert [e for e in events if e.get("request_id") == "err-1" and e.get("status") == 502]
