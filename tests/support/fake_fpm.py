"""A scriptable FastCGI backend on a real socket, from php-fpm's side: the answers real php-fpm never gives.

Built on fephp's own responder codec (:class:`fephp.fastcgi.ResponderConnection`)
in the test's reactor, it reads each request whole and answers by the
``shape=`` of its QUERY_STRING, one of :data:`SHAPES`::

    fake = await FakeFPM.listen(tmp_path / "fake.sock")
    ... a pool connects to f"unix:path={fake.path}" ...
    await fake.stop()

A shape is a list of steps: ``("send", bytes)``, ``("wait", seconds)``,
``("close",)`` (a clean close), ``("reset",)`` (an abort), ``("hang",)``
(say nothing more).  Without a close, reset or hang the connection stays
open for the next request, as php-fpm's kept connections do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from twisted.internet import reactor
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from fephp.fastcgi import (
    Params,
    ProtocolError,
    ProtocolStatus,
    RecordType,
    ResponderConnection,
    Stdin,
    encode_record,
)

__all__ = ["FakeFPM", "SHAPES"]

Step = tuple[Any, ...]
_fpm = ResponderConnection()  # record builders only


def _answer(head: bytes, body: bytes = b"") -> bytes:
    return _fpm.stdout(1, head + body, close=True) + _fpm.end_request(1)


def _header(version: int, rtype: int, request_id: int, length: int, padding: int = 0) -> bytes:
    return bytes((version, rtype, request_id >> 8, request_id & 0xFF, length >> 8, length & 0xFF, padding, 0))


OK_HEAD = b"Content-Type: text/plain\r\n\r\n"

#: What each ``shape=`` answers: the steps, in order.
SHAPES: dict[str, Sequence[Step]] = {
    "ok": [("send", _answer(OK_HEAD, b"ok"))],
    # Bytes that are no FastCGI at all.
    "garbage": [("send", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi" * 4)],
    "wrong-version": [("send", _header(2, RecordType.STDOUT, 1, 4) + b"oops")],
    "record-type-only-a-web-server-sends": [("send", encode_record(RecordType.BEGIN_REQUEST, 1, b"\0" * 8))],
    "output-for-another-request": [("send", _fpm.stdout(7, OK_HEAD + b"x"))],
    "end-request-of-the-wrong-size": [("send", encode_record(RecordType.END_REQUEST, 1, b"\0" * 4))],
    "end-request-twice": [("send", _answer(OK_HEAD, b"ok") + _fpm.end_request(1))],
    "output-after-end-request": [("send", _answer(OK_HEAD, b"ok") + _fpm.stdout(1, b"late"))],
    "record-cut-then-close": [("send", _header(1, RecordType.STDOUT, 1, 1000) + b"Content-Type: te"), ("close",)],
    "close-at-once": [("close",)],
    "reset-at-once": [("reset",)],
    "close-after-part-of-the-body": [("send", _fpm.stdout(1, OK_HEAD + b"part of it")), ("wait", 0.05), ("close",)],
    "padding-of-junk": [
        ("send", _header(1, RecordType.STDOUT, 1, len(OK_HEAD) + 2, 7) + OK_HEAD + b"ok" + b"\xff" * 7 + _fpm.stdout(1, b"", close=True) + _fpm.end_request(1))
    ],
    "unknown-type-record": [("send", _fpm.unknown_type(99) + _answer(OK_HEAD, b"ok"))],
    "one-byte-records": [("send", b"".join(_fpm.stdout(1, bytes([c])) for c in OK_HEAD + b"ok") + _fpm.stdout(1, b"", close=True) + _fpm.end_request(1))],
    # CGI heads PHP got wrong.
    "head-larger-than-64k": [("send", _answer(b"X-Big: " + b"a" * 70000 + b"\r\n\r\n"))],
    "head-line-without-colon": [("send", _answer(b"NoColon\r\n\r\n", b"body"))],
    "control-byte-in-a-head": [("send", _answer(b"X-Ctl: a\x01b\r\n\r\n", b"body"))],
    "head-that-never-ends": [("send", _answer(b"X-A: b\r\n"))],
    "no-output": [("send", _fpm.end_request(1))],
    "status-out-of-range": [("send", _answer(b"Status: 999 Nope\r\n\r\n"))],
    "stderr-flood-then-ok": [
        ("send", b"".join(_fpm.stderr(1, b"PHP Warning: x\n" * 4000) for _ in range(16)) + _answer(OK_HEAD, b"ok"))
    ],
    # What a backend says when it will not run the request.
    "overloaded": [("send", _fpm.end_request(1, 0, ProtocolStatus.OVERLOADED))],
    "unknown-role": [("send", _fpm.end_request(1, 0, ProtocolStatus.UNKNOWN_ROLE))],
    # A backend that stops talking.
    "hang": [("hang",)],
    "hang-after-the-head": [("send", _fpm.stdout(1, OK_HEAD)), ("hang",)],
    "drip": [("send", _fpm.stdout(1, OK_HEAD)), ("wait", 0.1), ("send", _fpm.stdout(1, b"d")), ("wait", 0.1),
             ("send", _fpm.stdout(1, b"rip", close=True) + _fpm.end_request(1))],
}


class _Responder(Protocol):
    def __init__(self, fake: "FakeFPM") -> None:
        self.fake = fake
        self.codec = ResponderConnection()
        self.params: Optional[dict[bytes, bytes]] = None
        self.silent = False

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self.silent:
            return
        try:
            events = self.codec.receive_data(data)
        except ProtocolError:
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        for event in events:
            if isinstance(event, Params):
                self.params = dict(event.params)
            elif isinstance(event, Stdin) and event.end and self.params is not None:
                query = self.params.get(b"QUERY_STRING", b"")
                shape = dict(p.partition(b"=")[::2] for p in query.split(b"&")).get(b"shape", b"ok").decode()
                self.fake.requests.append(shape)
                self.params = None
                self.codec = ResponderConnection()  # a fresh request id 1 next time
                deferLater(reactor, 0, self._play, list(SHAPES[shape]))

    def _play(self, steps: list[Step]) -> None:
        transport: Any = self.transport
        while steps:
            step = steps.pop(0)
            if transport is None or not transport.connected:
                return
            if step[0] == "send":
                transport.write(step[1])
            elif step[0] == "wait":
                deferLater(reactor, step[1], self._play, steps)
                return
            elif step[0] == "close":
                transport.loseConnection()
                return
            elif step[0] == "reset":
                transport.abortConnection()
                return
            elif step[0] == "hang":
                self.silent = True
                return


class FakeFPM:
    """The scripted backend, listening on a UNIX socket; ``requests`` lists the shape of each request it read."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.requests: list[str] = []
        self._port: Any = None

    @classmethod
    async def listen(cls, path: Path) -> "FakeFPM":
        fake = cls(path)
        factory = Factory.forProtocol(lambda: _Responder(fake))
        factory.noisy = False
        fake._port = await UNIXServerEndpoint(reactor, fake.path).listen(factory)
        return fake

    @property
    def endpoint(self) -> str:
        return f"unix:path={self.path}"

    async def stop(self) -> None:
        await self._port.stopListening()


def shape_names(pick: Callable[[str], bool] = lambda name: True) -> list[str]:
    """The names of the shapes *pick* keeps, in SHAPES' order."""
    return [name for name in SHAPES if pick(name)]
