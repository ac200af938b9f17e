"""The HTTP payload: the request context fephp sends and the response context it reads (fephp.roadrunner._http).

The keys and shapes are those of roadrunner-server/http's Request and
Response structs (handler/request.go, handler/response.go), which
roadrunner-php/http's HttpWorker reads and writes.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fephp.roadrunner import (
    ProtocolError,
    UploadedFile,
    canonical_header_name,
    cookies_from_headers,
    encode_request_context,
    parse_response_context,
    response_context,
)


def test_request_context_golden_bytes() -> None:
    """A GET with two headers, one repeated, and a cookie gives this exact compact JSON, keys in Go's order."""
    context = encode_request_context(
        method="GET",
        uri="http://example.test/index.php?x=1",
        headers=[(b"host", b"example.test"), (b"accept", b"text/html"), (b"Accept", b"*/*")],
        remote_addr="127.0.0.1",
        raw_query="x=1",
        cookies={"sid": "abc"},
    )
    assert context == (
        b'{"remoteAddr":"127.0.0.1","protocol":"HTTP/1.1","method":"GET",'
        b'"uri":"http://example.test/index.php?x=1",'
        b'"headers":{"Host":["example.test"],"Accept":["text/html","*/*"]},'
        b'"cookies":{"sid":"abc"},"rawQuery":"x=1","parsed":false,"uploads":null,"attributes":{}}'
    )


def test_uploads_nest_as_php_does() -> None:
    """One file, a list of files and a map of files keep their shape, each file with Go's five keys."""
    a = UploadedFile("a.txt", "text/plain", 3, "/tmp/up1")
    b = UploadedFile("b.png", "image/png", 0, "", error=4)
    context = json.loads(
        encode_request_context(
            method="POST",
            uri="http://h/",
            headers=[],
            remote_addr="::1",
            uploads={"one": a, "many": [a, b], "named": {"x": b}},
            parsed=True,
        )
    )
    file_a = {"name": "a.txt", "mime": "text/plain", "size": 3, "error": 0, "tmpName": "/tmp/up1"}
    file_b = {"name": "b.png", "mime": "image/png", "size": 0, "error": 4, "tmpName": ""}
    assert context["uploads"] == {"one": file_a, "many": [file_a, file_b], "named": {"x": file_b}}
    assert context["parsed"] is True


def test_attributes_and_cookie_pairs() -> None:
    """Attributes keep strings and lists; the later of two cookies of one name wins."""
    context = json.loads(
        encode_request_context(
            method="GET",
            uri="http://h/",
            headers=[],
            remote_addr="10.0.0.1",
            protocol="HTTP/2.0",
            cookies=[("a", "1"), ("a", "2")],
            attributes={"requestId": "r-1", "roles": ("x", "y")},
        )
    )
    assert (context["protocol"], context["cookies"], context["attributes"]) == (
        "HTTP/2.0",
        {"a": "2"},
        {"requestId": "r-1", "roles": ["x", "y"]},
    )


def test_header_bytes_that_are_not_utf8_become_replacement_characters() -> None:
    """Byte 0xE9 alone is not UTF-8: it becomes U+FFFD, as Go's json.Marshal makes it; non-ASCII text stays raw."""
    context = encode_request_context(
        method="GET", uri="http://h/", headers=[(b"X-A", b"caf\xe9"), ("X-B", "café")], remote_addr="1.2.3.4"
    )
    assert b'"headers":{"X-A":["caf\xef\xbf\xbd"],"X-B":["caf\xc3\xa9"]}' in context


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("content-type", "Content-Type"),
        ("X-FORWARDED-FOR", "X-Forwarded-For"),
        ("accept", "Accept"),
        ("x--y", "X--Y"),
        ("sec-ch-ua-mobile", "Sec-Ch-Ua-Mobile"),
        ("bad name", "bad name"),
        ("bad:name", "bad:name"),
    ],
)
def test_canonical_header_names(name: str, canonical: str) -> None:
    """Names go through Go's canonical form; a name that is not a token stays as it came."""
    assert canonical_header_name(name) == canonical


def utf8(text: str) -> str:
    """*text* as it reads after the trip through UTF-8 (a lone surrogate becomes "?")."""
    return text.encode("utf-8", "replace").decode()


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=st.text(max_size=40),
    headers=st.lists(st.tuples(_token, st.text(max_size=30)), max_size=8),
    cookies=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
    query=st.text(max_size=20),
)
def test_request_context_round_trip(
    method: str, path: str, headers: list[tuple[str, str]], cookies: dict[str, str], query: str
) -> None:
    """Whatever the values, the JSON a worker decodes gives them back, headers grouped under canonical names."""
    context = json.loads(
        encode_request_context(
            method=method,
            uri="http://h/" + path,
            headers=headers,
            remote_addr="127.0.0.1",
            raw_query=query,
            cookies=cookies,
        ).decode("utf-8")
    )
    expected: dict[str, list[str]] = {}
    for name, value in headers:
        expected.setdefault(canonical_header_name(name), []).append(utf8(value))
    assert context == {
        "remoteAddr": "127.0.0.1",
        "protocol": "HTTP/1.1",
        "method": method,
        "uri": utf8("http://h/" + path),
        "headers": expected,
        "cookies": {utf8(k): utf8(v) for k, v in cookies.items()},
        "rawQuery": utf8(query),
        "parsed": False,
        "uploads": None,
        "attributes": {},
    }


