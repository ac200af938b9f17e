"""fephp's web front through real HTTP, in front of a real php-fpm."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from fephp.web.errors import error_page
from fephp.web.static import SMALL_STATIC_FILE
from tests.support.docroot import make_docroot
from tests.support.faults import wait_until
from tests.support.inprocess import InProcessFront, pool, stopped_at_teardown
from tests.support.rawhttp import flushed_then_rest

pytestmark = pytest.mark.php


#: The options of the pool (the rest go to the FrontSite).
POOL_OPTIONS = ("size", "queue_size", "response_timeout", "connect_timeout", "queue_timeout")


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    return make_docroot(tmp_path)


@pytest.fixture
def front(php_fpm, docroot):
    async def make(**options) -> InProcessFront:
        backend = pool(options.pop("backend", php_fpm.unix_endpoint), **{k: options.pop(k) for k in POOL_OPTIONS if k in options})
        router = {"index": ("index.php",), "front_controller": options.pop("front_controller", "/index.php"), "deny": ("/data/",)}
        return await InProcessFront.php(docroot, backend, router=router, **options).start()

    yield from stopped_at_teardown(make)


def header(response, name: str) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in response.headers.getRawHeaders(name, [])]


# -- the CGI environment -----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_cgi_environment_is_what_nginx_gives(front, docroot):
    """PHP's $_SERVER holds nginx's fastcgi_params values for a script with PATH_INFO."""
    f = await front()
    response, body = await f.fetch(
        "/env.php/extra/x?a=1&b=%20",
        headers={"Authorization": "Basic dTpw", "Proxy": "http://evil", "X-Custom": "v"},
    )
    env = json.loads(body)
    port = f.port
    expected = {
        "SCRIPT_FILENAME": str(docroot / "env.php"),
        "SCRIPT_NAME": "/env.php",
        "PATH_INFO": "/extra/x",
        "PATH_TRANSLATED": str(docroot) + "/extra/x",
        "REQUEST_URI": "/env.php/extra/x?a=1&b=%20",
        "DOCUMENT_URI": "/env.php",
        "DOCUMENT_ROOT": str(docroot),
        "QUERY_STRING": "a=1&b=%20",
        "REQUEST_METHOD": "GET",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_SCHEME": "http",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "fephp-test",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_ADDR": "127.0.0.1",
        "SERVER_PORT": str(port),
        "SERVER_NAME": "127.0.0.1",
        "REDIRECT_STATUS": "200",
        "HTTP_HOST": f"127.0.0.1:{port}",
        "HTTP_AUTHORIZATION": "Basic dTpw",
        "HTTP_X_CUSTOM": "v",
    }
    assert response.code == 200
    assert {k: env.get(k) for k in expected} == expected
    assert env["REMOTE_PORT"].isdigit()
    assert "HTTP_PROXY" not in env
    assert "HTTPS" not in env
    assert not [k for k in env if k.startswith("HTTP_X_FORWARDED")]


@pytest_twisted.ensureDeferred
async def test_front_controller_gets_pretty_urls(front):
    """A path matching no file runs /index.php with the original REQUEST_URI and query."""
    f = await front()
    response, body = await f.fetch("/blog/2024/hello-world?page=2")
    data = json.loads(body)
    assert response.code == 200
    assert data == {
        "script": "index.php",
        "REQUEST_URI": "/blog/2024/hello-world?page=2",
        "QUERY_STRING": "page=2",
        "SCRIPT_NAME": "/index.php",
        "PATH_INFO": "",
        "DOCUMENT_URI": "/index.php",
        "GET": {"page": "2"},
    }


@pytest_twisted.ensureDeferred
async def test_front_controller_off_gives_404(front):
    """With front_controller null, an unmatched path is a plain 404 and runs nothing."""
    f = await front(front_controller=None)
    response, body = await f.fetch("/blog/post")
    assert response.code == 404
    assert b"404 Not Found" in body


@pytest_twisted.ensureDeferred
async def test_split_at_first_php_segment(front):
    """/lib/exe/fetch.php/x.png runs fetch.php with PATH_INFO /x.png."""
    f = await front()
    response, body = await f.fetch("/lib/exe/fetch.php/x.png")
    assert json.loads(body) == {"SCRIPT_NAME": "/lib/exe/fetch.php", "PATH_INFO": "/x.png"}


# -- routing and security ------------------------------------------------------


@pytest.mark.parametrize(
    "path,status",
    [
        ("/.env", 403),
        ("/.git/config", 403),
        ("/.htaccess", 403),
        ("/data/secret.txt", 403),
        ("/uploads/image.jpg/x.php", 404),
        ("/nothere.php", 404),
        ("/%2e%2e/private.txt", 400),
        ("/static/../../private.txt", 400),
        ("/static/%2e%2e%2f%2e%2e%2fprivate.txt", 400),
        ("/static/../.env", 403),
        ("/env.php%00.txt", 404),
        ("/SOURCE.PHP", 403),
    ],
    ids=[
        "dotenv",
        "git",
        "htaccess",
        "deny",
        "cve-2019-11043",
        "missing-php",
        "dotdot-encoded",
        "dotdot",
        "encoded-slashes",
        "dotdot-onto-dotenv",
        "nul",
        "uppercase-php-source",
    ],
)
@pytest_twisted.ensureDeferred
async def test_refused_paths_execute_and_disclose_nothing(front, path, status):
    """Hidden files, denied prefixes, escapes and tricks get an error page that leaks nothing."""
    f = await front()
    raw = await f.exchange(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 %d %s" % (status, {400: b"Bad Request", 403: b"Forbidden", 404: b"Not Found"}[status])
    assert body == error_page(status)


@pytest_twisted.ensureDeferred
async def test_php_source_is_never_sent(front):
    """A .php file runs; its source never appears, even through a symlinked directory."""
    f = await front()
    _, body = await f.fetch("/linkdir/linked.php")
    assert body == b"linked php"
    _, body = await f.fetch("/status.php")
    assert b"<?php" not in body


@pytest_twisted.ensureDeferred
async def test_symlink_inside_root_is_followed(front):
    """A symlinked directory inside the root serves its files, as nginx does."""
    f = await front()
    response, body = await f.fetch("/linkdir/linked.txt")
    assert (response.code, body) == (200, b"linked content\n")


@pytest_twisted.ensureDeferred
async def test_directory_index_and_redirect(front):
    """/sub/ runs sub/index.php; /sub redirects to /sub/ keeping the query."""
    f = await front()
    response, body = await f.fetch("/sub/")
    assert (response.code, body) == (200, b"sub index")
    response, _ = await f.fetch("/sub?x=1", allow_redirects=False)
    assert response.code == 301
    assert header(response, "Location") == ["/sub/?x=1"]


# -- static files ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_static_file_type_range_and_conditional(front):
    """Static files carry a Content-Type, honour Range and answer 304 when unchanged."""
    f = await front()
    response, body = await f.fetch("/static/style.css")
    assert response.code == 200
    assert header(response, "Content-Type")[0].startswith("text/css")
    assert body == b"body { color: black; }\n"
    response, body = await f.fetch("/static/hello.txt", headers={"Range": "bytes=0-4"})
    assert (response.code, body) == (206, b"plain")
    last_modified = header(response, "Last-Modified")[0]
    response, body = await f.fetch("/static/hello.txt", headers={"If-Modified-Since": last_modified})
    assert (response.code, body) == (304, b"")


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("size", [0, 1000, SMALL_STATIC_FILE, SMALL_STATIC_FILE + 1, 3 * 1024 * 1024])
async def test_static_file_whole_by_size(front, docroot, size):
    """Small files (read whole) and big ones (Twisted's producer) arrive byte for byte with the same validators."""
    data = os.urandom(size)
    (docroot / "static" / "blob.bin").write_bytes(data)
    os.utime(docroot / "static" / "blob.bin", (1_700_000_000.5, 1_700_000_000.5))
    f = await front()
    response, body = await f.fetch("/static/blob.bin")
    assert (response.code, len(body), hashlib.sha256(body).digest()) == (200, size, hashlib.sha256(data).digest())
    assert response.length == size  # Content-Length (Twisted's client keeps it here)
    assert header(response, "Content-Type") == ["application/octet-stream"]
    assert header(response, "ETag") == ['"6553f100-%x"' % size]
    assert header(response, "Last-Modified") == ["Tue, 14 Nov 2023 22:13:20 GMT"]
    head = await f.exchange(b"HEAD /static/blob.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert b"\r\nContent-Length: %d\r\n" % size in head
    response, body = await f.fetch("/static/blob.bin", headers={"If-None-Match": '"6553f100-%x"' % size})
    assert (response.code, body) == (304, b"")


@pytest_twisted.ensureDeferred
async def test_big_static_file_to_a_slow_reader_and_its_ranges(front, docroot):
    """A big file (os.sendfile over plain TCP) reaches a client whose small socket buffer fills, byte for byte; a Range of it is a 206."""
    from twisted.internet.threads import deferToThread

    data = os.urandom(12 * 1024 * 1024 + 7)
    (docroot / "static" / "big.bin").write_bytes(data)
    f = await front()
    port = f.port

    def slow_get() -> bytes:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # before connect: a small window
            s.settimeout(30)
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            out = bytearray()
            while True:
                chunk = s.recv(4096)  # small reads: fephp's sends meet a full socket again and again
                if not chunk:
                    return bytes(out)
                out += chunk

    raw = await deferToThread(slow_get)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Length: %d\r\n" % len(data) in head
    assert (len(body), hashlib.sha256(body).digest()) == (len(data), hashlib.sha256(data).digest())
    response, part = await f.fetch("/static/big.bin", headers={"Range": "bytes=5000000-5000009"})
    assert (response.code, part) == (206, data[5000000:5000010])


# -- bodies, forms, cookies, uploads ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_chunked_body_reaches_php_with_content_length(front):
    """A chunked request body arrives whole, and PHP sees its CONTENT_LENGTH."""
    f = await front()
    payload = os.urandom(300_000)

    def chunks():
        for i in range(0, len(payload), 65536):
            yield payload[i : i + 65536]

    data = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks()) + b"0\r\n\r\n"
    raw = await f.exchange(
        b"POST /echo.php HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + data,
    )
    expected = f"{len(payload)} {hashlib.sha256(payload).hexdigest()} {len(payload)}".encode()
    assert raw.split(b"\r\n\r\n", 1)[0].startswith(b"HTTP/1.1 200")
    assert expected in raw


@pytest_twisted.ensureDeferred
async def test_post_form_and_two_cookies(front):
    """A urlencoded POST reaches $_POST; two Set-Cookie headers stay apart; cookies come back."""
    f = await front()
    response, body = await f.fetch(
        "/form.php", method="POST", data={"name": "a b&c"}, headers={"Cookie": "x=1; y=2"}
    )
    data = json.loads(body)
    assert data == {"post": {"name": "a b&c"}, "cookies": {"x": "1", "y": "2"}, "method": "POST"}
    assert sorted(header(response, "Set-Cookie")) == ["a=1", "b=2"]


@pytest_twisted.ensureDeferred
async def test_file_upload(front):
    """A multipart upload reaches $_FILES with its name, size and content."""
    f = await front()
    content = os.urandom(200_000)
    response, body = await f.fetch(
        "/upload.php",
        method="POST",
        data={"field": "v"},
        files={"file": ("photo.bin", "application/octet-stream", content)},
    )
    assert json.loads(body) == {
        "name": "photo.bin",
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "field": "v",
    }


@pytest_twisted.ensureDeferred
async def test_status_and_location_headers(front):
    """Status: sets the HTTP status; Location alone gives 302."""
    f = await front()
    response, body = await f.fetch("/status.php?code=418")
    assert (response.code, body, header(response, "X-Test")) == (418, b"status body", ["yes"])
    response, _ = await f.fetch("/status.php?to=/elsewhere", allow_redirects=False)
    assert (response.code, header(response, "Location")) == (302, ["/elsewhere"])


@pytest_twisted.ensureDeferred
async def test_head_sends_no_body(front):
    """HEAD runs the script with REQUEST_METHOD HEAD and sends headers only."""
    f = await front()
    raw = await f.exchange(b"HEAD /status.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert rest == b""


@pytest_twisted.ensureDeferred
async def test_big_response_by_hash(front):
    """An 8 MiB PHP response arrives complete through HTTP."""
    f = await front()
    response, body = await f.fetch("/big.php")
    assert len(body) == 8 * 1024 * 1024
    assert hashlib.sha256(body).digest() == hashlib.sha256(bytes(range(256)) * 256 * 128).digest()


@pytest_twisted.ensureDeferred
async def test_body_over_the_limit_is_413(front):
    """A body larger than max_body_size is refused with 413 before PHP runs."""
    f = await front(max_body_size=1000)
    response, body = await f.fetch("/echo.php", method="POST", data=b"x" * 5000)
    assert response.code == 413


# -- failures ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_backend_down_is_502_without_details(front, tmp_path):
    """No php-fpm listening gives a 502 page naming no socket or path."""
    f = await front(backend=f"unix:path={tmp_path}/none.sock", connect_timeout=0.5)
    response, body = await f.fetch("/env.php")
    assert response.code == 502
    assert b"502 Bad Gateway" in body
    assert b"none.sock" not in body and str(tmp_path).encode() not in body


@pytest_twisted.ensureDeferred
async def test_backend_too_slow_is_504(front):
    """A script silent for longer than the response timeout gives 504."""
    f = await front(response_timeout=0.3)
    response, body = await f.fetch("/sleep.php?ms=2000")
    assert response.code == 504
    assert b"504 Gateway Timeout" in body


@pytest_twisted.ensureDeferred
async def test_queue_full_is_503(front):
    """With every connection busy and the queue full, a request gets 503 at once."""
    f = await front(size=1, queue_size=0)
    slow = f.fetch("/sleep.php?ms=1500")
    response, body = await f.fetch("/env.php")
    assert response.code == 503
    await slow


@pytest_twisted.ensureDeferred
async def test_client_disconnect_frees_the_connection(front):
    """A client that goes away mid-request aborts it and the pool's connection is free again."""
    f = await front(size=1)
    port = f.port
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /sleep.php?ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
    await wait_until(lambda: f.backend.stats()["busy"] != 0, "the request to reach PHP")
    sock.close()
    # The aborted request keeps its child counted until PHP ends the script (5 s).
    await wait_until(lambda: f.backend.stats()["busy"] == 0, "the connection to be free", within=15.0)
    response, body = await f.fetch("/status.php")
    assert (response.code, body) == (200, b"status body")


@pytest_twisted.ensureDeferred
async def test_flush_reaches_the_client_early(front, docroot):
    """Output PHP flushes reaches the HTTP client while the script runs: the script ends only once the client has read it."""
    f = await front()
    go = docroot / "flushwait.go"

    early, rest = await deferToThread(flushed_then_rest, f.port, "/flushwait.php", go)
    assert early.startswith(b"HTTP/1.1 200 OK\r\n") and early.endswith(b"\r\n\r\n6\r\nfirst\n\r\n")
    assert rest == b"5\r\nlast\n\r\n0\r\n\r\n"


@pytest_twisted.ensureDeferred
async def test_framing_a_whole_answer_has_a_length_a_streamed_one_is_chunked(front):
    """Through real php-fpm: a small page gets a Content-Length, flushed output stays chunked."""
    f = await front()
    whole = await f.exchange(b"GET /status.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = whole.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"status body"
    assert b"\r\nContent-Length: 11\r\n" in head + b"\r\n" and b"Transfer-Encoding" not in head
    streamed = await f.exchange(b"GET /stream.php?ms=200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = streamed.partition(b"\r\n\r\n")
    assert b"\r\nTransfer-Encoding: chunked" in head and b"Content-Length" not in head
    assert body.endswith(b"0\r\n\r\n") and b"first\n" in body and b"last\n" in body


# -- helpers ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_php_stderr_is_logged_at_warn_with_the_uri(front):
    """What PHP writes to its error log comes out of fephp's logger at warn, tagged with the request."""
    from twisted.logger import LogLevel, globalLogPublisher

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        f = await front()
        response, body = await f.fetch("/stderr.php?tag=xyz")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert (response.code, body) == (200, b"ok")
    logged = [e for e in events if "to-stderr: xyz" in e.get("php_stderr", "")]
    assert len(logged) == 1
    assert logged[0]["log_level"] == LogLevel.warn
    assert logged[0]["uri"] == "/stderr.php?tag=xyz"


@pytest_twisted.ensureDeferred
async def test_http10_keep_alive_with_a_streamed_php_answer_closes(front):
    """HTTP/1.0 keep-alive is kept only when the answer has a length: a flushed PHP answer ends with the connection."""
    f = await front()
    # exchange reads until the server closes: it returns at all only if fephp closed.
    raw = await f.exchange(b"GET /stream.php?ms=200 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ")
    assert b"keep-alive" not in head.lower() and b"content-length" not in head.lower()
    assert body == b"first\nlast\n"
