"""HTTP/2 over TLS (ALPN) through real php-fpm, with curl --http2, h2load and an h2 client of the tests' own, on both TLS engines."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from fephp.web.errors import error_page
from fephp.web.http2 import STREAM_BUFFER, STREAM_SPILL
from tests.support.docroot import make_docroot
from tests.support.h2client import H2Client
from tests.support.inprocess import InProcessFront, pool, stopped_at_teardown
from tests.support.processes import require_binary
from tests.support.tls import self_signed_pem

pytestmark = pytest.mark.php


def _streams(front: InProcessFront) -> list[Any]:
    """The HTTP/2 streams open on the site's connections now."""
    found = []
    for channel in front.site._channels:
        h2 = channel._h2
        if h2 is not None and hasattr(h2, "_streams"):
            found += h2._streams.values()
    return found


@pytest.fixture(params=["pyopenssl", "stdlib"])
def tls_front(php_fpm, tmp_path: Path, request: pytest.FixtureRequest):
    """A maker of fronts on an ssl: listener, each test run with Twisted's TLS and with the standard library's."""
    root = make_docroot(tmp_path)
    pem = self_signed_pem(tmp_path)

    async def make(**options: Any) -> InProcessFront:
        front = InProcessFront.php(root, pool(php_fpm.unix_endpoint), router={"deny": ("/data/",)}, **options)
        await front.start_tls(pem, request.param)
        return front

    yield from stopped_at_teardown(make)


def _curl(*args: str) -> subprocess.CompletedProcess:
    curl = require_binary("/usr/bin/curl" if Path("/usr/bin/curl").exists() else None, "curl")
    return subprocess.run([curl, "-sk", "--max-time", "30", *args], capture_output=True, timeout=60)


async def in_thread(function: Any, *args: Any) -> Any:
    return await deferToThread(function, *args)


# -- negotiation --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_curl_gets_http2_for_php_and_static(tls_front):
    """curl --http2 negotiates h2 over ssl: and gets PHP's answer and a static file, both as HTTP/2."""
    front = await tls_front()
    base = f"https://127.0.0.1:{front.port}"
    out = await in_thread(_curl, "--http2", "-w", "\\n%{http_version} %{http_code}", base + "/env.php?x=1")
    body, _, line = out.stdout.rpartition(b"\n")
    assert line == b"2 200"
    env = json.loads(body)
    assert (env["SERVER_PROTOCOL"], env["HTTPS"], env["REQUEST_SCHEME"]) == ("HTTP/2.0", "on", "https")
    assert (env["HTTP_HOST"], env["QUERY_STRING"], env["REQUEST_URI"]) == (f"127.0.0.1:{front.port}", "x=1", "/env.php?x=1")
    out = await in_thread(_curl, "--http2", "-w", "%{http_version} %{http_code}", base + "/static/hello.txt")
    assert out.stdout == b"plain text\n2 200"


@pytest.mark.parametrize("h1", [False, True], ids=["h2", "https1.1"])
@pytest_twisted.ensureDeferred
async def test_h2load_gets_every_answer(tls_front, h1):
    """h2load (4 connections; 10 streams each over h2, or keep-alive HTTP/1.1 over TLS) gets all of 400 requests for PHP answered 200."""
    front = await tls_front()
    binary = require_binary(shutil.which("h2load"), "h2load")
    argv = [binary, "-n", "400", "-c", "4", "-m", "10", *(["--h1"] if h1 else []), f"https://127.0.0.1:{front.port}/env.php"]
    out = await in_thread(lambda: subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False))
    done = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out.stdout)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out.stdout)
    protocol = re.search(r"Application protocol: (\S+)", out.stdout)
    assert (done and done.groups(), codes and codes.groups(), protocol and protocol.group(1)) == (
        ("400", "400", "400", "400", "0"), ("400", "0", "0", "0"), "http/1.1" if h1 else "h2"), out.stdout[-2000:]


