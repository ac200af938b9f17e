"""CGI environment: exact variables for a request, header mapping, httpoxy, nothing inherited."""

from __future__ import annotations

import dataclasses

import pytest

from fephp.cgi import environ as cgienv
from fephp.cgi.environ import RequestFacts, build_env
from fephp.cgi.routing import Script
from tests.support.cgi_requests import FETCH, GET, INDEX, POST, ROOT


def env_of(facts: RequestFacts, route: Script = INDEX, **kwargs: str) -> dict[bytes, bytes]:
    """build_env as a map, checking on the way that no name appears twice."""
    pairs = build_env(facts, route, document_root=ROOT, server_software="fephp/0.1", **kwargs)
    env = dict(pairs)
    assert len(env) == len(pairs)
    return env


def with_headers(*headers: tuple[bytes, bytes], facts: RequestFacts = GET) -> RequestFacts:
    return dataclasses.replace(facts, headers=list(headers))


def http_vars(env: dict[bytes, bytes]) -> dict[bytes, bytes]:
    return {k: v for k, v in env.items() if k.startswith(b"HTTP_")}


def test_representative_request() -> None:
    """A POST over HTTPS to a script with PATH_INFO gives exactly these variables, in this order."""
    assert build_env(POST, FETCH, document_root=ROOT, server_software="fephp/0.1") == [
        (b"SCRIPT_FILENAME", b"/srv/www/lib/exe/fetch.php"),
        (b"QUERY_STRING", b"media=a&w=10"),
        (b"REQUEST_METHOD", b"POST"),
        (b"CONTENT_TYPE", b"application/x-www-form-urlencoded"),
        (b"CONTENT_LENGTH", b"7"),
        (b"SCRIPT_NAME", b"/lib/exe/fetch.php"),
        (b"REQUEST_URI", b"/lib/exe/fetch.php/x%20y.png?media=a&w=10"),
        (b"DOCUMENT_URI", b"/lib/exe/fetch.php"),
        (b"DOCUMENT_ROOT", b"/srv/www"),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"REQUEST_SCHEME", b"https"),
        (b"HTTPS", b"on"),
        (b"GATEWAY_INTERFACE", b"CGI/1.1"),
        (b"SERVER_SOFTWARE", b"fephp/0.1"),
        (b"REMOTE_ADDR", b"203.0.113.7"),
        (b"REMOTE_PORT", b"51234"),
        (b"SERVER_ADDR", b"192.0.2.1"),
        (b"SERVER_PORT", b"8443"),
        (b"SERVER_NAME", b"wiki.example"),
        (b"REDIRECT_STATUS", b"200"),
        (b"REMOTE_USER", b"u"),
        (b"PATH_INFO", b"/x y.png"),
        (b"PATH_TRANSLATED", b"/srv/www/x y.png"),
        (b"HTTP_HOST", b"wiki.example:8443"),
        (b"HTTP_USER_AGENT", b"curl/8.5"),
        (b"HTTP_CONTENT_TYPE", b"application/x-www-form-urlencoded"),
        (b"HTTP_CONTENT_LENGTH", b"7"),
        (b"HTTP_COOKIE", b"a=1; b=2"),
        (b"HTTP_ACCEPT", b"text/html, */*"),
        (b"HTTP_AUTHORIZATION", b"Basic dTpw"),
    ]


def test_plain_get() -> None:
    """A GET over HTTP without a body: empty CONTENT_* like nginx, no HTTPS, no PATH_TRANSLATED."""
    assert env_of(GET) == {
        b"SCRIPT_FILENAME": b"/srv/www/index.php",
        b"QUERY_STRING": b"",
        b"REQUEST_METHOD": b"GET",
        b"CONTENT_TYPE": b"",
        b"CONTENT_LENGTH": b"",
        b"SCRIPT_NAME": b"/index.php",
        b"REQUEST_URI": b"/",
        b"DOCUMENT_URI": b"/index.php",
        b"DOCUMENT_ROOT": b"/srv/www",
        b"SERVER_PROTOCOL": b"HTTP/1.0",
        b"REQUEST_SCHEME": b"http",
        b"GATEWAY_INTERFACE": b"CGI/1.1",
        b"SERVER_SOFTWARE": b"fephp/0.1",
        b"REMOTE_ADDR": b"::1",
        b"REMOTE_PORT": b"40000",
        b"SERVER_ADDR": b"::1",
        b"SERVER_PORT": b"80",
        b"SERVER_NAME": b"example.org",
        b"REDIRECT_STATUS": b"200",
        b"REMOTE_USER": b"",
        b"PATH_INFO": b"",
        b"HTTP_HOST": b"Example.ORG",
    }


