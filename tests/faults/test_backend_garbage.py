"""A backend that answers garbage of every kind, and one that stops answering: clean statuses, one log line, fephp unharmed.

The backend is :class:`tests.support.fake_fpm.FakeFPM` on a real UNIX
socket: the shapes real php-fpm never produces.  Each shape is one test on a
fresh front; a last test mixes them all under concurrent load.
"""

from __future__ import annotations

import collections
import random

import pytest
import pytest_twisted
from twisted.logger import LogLevel

from tests.support.fake_fpm import SHAPES, FakeFPM

pytestmark = pytest.mark.faults

#: shape -> (the status the client gets, the error the log line names, or None for no error line).
EXPECTED = {
    "ok": (200, None),
    "garbage": (502, "BackendProtocolError"),
    "wrong-version": (502, "BackendProtocolError"),
    "record-type-only-a-web-server-sends": (502, "BackendProtocolError"),
    "output-for-another-request": (502, "BackendProtocolError"),
    "end-request-of-the-wrong-size": (502, "BackendProtocolError"),
    # The codec refuses the whole read that holds the stray record, good
    # END_REQUEST included: a 502 for an answer php-fpm would never give.
    "end-request-twice": (502, "BackendProtocolError"),
    "output-after-end-request": (502, "BackendProtocolError"),
    "record-cut-then-close": (502, "BackendClosed"),
    "close-at-once": (502, "BackendClosed"),
    "reset-at-once": (502, "BackendClosed"),
    "close-after-part-of-the-body": (200, "BackendClosed"),
    "padding-of-junk": (200, None),
    "unknown-type-record": (200, None),
    "one-byte-records": (200, None),
    "head-larger-than-64k": (502, "response head larger than 65536 bytes"),
    "head-line-without-colon": (502, "malformed header line b'NoColon'"),
    "control-byte-in-a-head": (502, "control character in the response head"),
    "head-that-never-ends": (502, "output ended inside the response head"),
    "no-output": (502, "no output from the script"),
    "status-out-of-range": (502, "invalid Status b'999 Nope'"),
    "stderr-flood-then-ok": (200, None),
    "overloaded": (503, "RequestRejected"),
    "unknown-role": (502, "RequestRejected"),
    "hang": (504, "ResponseTimeout"),
    "hang-after-the-head": (504, "ResponseTimeout"),
    "drip": (200, None),
}

RESPONSE_TIMEOUT = 1.0


def test_every_shape_has_an_expectation() -> None:
    """The table covers the fake backend's every shape."""
    assert sorted(EXPECTED) == sorted(SHAPES)


def request_for(shape: str) -> bytes:
    return b"GET /index.php?shape=%s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % shape.encode()


def error_lines(front, shape: str) -> list[str]:
    """The log's warn-and-above lines about this request (PHP's own stderr lines aside)."""
    return [
        line for line in front.log.lines(LogLevel.warn)
        if f"shape={shape}" in line and "PHP: " not in line
    ]


@pytest.mark.parametrize("shape", list(EXPECTED))
@pytest_twisted.ensureDeferred
async def test_a_backend_answer(tmp_path, served, shape):
    """Each shape gets its status quickly and at most one log line naming the cause and the URI; the next request is served."""
    fake = await FakeFPM.listen(tmp_path / "fake.sock")
    try:
        front = await served(fake.endpoint, pool={"response_timeout": RESPONSE_TIMEOUT})
        status, cause = EXPECTED[shape]
        got = await front.exchange(request_for(shape), timeout=RESPONSE_TIMEOUT + 4)
        assert not got.timed_out, got
        assert got.status == status, got.raw[:300]
        lines = error_lines(front, shape)
        if cause is None:
            assert lines == []
        else:
            assert len(lines) == 1 and cause in lines[0] and f"/index.php?shape={shape}" in lines[0], lines
        if shape == "close-after-part-of-the-body":
            # Part of the answer was out: the client sees it cut, never a whole-looking response.
            assert b"part of it" in got.raw and not got.raw.endswith(b"0\r\n\r\n") and got.closed
        await front.check_after(normal="/index.php?shape=ok")
    finally:
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_every_shape_mixed_under_load(tmp_path, served):
    """600 requests of random shapes, 8 at a time: each gets its status, nothing hangs or escapes, memory stays bounded."""
    fake = await FakeFPM.listen(tmp_path / "fake.sock")
    try:
        front = await served(fake.endpoint, pool={"response_timeout": RESPONSE_TIMEOUT, "size": 4})
        chooser = random.Random(10)
        # Not the stderr flood: its 64,000 log lines hold the reactor about a
        # second each time (one log event per line), which other requests
        # would see as PHP silent (504).
        mix = [s for s in EXPECTED if not s.startswith("hang") and s != "stderr-flood-then-ok"]
        shapes = [chooser.choice(mix) for _ in range(560)]
        shapes += ["hang", "hang-after-the-head"] * 20
        chooser.shuffle(shapes)
        outcomes = await front.load(
            [("GET", f"/index.php?shape={shape}", b"", shape) for shape in shapes], concurrency=8, timeout=RESPONSE_TIMEOUT + 9
        )
        wrong = collections.Counter(
            (o.tag, o.status, o.error) for o in outcomes if o.status != EXPECTED[o.tag][0] and o.tag != "close-after-part-of-the-body"
        )
        assert wrong == {}
        cut = [o for o in outcomes if o.tag == "close-after-part-of-the-body"]
        assert {(o.status, o.error) for o in cut} <= {(None, "IncompleteRead"), (None, "ConnectionResetError")}, {(o.status, o.error) for o in cut}
        await front.check_after(normal="/index.php?shape=ok", memory_mib=48.0)
    finally:
        await fake.stop()
