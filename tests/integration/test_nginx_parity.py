"""Differential tests: the same requests through nginx + php-fpm and through fephp.

Both fronts serve one document root through the session php-fpm.  For PHP
requests the script ``tests/php/parity/dump.php`` answers what PHP saw
($_SERVER, $_GET, $_POST, $_COOKIE, $_FILES, php://input, headers_list());
the two answers must be equal apart from the allow-list in
:func:`_comparable` and the differences a case names, each asserted with
both fronts' exact values.  For refused and static paths the status codes
are compared.  docs/compatibility.md is the prose version of this file.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from fephp.cgi.realip import RealIP, parse_trusted
from tests.support import PHP_DIR
from tests.support.inprocess import InProcessFront, pool
from tests.support.nginx import Nginx, find_nginx
from tests.support.rawhttp import Response, exchange

pytestmark = pytest.mark.php

DUMP = PHP_DIR / "parity" / "dump.php"
SITE = PHP_DIR / "site"
SECRET = b"parity-secret-7f3a"
ABSENT = object()  # a $_SERVER key that is not there at all


# -- the two fronts -------------------------------------------------------------


def make_root(base: Path) -> Path:
    """A document root holding the dump script under every name the cases use."""
    root = base / "root"
    root.mkdir()
    for name in ("index.php", "dump.php", "sub/index.php", "a b/dump.php", "café/dump.php", "data/x.php"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DUMP, root / name)
    shutil.copytree(SITE / "static", root / "static")
    shutil.copytree(SITE / "uploads", root / "uploads")
    shutil.copytree(SITE / "noindex", root / "noindex")
    (root / "data" / "secret.txt").write_bytes(SECRET + b"\n")
    (root / ".env").write_bytes(b"APP_KEY=" + SECRET + b"\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(b"[core] # " + SECRET + b"\n")
    (root / ".well-known").mkdir()
    (root / ".well-known" / "security.txt").write_text("Contact: mailto:security@example.org\n")
    (root / "SOURCE.PHP").write_bytes(b"<?php // " + SECRET + b"\n")
    (base / "private.txt").write_bytes(SECRET + b"\n")
    return root


#: The Router of both fephp fronts here: what the recommended nginx config does (index, try_files, deny).
ROUTER = {"index": ("index.php",), "front_controller": "/index.php", "deny": ("/data/",)}


def fephp_front(root: Path, backend: str, real_ip: RealIP | None = None) -> InProcessFront:
    """fephp in this process over *backend*, routing as nginx does, taking bodies as big as nginx's config allows."""
    return InProcessFront.php(root, pool(backend), router=ROUTER, max_body_size=64 * 1024 * 1024, real_ip=real_ip)


@dataclass
class Fronts:
    nginx: Nginx  # the recommended config, as it is
    nginx_keep: Nginx  # the same, keeping PATH_INFO across try_files
    fephp: InProcessFront
    root: Path


@pytest.fixture(scope="module")
def fronts(tmp_path_factory: pytest.TempPathFactory, php_fpm) -> Iterator[Fronts]:
    base = tmp_path_factory.mktemp("parity")
    root = make_root(base)
    binary = find_nginx()
    server = Nginx(base / "nginx", root=root, fpm_socket=php_fpm.unix_path, binary=binary).start()
    keep = Nginx(base / "nginx-keep", root=root, fpm_socket=php_fpm.unix_path, binary=binary, keep_path_info=True)
    try:
        keep.start()
        front = pytest_twisted.blockon(defer.ensureDeferred(fephp_front(root, php_fpm.unix_endpoint).start()))
        try:
            yield Fronts(server, keep, front, root)
        finally:
            pytest_twisted.blockon(defer.ensureDeferred(front.stop()))
    finally:
        keep.stop()
        server.stop()


# -- raw HTTP -----------------------------------------------------------------------


async def send(port: int, template: bytes) -> Response:
    """Send *template* with ``{host}`` replaced by 127.0.0.1:*port*; read until the server closes."""
    data = template.replace(b"{host}", b"127.0.0.1:%d" % port)
    raw = await deferToThread(exchange, port, data)
    return Response.parse(raw, head_only=data.startswith(b"HEAD "))


async def both(fronts: Fronts, template: bytes) -> tuple[Response, Response]:
    """The same request through nginx, then through fephp."""
    return await send(fronts.nginx.port, template), await send(fronts.fephp.port, template)


# -- what PHP saw ---------------------------------------------------------------------

#: Keys with a test of their own (test_remote_user_*, test_document_uri_*), left out of the table's comparison.
SEPARATE = ("REMOTE_USER", "DOCUMENT_URI")


def _comparable(response: Response, port: int, software: str) -> dict[str, Any]:
    """The dump with the $_SERVER keys that differ by nature checked per front and removed.

    The allow-list: SERVER_SOFTWARE, SERVER_PORT, HTTP_HOST (its port),
    REMOTE_PORT, REQUEST_TIME and REQUEST_TIME_FLOAT, fephp's
    HTTP_X_REQUEST_ID (a new id per request; nginx sends none); and the
    SEPARATE keys.
    """
    dump = json.loads(response.body)
    server = dump["server"]
    assert server.pop("SERVER_SOFTWARE") == software
    assert server.pop("SERVER_PORT") == str(port)
    host = server.pop("HTTP_HOST", None)
    # Debian's fastcgi_params sends HTTP_HOST as $host, without the port;
    # fephp passes the Host header as received.
    assert host == ("127.0.0.1" if software.startswith("nginx/") else f"127.0.0.1:{port}")
    assert server.pop("REMOTE_PORT").isdigit()
    assert isinstance(server.pop("REQUEST_TIME"), int)
    assert isinstance(server.pop("REQUEST_TIME_FLOAT"), float)
    if software.startswith("fephp"):
        assert re.fullmatch(r"[0-9a-f]{32}", server.pop("HTTP_X_REQUEST_ID"))
    for key in SEPARATE:
        server.pop(key, None)
    return dump


@dataclass(frozen=True)
class PHPCase:
    """A request whose PHP view must be the same through both fronts but for *differs*."""

    id: str
    request: bytes
    status: int = 200
    #: $_SERVER key -> (value under nginx, value under fephp); ABSENT when missing.
    differs: dict[str, tuple[object, object]] = field(default_factory=dict)
    #: The status line's reason phrase through (nginx, fephp), if they differ.
    reasons: tuple[str, str] | None = None
    #: The same for the dump's other parts ("cookie", "get", ...).
    other: dict[str, tuple[object, object]] = field(default_factory=dict)
    bug: str | None = None


def _path_info(script: str, path_info: str) -> dict[str, tuple[object, object]]:
    """The $_SERVER differences of a PATH_INFO request under the recommended nginx config."""
    return {
        "PATH_INFO": ("", path_info),
        "PATH_TRANSLATED": (ABSENT, "{root}" + path_info),
        "PHP_SELF": (script, script + path_info),
    }