HEADER_CASES: list[tuple[str, list[tuple[bytes, bytes]], dict[bytes, bytes]]] = [
    ("proxy-dropped", [(b"Proxy", b"http://evil:8080"), (b"X-A", b"1")], {b"HTTP_X_A": b"1"}),
    ("proxy-any-case-dropped", [(b"pRoXy", b"http://evil:8080")], {}),
    ("underscore-dropped", [(b"Content_Length", b"99"), (b"X_Forwarded_For", b"1.2.3.4")], {}),
    ("space-dropped", [(b"X Y", b"1")], {}),
    ("dot-dropped", [(b"X.Y", b"1")], {}),
    ("non-ascii-dropped", [("Ünï".encode(), b"1")], {}),
    ("empty-name-dropped", [(b"", b"1")], {}),
    ("dashes-and-digits", [(b"x-Custom-2", b"v")], {b"HTTP_X_CUSTOM_2": b"v"}),
    ("repeated-joined", [(b"Accept", b"a"), (b"X", b"1"), (b"ACCEPT", b"b"), (b"accept", b"c")],
     {b"HTTP_ACCEPT": b"a, b, c", b"HTTP_X": b"1"}),
    ("cookie-joined", [(b"Cookie", b"a=1"), (b"Cookie", b"b=2; c=3")], {b"HTTP_COOKIE": b"a=1; b=2; c=3"}),
    ("authorization", [(b"Authorization", b"Bearer t")], {b"HTTP_AUTHORIZATION": b"Bearer t"}),
    ("empty-value-kept", [(b"X-Empty", b"")], {b"HTTP_X_EMPTY": b""}),
    ("forwarded-not-invented", [], {}),
]


@pytest.mark.parametrize(("headers", "expected"), [c[1:] for c in HEADER_CASES], ids=[c[0] for c in HEADER_CASES])
def test_headers(headers: list[tuple[bytes, bytes]], expected: dict[bytes, bytes]) -> None:
    """Request headers become exactly these HTTP_* variables and no others."""
    assert http_vars(env_of(with_headers(*headers))) == expected


def test_header_cannot_overwrite_cgi_variable() -> None:
    """A header can only ever produce HTTP_* names, so CONTENT_LENGTH and SCRIPT_FILENAME stay ours."""
    facts = with_headers((b"Content_Length", b"999"), (b"Script-Filename", b"/etc/passwd"), (b"Https", b"on"))
    env = env_of(facts)
    assert (env[b"CONTENT_LENGTH"], env[b"SCRIPT_FILENAME"]) == (b"", b"/srv/www/index.php")
    assert b"HTTPS" not in env
    assert http_vars(env) == {b"HTTP_SCRIPT_FILENAME": b"/etc/passwd", b"HTTP_HTTPS": b"on"}


SERVER_NAME_CASES: list[tuple[str, bytes | None, str | None, bytes]] = [
    ("configured-wins", b"evil.example", "wiki.example", b"wiki.example"),
    ("host-without-port", b"Wiki.Example:8080", None, b"wiki.example"),
    ("host-ipv6-with-port", b"[2001:db8::1]:8080", None, b"[2001:db8::1]"),
    ("host-ipv6", b"[2001:db8::1]", None, b"[2001:db8::1]"),
    ("no-host", None, None, b"192.0.2.1"),
    ("empty-host", b"", None, b"192.0.2.1"),
    ("port-only-host", b":80", None, b"192.0.2.1"),
]


@pytest.mark.parametrize(
    ("host", "configured", "expected"), [c[1:] for c in SERVER_NAME_CASES], ids=[c[0] for c in SERVER_NAME_CASES]
)
def test_server_name(host: bytes | None, configured: str | None, expected: bytes) -> None:
    """SERVER_NAME is the configured name, else the Host header without its port, else the server address."""
    facts = dataclasses.replace(GET, host=host, server_addr="192.0.2.1")
    env = env_of(facts, server_name=configured) if configured else env_of(facts)
    assert env[b"SERVER_NAME"] == expected


SCHEME_CASES = [("https", True, {b"REQUEST_SCHEME": b"https", b"HTTPS": b"on"}),
                ("http", False, {b"REQUEST_SCHEME": b"http"})]


@pytest.mark.parametrize(("https", "expected"), [c[1:] for c in SCHEME_CASES], ids=[c[0] for c in SCHEME_CASES])
def test_https(https: bool, expected: dict[bytes, bytes]) -> None:
    """HTTPS is "on" over TLS and absent otherwise (PHP apps test !empty($_SERVER['HTTPS']))."""
    env = env_of(dataclasses.replace(GET, https=https))
    assert {k: v for k, v in env.items() if k in (b"REQUEST_SCHEME", b"HTTPS")} == expected


PATH_CASES: list[tuple[str, Script, str, dict[bytes, bytes]]] = [
    ("no-path-info", INDEX, ROOT, {b"PATH_INFO": b""}),
    ("path-info", Script(ROOT + "/index.php", "/index.php", "/a/b", "/index.php/a/b"), ROOT,
     {b"PATH_INFO": b"/a/b", b"PATH_TRANSLATED": b"/srv/www/a/b"}),
    ("root-with-slash", Script(ROOT + "/index.php", "/index.php", "/a", "/index.php/a"), ROOT + "/",
     {b"PATH_INFO": b"/a", b"PATH_TRANSLATED": b"/srv/www/a"}),
    ("utf8-path-info", Script(ROOT + "/index.php", "/index.php", "/ünï", "/index.php/ünï"), ROOT,
     {b"PATH_INFO": "/ünï".encode(), b"PATH_TRANSLATED": "/srv/www/ünï".encode()}),
]