@pytest_twisted.ensureDeferred
async def test_http2_off_offers_http11_only(tls_front):
    """With http2 off, a client offering h2 and http/1.1 gets HTTP/1.1 over the same TLS listener."""
    front = await tls_front(http2=False)
    out = await in_thread(_curl, "--http2", "-w", "%{http_version}", "-o", "/dev/null", f"https://127.0.0.1:{front.port}/static/hello.txt")
    assert out.stdout == b"1.1"


# -- what PHP sees --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_cookies_joined_and_authority_as_host(tls_front):
    """Two cookie fields reach PHP joined with "; " (RFC 9113 8.2.3) and :authority is HTTP_HOST."""
    front = await tls_front()

    def run() -> Any:
        client = H2Client(front.port)
        try:
            return client.get("/env.php", (("cookie", "a=1"), ("cookie", "b=2"), ("x-custom", "v")))
        finally:
            client.close()

    response = await in_thread(run)
    env = json.loads(response.body)
    assert response.status == 200
    assert (env["HTTP_COOKIE"], env["HTTP_HOST"], env["HTTP_X_CUSTOM"]) == ("a=1; b=2", f"127.0.0.1:{front.port}", "v")


@pytest_twisted.ensureDeferred
async def test_a_host_other_than_authority_resets_only_its_stream(tls_front):
    """A Host header that differs from :authority is malformed (RFC 9113 8.3.1): RST_STREAM PROTOCOL_ERROR, no PHP; the connection goes on."""
    front = await tls_front()

    def run() -> Any:
        client = H2Client(front.port, validate=False)
        try:
            response = client.get("/env.php", (("host", "other.example"),))
            after = client.get("/static/hello.txt")
            return response, after, client.goaway
        finally:
            client.close()

    response, after, goaway = await in_thread(run)
    assert (response.status, response.body, response.reset, goaway) == (0, b"", 1, None)  # PROTOCOL_ERROR
    assert (after.status, after.body) == (200, b"plain text\n")


@pytest_twisted.ensureDeferred
async def test_request_bodies_reach_php_intact(tls_front, tmp_path):
    """A 3 MB POST over HTTP/2 reaches PHP with the same length and sha256, from curl and from the h2 client."""
    front = await tls_front(max_body_size=8 * 1024 * 1024)
    body = bytes((i * 7919 + 13) % 256 for i in range(3_000_000))
    digest = hashlib.sha256(body).hexdigest()

    def by_h2() -> Any:
        client = H2Client(front.port)
        try:
            stream = client.request("POST", "/echo.php", (("content-type", "application/octet-stream"),), body)
            return client.wait(stream)
        finally:
            client.close()

    response = await in_thread(by_h2)
    assert response.body.decode() == f"{len(body)} {digest} {len(body)}"

    def by_curl(path: Path) -> Any:
        path.write_bytes(body)
        return _curl("--http2", "--data-binary", f"@{path}", "-H", "Content-Type: application/octet-stream",
                     f"https://127.0.0.1:{front.port}/echo.php")

    out = await in_thread(by_curl, tmp_path / "body.bin")
    assert out.stdout.decode() == f"{len(body)} {digest} {len(body)}"


