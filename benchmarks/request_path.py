"""fephp's own cost per PHP request, with no sockets: where the microseconds go.

One HTTP request goes into a real FrontSite over an in-memory transport, the
pool writes it as FastCGI to an in-memory "php-fpm" that answers a canned
hello-world response, and the HTTP response comes out: every line of fephp
and Twisted Web that a request runs, none of the kernel's work.  Prints the
best time per request over several runs (robust on a busy machine), and with
``--profile`` the functions that take the most time.

Run with the interpreter to measure: ``python3 benchmarks/request_path.py``,
``pypy3 benchmarks/request_path.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.defer import succeed  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

from fephp.backend.pool import FastCGIPool  # noqa: E402
from fephp.cgi.routing import Router  # noqa: E402
from fephp.fastcgi import ResponderConnection  # noqa: E402
from fephp.web.app import PHPApp  # noqa: E402
from fephp.web.site import FrontSite  # noqa: E402

REQUEST = b"GET /hello.php HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"


class _Endpoint:
    """Connects the pool to an in-memory transport, once."""

    def connect(self, factory):  # type: ignore[no-untyped-def]
        self.proto = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        return succeed(self.proto)


def build(root: str):  # type: ignore[no-untyped-def]
    endpoint = _Endpoint()
    clock = Clock()
    pool = FastCGIPool(endpoint, clock=clock, size=1, idle_timeout=None)
    site = FrontSite(PHPApp(router=Router(root=root), backend=pool), timeout=None, reactor=clock)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
    http = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
        peerAddress=IPv4Address("TCP", "127.0.0.1", 5000),
    )
    channel.makeConnection(http)
    php = ResponderConnection()
    answer = php.stdout(1, b"Content-type: text/html; charset=UTF-8\r\n\r\nHello, world!") + php.end_request(1)

    def one() -> None:
        channel.dataReceived(REQUEST)
        endpoint.transport.clear()
        endpoint.proto.dataReceived(answer)
        http.clear()

    one()
    assert endpoint.proto.reusable
    return one


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per run (default 5000)")
    parser.add_argument("--runs", type=int, default=7, help="runs; the best counts (default 7)")
    parser.add_argument("--profile", action="store_true", help="print the top functions by own time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        Path(root, "hello.php").write_text("<?php echo 'Hello, world!';\n")
        one = build(os.path.realpath(root))
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.requests):
                one()
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            return 0
        for _ in range(args.requests):  # warm-up (PyPy's JIT needs it)
            one()
        best = min(_timed(one, args.requests) for _ in range(args.runs))
        implementation = sys.implementation.name
        print(f"{implementation} {sys.version.split()[0]}: {best * 1e6:.1f} us per request "
              f"(best of {args.runs} runs of {args.requests})")
    return 0


def _timed(one, n: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(n):
        one()
    return (time.perf_counter() - start) / n


if __name__ == "__main__":
    sys.exit(main())