def _get(target: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"GET " + target + b" HTTP/1.1\r\nHost: {host}\r\n" + extra + b"Connection: close\r\n\r\n"


def _post(target: bytes, content_type: bytes, body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return (
        b"POST " + target + b" HTTP/1.1\r\nHost: {host}\r\nContent-Type: " + content_type
        + b"\r\nContent-Length: %d\r\n" % len(body) + extra + b"Connection: close\r\n\r\n" + body
    )


FILE_CONTENT = bytes((i * 7919) % 256 for i in range(150_000))
BOUNDARY = b"parity-boundary-42"
MULTIPART = (
    b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="field"\r\n\r\nvalue \xc3\xa9\r\n'
    b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="photo.bin"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n" + FILE_CONTENT + b"\r\n"
    b"--" + BOUNDARY + b"--\r\n"
)
CHUNKED_BODY = bytes(range(256)) * 400
CHUNKED = (
    b"POST /dump.php HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (CHUNKED_BODY[:40_000], CHUNKED_BODY[40_000:]))
    + b"0\r\n\r\n"
)

PHP_CASES = [
    PHPCase("get-query", _get(b"/dump.php?a=1&b[]=2&b[]=3&c=%20x+y&empty=")),
    PHPCase("query-trailing-question-mark", _get(b"/dump.php?")),
    PHPCase("front-controller-root", _get(b"/")),
    PHPCase("front-controller-pretty-url", _get(b"/blog/2024/hello-world?page=2&sort=desc")),
    PHPCase("front-controller-missing-static", _get(b"/static/missing.css")),
    PHPCase("front-controller-well-known", _get(b"/.well-known/webfinger?resource=acct:a@b")),
    # The recommended config loses PATH_INFO under nginx (try_files resets
    # fastcgi_split_path_info's captures, nginx ticket #321) and rewrites
    # $document_uri to the script; fephp sends what the config means
    # (test_path_info_as_nginx_with_the_workaround compares the rest,
    # test_document_uri_as_nginx_sends_it DOCUMENT_URI).
    PHPCase("path-info", _get(b"/dump.php/extra/path?x=1"), differs=_path_info("/dump.php", "/extra/path")),
    PHPCase("index-php-extra", _get(b"/index.php/extra"), differs=_path_info("/index.php", "/extra")),
    PHPCase("path-info-encoded", _get(b"/dump.php/a%20b/%C3%A9"), differs=_path_info("/dump.php", "/a b/é")),
    PHPCase("directory-index", _get(b"/sub/?q=1")),
    PHPCase("merged-slashes", _get(b"//sub///index.php")),
    PHPCase("percent-encoded-space-dir", _get(b"/a%20b/dump.php")),
    PHPCase("percent-encoded-utf8-dir", _get(b"/caf%C3%A9/dump.php")),
    PHPCase("percent-encoded-dot-php", _get(b"/dump%2Ephp?z=1")),
    PHPCase("unicode-query-encoded", _get(b"/dump.php?q=%E2%9C%93&name=caf%C3%A9")),
    PHPCase(
        "post-urlencoded",
        _post(b"/dump.php?from=query", b"application/x-www-form-urlencoded", b"name=a+b%26c&list[]=1&list[]=2"),
    ),
    PHPCase("post-multipart-file", _post(b"/dump.php", b"multipart/form-data; boundary=" + BOUNDARY, MULTIPART)),
    PHPCase("post-json", _post(b"/dump.php", b"application/json", b'{"a": [1, 2, "\xe2\x9c\x93"]}')),
    PHPCase("post-empty", _post(b"/dump.php", b"application/x-www-form-urlencoded", b"")),
    # nginx 1.22 buffers a chunked body and sends CONTENT_LENGTH (php-fpm
    # needs it), keeping HTTP_TRANSFER_ENCODING; so does fephp.
    PHPCase("post-chunked", CHUNKED),
    PHPCase(
        "put-body",
        b"PUT /dump.php HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
        b"Connection: close\r\n\r\nhello",
    ),
    PHPCase("delete", b"DELETE /dump.php?id=3 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    PHPCase("cookies", _get(b"/dump.php", b"Cookie: a=1; b=two%20words; c=\xc3\xa9")),
    PHPCase(
        "authorization-bearer",
        _get(b"/dump.php", b"Authorization: Bearer abc.def.ghi"),
    ),
    PHPCase(
        "repeated-headers",
        _get(b"/dump.php", b"X-Multi: first", b"X-Multi: second", b"Accept: text/html", b"Accept: */*"),
        # nginx before 1.23 sends a repeated header as repeated FastCGI
        # params and php-fpm keeps the last; fephp joins them with ", "
        # (RFC 9110 5.3), as nginx 1.23 and later do.
        differs={
            "HTTP_X_MULTI": ("second", "first, second"),
            "HTTP_ACCEPT": ("*/*", "text/html, */*"),
        },
    ),
    PHPCase(
        "repeated-cookie-headers",
        _get(b"/dump.php", b"Cookie: a=1", b"Cookie: b=2"),
        # nginx 1.22 sends two HTTP_COOKIE params (php-fpm keeps the last);
        # fephp joins them with "; " (RFC 9113 8.2.3), as nginx 1.23+ does.
        differs={"HTTP_COOKIE": ("b=2", "a=1; b=2")},
        other={"cookie": ({"b": "2"}, {"a": "1", "b": "2"})},
    ),
    # httpoxy (CVE-2016-5385): no HTTP_PROXY in $_SERVER through nginx +
    # php-fpm 8.2 either; fephp never sends it (php-cgi mode included).
    PHPCase("httpoxy", _get(b"/dump.php", b"Proxy: http://evil.example:3128")),
    PHPCase("underscore-headers", _get(b"/dump.php", b"X_Under: 1", b"X-Dash: 2", b"Content_Length: 99")),
    PHPCase("http-1.0", b"GET /dump.php?v=10 HTTP/1.0\r\nHost: {host}\r\n\r\n"),
    PHPCase("php-set-cookie", _get(b"/dump.php?set_cookie=1")),
    PHPCase("php-location", _get(b"/dump.php?location=/elsewhere%3Fa%3D1"), status=302),
    PHPCase("php-location-301", _get(b"/dump.php?location=/moved&status=301"), status=301),
    # nginx writes no reason phrase for a code it does not know; clients
    # ignore the phrase (RFC 9112 4).
    PHPCase("php-status", _get(b"/dump.php?status=418"), status=418, reasons=("", "I'm a Teapot")),
    PHPCase("php-status-451", _get(b"/dump.php?status=451"), status=451),
    PHPCase("get-with-body", _get(b"/dump.php", b"Content-Type: text/plain", b"Content-Length: 3") + b"abc"),
    PHPCase("options", b"OPTIONS /dump.php HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    PHPCase("header-value-utf8-and-lowercase-name", _get(b"/dump.php", b"X-Name: caf\xc3\xa9", b"x-lower: 1")),
    PHPCase("empty-header-values", _get(b"/dump.php", b"X-Empty:", b"Cookie:")),
    PHPCase("forwarded-for-passes-as-is", _get(b"/dump.php", b"X-Forwarded-For: 203.0.113.9")),
    PHPCase(
        "post-without-length",
        b"POST /dump.php HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        # No body: nginx sends $content_length, empty; fephp announces 0 for
        # POST, PUT and PATCH.  PHP reads both as no body.
        differs={"CONTENT_LENGTH": ("", "0")},
    ),
    PHPCase("php-status-404", _get(b"/no/such/page?status=404"), status=404),
]


def _param(case: PHPCase) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in PHP_CASES])
@pytest_twisted.ensureDeferred
async def test_php_sees_the_same_request(fronts, case):
    """PHP's superglobals, input, status and response headers match nginx's, but for the named differences."""
    via_nginx, via_fephp = await both(fronts, case.request)
    assert (via_nginx.status, via_fephp.status) == (case.status, case.status)
    assert (via_nginx.reason, via_fephp.reason) == (case.reasons or (via_nginx.reason, via_nginx.reason))
    nginx = _comparable(via_nginx, fronts.nginx.port, "nginx/1.22.1")
    fephp = _comparable(via_fephp, fronts.fephp.port, "fephp-test")
    root = str(fronts.root)
    for key, (under_nginx, under_fephp) in case.differs.items():
        assert nginx["server"].pop(key, ABSENT) == _at(under_nginx, root), key
        assert fephp["server"].pop(key, ABSENT) == _at(under_fephp, root), key
    for key, (under_nginx, under_fephp) in case.other.items():
        assert (nginx.pop(key), fephp.pop(key)) == (under_nginx, under_fephp), key
    assert _differences(nginx["server"], fephp["server"]) == {}
    assert fephp == nginx
    for name in ("content-type", "set-cookie", "location", "x-parity"):
        assert via_fephp.values(name) == via_nginx.values(name), name


def _at(value: object, root: str) -> object:
    return value.replace("{root}", root) if isinstance(value, str) else value


def _differences(nginx: dict[str, Any], fephp: dict[str, Any]) -> dict[str, tuple[object, object]]:
    """Key -> (nginx's value, fephp's value) for every key whose values differ."""
    return {
        k: (nginx.get(k, ABSENT), fephp.get(k, ABSENT))
        for k in sorted(nginx.keys() | fephp.keys())
        if nginx.get(k, ABSENT) != fephp.get(k, ABSENT)
    }


@pytest_twisted.ensureDeferred
async def test_head_runs_php_and_sends_no_body(fronts):
    """HEAD reaches PHP as HEAD through both fronts, with the same status and PHP headers and no body."""
    request = b"HEAD /dump.php?set_cookie=1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    via_nginx, via_fephp = await both(fronts, request)
    assert (via_nginx.status, via_nginx.body) == (200, b"")
    assert (via_fephp.status, via_fephp.body) == (200, b"")
    for name in ("content-type", "set-cookie", "location", "x-parity"):
        assert via_fephp.values(name) == via_nginx.values(name), name
    assert via_nginx.values("set-cookie") == ["first=one; path=/", "second=two; path=/; HttpOnly"]


@pytest_twisted.ensureDeferred
async def test_path_info_as_nginx_with_the_workaround(fronts):
    """With PATH_INFO kept across try_files, nginx and fephp agree but for fephp's PATH_TRANSLATED (RFC 3875 4.1.6)."""
    request = _get(b"/dump.php/extra/p%C3%A4th?x=1")
    via_nginx = await send(fronts.nginx_keep.port, request)
    via_fephp = await send(fronts.fephp.port, request)
    nginx = _comparable(via_nginx, fronts.nginx_keep.port, "nginx/1.22.1")["server"]
    fephp = _comparable(via_fephp, fronts.fephp.port, "fephp-test")["server"]
    assert (nginx["PATH_INFO"], nginx["PHP_SELF"]) == ("/extra/päth", "/dump.php/extra/päth")
    assert (nginx.get("PATH_TRANSLATED", ABSENT), fephp.pop("PATH_TRANSLATED")) == (ABSENT, f"{fronts.root}/extra/päth")
    assert _differences(nginx, fephp) == {}


@pytest.mark.parametrize(
    "target,document_uri",
    [
        pytest.param(b"/dump.php?x=1", "/dump.php", id="script"),
        pytest.param(b"/blog/post", "/index.php", id="front-controller"),
        pytest.param(b"/sub/", "/sub/index.php", id="directory-index"),
        pytest.param(b"/a%20b/dump.php", "/a b/dump.php", id="encoded"),
        pytest.param(
            b"/dump.php/extra/path",
            "/dump.php",
            id="path-info",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_document_uri_as_nginx_sends_it(fronts, target, document_uri):
    """DOCUMENT_URI is the script's URL path through both fronts, as nginx's $document_uri after try_files."""
    for port in (fronts.nginx.port, fronts.nginx_keep.port, fronts.fephp.port):
        response = await send(port, _get(target))
        assert (port, json.loads(response.body)["server"]["DOCUMENT_URI"]) == (port, document_uri)


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/dump.php?q=✓".encode(), id="query"),
        pytest.param("/café/dump.php?q=✓".encode(), id="path-and-query"),
        pytest.param(b"/dump.php?q=\xff\xfe", id="not-utf8-in-query"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_raw_utf8_request_target(fronts, target):
    """A target with raw (unencoded) non-ASCII bytes reaches PHP through both, REQUEST_URI as received, on both parsers."""
    for request in (_get(target), _post(target, b"text/plain", b"x")):  # no body: fephp's one-step parser; a body: Twisted's
        via_nginx, via_fephp = await both(fronts, request)
        assert (via_nginx.status, via_fephp.status) == (200, 200)
        nginx, fephp = json.loads(via_nginx.body), json.loads(via_fephp.body)
        for key in ("REQUEST_URI", "QUERY_STRING", "SCRIPT_NAME"):
            assert fephp["server"][key] == nginx["server"][key], key
        assert fephp["get"] == nginx["get"]
        assert fephp["server"]["REQUEST_URI"] == target.decode("utf-8", "replace")


@pytest.mark.parametrize(
    "request_,nginx_user",
    [
        pytest.param(_get(b"/dump.php"), "", id="no-authorization"),
        pytest.param(_get(b"/dump.php", b"Authorization: Basic dTpw"), "u", id="basic"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_remote_user_as_nginx_sends_it(fronts, request_, nginx_user):
    """REMOTE_USER is the Basic user name ("" without one) through both fronts, as nginx's $remote_user."""
    via_nginx, via_fephp = await both(fronts, request_)
    assert json.loads(via_nginx.body)["server"].get("REMOTE_USER", ABSENT) == nginx_user
    assert json.loads(via_fephp.body)["server"].get("REMOTE_USER", ABSENT) == nginx_user


@pytest_twisted.ensureDeferred
async def test_basic_authorization_reaches_php_auth_vars(fronts):
    """A Basic Authorization header gives PHP_AUTH_USER/PW and HTTP_AUTHORIZATION through both fronts."""
    via_nginx, via_fephp = await both(fronts, _get(b"/dump.php", b"Authorization: Basic dTpw"))
    for response in (via_nginx, via_fephp):
        server = json.loads(response.body)["server"]
        assert (server["HTTP_AUTHORIZATION"], server["PHP_AUTH_USER"], server["PHP_AUTH_PW"]) == ("Basic dTpw", "u", "p")
        assert "AUTH_TYPE" not in server


# -- refused, redirected and static paths ---------------------------------------------


@dataclass(frozen=True)
class PathCase:
    """A request whose status must be *nginx* through nginx and *fephp* through fephp."""

    id: str
    request: bytes
    nginx: int
    fephp: int
    bug: str | None = None


PATH_CASES = [
    PathCase("dotenv", _get(b"/.env"), 403, 403),
    PathCase("git-config", _get(b"/.git/config"), 403, 403),
    PathCase("hidden-in-subdir", _get(b"/static/.hidden"), 403, 403),
    PathCase("deny-prefix", _get(b"/data/secret.txt"), 403, 403),
    PathCase("deny-prefix-php", _get(b"/data/x.php"), 403, 403),
    PathCase("deny-prefix-encoded", _get(b"/%64ata/secret.txt"), 403, 403),
    PathCase("well-known-file", _get(b"/.well-known/security.txt"), 200, 200),
    PathCase("cve-2019-11043-upload-trick", _get(b"/uploads/image.jpg/x.php"), 404, 404),
    PathCase("missing-php", _get(b"/nothere.php"), 404, 404),
    PathCase("missing-php-with-path-info", _get(b"/nothere.php/x"), 404, 404),
    PathCase("static-file", _get(b"/static/hello.txt"), 200, 200),
    PathCase("static-range", _get(b"/static/hello.txt", b"Range: bytes=0-4"), 206, 206),
    PathCase("static-range-unsatisfiable", _get(b"/static/hello.txt", b"Range: bytes=500-"), 416, 416),
    PathCase("directory-redirect", _get(b"/sub?x=1"), 301, 301),
    PathCase("static-directory-redirect", _get(b"/static"), 301, 301),
    PathCase("php-name-wrong-case", _get(b"/Dump.php"), 404, 404),
    # Both remove dot segments (RFC 3986 5.2.4), decoded ones too, and
    # answer 400 when they would climb above the root.
    PathCase("dotdot-above-root", _get(b"/static/../../private.txt"), 400, 400),
    PathCase("dotdot-encoded-above-root", _get(b"/%2e%2e/private.txt"), 400, 400),
    PathCase("dotdot-inside-root", _get(b"/static/../static/hello.txt"), 200, 200),
    PathCase("dotdot-encoded-inside-root", _get(b"/static/%2e%2e/static/hello.txt"), 200, 200),
    PathCase("dot-segment", _get(b"/./static/hello.txt"), 200, 200),
    PathCase("dotdot-onto-a-hidden-file", _get(b"/static/../.env"), 403, 403),
    PathCase("dotdot-onto-a-denied-prefix", _get(b"/static/../data/secret.txt"), 403, 403),
    # nginx serves a .PHP file as text (its location regex is case-sensitive):
    # the source leaks; fephp refuses PHP source in any spelling.
    PathCase("uppercase-php-source", _get(b"/SOURCE.PHP"), 200, 403),
    # nginx's try_files $uri/ stops at a directory without an index (403);
    # fephp hands it to the front controller (docs/routing.md).
    PathCase("directory-without-index", _get(b"/noindex/"), 403, 200),
    # nginx refuses an encoded NUL and a bad escape in the request line
    # (400); fephp routes them to nothing (404).
    PathCase("nul-byte", _get(b"/dump.php%00.txt"), 400, 404),
    PathCase("bad-percent-escape", _get(b"/%zz"), 400, 404),
    # nginx's static handler allows only GET and HEAD on files (405).
    PathCase("post-to-static-file", _post(b"/static/hello.txt", b"text/plain", b"x"), 405, 405),
    PathCase("options-on-static-file", b"OPTIONS /static/hello.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n", 405, 405),
    PathCase("put-to-static-file", b"PUT /static/hello.txt HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx", 405, 405),
]


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.bug)] if c.bug else []) for c in PATH_CASES],
)
@pytest_twisted.ensureDeferred
async def test_refused_and_static_paths(fronts, case):
    """Each path gets the listed status from each front, and no secret or PHP source ever comes back."""
    via_nginx, via_fephp = await both(fronts, case.request)
    assert (via_nginx.status, via_fephp.status) == (case.nginx, case.fephp)
    assert SECRET not in via_fephp.body
    if case.fephp == 405:
        assert via_fephp.values("allow") == ["GET, HEAD"]  # RFC 9110 15.5.6; nginx sends none


@pytest_twisted.ensureDeferred
async def test_static_bodies_and_types_match(fronts):
    """A static file, a byte range and a CSS file come back with the same bytes, type and range headers."""
    for request in (
        _get(b"/static/hello.txt"),
        _get(b"/static/style.css"),
        _get(b"/static/hello.txt", b"Range: bytes=0-4"),
        _get(b"/static/hello.txt", b"Range: bytes=-3"),
    ):
        via_nginx, via_fephp = await both(fronts, request)
        assert via_fephp.body == via_nginx.body
        for name in ("content-type", "content-range", "content-length"):
            assert via_fephp.values(name) == via_nginx.values(name), (request, name)


@pytest_twisted.ensureDeferred
async def test_directory_redirect_location(fronts):
    """/sub?x=1 redirects to /sub/?x=1 through both (nginx absolute, fephp relative)."""
    via_nginx, via_fephp = await both(fronts, _get(b"/sub?x=1"))
    assert via_nginx.values("location") == [f"http://127.0.0.1:{fronts.nginx.port}/sub/?x=1"]
    assert via_fephp.values("location") == ["/sub/?x=1"]


# -- the request line and Host -------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_absolute_form_target(fronts):
    """GET http://host/dump.php runs dump.php with the path-only REQUEST_URI through both fronts."""
    results = []
    for port in (fronts.nginx.port, fronts.fephp.port):
        request = b"GET http://127.0.0.1:%d/dump.php?abs=1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n" % port
        response = await send(port, request)
        assert response.status == 200
        server = json.loads(response.body)["server"]
        results.append((server["REQUEST_URI"], server["SCRIPT_NAME"], server["QUERY_STRING"]))
    assert results == [("/dump.php?abs=1", "/dump.php", "abs=1")] * 2


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(b"GET /dump.php HTTP/1.1\r\nConnection: close\r\n\r\n", id="no-host"),
        pytest.param(
            b"GET /dump.php HTTP/1.1\r\nHost: {host}\r\nHost: other.example\r\nConnection: close\r\n\r\n",
            id="two-hosts",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_host_is_400(fronts, request_):
    """An HTTP/1.1 request without a Host header, or with two, gets 400 and runs no PHP, as from nginx."""
    via_nginx, via_fephp = await both(fronts, request_)
    assert (via_nginx.status, via_fephp.status) == (400, 400)


@pytest_twisted.ensureDeferred
async def test_http10_without_host(fronts):
    """HTTP/1.0 without Host: SERVER_NAME matches; nginx invents HTTP_HOST from $host, fephp sends none."""
    via_nginx, via_fephp = await both(fronts, b"GET /dump.php HTTP/1.0\r\n\r\n")
    nginx, fephp = json.loads(via_nginx.body)["server"], json.loads(via_fephp.body)["server"]
    assert (nginx["SERVER_NAME"], fephp["SERVER_NAME"]) == ("127.0.0.1", "127.0.0.1")
    assert (nginx["HTTP_HOST"], fephp.get("HTTP_HOST", ABSENT)) == ("127.0.0.1", ABSENT)


@pytest_twisted.ensureDeferred
async def test_host_spelling_and_server_name(fronts):
    """nginx sends its server_name and the Host lowercased; fephp (server_name null) the Host as sent and lowercased."""
    via_nginx, via_fephp = await both(fronts, b"GET /dump.php HTTP/1.1\r\nHost: Example.COM\r\nConnection: close\r\n\r\n")
    nginx, fephp = json.loads(via_nginx.body)["server"], json.loads(via_fephp.body)["server"]
    assert (nginx["SERVER_NAME"], nginx["HTTP_HOST"]) == ("127.0.0.1", "example.com")
    assert (fephp["SERVER_NAME"], fephp["HTTP_HOST"]) == ("example.com", "Example.COM")


@pytest_twisted.ensureDeferred
async def test_fragment_in_request_target(fronts):
    """nginx cuts a (client-illegal) '#fragment' off the path; fephp treats it as part of the name and falls back."""
    via_nginx, via_fephp = await both(fronts, _get(b"/dump.php#frag"))
    nginx, fephp = json.loads(via_nginx.body)["server"], json.loads(via_fephp.body)["server"]
    assert (nginx["SCRIPT_NAME"], nginx["REQUEST_URI"]) == ("/dump.php", "/dump.php#frag")
    assert (fephp["SCRIPT_NAME"], fephp["REQUEST_URI"]) == ("/index.php", "/dump.php#frag")


@pytest_twisted.ensureDeferred
async def test_no_content_status(fronts):
    """A 204 from PHP comes back with the same status, PHP headers and no body through both."""
    via_nginx, via_fephp = await both(fronts, _get(b"/dump.php?status=204"))
    assert (via_nginx.status, via_nginx.body, via_fephp.status, via_fephp.body) == (204, b"", 204, b"")
    for name in ("content-type", "x-parity", "content-length", "transfer-encoding"):
        assert via_fephp.values(name) == via_nginx.values(name), name


@pytest_twisted.ensureDeferred
async def test_static_validators(fronts):
    """The same ETag and the same truncated Last-Modified from both, on a 200 and on a 206."""
    path = fronts.root / "static" / "hello.txt"
    os.utime(path, (1_700_000_000.5, 1_700_000_000.5))
    for extra in ((), (b"Range: bytes=0-4",)):
        via_nginx, via_fephp = await both(fronts, _get(b"/static/hello.txt", *extra))
        assert via_nginx.values("last-modified") == ["Tue, 14 Nov 2023 22:13:20 GMT"]
        assert len(via_nginx.values("etag")) == 1
        for name in ("last-modified", "etag"):
            assert via_fephp.values(name) == via_nginx.values(name), (extra, name)


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    "condition, status",
    [
        (b'If-None-Match: "ETAG"', 304),
        (b'If-None-Match: "other", W/"ETAG"', 304),
        (b"If-None-Match: *", 304),
        (b'If-None-Match: "other"', 200),
        (b"If-Modified-Since: Tue, 14 Nov 2023 22:13:20 GMT", 304),
        (b"If-Modified-Since: Tue, 14 Nov 2023 22:13:19 GMT", 200),
        # If-None-Match decides alone when it is there (RFC 9110 13.2.2).
        (b'If-None-Match: "other"\r\nIf-Modified-Since: Tue, 14 Nov 2023 22:13:20 GMT', 200),
        (b"If-Modified-Since: yesterday", 200),
    ],
)
async def test_static_revalidation(fronts, condition, status):
    """Conditional GETs of a static file get the same status from both, a 304 without a body."""
    path = fronts.root / "static" / "hello.txt"
    os.utime(path, (1_700_000_000.5, 1_700_000_000.5))
    first, _ = await both(fronts, _get(b"/static/hello.txt"))
    condition = condition.replace(b'"ETAG"', first.values("etag")[0].encode())
    via_nginx, via_fephp = await both(fronts, _get(b"/static/hello.txt", condition))
    assert (via_nginx.status, via_fephp.status) == (status, status)
    if status == 304:
        assert via_fephp.body == b"" and via_fephp.values("content-length") == via_nginx.values("content-length")


@pytest_twisted.ensureDeferred
async def test_expect_100_continue(fronts):
    """A POST with Expect: 100-continue gets 100 Continue, then PHP's answer with the body, from both."""
    request = (
        b"POST /dump.php HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\nabc"
    )
    for port in (fronts.nginx.port, fronts.fephp.port):
        raw = await deferToThread(_raw, port, request)
        interim, _, final = raw.partition(b"\r\n\r\n")
        assert (interim, final.split(b"\r\n", 1)[0]) == (b"HTTP/1.1 100 Continue", b"HTTP/1.1 200 OK")
        assert b'"length": 3' in final


@pytest.mark.parametrize(
    "host",
    [
        pytest.param(b"evil.example/x", id="slash"),
        pytest.param(b"..", id="dots"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_invalid_host_is_400(fronts, host):
    """A Host header that is not a host[:port] gets 400 and runs no PHP, as from nginx."""
    request = b"GET /dump.php HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    via_nginx, via_fephp = await both(fronts, request)
    assert (via_nginx.status, via_fephp.status) == (400, 400)


@pytest_twisted.ensureDeferred
async def test_lenient_request_parsing(fronts):
    """nginx refuses a lower-case method with 400; fephp passes it on."""
    lower = b"get /dump.php HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    via_nginx, via_fephp = await both(fronts, lower)
    assert (via_nginx.status, via_fephp.status) == (400, 200)
    assert json.loads(via_fephp.body)["server"]["REQUEST_METHOD"] == "get"  # methods are case-sensitive tokens


#: Request framings each front answers in its own way (docs/compatibility.md, "Request framing"):
#: (id, request, nginx's status, fephp's status).
FRAMINGS = [
    ("folded-header", b"GET /dump.php HTTP/1.1\r\nHost: {host}\r\nX-Fold: a\r\n  b\r\nConnection: close\r\n\r\n", 400, 400),
    ("te-identity-with-length", b"POST /dump.php HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: identity\r\n"
     b"Content-Length: 3\r\nConnection: close\r\n\r\nabc", 501, 400),
    ("te-gzip-chunked", b"POST /dump.php HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: gzip, chunked\r\n"
     b"Connection: close\r\n\r\n0\r\n\r\n", 501, 501),
    ("te-on-http-1.0", b"POST /dump.php HTTP/1.0\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400, 400),
    ("two-equal-lengths", b"POST /dump.php HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nContent-Length: 3\r\n"
     b"Connection: close\r\n\r\nabc", 400, 400),
    ("bare-lf", b"GET /dump.php HTTP/1.1\nHost: {host}\nConnection: close\n\n", 200, 400),
    ("chunk-size-over-the-limit", b"POST /dump.php HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
     b"Connection: close\r\n\r\n10000000\r\n" + b"a" * 1000, 413, 413),  # nginx waits for the chunk's first bytes
    ("chunk-size-absurd", b"POST /dump.php HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
     b"Connection: close\r\n\r\n1" + b"0" * 40 + b"\r\n", 400, 413),
]


@pytest.mark.parametrize(("request_bytes", "nginx", "fephp"), [f[1:] for f in FRAMINGS], ids=[f[0] for f in FRAMINGS])
@pytest_twisted.ensureDeferred
async def test_request_framing(fronts, request_bytes, nginx, fephp):
    """Each front's answer to a framing RFC 9112 lets a server refuse, side by side."""
    via_nginx, via_fephp = await both(fronts, request_bytes)
    assert (via_nginx.status, via_fephp.status) == (nginx, fephp)


@pytest_twisted.ensureDeferred
async def test_smuggling_shapes_refused_by_both(fronts):
    """Content-Length with Transfer-Encoding, or a non-numeric Content-Length, gets 400 from both."""
    for request in (
        b"POST /dump.php HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /dump.php HTTP/1.1\r\nHost: {host}\r\nContent-Length: abc\r\nConnection: close\r\n\r\n",
    ):
        via_nginx, via_fephp = await both(fronts, request)
        assert (via_nginx.status, via_fephp.status) == (400, 400)


@pytest_twisted.ensureDeferred
async def test_php_response_headers_repeat_and_x_accel(fronts):
    """Repeated Link and Vary headers pass as sent; X-Accel-* reach the client through neither."""
    via_nginx, via_fephp = await both(fronts, _get(b"/dump.php?multi_header=1&accel=1"))
    for name in ("link", "vary"):
        assert via_fephp.values(name) == via_nginx.values(name), name
    assert via_nginx.values("link") == ["</a.css>; rel=preload", "</b.js>; rel=preload"]
    assert (via_nginx.values("x-accel-buffering"), via_nginx.values("x-accel-expires")) == ([], [])
    assert (via_fephp.values("x-accel-buffering"), via_fephp.values("x-accel-expires")) == ([], [])


def _raw(port: int, data: bytes) -> bytes:
    return exchange(port, data, reset_is_close=True)


@pytest_twisted.ensureDeferred
async def test_header_limits(fronts):
    """Three 6 KB headers pass nginx (8 KB per line) but exceed fephp's 16 KB head: 431 from fephp."""
    request = b"GET /dump.php HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-Big%d: %s\r\n" % (i, b"a" * 6000) for i in range(3))
    request += b"Connection: close\r\n\r\n"
    under_nginx = await deferToThread(_raw, fronts.nginx.port, request)
    under_fephp = await deferToThread(_raw, fronts.fephp.port, request)
    assert under_nginx.startswith(b"HTTP/1.1 200 OK\r\n")
    assert under_fephp.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


@pytest.mark.parametrize("target_size", [pytest.param(20_000, id="20KB"), pytest.param(17_000, id="17KB")])
@pytest_twisted.ensureDeferred
async def test_long_request_line_is_414(fronts, target_size):
    """A request line longer than the head may be gets 414 from both fronts."""
    request = b"GET /dump.php?" + b"q" * target_size + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    under_nginx = await deferToThread(_raw, fronts.nginx.port, request)
    under_fephp = await deferToThread(_raw, fronts.fephp.port, request)
    assert under_nginx.startswith(b"HTTP/1.1 414 Request-URI Too Large\r\n")
    assert under_fephp.startswith(b"HTTP/1.1 414 Request-URI Too Long\r\n")


@pytest_twisted.ensureDeferred
async def test_one_long_header_line_gets_an_answer(fronts):
    """A single 20 KB header line gets 431 from fephp, as documented (nginx: 400), not a silent close."""
    request = b"GET /dump.php HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\nConnection: close\r\n\r\n"
    under_nginx = await deferToThread(_raw, fronts.nginx.port, request)
    under_fephp = await deferToThread(_raw, fronts.fephp.port, request)
    assert under_nginx.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert under_fephp.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


# -- features both have: gzip, expires ------------------------------------------------

#: nginx.conf lines for what fephp does by default or by one key: gzip as
#: fephp's defaults (level 5, 512 bytes, Vary), ``expires 1h`` on /static/.
NGINX_FEATURES_HTTP = """\
    gzip on;
    gzip_vary on;
    gzip_comp_level 5;
    gzip_min_length 512;
    gzip_types text/css text/plain application/javascript application/json;
"""
NGINX_FEATURES_SERVER = """\
        location /static/ {{ expires 1h; }}
        location /protected/ {{ internal; alias {private}/; }}
"""
#: What Symfony's docs tell nginx users to pass, for X-Accel-Redirect.
NGINX_FEATURES_PHP = """\
            fastcgi_param HTTP_X_SENDFILE_TYPE X-Accel-Redirect;
            fastcgi_param HTTP_X_ACCEL_MAPPING {private}/=/protected/;
"""


@dataclass
class FeatureFronts:
    nginx: Nginx
    fephp: InProcessFront
    root: Path


@pytest.fixture(scope="module")
def feature_fronts(tmp_path_factory: pytest.TempPathFactory, php_fpm) -> Iterator[FeatureFronts]:
    from fephp.server.config import config_from_dict

    base = tmp_path_factory.mktemp("features")
    root = make_root(base)
    shutil.copy(SITE / "page.php", root / "page.php")
    shutil.copy(SITE / "sendfile.php", root / "sendfile.php")
    (root / "static" / "site.css").write_bytes(b"body { margin: 0; padding: 0; color: #333; }\n" * 40)
    private = Path(os.path.realpath(base / "private"))
    private.mkdir()
    (private / "report.pdf").write_bytes(FILE_CONTENT)
    (private / "notes.txt").write_bytes(b"notes that compress well. " * 100)
    server = Nginx(
        base / "nginx", root=root, fpm_socket=php_fpm.unix_path, binary=find_nginx(),
        http_extra=NGINX_FEATURES_HTTP, server_extra=NGINX_FEATURES_SERVER.format(private=private),
        php_extra=NGINX_FEATURES_PHP.format(private=private),
    ).start()
    config = config_from_dict({
        "server": {"root": str(root), "deny": ["/data/"], "x_sendfile_roots": [f"{private}=/protected/"]},
        "compression": {"algorithms": ["gzip"], "gzip_level": 5, "min_size": 512},
        "static": {"cache": [{"prefix": "/static/", "expires": "1h"}]},
    })
    front = pytest_twisted.blockon(defer.ensureDeferred(InProcessFront.configured(config, pool(php_fpm.unix_endpoint)).start()))
    try:
        yield FeatureFronts(server, front, root)
    finally:
        pytest_twisted.blockon(defer.ensureDeferred(front.stop()))
        server.stop()


async def both_features(fronts: FeatureFronts, template: bytes) -> tuple[Response, Response]:
    return await send(fronts.nginx.port, template), await send(fronts.fephp.port, template)


def _gunzip(response: Response) -> bytes:
    import gzip

    return gzip.decompress(response.body) if response.values("content-encoding") == ["gzip"] else response.body


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("target", [b"/page.php", b"/static/site.css"])
async def test_gzip_like_nginx(feature_fronts, target):
    """A PHP page and a CSS file: gzip and Vary through both, the same bytes once decoded; plain without Accept-Encoding."""
    nginx, fephp = await both_features(feature_fronts, _get(target, b"Accept-Encoding: gzip"))
    for r in (nginx, fephp):
        assert (r.status, r.values("content-encoding"), r.values("vary")) == (200, ["gzip"], ["Accept-Encoding"])
    assert _gunzip(nginx) == _gunzip(fephp)
    # Within a tenth of nginx's size at the same level (zlib, same input).
    assert abs(len(nginx.body) - len(fephp.body)) < len(nginx.body) // 10
    nginx, fephp = await both_features(feature_fronts, _get(target))
    for r in (nginx, fephp):
        assert (r.values("content-encoding"), r.values("vary")) == ([], ["Accept-Encoding"])
    assert nginx.body == fephp.body


@pytest_twisted.ensureDeferred
async def test_gzip_weakens_static_etag_like_nginx(feature_fronts):
    """A gzipped static file's ETag is the weak form of the plain one, through both."""
    for port in (feature_fronts.nginx.port, feature_fronts.fephp.port):
        plain = await send(port, _get(b"/static/site.css"))
        zipped = await send(port, _get(b"/static/site.css", b"Accept-Encoding: gzip"))
        assert zipped.values("etag") == ["W/" + plain.values("etag")[0]]


@pytest_twisted.ensureDeferred
async def test_gzip_skips_small_bodies(feature_fronts):
    """A static file under 512 bytes is plain through both; a small PHP page only through fephp.

    nginx applies gzip_min_length to a known Content-Length only, and PHP
    sends none; fephp knows the length of an answer that came whole.
    """
    nginx, fephp = await both_features(feature_fronts, _get(b"/static/hello.txt", b"Accept-Encoding: gzip"))
    assert nginx.values("content-encoding") == fephp.values("content-encoding") == []
    assert nginx.body == fephp.body
    nginx, fephp = await both_features(feature_fronts, _get(b"/page.php?kb=0", b"Accept-Encoding: gzip"))
    assert (nginx.values("content-encoding"), fephp.values("content-encoding")) == (["gzip"], [])
    assert _gunzip(nginx) == fephp.body


@pytest_twisted.ensureDeferred
async def test_expires_like_nginx(feature_fronts):
    """expires 1h on /static/: Cache-Control max-age=3600 and an Expires an hour ahead through both; nothing on PHP."""
    from twisted.web.http import stringToDatetime

    nginx, fephp = await both_features(feature_fronts, _get(b"/static/hello.txt"))
    for r in (nginx, fephp):
        assert r.values("cache-control") == ["max-age=3600"]
        date = stringToDatetime(r.values("date")[0].encode())
        assert stringToDatetime(r.values("expires")[0].encode()) - date in (3599, 3600, 3601)
    nginx, fephp = await both_features(feature_fronts, _get(b"/static/hello.txt", b"If-None-Match: " + fephp.values("etag")[0].encode()))
    assert fephp.status == 304 and fephp.values("cache-control") == ["max-age=3600"]
    nginx, fephp = await both_features(feature_fronts, _get(b"/page.php?kb=0"))
    assert nginx.values("cache-control") == fephp.values("cache-control") == []
    assert nginx.values("expires") == fephp.values("expires") == []


@pytest_twisted.ensureDeferred
async def test_x_accel_redirect_like_nginx(feature_fronts):
    """Symfony-style X-Accel-Redirect: the file, PHP's Content-Type and Cache-Control, no PHP body, the same Range answer."""
    private = feature_fronts.root.parent / "private"
    target = b"/sendfile.php?type=application/pdf&symfony=" + str(private / "report.pdf").encode()
    nginx, fephp = await both_features(feature_fronts, _get(target))
    for r in (nginx, fephp):
        assert (r.status, r.body) == (200, FILE_CONTENT)
        assert r.values("content-type") == ["application/pdf"]
        assert r.values("cache-control") == ["private, max-age=60"]
        assert r.values("x-accel-redirect") == []
    assert nginx.values("etag") == fephp.values("etag") and nginx.values("last-modified") == fephp.values("last-modified")
    nginx, fephp = await both_features(feature_fronts, _get(target, b"Range: bytes=100-199"))
    assert (nginx.status, nginx.body, nginx.values("content-range")) == (fephp.status, fephp.body, fephp.values("content-range"))
    assert fephp.status == 206 and fephp.body == FILE_CONTENT[100:200]
    escape = b"/sendfile.php?h=X-Accel-Redirect&v=/protected/../private.txt"
    nginx, fephp = await both_features(feature_fronts, _get(escape))
    assert nginx.status == fephp.status == 404  # nginx refuses the unsafe URI too


def _keep_alive_10(port: int, targets: list[bytes]) -> list[tuple[int, list[str], bytes]]:
    """HTTP/1.0 requests with Connection: keep-alive, one after another on one connection.

    Each response is read by its Content-Length; the list ends early when
    the server closes instead.
    """
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        reader = s.makefile("rb")
        for target in targets:
            s.sendall(b"GET " + target + b" HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            status_line = reader.readline()
            if not status_line:
                break
            headers = []
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers.append((name.strip().lower(), value.strip()))
            connection = [v for k, v in headers if k == "connection"]
            lengths = [int(v) for k, v in headers if k == "content-length"]
            body = reader.read(lengths[0]) if lengths else reader.read()
            out.append((int(status_line.split()[1]), connection, body))
            if not lengths:
                break
    return out


@pytest_twisted.ensureDeferred
async def test_http10_keep_alive(fronts):
    """An HTTP/1.0 client asking for keep-alive gets Connection: keep-alive and a kept connection from both fronts.

    nginx cannot give PHP's answer a length for HTTP/1.0 (no chunks) and
    closes after it; fephp gives a length to a PHP answer that came whole
    and keeps the connection.
    """
    targets = [b"/static/hello.txt", b"/static/style.css", b"/dump.php?n=1", b"/static/hello.txt"]
    under_nginx = await deferToThread(_keep_alive_10, fronts.nginx.port, targets)
    under_fephp = await deferToThread(_keep_alive_10, fronts.fephp.port, targets)
    assert [(status, connection) for status, connection, _ in under_fephp] == [(200, ["keep-alive"])] * 4
    assert [(status, connection) for status, connection, _ in under_nginx] == [(200, ["keep-alive"])] * 2 + [(200, ["close"])]
    assert [body for *_, body in under_fephp][:2] == [body for *_, body in under_nginx][:2]


@pytest_twisted.ensureDeferred
async def test_http10_without_keep_alive_is_closed(fronts):
    """An HTTP/1.0 request without keep-alive is answered and the connection closed, by both fronts."""
    for port in (fronts.nginx.port, fronts.fephp.port):
        raw = await deferToThread(_raw, port, b"GET /static/hello.txt HTTP/1.0\r\nHost: x\r\n\r\n")
        head = raw.partition(b"\r\n\r\n")[0].lower()
        assert raw.split(b" ", 2)[1] == b"200" and b"connection: keep-alive" not in head


# -- real client addresses behind a trusted proxy (nginx's realip module) ----------------


@dataclass
class RealIPFronts:
    nginx: Nginx
    fephp: InProcessFront
    header: str


@pytest.fixture(scope="module", params=["X-Forwarded-For", "X-Real-IP"])
def realip_fronts(request, tmp_path_factory: pytest.TempPathFactory, php_fpm) -> Iterator[RealIPFronts]:
    """nginx with set_real_ip_from 127.0.0.0/8 and real_ip_recursive on, and fephp trusting the same."""
    header = request.param
    base = tmp_path_factory.mktemp("realip")
    root = make_root(base)
    extra = (
        f"        set_real_ip_from 127.0.0.0/8;\n        set_real_ip_from 10.0.0.0/8;\n"
        f"        real_ip_header {header};\n        real_ip_recursive on;"
    )
    server = Nginx(base / "nginx", root=root, fpm_socket=php_fpm.unix_path, binary=find_nginx(), server_extra=extra).start()
    try:
        real_ip = RealIP((parse_trusted("127.0.0.0/8"), parse_trusted("10.0.0.0/8")), header)
        front = pytest_twisted.blockon(defer.ensureDeferred(fephp_front(root, php_fpm.unix_endpoint, real_ip).start()))
        try:
            yield RealIPFronts(server, front, header)
        finally:
            pytest_twisted.blockon(defer.ensureDeferred(front.stop()))
    finally:
        server.stop()


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"203.0.113.9", id="one-address"),
        pytest.param(b"6.6.6.6, 203.0.113.9", id="forged-left-most"),
        pytest.param(b"203.0.113.9, 10.1.2.3", id="right-most-trusted-skipped"),
        pytest.param(b"10.9.9.9, 127.0.0.5", id="all-trusted"),
        pytest.param(b"203.0.113.9:4711", id="with-port"),
        pytest.param(b"2001:db8::7", id="ipv6"),
        pytest.param(b"not-an-address", id="garbage"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_real_client_address_behind_a_trusted_proxy(realip_fronts, value):
    """REMOTE_ADDR (and REMOTE_PORT) are the same as nginx's realip module gives, for X-Forwarded-For and X-Real-IP."""
    request = _get(b"/dump.php", realip_fronts.header.encode() + b": " + value)
    via_nginx = await send(realip_fronts.nginx.port, request)
    via_fephp = await send(realip_fronts.fephp.port, request)
    nginx, fephp = json.loads(via_nginx.body)["server"], json.loads(via_fephp.body)["server"]
    assert fephp["REMOTE_ADDR"] == nginx["REMOTE_ADDR"]
    if nginx["REMOTE_ADDR"] != "127.0.0.1":
        assert fephp["REMOTE_PORT"] == nginx["REMOTE_PORT"]


# -- HTTP/2: what PHP sees through nginx (listen ... ssl http2) and through fephp (ssl:) -----


@dataclass
class H2Fronts:
    nginx_port: int
    fephp_port: int


@pytest.fixture(scope="module")
def h2_fronts(tmp_path_factory: pytest.TempPathFactory, php_fpm) -> Iterator[H2Fronts]:
    """nginx with listen ... ssl http2 and fephp on an ssl: listener, one self-signed certificate, one root."""
    from tests.support.tls import self_signed_pem

    base = tmp_path_factory.mktemp("h2-parity")
    root = make_root(base)
    pem = self_signed_pem(base)
    tls = f"        ssl_certificate {pem};\n        ssl_certificate_key {pem};"
    server = Nginx(base / "nginx", root=root, fpm_socket=php_fpm.unix_path, binary=find_nginx(),
                   listen_options="ssl http2", server_extra=tls)
    server.start()
    front = fephp_front(root, php_fpm.unix_endpoint)
    try:
        yield H2Fronts(server.port, pytest_twisted.blockon(defer.ensureDeferred(front.start_tls(pem))))
    finally:
        pytest_twisted.blockon(defer.ensureDeferred(front.stop()))
        server.stop()


def _h2_dump(port: int, method: str, target: str, headers: tuple[tuple[str, str], ...], body: bytes | None) -> tuple[int, dict[str, Any]]:
    from tests.support.h2client import H2Client

    client = H2Client(port)
    try:
        assert client.alpn == "h2"
        response = client.wait(client.request(method, target, headers, body))
        return response.status, json.loads(response.body)
    finally:
        client.close()


H2_CASES = [
    pytest.param("GET", "/dump.php?a=1&b[]=2", (), None, id="get-query"),
    pytest.param("GET", "/dump.php", (("cookie", "a=1"), ("cookie", "b=two"), ("cookie", "c=3")), None, id="cookies-split"),
    pytest.param("GET", "/blog/post?x=1", (("x-custom", "v"), ("accept", "text/html")), None, id="front-controller"),
    pytest.param("POST", "/dump.php", (("content-type", "application/x-www-form-urlencoded"),), b"name=a+b&list[]=1", id="post-form"),
    pytest.param("POST", "/dump.php", (("content-type", "application/octet-stream"),), FILE_CONTENT, id="post-150k-no-length"),
    pytest.param("POST", "/dump.php", (("content-type", "text/plain"), ("content-length", "5")), b"hello", id="post-with-length"),
]


@pytest.mark.parametrize(("method", "target", "headers", "body"), H2_CASES)
@pytest_twisted.ensureDeferred
async def test_php_sees_the_same_request_over_http2(h2_fronts, method, target, headers, body):
    """Over HTTP/2 PHP sees through fephp what it sees through nginx: SERVER_PROTOCOL HTTP/2.0, cookies joined, the body."""
    nginx_status, nginx = await deferToThread(_h2_dump, h2_fronts.nginx_port, method, target, headers, body)
    fephp_status, fephp = await deferToThread(_h2_dump, h2_fronts.fephp_port, method, target, headers, body)
    assert (nginx_status, fephp_status) == (200, 200)
    for dump, port in ((nginx, h2_fronts.nginx_port), (fephp, h2_fronts.fephp_port)):
        server = dump["server"]
        assert server.pop("SERVER_PORT") == str(port)
        for key in ("SERVER_SOFTWARE", "REMOTE_PORT", "REQUEST_TIME", "REQUEST_TIME_FLOAT", *SEPARATE):
            server.pop(key, None)
    # Debian's fastcgi_params send $host (no port); fephp the :authority as received.
    assert (nginx["server"].pop("HTTP_HOST"), fephp["server"].pop("HTTP_HOST")) == (
        "127.0.0.1", f"127.0.0.1:{h2_fronts.fephp_port}")
    assert re.fullmatch(r"[0-9a-f]{32}", fephp["server"].pop("HTTP_X_REQUEST_ID"))  # fephp's own, per request
    assert fephp["server"]["SERVER_PROTOCOL"] == "HTTP/2.0"
    assert _differences(nginx["server"], fephp["server"]) == {}
    assert fephp == nginx
