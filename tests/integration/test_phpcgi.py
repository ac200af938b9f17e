"""PHPCGIBackend: on a fake reactor (timeouts, pause, kill), then against the real php-cgi (environment, body, output, exit code, cancel)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError

from fephp.backend.errors import ConnectError, ResponseTimeout
from fephp.backend.phpcgi import PHPCGIBackend
from fephp.cgi.response import HeadParser
from fephp.process.binaries import find_php
from fephp.testing import RecordingSink
from tests.support import PHP_DIR
from tests.support.processes import alive, require_binary

SCRIPTS = PHP_DIR / "cgiprocess"
#: Keys PHP adds to $_SERVER by itself, whatever the environment.
PHP_OWN = {"PHP_SELF", "REQUEST_TIME", "REQUEST_TIME_FLOAT"}
#: Settings that make $_SERVER and getenv() comparable with the params, php.ini or not.
TEST_INI = {"register_argc_argv": "0", "variables_order": "EGPCS", "memory_limit": "77M"}


def params(script: str, *, method: str = "GET", query: str = "", body_length: Optional[int] = None) -> list[tuple[bytes, bytes]]:
    """The CGI params php-cgi needs to run *script* (from tests/php/cgiprocess)."""
    path = str(SCRIPTS / script)
    pairs = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REDIRECT_STATUS": "200",
        "REQUEST_METHOD": method,
        "SCRIPT_FILENAME": path,
        "SCRIPT_NAME": "/" + script,
        "REQUEST_URI": "/" + script + ("?" + query if query else ""),
        "QUERY_STRING": query,
        "DOCUMENT_ROOT": str(SCRIPTS),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "fephp/test",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
    }
    if body_length is not None:
        pairs["CONTENT_LENGTH"] = str(body_length)
        pairs["CONTENT_TYPE"] = "application/octet-stream"
    return [(k.encode(), v.encode()) for k, v in pairs.items()]


@pytest.fixture
def backend() -> Any:
    from twisted.internet import reactor

    binary = require_binary(find_php("php-cgi"), "php-cgi")
    cgi = PHPCGIBackend(reactor, binary, ini=TEST_INI, timeout=20.0)
    yield cgi
    cgi.close()


def split(output: bytes) -> tuple[Any, bytes]:
    parsed = HeadParser().feed(output)
    assert parsed is not None, output
    return parsed


@pytest.mark.php
@pytest_twisted.inlineCallbacks
def test_headers_and_body(backend: PHPCGIBackend) -> Any:
    """A GET gets the script's Status and header, then exactly its body, and exit code 0."""
    sink = RecordingSink()
    status = yield backend.request(params("hello.php", query="name=ada"), None, sink)
    head, body = split(sink.stdout)
    assert status == 0
    assert (head.status, head.reason) == (201, b"Created")
    assert (b"X-Greeting", b"hello") in head.headers
    assert body == b"hello ada\n"
    assert sink.producer is not None
    assert backend.running == 0


@pytest.mark.php
@pytest_twisted.inlineCallbacks
def test_post_body_reaches_php(backend: PHPCGIBackend) -> Any:
    """A 3 MiB POST body, given as bytes and as a file, reaches php://input whole (same length and sha256)."""
    data = os.urandom(3 * 1024 * 1024 + 7)
    expected = f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode()
    for body in (data, _file(data)):
        sink = RecordingSink()
        status = yield backend.request(params("echo_hash.php", method="POST", body_length=len(data)), body, sink)
        assert status == 0
        assert split(sink.stdout)[1] == expected


def _file(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


@pytest.mark.php
@pytest_twisted.inlineCallbacks
def test_environment_is_exactly_the_params(backend: PHPCGIBackend, monkeypatch: pytest.MonkeyPatch) -> Any:
    """$_SERVER (less PHP's own keys) and getenv() equal the params exactly; fephp's environment does not leak; ini applies."""
    monkeypatch.setenv("FEPHP_LEAK_MARKER", "secret")
    pairs = params("environment.php", query="a=1")
    sink = RecordingSink()
    status = yield backend.request(pairs, None, sink)
    assert status == 0
    seen = json.loads(split(sink.stdout)[1])
    ours = {k.decode(): v.decode() for k, v in pairs}
    assert {k: str(v) for k, v in seen["server"].items() if k not in PHP_OWN} == ours
    assert seen["env"] == ours
    assert "FEPHP_LEAK_MARKER" not in seen["server"]
    assert seen["memory_limit"] == "77M"


@pytest.mark.php
@pytest_twisted.inlineCallbacks
def test_stderr_and_exit_code(backend: PHPCGIBackend) -> Any:
    """What the script writes to STDERR reaches stderr_received, and exit(3) fires the Deferred with 3."""
    sink = RecordingSink()
    status = yield backend.request(params("stderr_exit.php"), None, sink)
    assert status == 3
    assert sink.stderr == b"a line for the log\n"
    assert split(sink.stdout)[1] == b"some output"


@pytest.mark.php
@pytest_twisted.inlineCallbacks
def test_cancel_kills_the_process(backend: PHPCGIBackend) -> Any:
    """Cancelling a running request fails it with CancelledError and php-cgi is gone once close() fires."""
    sink = RecordingSink()
    d = backend.request(params("pid_then_sleep.php"), None, sink)
    yield sink.wait_for(rb"pid=\d+\n")
    _, body = split(sink.stdout)
    pid = int(body.split(b"=")[1])
    assert alive(pid)
    d.cancel()
    with pytest.raises(CancelledError):
        yield d
    yield backend.close()
    assert backend.running == 0
    assert not alive(pid)


@pytest.mark.php
@pytest_twisted.inlineCallbacks
def test_silence_times_out_and_kills() -> Any:
    """php-cgi silent for longer than the timeout fails the request with ResponseTimeout (504) and is killed."""
    from twisted.internet import reactor

    backend = PHPCGIBackend(reactor, require_binary(find_php("php-cgi"), "php-cgi"), ini=TEST_INI, timeout=1.0)
    sink = RecordingSink()
    d = backend.request(params("pid_then_sleep.php"), None, sink)
    with pytest.raises(ResponseTimeout) as raised:
        yield d
    pid = int(split(sink.stdout)[1].split(b"=")[1])
    assert raised.value.http_status == 504
    assert not alive(pid)
    assert b"too late" not in sink.stdout


@pytest.mark.php
@pytest_twisted.inlineCallbacks
def test_missing_binary_is_a_connect_error(tmp_path: Path) -> Any:
    """A php-cgi path that does not exist fails the request with ConnectError (502) and starts nothing."""
    from twisted.internet import reactor

    backend = PHPCGIBackend(reactor, str(tmp_path / "no-php-cgi"), timeout=5)
    sink = RecordingSink()
    with pytest.raises(ConnectError) as raised:
        yield backend.request(params("hello.php"), None, sink)
    assert raised.value.http_status == 502
    assert (sink.producer, backend.running) == (None, 0)


# -- on a fake reactor: the process is a stand-in the test drives by hand ----------


