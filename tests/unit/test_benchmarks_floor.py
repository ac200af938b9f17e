"""benchmarks/floor.py's own FastCGI framing, CGI environment and response head, byte for byte."""

from __future__ import annotations

import struct
import sys

import pytest

from tests.support import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import floor  # noqa: E402

SERVER = (b"127.0.0.1", b"8080")
CLIENT = (b"127.0.0.1", b"50000")


def test_params_lengths_take_one_byte_below_128_and_four_with_the_top_bit_from_128() -> None:
    """A 3-byte name with a 127-byte value has 1-byte lengths; a 128-byte value's length is 0x80000080."""
    assert floor.encode_params([(b"abc", b"v" * 127)]) == b"\x03\x7f" + b"abc" + b"v" * 127
    assert floor.encode_params([(b"abc", b"v" * 128), (b"K", b"")]) == (
        b"\x03\x80\x00\x00\x80" + b"abc" + b"v" * 128 + b"\x01\x00K")


def test_a_request_is_begin_with_keep_conn_params_and_the_empty_params_and_stdin() -> None:
    """request() gives BEGIN_REQUEST (responder, KEEP_CONN), one PARAMS record, then empty PARAMS and STDIN records."""
    assert floor.request(1, [(b"A", b"b")]) == (
        b"\x01\x01\x00\x01\x00\x08\x00\x00" + b"\x00\x01\x01\x00\x00\x00\x00\x00"
        + b"\x01\x04\x00\x01\x00\x04\x00\x00" + b"\x01\x01Ab"
        + b"\x01\x04\x00\x01\x00\x00\x00\x00"
        + b"\x01\x05\x00\x01\x00\x00\x00\x00")


def test_content_over_65535_bytes_is_split_into_records() -> None:
    """70000 bytes of STDOUT become a record of 65535 bytes and one of 4465, which read back as they were."""
    content = bytes(range(256)) * 273 + b"x" * 112
    data = floor.record(floor.STDOUT, 3, content)
    assert len(data) == 70000 + 16
    assert floor.read_records(data) == ([(floor.STDOUT, 3, content[:65535]), (floor.STDOUT, 3, content[65535:])], b"")


def test_records_read_whole_at_every_split_with_padding_skipped() -> None:
    """STDOUT (padded by 3), STDERR and END_REQUEST, fed in two parts split at every byte, give the same 3 records."""
    stdout = struct.pack(">BBHHBx", 1, floor.STDOUT, 1, 5, 3) + b"hello" + b"\0\0\0"
    stderr = struct.pack(">BBHHBx", 1, floor.STDERR, 1, 2, 0) + b"e\n"
    end = struct.pack(">BBHHBx", 1, floor.END_REQUEST, 1, 8, 0) + b"\0" * 8
    data = stdout + stderr + end
    expected = [(floor.STDOUT, 1, b"hello"), (floor.STDERR, 1, b"e\n"), (floor.END_REQUEST, 1, b"\0" * 8)]
    for split in range(len(data) + 1):
        first, rest = floor.read_records(data[:split])
        second, left = floor.read_records(rest + data[split:])
        assert (first + second, left) == (expected, b""), split


def test_cgi_params_are_nginx_fastcgi_params_with_the_headers_as_http_names() -> None:
    """A GET with a query gives nginx's 19 fastcgi_params in its order, then each header as HTTP_NAME."""
    head = (b"GET /hello.php?a=1 HTTP/1.1\r\nHost: example\r\nContent-Type: text/x\r\nX-Two-Words:  v \r\n"
            b"Connection: close")
    pairs, keep_alive = floor.cgi_params(head, b"/srv/www", b"localhost", SERVER, CLIENT)
    assert pairs == [
        (b"QUERY_STRING", b"a=1"), (b"REQUEST_METHOD", b"GET"), (b"CONTENT_TYPE", b"text/x"),
        (b"CONTENT_LENGTH", b""), (b"SCRIPT_NAME", b"/hello.php"), (b"SCRIPT_FILENAME", b"/srv/www/hello.php"),
        (b"REQUEST_URI", b"/hello.php?a=1"), (b"DOCUMENT_URI", b"/hello.php"), (b"DOCUMENT_ROOT", b"/srv/www"),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"REQUEST_SCHEME", b"http"), (b"GATEWAY_INTERFACE", b"CGI/1.1"),
        (b"SERVER_SOFTWARE", b"floor"), (b"REMOTE_ADDR", b"127.0.0.1"), (b"REMOTE_PORT", b"50000"),
        (b"SERVER_ADDR", b"127.0.0.1"), (b"SERVER_PORT", b"8080"), (b"SERVER_NAME", b"localhost"),
        (b"REDIRECT_STATUS", b"200"),
        (b"HTTP_HOST", b"example"), (b"HTTP_CONTENT_TYPE", b"text/x"), (b"HTTP_X_TWO_WORDS", b"v"),
        (b"HTTP_CONNECTION", b"close"),
    ]
    assert keep_alive is False


