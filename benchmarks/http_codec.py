"""Microseconds per HTTP/1.1 GET head: fephp's codec (fephp.http) beside h11 and Twisted's HTTPChannel, on this interpreter.

Two figures per parser, each the best of ``--repeat`` interleaved rounds of
``--number`` iterations, for two heads (wrk's four lines, a browser's twelve):

- ``read``: a new connection takes one whole head and gives the request
  and its end (fephp.http, h11; Twisted has no parser apart from its channel);
- ``cycle``: on a kept connection, the head read and a bodiless
  ``200`` with ``Content-Length: 0`` written, ready for the next request
  (fephp.http, h11, and Twisted's HTTPChannel with a Request that finishes at
  once, over an in-memory transport).

h11 is not a dependency of fephp: install it beside, for this script only
(``pip install --target DIR h11`` and ``PYTHONPATH=DIR``); without it its
rows are skipped.

    python3 benchmarks/http_codec.py
    PYTHONPATH=<a folder with h11> pypy3 benchmarks/http_codec.py --number 200000
"""

from __future__ import annotations

import argparse
import platform
import sys
import timeit
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.web import http  # noqa: E402

from fephp.http import ServerConnection  # noqa: E402

try:
    import h11
except ImportError:  # not a dependency: the rows are skipped
    h11 = None

HEADS = {
    "wrk": b"GET /hello.php HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n",
    "browser": (
        b"GET /index.php?page=2&sort=name HTTP/1.1\r\n"
        b"Host: www.example.com\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
        b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
        b"Accept-Language: en-US,en;q=0.5\r\n"
        b"Accept-Encoding: gzip, deflate, br\r\n"
        b"Referer: https://www.example.com/index.php?page=1\r\n"
        b"Connection: keep-alive\r\n"
        b"Cookie: session=0123456789abcdef; theme=dark\r\n"
        b"Upgrade-Insecure-Requests: 1\r\n"
        b"Sec-Fetch-Dest: document\r\n"
        b"Sec-Fetch-Mode: navigate\r\n\r\n"
    ),
}
EMPTY_200 = [(b"Content-Length", b"0")]


def fephp_read(head: bytes) -> Callable[[], object]:
    def run() -> object:
        conn = ServerConnection()
        conn.receive_data(head)
        request = conn.next_event()
        conn.next_event()
        return request

    return run


def fephp_cycle(head: bytes) -> Callable[[], object]:
    conn = ServerConnection()

    def run() -> object:
        conn.receive_data(head)
        request = conn.next_event()
        conn.next_event()
        out = conn.send_response_head(200, EMPTY_200) + conn.send_end()
        conn.start_next_cycle()
        return request, out

    return run


def h11_read(head: bytes) -> Callable[[], object]:
    assert h11 is not None

    def run() -> object:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(head)
        request = conn.next_event()
        conn.next_event()
        return request

    return run


def h11_cycle(head: bytes) -> Callable[[], object]:
    assert h11 is not None
    conn = h11.Connection(h11.SERVER)
    response = h11.Response(status_code=200, headers=EMPTY_200)
    end = h11.EndOfMessage()

    def run() -> object:
        conn.receive_data(head)
        request = conn.next_event()
        conn.next_event()
        out = conn.send(response) + conn.send(end)  # type: ignore[operator]
        conn.start_next_cycle()
        return request, out

    return run


class _Finishing(http.Request):
    """A Request that answers an empty 200 at once: what is left is the channel's parsing and bookkeeping."""

    def process(self) -> None:
        self.setHeader(b"content-length", b"0")
        self.finish()


def twisted_cycle(head: bytes) -> Callable[[], object]:
    channel = http.HTTPChannel()
    channel.requestFactory = _Finishing  # type: ignore[assignment]
    transport = StringTransport()
    channel.makeConnection(transport)

    def run() -> object:
        channel.dataReceived(head)
        transport.clear()
        return channel

    return run


def interleaved(
    cases: dict[tuple[str, str], Callable[[], object]], number: int, repeat: int
) -> dict[tuple[str, str], float]:
    """Microseconds per call of each case: the best of *repeat* rounds, each round timing every case once in turn.

    Interleaved, so that a busy moment of a shared machine falls on all the
    cases of a round, and the best round of each is the least disturbed.
    """
    for run in cases.values():
        run()  # warm: caches, and a first check that it works
    found = {key: float("inf") for key in cases}
    for _ in range(repeat):
        for key, run in cases.items():
            found[key] = min(found[key], timeit.timeit(run, number=number) / number * 1e6)
    return found


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="iterations per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best counts")
    args = parser.parse_args(argv)
    rows: list[tuple[str, Any]] = [("fephp.http read", fephp_read), ("fephp.http cycle", fephp_cycle)]
    if h11 is not None:
        rows += [(f"h11 {h11.__version__} read", h11_read), (f"h11 {h11.__version__} cycle", h11_cycle)]
    else:
        print("h11 not importable: its rows are skipped (pip install --target DIR h11; PYTHONPATH=DIR)")
    rows.append(("Twisted HTTPChannel cycle", twisted_cycle))
    cases = {(label, name): make(head) for label, make in rows for name, head in HEADS.items()}
    found = interleaved(cases, args.number, args.repeat)
    print(f"{platform.python_implementation()} {platform.python_version()}, us per GET head "
          f"(best of {args.repeat} interleaved rounds x {args.number})")
    print(f"{'':28}" + "".join(f"{name:>10}" for name in HEADS))
    for label, _ in rows:
        print(f"{label:28}" + "".join(f"{found[label, name]:10.2f}" for name in HEADS))


if __name__ == "__main__":
    main()
