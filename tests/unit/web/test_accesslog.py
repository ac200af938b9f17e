"""The access log's lines, its redaction of secret query values, and its writes within a second."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from fephp.web.accesslog import (
    FLUSH_INTERVAL,
    AccessLog,
    LoggedRequest,
    combined_line,
    json_line,
    logged_request,
    redact_query,
)
from fephp.web.exchange import Address

ENTRY = LoggedRequest(
    time=1796158112.25,
    remote="203.0.113.7",
    method=b"GET",
    uri=b"/a b\"c?x=1",
    protocol=b"HTTP/1.1",
    status=200,
    bytes_sent=13,
    duration=0.0123456,
    php_duration=0.01,
    backend="managed php-fpm",
    request_id=b"abc-123",
    referer=b"https://example.test/",
    user_agent=b"curl/\xff",
)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (b"/reset?token=s3cret&next=/", b"/reset?token=REDACTED&next=/"),
        (b"/a?x=1&password=p&password=q", b"/a?x=1&password=REDACTED&password=REDACTED"),
        (b"/a?token", b"/a?token"),  # no value to hide
        (b"/a?tokens=1", b"/a?tokens=1"),  # another name
        (b"/token=1", b"/token=1"),  # not a query
    ],
)
def test_secret_query_values_are_redacted(uri: bytes, expected: bytes) -> None:
    """Only the values of the named parameters are replaced, the rest of the URI stays as received."""
    assert redact_query(uri, frozenset({b"token", b"password"})) == expected


def test_combined_line_is_twisteds_with_the_request_id_and_duration() -> None:
    """Combined Log Format (the address quoted, as Twisted writes it), the request id in quotes, then the ms when asked."""
    assert combined_line(ENTRY) == (
        '"203.0.113.7" - - [01/Dec/2026:20:48:32 +0000] "GET /a b\\"c?x=1 HTTP/1.1" 200 13'
        ' "https://example.test/" "curl/\\xff" "abc-123"\n'
    )
    assert combined_line(ENTRY, duration=True).endswith('"abc-123" 12.346\n')


def test_json_line_has_every_field() -> None:
    """One object per line: time in UTC with ms, the facts, times in ms, the request id."""
    line = json_line(ENTRY)
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert json.loads(line) == {
        "time": "2026-12-01T20:48:32.250Z",
        "remote": "203.0.113.7",
        "method": "GET",
        "uri": '/a b"c?x=1',
        "protocol": "HTTP/1.1",
        "status": 200,
        "bytes": 13,
        "duration_ms": 12.346,
        "php_ms": 10.0,
        "backend": "managed php-fpm",
        "request_id": "abc-123",
        "referer": "https://example.test/",
        "user_agent": "curl/\\xff",
    }


def test_lines_reach_the_file_within_the_flush_interval(tmp_path: Path) -> None:
    """A line waits in memory at most FLUSH_INTERVAL seconds, however few follow it."""
    clock = Clock()
    path = tmp_path / "access.log"
    log = AccessLog(str(path), clock.callLater)
    log.write("one\n")
    log.write("two\n")
    assert path.read_text() == ""
    clock.advance(FLUSH_INTERVAL)
    assert path.read_text() == "one\ntwo\n"
    assert clock.getDelayedCalls() == []  # nothing scheduled while nothing waits
    log.close()


def test_a_full_buffer_is_written_at_once(tmp_path: Path) -> None:
    """Past max_buffer bytes the lines are written without waiting for the timer."""
    clock = Clock()
    path = tmp_path / "access.log"
    log = AccessLog(str(path), clock.callLater, max_buffer=10)
    log.write("12345\n")
    log.write("67890\n")
    assert path.read_text() == "12345\n67890\n"
    log.close()


def test_reopen_starts_a_new_file_where_logrotate_moved_the_old(tmp_path: Path) -> None:
    """Lines before the reopen end in the moved file, lines after it in a new file at the path."""
    clock = Clock()
    path = tmp_path / "access.log"
    log = AccessLog(str(path), clock.callLater)
    log.write("before\n")
    path.rename(tmp_path / "access.log.1")
    log.reopen()
    log.write("after\n")
    log.close()
    assert (tmp_path / "access.log.1").read_text() == "before\n"
    assert path.read_text() == "after\n"


def test_close_writes_the_rest_and_drops_later_lines(tmp_path: Path) -> None:
    """Closing writes what is held; a line after that goes nowhere and schedules nothing."""
    clock = Clock()
    path = tmp_path / "access.log"
    log = AccessLog(str(path), clock.callLater)
    log.write("last\n")
    log.close()
    log.write("late\n")
    assert path.read_text() == "last\n"
    assert clock.getDelayedCalls() == []


class _Finished:
    """The members of a finished Exchange that the access log reads."""

    method = b"POST"
    target = b"/login.php?user=a&token=s3cret"
    version = b"HTTP/1.1"
    status = 302
    bytes_sent = 0
    started_at = 100.0
    php_started_at: object = 100.25
    php_ended_at: object = 100.75
    backend_name: object = "pool"
    request_id = b"rid-1"
    client = Address("unix:", 0)
    headers = [(b"user-agent", b"first"), (b"referer", b"/r"), (b"user-agent", b"second"), (b"cookie", b"a=1")]


def test_logged_request_from_an_exchange() -> None:
    """An exchange's line: the secret query value redacted, the first User-Agent, "-" for a UNIX-socket client, PHP's time."""
    entry = logged_request(_Finished(), 101.5, frozenset((b"token",)))
    assert (entry.remote, entry.method, entry.uri, entry.protocol, entry.status, entry.bytes_sent) == (
        "-", b"POST", b"/login.php?user=a&token=REDACTED", b"HTTP/1.1", 302, 0
    )
    assert (entry.duration, entry.php_duration, entry.backend, entry.request_id, entry.referer, entry.user_agent) == (
        1.5, 0.5, "pool", b"rid-1", b"/r", b"first"
    )


def test_logged_request_without_php() -> None:
    """No PHP marks: no PHP duration and no backend."""
    finished = _Finished()
    finished.php_started_at = finished.php_ended_at = finished.backend_name = None
    entry = logged_request(finished, 100.5, frozenset())
    assert (entry.php_duration, entry.backend, entry.uri) == (None, None, b"/login.php?user=a&token=s3cret")
