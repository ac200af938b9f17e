"""The example app (examples/app) through an in-process fephp front and the session php-fpm.

The front is configured as etc/fephp.yaml configures it: root public/,
index.php as index and front controller, /data/ and /conf/ denied.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from fephp.web.errors import error_page
from tests.support import REPO
from tests.support.inprocess import InProcessFront, pool

pytestmark = pytest.mark.php

APP = REPO / "examples" / "app"


#: The Router etc/fephp.yaml gives the app.
ROUTER = {"index": ("index.php",), "front_controller": "/index.php", "deny": ("/data/", "/conf/")}


async def _get(front: InProcessFront, path: str, **kwargs: Any) -> tuple[Any, bytes]:
    """One request through treq, redirects not followed unless asked."""
    kwargs.setdefault("allow_redirects", False)
    return await front.fetch(path, **kwargs)


@pytest.fixture
def app_copy(tmp_path: Path) -> Path:
    """A copy of examples/app (public/ and src/ side by side); returns public/."""
    shutil.copytree(APP, tmp_path / "app")
    public = tmp_path / "app" / "public"
    assert (public / ".env").is_file()  # the hidden file the app ships, to be refused
    return public


@pytest.fixture
def front(php_fpm, app_copy: Path) -> Iterator[InProcessFront]:
    built = InProcessFront.php(app_copy, pool(php_fpm.unix_endpoint), router=ROUTER, server_software="fephp", max_body_size=64 * 1024 * 1024)
    f = pytest_twisted.blockon(defer.ensureDeferred(built.start()))
    yield f
    pytest_twisted.blockon(defer.ensureDeferred(f.stop()))


def header(response: Any, name: str) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in response.headers.getRawHeaders(name, [])]


def _text_of(html: bytes, css_class: str) -> str:
    """The text of the first element with class *css_class*."""
    match = re.search(rb'class="%s">(.*?)</' % css_class.encode(), html, re.S)
    assert match is not None, html[:500]
    return match.group(1).decode()


# -- pages ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_home_page(front):
    """/ runs the front controller through the index and links every route."""
    response, body = await _get(front, "/")
    assert response.code == 200
    assert header(response, "Content-Type") == ["text/html; charset=utf-8"]
    assert header(response, "X-Content-Type-Options") == ["nosniff"]
    assert header(response, "X-Powered-By") == []
    assert b"<title>Home - fephp example</title>" in body
    assert b'<a href="/hello/world">/hello/world</a>' in body


@pytest_twisted.ensureDeferred
async def test_hello_greets_by_name(front):
    """/hello/bob greets bob."""
    response, body = await _get(front, "/hello/bob")
    assert response.code == 200
    assert _text_of(body, "greeting") == "Hello, bob!"


@pytest_twisted.ensureDeferred
async def test_hello_escapes_html(front):
    """/hello/<script> comes back HTML-escaped, never as markup."""
    response, body = await _get(front, "/hello/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert response.code == 200
    assert _text_of(body, "greeting") == "Hello, &lt;script&gt;alert(1)&lt;/script&gt;!"
    assert b"<script>" not in body


@pytest_twisted.ensureDeferred
async def test_form_post_redirect_get(front):
    """GET /form shows the form; a urlencoded POST answers 303 to /form?done=1, which shows the notice."""
    response, body = await _get(front, "/form")
    assert response.code == 200
    assert b'<form method="post" action="/form">' in body
    assert b'class="notice"' not in body

    response, body = await _get(front, "/form", method="POST", data={"message": "hi <b>&"})
    assert response.code == 303
    assert header(response, "Location") == ["/form?done=1"]
    assert _text_of(body, "received") == "hi &lt;b&gt;&amp;"

    response, body = await _get(front, header(response, "Location")[0])
    assert response.code == 200
    assert _text_of(body, "notice") == "Thank you, your message was received."


@pytest_twisted.ensureDeferred
async def test_form_refuses_other_content_types(front):
    """A JSON POST to /form gets 415 with Accept-Post, since PHP fills $_POST only from forms."""
    response, _ = await _get(front, "/form", method="POST", data=b'{"message": "x"}', headers={"Content-Type": "application/json"})
    assert response.code == 415
    assert header(response, "Accept-Post") == ["application/x-www-form-urlencoded"]


@pytest_twisted.ensureDeferred
async def test_cookie_two_headers_and_counter(front):
    """/cookie sets two cookies in two Set-Cookie headers; sending visits back increments it."""
    response, body = await _get(front, "/cookie")
    cookies = header(response, "Set-Cookie")
    assert [c.split(";")[0] for c in cookies] == ["visits=1", "theme=light"]
    for cookie in cookies:
        assert "; path=/; httponly; samesite=lax" in cookie.lower()
    assert _text_of(body, "visits") == "1"

    response, body = await _get(front, "/cookie", headers={"Cookie": "visits=1; theme=light"})
    assert [c.split(";")[0] for c in header(response, "Set-Cookie")] == ["visits=2", "theme=light"]
    assert _text_of(body, "visits") == "2"


@pytest_twisted.ensureDeferred
async def test_upload_reports_name_size_and_hash(front):
    """A multipart upload of a few hundred KiB comes back with its name, size and sha256."""
    content = os.urandom(300 * 1024)
    response, body = await _get(front, "/upload", method="POST", files={"file": ("random.bin", "application/octet-stream", content)})
    assert response.code == 200
    assert header(response, "Content-Type") == ["application/json"]
    assert json.loads(body) == {"name": "random.bin", "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}


@pytest_twisted.ensureDeferred
async def test_upload_form_and_missing_file(front):
    """GET /upload shows a multipart form; a POST without a file gets 400."""
    response, body = await _get(front, "/upload")
    assert response.code == 200
    assert b'enctype="multipart/form-data"' in body
    response, body = await _get(front, "/upload", method="POST", data={"other": "x"})
    assert (response.code, json.loads(body)) == (400, {"error": 'send one file in the multipart field "file"'})


@pytest_twisted.ensureDeferred
async def test_json_shows_the_cgi_variables(front):
    """/json shows the CGI variables PHP received, and no HTTP_PROXY from a Proxy header."""
    response, body = await _get(front, "/json?x=1&y=%20", headers={"Proxy": "http://evil.example"})
    assert response.code == 200
    assert json.loads(body) == {
        "REQUEST_METHOD": "GET",
        "REQUEST_URI": "/json?x=1&y=%20",
        "SCRIPT_NAME": "/index.php",
        "PATH_INFO": "",
        "QUERY_STRING": "x=1&y=%20",
        "SERVER_SOFTWARE": "fephp",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": str(front.port),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "CONTENT_TYPE": "",
        "CONTENT_LENGTH": "",
        "HTTP_HOST": f"127.0.0.1:{front.port}",
        "SCRIPT_FILENAME": "/index.php",
        "HTTPS": False,
        "HTTP_PROXY_present": False,
    }


@pytest_twisted.ensureDeferred
async def test_json_post_has_content_type_and_length(front):
    """POST /json shows the body's CONTENT_TYPE and CONTENT_LENGTH."""
    response, body = await _get(front, "/json", method="POST", data={"a": "12345"})
    data = json.loads(body)
    assert (data["REQUEST_METHOD"], data["CONTENT_TYPE"], data["CONTENT_LENGTH"]) == (
        "POST",
        "application/x-www-form-urlencoded",
        "7",
    )