@pytest.mark.parametrize(("head", "keep_alive"), [
    (b"GET /a.php HTTP/1.1\r\nHost: h", True),
    (b"GET /a.php HTTP/1.1\r\nConnection: Close", False),
    (b"GET /a.php HTTP/1.0", False),
    (b"GET /a.php HTTP/1.0\r\nConnection: Keep-Alive", True),
])
def test_keep_alive_follows_the_version_and_connection(head: bytes, keep_alive: bool) -> None:
    """HTTP/1.1 keeps the connection unless it says close, HTTP/1.0 closes it unless it says keep-alive."""
    assert floor.cgi_params(head, b"/r", b"h", SERVER, CLIENT)[1] is keep_alive


@pytest.mark.parametrize(("head", "status"), [
    (b"GET /a.php\r\nHost: h", b"400 Bad Request"),
    (b"GET a.php HTTP/1.1", b"400 Bad Request"),
    (b"GET /../etc/a.php HTTP/1.1", b"400 Bad Request"),
    (b"GET /a.php HTTP/1.1\r\nHost : h", b"400 Bad Request"),
    (b"GET /a.php HTTP/1.1\r\nno colon", b"400 Bad Request"),
    (b"GET /static.txt HTTP/1.1", b"404 Not Found"),
    (b"POST /a.php HTTP/1.1\r\nContent-Length: 3", b"501 Not Implemented"),
    (b"POST /a.php HTTP/1.1\r\nTransfer-Encoding: chunked", b"501 Not Implemented"),
])
def test_what_the_floor_does_not_serve_is_refused(head: bytes, status: bytes) -> None:
    """Malformed heads, '..', paths not ending in .php and request bodies are refused with their status."""
    with pytest.raises(floor.BadRequest) as refused:
        floor.cgi_params(head, b"/r", b"h", SERVER, CLIENT)
    assert refused.value.args == (status,)


def test_php_status_becomes_the_status_line_and_content_length_is_the_body_length() -> None:
    """PHP's Status and Content-Length fields are replaced by the status line and the body's real length."""
    stdout = b"Status: 404 Not Found\r\nContent-Length: 99\r\nContent-type: text/html\r\n\r\nnope\n"
    assert floor.http_response(stdout, b"DATE", True, False) == (
        b"HTTP/1.1 404 Not Found\r\nServer: floor\r\nDate: DATE\r\nContent-Length: 5\r\n"
        b"Content-type: text/html\r\n\r\nnope\n")


@pytest.mark.parametrize(("keep_alive", "http10", "connection"), [
    (True, False, b""), (False, False, b"Connection: close\r\n"), (True, True, b"Connection: keep-alive\r\n"),
])
def test_the_response_says_how_the_connection_goes_on(keep_alive: bool, http10: bool, connection: bytes) -> None:
    """HTTP/1.1 keep-alive says nothing, a closing answer says close, an HTTP/1.0 keep-alive one says keep-alive."""
    assert floor.http_response(b"X-A: 1\r\n\r\nhi", b"D", keep_alive, http10) == (
        b"HTTP/1.1 200 OK\r\nServer: floor\r\nDate: D\r\nContent-Length: 2\r\nX-A: 1\r\n" + connection + b"\r\nhi")


def test_benchmarks_run_puts_the_floor_in_the_hello_rows_and_floor_pypy_with_pypy() -> None:
    """compare.py's hello c=1/c=10/c=64 rows hold 'floor' (and 'floor-pypy' with --pypy); no other row does."""
    import compare

    rows = {s.name: s.fronts for s in compare.scenarios(compare.parse_args(["--quick"]))}
    with_floor = sorted(name for name, fronts in rows.items() if "floor" in fronts)
    assert with_floor == ["hello c=1", "hello c=10", "hello c=64"]
    assert not any("floor-pypy" in fronts for fronts in rows.values())
    pypy = {s.name: s.fronts for s in compare.scenarios(compare.parse_args(["--quick", "--pypy", "pypy3"]))}
    assert pypy["hello c=64"] == ("fephp", "nginx", "nginx-auto", "caddy", "fephp-pypy", "floor", "floor-pypy")
    assert sorted(name for name, fronts in pypy.items() if "floor-pypy" in fronts) == with_floor