@pytest_twisted.ensureDeferred
async def test_large_response_arrives_whole(tls_front):
    """A 20 MB PHP response over HTTP/2 arrives byte for byte."""
    front = await tls_front()
    out = await in_thread(_curl, "--http2", f"https://127.0.0.1:{front.port}/big.php?n=20000000")
    block = bytes(range(256)) * 256
    expected = (block * (20_000_000 // len(block) + 1))[:20_000_000]
    assert hashlib.sha256(out.stdout).hexdigest() == hashlib.sha256(expected).hexdigest()


@pytest_twisted.ensureDeferred
async def test_flushed_output_streams(tls_front):
    """PHP's flush() reaches the HTTP/2 client before the script ends."""
    front = await tls_front()

    def run() -> Any:
        client = H2Client(front.port)
        try:
            return client.get("/stream.php?ms=700")
        finally:
            client.close()

    response = await in_thread(run)
    assert response.body == b"first\nlast\n"
    assert len(response.data_times) >= 2
    assert response.data_times[-1] - response.data_times[0] > 0.5


@pytest_twisted.ensureDeferred
async def test_streams_run_side_by_side(tls_front):
    """Two requests on one connection: a quick page is answered while a slow script is still running."""
    front = await tls_front()

    def run() -> Any:
        client = H2Client(front.port)
        try:
            slow = client.request("GET", "/sleep.php?ms=1500")
            quick = client.request("GET", "/static/hello.txt")
            quick_response = client.wait(quick)
            slow_pending = not client.responses[slow].ended
            return quick_response, slow_pending, client.wait(slow)
        finally:
            client.close()

    quick, slow_pending, slow = await in_thread(run)
    assert (quick.status, quick.body, slow_pending, slow.status) == (200, b"plain text\n", True, 200)


# -- limits and errors, as over HTTP/1.1 --------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_body_over_the_limit_is_413(tls_front):
    """An announced or a running body over max_body_size gets 413 and a reset stream; the connection serves on."""
    front = await tls_front(max_body_size=100_000)

    def run() -> Any:
        client = H2Client(front.port)
        try:
            announced = client.request(
                "POST", "/echo.php", (("content-length", "200000"),), end=False
            )
            first = client.wait(announced)
            running = client.request("POST", "/echo.php", (), b"x" * 150_000)
            second = client.wait(running)
            after = client.get("/static/hello.txt")
            return first, second, after
        finally:
            client.close()

    first, second, after = await in_thread(run)
    assert (first.status, second.status) == (413, 413)
    assert first.body == second.body == error_page(413)
    assert (after.status, after.body) == (200, b"plain text\n")


@pytest_twisted.ensureDeferred
async def test_header_limits_give_431_and_414(tls_front):
    """Headers over max_header_size get 431, a :path longer than a request line may be 414; no PHP runs."""
    front = await tls_front(max_header_size=8192)

    def run() -> Any:
        client = H2Client(front.port)
        try:
            big = client.get("/env.php", tuple((f"x-big{i}", "a" * 3000) for i in range(3)))
            long_path = client.get("/env.php?" + "q" * 9000)
            fine = client.get("/env.php", (("x-ok", "a" * 3000),))
            return big, long_path, fine
        finally:
            client.close()

    big, long_path, fine = await in_thread(run)
    assert (big.status, long_path.status, fine.status) == (431, 414, 200)


@pytest_twisted.ensureDeferred
async def test_missing_and_refused_paths_answer_as_over_http11(tls_front):
    """Hidden files, PHP source and escapes get the same statuses over HTTP/2 as over HTTP/1.1."""
    front = await tls_front()

    def run() -> Any:
        client = H2Client(front.port)
        try:
            return [client.get(path).status for path in ("/.env", "/SOURCE.PHP", "/data/secret.txt", "/nothere.php")]
        finally:
            client.close()

    assert await in_thread(run) == [403, 403, 403, 404]


# -- flow control -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_client_that_does_not_read_pauses_php(tls_front):
    """A client whose window stays shut gets 64 KiB; fephp holds at most its stream buffer and spill, the rest waits in PHP until the window opens."""
    front = await tls_front()
    size = 4_000_000  # well over what fephp may hold; the Python client reads slowly
    client: Any = None

    def start() -> Any:
        nonlocal client
        client = H2Client(front.port, auto_window=False)
        stream = client.request("GET", f"/big.php?n={size}")
        deadline = time.monotonic() + 10
        while len(client.responses[stream].body) < 65535 and time.monotonic() < deadline:
            client.read_once()
        return stream

    try:
        stream = await in_thread(start)
        assert len(client.responses[stream].body) == 65535
        # What fephp holds for the stream stays bounded while the client reads nothing.
        held = []
        for _ in range(20):
            await deferToThread(time.sleep, 0.05)  # let PHP write as much as it can
            held.append(sum(s._pending_size for s in _streams(front)))
        # Past the bound by one flush of PHP's output: what one read of the
        # FastCGI socket (64 KiB) completes, with the part of a record carried
        # from the read before (seen: 2 x 64 KiB + 1). Bounded generously at
        # three reads: the point is that 4 MB never pile up here.
        assert 0 < max(held) <= STREAM_BUFFER + STREAM_SPILL + 3 * 65536
    except BaseException:
        if client is not None:
            client.close()  # a client left reading nothing would hold the front's stop
        raise

    def finish() -> Any:
        client.auto_window = True
        client.open_window(stream, size)
        try:
            return client.wait(stream)
        finally:
            client.close()

    response = await in_thread(finish)
    block = bytes(range(256)) * 256
    expected = (block * (size // len(block) + 1))[:size]
    assert hashlib.sha256(response.body).hexdigest() == hashlib.sha256(expected).hexdigest()
    assert front.site.h2_held.held == 0  # what the stream held past its buffer was given back


@pytest_twisted.ensureDeferred
async def test_a_reset_stream_aborts_php(tls_front):
    """A client that resets its stream mid-response frees PHP: nothing is left in flight, and the connection serves on."""
    front = await tls_front()

    def run() -> Any:
        client = H2Client(front.port, auto_window=False)
        try:
            stream = client.request("GET", "/big.php?n=50000000")
            while len(client.responses[stream].body) < 65535:
                client.read_once()
            client.conn.reset_stream(stream)
            client._flush()
            return client
        except Exception:
            client.close()
            raise

    client = await in_thread(run)
    try:
        deadline = time.monotonic() + 10
        while front.app.in_flight and time.monotonic() < deadline:
            await deferToThread(time.sleep, 0.02)
        assert front.app.in_flight == 0
    finally:
        client.close()


@pytest_twisted.ensureDeferred
async def test_large_and_ranged_static_files(tls_front):
    """A 3 MB static file (Twisted's File producer) arrives whole over HTTP/2, and a Range request gets its 206 part."""
    front = await tls_front()
    data = bytes((i * 31 + 7) % 256 for i in range(3_000_000))
    (Path(front.app.router.root) / "static" / "big.bin").write_bytes(data)

    def run() -> Any:
        client = H2Client(front.port)
        try:
            whole = client.get("/static/big.bin")
            part = client.get("/static/big.bin", (("range", "bytes=1000-1999"),))
            head = client.wait(client.request("HEAD", "/static/big.bin"))
            return whole, part, head
        finally:
            client.close()

    whole, part, head = await in_thread(run)
    assert (whole.status, hashlib.sha256(whole.body).digest()) == (200, hashlib.sha256(data).digest())
    assert (part.status, part.body, part.header("content-range")) == (206, data[1000:2000], ["bytes 1000-1999/3000000"])
    assert (head.status, head.body, head.header("content-length")) == (200, b"", ["3000000"])


@pytest_twisted.ensureDeferred
async def test_shutdown_sends_goaway(tls_front):
    """At shutdown (the site's close_connections) an HTTP/2 client gets GOAWAY NO_ERROR before the connection closes."""
    front = await tls_front()
    client = await in_thread(H2Client, front.port)
    try:
        response = await in_thread(client.get, "/static/hello.txt")
        assert response.status == 200
        closing = front.site.close_connections()

        def read_to_the_end() -> None:
            try:
                while True:
                    client.read_once()
            except ConnectionError:
                pass  # the server closed it, after the GOAWAY

        await in_thread(read_to_the_end)
        assert client.goaway == 0  # NO_ERROR
        client.close()  # as a client does on GOAWAY and the TLS close; the server's side then ends
        await closing
    finally:
        client.close()