@pytest_twisted.ensureDeferred
async def test_stream_arrives_line_by_line(front):
    """/stream's first line reaches the client before PHP has written the last one."""

    def run() -> tuple[bytes, bytes]:
        with socket.create_connection(("127.0.0.1", front.port), timeout=10) as s:
            s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            early = b""
            while b"line 1 of 5" not in early:
                chunk = s.recv(65536)
                assert chunk, early
                early += chunk
            rest = b""
            while chunk := s.recv(65536):
                rest += chunk
            return early, rest

    early, rest = await deferToThread(run)
    assert early.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"line 5 of 5" not in early
    lines = re.findall(rb"line (\d) of 5 at ([0-9.]+)\n", early + rest)
    assert [n for n, _ in lines] == [b"1", b"2", b"3", b"4", b"5"]
    # PHP timestamps each line; they were 0.2 s apart when written, so the
    # first arrived while the script still had 0.8 s to run.
    assert float(lines[4][1]) - float(lines[0][1]) >= 0.7


@pytest_twisted.ensureDeferred
async def test_info_php_path_info(front):
    """/info.php/extra/path runs info.php with PATH_INFO /extra/path."""
    response, body = await _get(front, "/info.php/extra/path")
    assert response.code == 200
    assert json.loads(body) == {"SCRIPT_NAME": "/info.php", "PATH_INFO": "/extra/path"}


