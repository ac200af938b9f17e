"""A raw HTTP/1.1 client for the tests, from the client's side: the request's bytes exactly as written, the answer read whole and parsed strictly.

Every call here blocks on a socket (bounded by :data:`SOCKET_TIMEOUT` or
its *within*): from a test running on the reactor, call it through
``deferToThread`` (:class:`tests.support.inprocess.InProcessFront` does)
so that the reactor serving fephp keeps turning.  The parser undoes
chunking and checks a Content-Length against the bytes that came, so a
framing error fails the test that met it instead of passing unseen.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

__all__ = [
    "SOCKET_TIMEOUT",
    "Response",
    "Timed",
    "dechunk",
    "exchange",
    "first_chunk",
    "flushed_then_rest",
    "read_until",
    "request_bytes",
    "timed_exchange",
]

#: How long a connect or one read may wait before the test fails, in seconds.
SOCKET_TIMEOUT = 10.0

#: How much one recv asks for.
READ_SIZE = 65536


def request_bytes(
    method: str,
    target: str,
    headers: Optional[Mapping[str, str]] = None,
    *,
    host: str = "x",
    version: str = "HTTP/1.1",
) -> bytes:
    """One request head with ``Connection: close`` (the answer ends with the connection), and ``Content-Length: 0`` on a POST."""
    lines = [f"{method} {target} {version}", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if method == "POST":
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def exchange(port: int, data: bytes, *, reset_is_close: bool = False) -> bytes:
    """Send *data*, then read until the server closes; every byte that came.

    With *reset_is_close* a reset ends the answer as a close does: a server
    refusing an oversized head may close with the request's bytes unread,
    and the kernel then answers them with a reset.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(READ_SIZE)
            except ConnectionResetError:
                if not reset_is_close:
                    raise
                return out
            if not chunk:
                return out
            out += chunk


def read_until(port: int, data: bytes, done: Union[bytes, Callable[[bytes], Any]], *, within: float = SOCKET_TIMEOUT) -> bytes:
    """Send *data*, then read until *done* (a marker, or a function of what came) is true or the server closes; fail after *within* seconds."""
    finished: Callable[[bytes], Any] = done if callable(done) else (lambda raw: done in raw)
    deadline = time.monotonic() + within
    with socket.create_connection(("127.0.0.1", port), timeout=within) as s:
        s.sendall(data)
        out = b""
        while not finished(out):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"nothing done within {within} s: {out[:300]!r}")
            s.settimeout(left)
            try:
                chunk = s.recv(READ_SIZE)
            except socket.timeout:
                raise AssertionError(f"nothing done within {within} s: {out[:300]!r}") from None
            if not chunk:
                break
            out += chunk
        return out


@dataclass(frozen=True)
class Timed:
    """One exchange read to the close, with when things came, in seconds from the send.

    *first* is the first byte, *marked* the first time one of the markers
    stood in what had come (0.0 if never), *closed* the server's close.
    """

    raw: bytes
    first: float
    marked: float
    closed: float


def timed_exchange(port: int, data: bytes, markers: tuple[bytes, ...] = ()) -> Timed:
    """Send *data*, read until the server closes, and time the first byte, the first of *markers* and the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as s:
        started = time.monotonic()
        s.sendall(data)
        out = b""
        first = marked = 0.0
        while True:
            chunk = s.recv(READ_SIZE)
            if not chunk:
                return Timed(out, first, marked, time.monotonic() - started)
            if not out:
                first = time.monotonic() - started
            out += chunk
            if not marked and any(m in out for m in markers):
                marked = time.monotonic() - started


def dechunk(data: bytes) -> bytes:
    """A chunked body's data (extensions dropped), up to the last chunk."""
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out += data[:size]
        data = data[size + 2 :]


def first_chunk(raw: bytes) -> bytes:
    """The data of the first whole chunk after the head, or b"" while it is incomplete."""
    body = raw.partition(b"\r\n\r\n")[2]
    size, sep, rest = body.partition(b"\r\n")
    if not sep:
        return b""
    n = int(size, 16)
    return rest[:n] if len(rest) >= n + 2 else b""


@dataclass(frozen=True)
class Response:
    """One HTTP/1.x response read whole: status, reason, the header fields in order (names lower-cased), the body with chunking undone."""

    status: int
    reason: str
    fields: tuple[tuple[str, str], ...]
    body: bytes

    @classmethod
    def parse(cls, raw: bytes, *, head_only: bool = False) -> "Response":
        """Parse *raw*; *head_only* (the answer to a HEAD) takes the framing headers as describing a body never sent."""
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        _, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        fields = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields.append((name.strip().lower(), value.strip()))
        response = cls(int(status), reason, tuple(fields), body)
        if not head_only:
            if response.header("transfer-encoding") == "chunked":
                response = cls(response.status, reason, response.fields, dechunk(body))
            elif response.header("content-length") is not None:
                assert len(body) == int(response.header("content-length") or 0), (len(body), response.fields)
        return response

    def values(self, name: str) -> list[str]:
        """Every value of the field *name* (lower case), in order."""
        return [v for k, v in self.fields if k == name]

    def header(self, name: str) -> Optional[str]:
        """The field *name*'s values joined with ", " (RFC 9110 section 5.3), or None when absent."""
        values = self.values(name)
        return ", ".join(values) if values else None

    @property
    def headers(self) -> dict[str, str]:
        """Each field name with its values joined."""
        return {name: ", ".join(self.values(name)) for name, _ in self.fields}


def flushed_then_rest(port: int, path: str, go: Path) -> tuple[bytes, bytes]:
    """GET *path* (the docroot's flushwait.php) from 127.0.0.1:*port*: what came up to its flushed "first" chunk, then,
    once *go* is created (which lets the script end), the rest up to the close.

    Without streaming, "first" comes only when PHP ends, which it does after
    10 s without *go*, saying so: a failure, not a hang.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        early = b""
        while b"first\n\r\n" not in early and (chunk := s.recv(READ_SIZE)):
            early += chunk
        go.write_bytes(b"")  # only now may the script end
        rest = b""
        while chunk := s.recv(READ_SIZE):
            rest += chunk
    return early, rest
