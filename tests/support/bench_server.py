"""A tiny HTTP/1.1 server for the bench tests, bound to 127.0.0.1 on a free port.

It prints ``PORT <n>`` on stdout once listening and exits when its stdin
closes, so it never outlives the test that started it.  ``--mode`` picks
the behaviour:

- ``ok``: 200 with a Content-Length body, keep-alive;
- ``chunked``: 200 with a chunked body;
- ``stall``: like ``ok``, but requests arriving during the window
  ``[--stall-at, --stall-at + --stall-for)`` seconds after the first request
  are only answered when the window ends: the server stops answering;
- ``hang``: reads requests and never answers;
- ``close-mid``: sends the header and half the body, then closes;
- ``flaky``: like ``ok``, but every ``--fail-every``-th request gets
  ``close-mid``'s broken answer;
- ``malformed``: answers with bytes that are not HTTP.
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet import reactor, stdio
from twisted.internet.protocol import Factory, Protocol


class _Stdin(Protocol):
    def connectionLost(self, reason: object = None) -> None:  # noqa: N802
        if reactor.running:
            reactor.stop()


class _Server(Protocol):
    def __init__(self, options: argparse.Namespace, state: dict[str, float]) -> None:
        self.options = options
        self.state = state
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.answer()

    def answer(self) -> None:
        options = self.options
        mode = options.mode
        body = b"x" * options.body_size
        if mode == "hang":
            return
        if mode == "malformed":
            self.transport.write(b"this is not HTTP\r\n\r\n")
            return
        if mode == "flaky":
            count = self.state["answered"] = self.state.get("answered", 0) + 1
            if count % options.fail_every == 0:
                mode = "close-mid"
        if mode == "close-mid":
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2])
            self.transport.loseConnection()
            return
        if mode == "chunked":
            half = len(body) // 2
            response = (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n%s\r\n" % (half, body[:half])
                + b"%x\r\n%s\r\n" % (len(body) - half, body[half:])
                + b"0\r\n\r\n"
            )
        else:
            response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        if mode == "stall":
            now = reactor.seconds()
            first = self.state.setdefault("first", now)
            start = first + options.stall_at
            end = start + options.stall_for
            if start <= now < end:
                reactor.callLater(end - now, self._write, response)
                return
        self.transport.write(response)

    def _write(self, response: bytes) -> None:
        if self.transport.connected:
            self.transport.write(response)


class _Factory(Factory):
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.state: dict[str, float] = {}

    def buildProtocol(self, addr: object) -> _Server:  # noqa: N802
        return _Server(self.options, self.state)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="ok", choices=["ok", "chunked", "stall", "hang", "close-mid", "malformed", "flaky"])
    parser.add_argument("--fail-every", type=int, default=10)
    parser.add_argument("--body-size", type=int, default=100)
    parser.add_argument("--stall-at", type=float, default=1.0)
    parser.add_argument("--stall-for", type=float, default=1.0)
    options = parser.parse_args()
    port = reactor.listenTCP(0, _Factory(options), backlog=128, interface="127.0.0.1")
    stdio.StandardIO(_Stdin())
    sys.stdout.write(f"PORT {port.getHost().port}\n")
    sys.stdout.flush()
    reactor.run()


if __name__ == "__main__":
    main()