@pytest_twisted.ensureDeferred
async def test_index_php_by_name_with_a_route(front):
    """/index.php/hello/bob reaches the hello route: the front controller strips its own name."""
    response, body = await _get(front, "/index.php/hello/bob")
    assert response.code == 200
    assert _text_of(body, "greeting") == "Hello, bob!"


@pytest_twisted.ensureDeferred
async def test_static_files(front, app_copy):
    """style.css comes as text/css and robots.txt as text/plain, straight from disk."""
    response, body = await _get(front, "/static/style.css")
    assert (response.code, header(response, "Content-Type"), body) == (
        200,
        ["text/css"],
        (app_copy / "static" / "style.css").read_bytes(),
    )
    response, body = await _get(front, "/robots.txt")
    assert (response.code, header(response, "Content-Type"), body) == (
        200,
        ["text/plain"],
        (app_copy / "robots.txt").read_bytes(),
    )


@pytest.mark.parametrize("path", ["/data/secret.txt", "/.env", "/%2Edata/../data/secret.txt", "/conf/x.php"])
@pytest_twisted.ensureDeferred
async def test_secrets_are_refused(front, app_copy, path):
    """/data/, /conf/ and hidden files get fephp's 403 page, and the secret never appears."""
    response, body = await _get(front, path)
    assert (response.code, body) == (403, error_page(403))
    assert (app_copy / "data" / "secret.txt").read_bytes().strip() not in body


@pytest_twisted.ensureDeferred
async def test_src_outside_the_root_is_404(front):
    """/src/html.php names no file under public/, so fephp answers 404 without running PHP."""
    response, body = await _get(front, "/src/html.php")
    assert (response.code, body) == (404, error_page(404))


@pytest_twisted.ensureDeferred
async def test_missing_route_gets_the_apps_404(front):
    """A path matching no file and no route gets the app's own 404 page, escaped."""
    response, body = await _get(front, "/no/such/%3Cpage%3E")
    assert response.code == 404
    assert b"<title>Not found - fephp example</title>" in body
    assert b"<code>/no/such/&lt;page&gt;</code>" in body


@pytest_twisted.ensureDeferred
async def test_wrong_method_is_405_with_allow(front):
    """DELETE /form is a known path with the wrong method: 405 with Allow."""
    response, _ = await _get(front, "/form", method="DELETE")
    assert (response.code, header(response, "Allow")) == (405, ["GET, POST, HEAD"])


@pytest_twisted.ensureDeferred
async def test_a_client_connection_has_tcp_nodelay(front):
    """The server's side of an HTTP/1.1 connection has TCP_NODELAY set once it has answered a request, as nginx's
    tcp_nodelay: Nagle's algorithm held the last segment of a large answer until the client's delayed ACK (40 ms)."""

    def get() -> "tuple[socket.socket, bytes]":
        s = socket.create_connection(("127.0.0.1", front.port), timeout=10)
        s.sendall(b"GET /static/app.js HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(65536)
            assert chunk, head
            head += chunk
        return s, head

    client, head = await deferToThread(get)
    try:
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        channels = list(front.site._channels)
        flags = [c.transport.getHandle().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0 for c in channels]
        assert flags == [True]
    finally:
        client.close()