@pytest.mark.parametrize(
    ("lines", "cookies"),
    [
        (["a=1; b=2"], {"a": "1", "b": "2"}),
        (["a=1", "a=2"], {"a": "2"}),  # the later pair wins, across lines too
        ([b"sid=abc;  theme = dark "], {"sid": "abc", "theme": " dark"}),  # Go trims the name, not the value
        (['q="quoted value"'], {"q": "quoted value"}),
        (["list=a,b"], {"list": "a,b"}),
        (["p=%41+%42%2b"], {"p": "A B+"}),
        (["u=caf%C3%A9", b"v=%ff"], {"u": "café", "v": "\ufffd"}),
        (["flag"], {"flag": ""}),
        (["a@b=1; ok=1"], {"ok": "1"}),  # the name is not a token
        (["bad name=1; ok=1"], {"ok": "1"}),
        (["esc=%zz; ok=1"], {"ok": "1"}),  # url.QueryUnescape refuses it
        (['q="a"b"; ok=1'], {"ok": "1"}),  # a double quote inside the value
        (["bs=a\\b; ok=1"], {"ok": "1"}),  # a backslash
        (["nonascii=é; ok=1"], {"ok": "1"}),
        ([";;  ; ="], {}),
    ],
)
def test_cookies_from_headers(lines: list[str | bytes], cookies: dict[str, str]) -> None:
    """Cookie lines become the cookies map as Go's Request.Cookies and url.QueryUnescape make it."""
    assert cookies_from_headers(lines) == cookies


def test_response_context_as_php_encodes_it() -> None:
    """PHP's json_encode (slashes escaped) with two Set-Cookie values gives the status and the pairs in order."""
    data = b'{"status":201,"headers":{"Content-Type":["text\\/html"],"Set-Cookie":["a=1","b=2"]}}'
    assert parse_response_context(data) == (
        201,
        ((b"Content-Type", b"text/html"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")),
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"status":204,"headers":{}}', (204, ())),
        (b'{"status":204,"headers":[]}', (204, ())),  # PHP's json_encode of an empty array
        (b'{"status":200}', (200, ())),  # Go decodes a missing map as empty
        (b'{"status":103,"headers":{"Link":["</a.css>; rel=preload"]}}', (103, ((b"Link", b"</a.css>; rel=preload"),))),
        (b'{"status":599,"headers":{"X":[]}}', (599, ())),
        ('{"status":200,"headers":{"X":["é"]}}'.encode(), (200, ((b"X", "é".encode()),))),
        (b'{"status":200,"headers":{},"extra":1}', (200, ())),
    ],
)
def test_valid_response_contexts(data: bytes, expected: tuple[int, tuple[tuple[bytes, bytes], ...]]) -> None:
    """The shapes a worker may send: empty or absent headers, 1xx hints, non-ASCII values, unknown keys ignored."""
    assert parse_response_context(data) == expected


MALFORMED_RESPONSES = {
    "not JSON": b"<html>",
    "not UTF-8": b'{"status":200,"headers":{"X":["\xff"]}}',
    "an array": b"[200]",
    "a string": b'"ok"',
    "no status": b'{"headers":{}}',
    "status a string": b'{"status":"200"}',
    "status true": b'{"status":true}',
    "status a float": b'{"status":200.0}',
    "status 99": b'{"status":99}',
    "status 600": b'{"status":600}',
    "status 101": b'{"status":101}',
    "status negative": b'{"status":-200}',
    "headers a string": b'{"status":200,"headers":"X: y"}',
    "headers a non-empty list": b'{"status":200,"headers":[["X","y"]]}',
    "value a string": b'{"status":200,"headers":{"X":"y"}}',
    "value a number": b'{"status":200,"headers":{"X":[1]}}',
    "value null": b'{"status":200,"headers":{"X":[null]}}',
    "value with CR LF": b'{"status":200,"headers":{"X":["a\\r\\nSet-Cookie: evil=1"]}}',
    "value with NUL": b'{"status":200,"headers":{"X":["a\\u0000b"]}}',
    "name with a space": b'{"status":200,"headers":{"X Y":["a"]}}',
    "name with a colon": b'{"status":200,"headers":{"X:":["a"]}}',
    "name empty": b'{"status":200,"headers":{"":["a"]}}',
    "name not ASCII": '{"status":200,"headers":{"É":["a"]}}'.encode(),
    "nested too deep": b"[" * 100000 + b"]" * 100000,
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(MALFORMED_RESPONSES))
def test_malformed_response_contexts_are_protocol_errors(name: str) -> None:
    """Each malformed context raises ProtocolError (502), never another exception."""
    with pytest.raises(ProtocolError) as caught:
        parse_response_context(MALFORMED_RESPONSES[name])
    assert caught.value.error_status_hint == 502


_value = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"), max_size=20)


@given(
    status=st.integers(200, 599),
    headers=st.dictionaries(_token, st.lists(_value, max_size=3), max_size=6),
)
def test_response_context_round_trip(status: int, headers: dict[str, list[str]]) -> None:
    """A context a worker encodes decodes to its status and every (name, value) pair, in order."""
    pairs = tuple((name.encode(), value.encode()) for name, values in headers.items() for value in values)
    assert parse_response_context(response_context(status, headers)) == (status, pairs)
