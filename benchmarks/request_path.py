"""fephp's own cost per PHP request, with no sockets: where the microseconds go.

One HTTP request goes into a real FrontSite over an in-memory transport, the
pool writes it as FastCGI to an in-memory "php-fpm" that answers a canned
hello-world response, and the HTTP response comes out: every line of fephp
and Twisted Web that a request runs, none of the kernel's work.  Prints the
best time per request over several runs (robust on a busy machine), and with
``--profile`` the functions that take the most time.

Run with the interpreter to measure: ``python3 benchmarks/request_path.py``,
``pypy3 benchmarks/request_path.py``.  ``--page KB`` answers an HTML page
of that size instead of hello-world (as it comes from php-fpm: 4 KiB
STDOUT records in one read); ``--accept-encoding gzip`` sends that header;
``--no-compression`` builds the site without compression (its default is
the configuration's: on).
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
from fephp.web.compress import Compression  # noqa: E402
from fephp.web.site import FrontSite  # noqa: E402

REQUEST = b"GET /hello.php HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
HELLO = b"Hello, world!"
#: php-fpm's output_buffering (Debian's php.ini): the size of each STDOUT record of a long page.
PHP_RECORD = 4096


def html_page(kb: int) -> bytes:
    """An HTML page of about *kb* KiB, as benchmarks/docroot/page.php makes it."""
    rows = [b"<!DOCTYPE html>\n<html><head><title>Page</title></head><body>\n"]
    size = len(rows[0])
    i = 0
    while size < kb * 1024:
        row = b'<p class="row">Row %d: the quick brown fox jumps over the lazy dog.</p>\n' % i
        rows.append(row)
        size += len(row)
        i += 1
    rows.append(b"</body></html>\n")
    return b"".join(rows)


class _Endpoint:
    """Connects the pool to an in-memory transport, once."""

    def connect(self, factory):  # type: ignore[no-untyped-def]
        self.proto = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        return succeed(self.proto)


def build(root: str, body: bytes = HELLO, accept_encoding: bytes = b"", compression: bool = True):  # type: ignore[no-untyped-def]
    endpoint = _Endpoint()
    clock = Clock()
    pool = FastCGIPool(endpoint, clock=clock, size=1, idle_timeout=None)
    site = FrontSite(
        PHPApp(router=Router(root=root), backend=pool), timeout=None, reactor=clock,
        compression=Compression() if compression else None,
    )
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
    http = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
        peerAddress=IPv4Address("TCP", "127.0.0.1", 5000),
    )
    channel.makeConnection(http)
    php = ResponderConnection()
    output = b"Content-type: text/html; charset=UTF-8\r\n\r\n" + body
    answer = b"".join(
        php.stdout(1, output[i:i + PHP_RECORD]) for i in range(0, len(output), PHP_RECORD)
    ) + php.stdout(1, b"", close=True) + php.end_request(1)
    request = REQUEST
    if accept_encoding:
        request = REQUEST[:-2] + b"Accept-Encoding: " + accept_encoding + b"\r\n\r\n"

    def one() -> None:
        channel.dataReceived(request)
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
    parser.add_argument("--page", type=int, default=0, metavar="KB", help="answer an HTML page of KB KiB (default: hello-world)")
    parser.add_argument("--accept-encoding", default="", help="the request's Accept-Encoding (default: none)")
    parser.add_argument("--no-compression", action="store_true", help="a site without compression")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        Path(root, "hello.php").write_text("<?php echo 'Hello, world!';\n")
        body = html_page(args.page) if args.page else HELLO
        one = build(os.path.realpath(root), body, args.accept_encoding.encode(), not args.no_compression)
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
        what = f"{args.page} KB page" if args.page else "hello"
        mode = "compression off" if args.no_compression else f"Accept-Encoding: {args.accept_encoding or '(none)'}"
        print(f"{implementation} {sys.version.split()[0]}: {what}, {mode}: {best * 1e6:.1f} us per request "
              f"(best of {args.runs} runs of {args.requests})")
    return 0


def _timed(one, n: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(n):
        one()
    return (time.perf_counter() - start) / n


if __name__ == "__main__":
    sys.exit(main())