@pytest.mark.parametrize(
    ("route", "root", "expected"), [c[1:] for c in PATH_CASES], ids=[c[0] for c in PATH_CASES]
)
def test_path_translated(route: Script, root: str, expected: dict[bytes, bytes]) -> None:
    """PATH_INFO is always present and PATH_TRANSLATED only when PATH_INFO is not empty (RFC 3875 4.1.6)."""
    env = build_env(GET, route, document_root=root, server_software="fephp")
    assert {k: v for k, v in env if k in (b"PATH_INFO", b"PATH_TRANSLATED")} == expected


BODY_CASES: list[tuple[str, int | None, bytes | None, dict[bytes, bytes]]] = [
    ("no-body", None, None, {b"CONTENT_LENGTH": b"", b"CONTENT_TYPE": b""}),
    ("empty-body", 0, None, {b"CONTENT_LENGTH": b"0", b"CONTENT_TYPE": b""}),
    ("body", 1048576, b"application/json", {b"CONTENT_LENGTH": b"1048576", b"CONTENT_TYPE": b"application/json"}),
]


@pytest.mark.parametrize(
    ("length", "ctype", "expected"), [c[1:] for c in BODY_CASES], ids=[c[0] for c in BODY_CASES]
)
def test_content_variables(length: int | None, ctype: bytes | None, expected: dict[bytes, bytes]) -> None:
    """CONTENT_LENGTH and CONTENT_TYPE are always present: the body's size and type, or "" like nginx."""
    env = env_of(dataclasses.replace(GET, content_length=length, content_type=ctype))
    assert {k: v for k, v in env.items() if k.startswith(b"CONTENT_")} == expected


def test_nothing_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    """Variables of the server's own environment, HTTP_PROXY included, never reach PHP."""
    monkeypatch.setenv("FEPHP_SECRET", "s3cr3t")
    monkeypatch.setenv("HTTP_PROXY", "http://evil:8080")
    monkeypatch.setenv("PATH", "/opt/evil/bin")
    env = env_of(POST, FETCH)
    assert not {b"FEPHP_SECRET", b"HTTP_PROXY", b"PATH"} & env.keys()
    assert not any(b"s3cr3t" in v or b"evil" in v for v in env.values())


NUL_CASES: list[tuple[str, dict[str, object]]] = [
    ("header-name", {"headers": [(b"X\0Y", b"1")]}),
    ("header-value", {"headers": [(b"X", b"1\0")]}),
    ("dropped-header-value", {"headers": [(b"Proxy", b"\0")]}),
    ("request-target", {"raw_uri": b"/a\0"}),
    ("query-string", {"query_string": b"a=\0"}),
    ("method", {"method": b"G\0T"}),
    ("content-type", {"content_type": b"text/\0"}),
    ("host", {"host": b"a\0b"}),
    ("negative-length", {"content_length": -1}),
]


@pytest.mark.parametrize("change", [c[1] for c in NUL_CASES], ids=[c[0] for c in NUL_CASES])
def test_invalid_facts_raise(change: dict[str, object]) -> None:
    """A NUL byte anywhere, or a negative length, is a bug in the HTTP layer and raises ValueError."""
    with pytest.raises(ValueError):
        env_of(dataclasses.replace(GET, **change))  # type: ignore[arg-type]


def test_header_name_cache_is_bounded() -> None:
    """Thousands of distinct header names never grow the name cache beyond its bound."""
    for i in range(3 * cgienv.HEADER_NAME_CACHE_SIZE):
        env_of(with_headers((b"X-%d" % i, b"v")))
    assert len(cgienv._env_names) <= cgienv.HEADER_NAME_CACHE_SIZE
    assert http_vars(env_of(with_headers((b"X-1", b"v")))) == {b"HTTP_X_1": b"v"}


@pytest.mark.parametrize(
    "authorization,user",
    [
        (None, b""),
        (b"Basic dTpw", b"u"),  # base64 of "u:p"
        (b"basic YWxpY2U6c2VjcmV0OndpdGg6Y29sb25z", b"alice"),
        (b"Bearer abc.def", b""),
        (b"Basic !!!not-base64", b""),
        (b"Basic bm9jb2xvbg==", b""),  # "nocolon": no user:password pair
    ],
    ids=["none", "basic", "basic-lowercase-scheme", "bearer", "not-base64", "no-colon"],
)
def test_remote_user_is_the_basic_user_name(authorization: bytes | None, user: bytes) -> None:
    """REMOTE_USER is the user of a Basic Authorization header, else empty, as nginx's $remote_user."""
    headers = [(b"Authorization", authorization)] if authorization else []
    assert env_of(with_headers(*headers))[b"REMOTE_USER"] == user
