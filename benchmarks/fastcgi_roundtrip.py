"""What one FastCGI round trip costs: fephp's pool vs a bare blocking client loop.

Starts its own php-fpm (pm=static, one child, UNIX socket, in a temp dir),
then times N sequential requests to a hello-world script two ways, in
alternating rounds:

- ``pool``: FastCGIPool on the Twisted reactor (what fephp runs per request);
- ``bare``: the sans-io codec over a plain blocking socket, no reactor: the
  floor set by php-fpm and the kernel.

Prints the median and p99 of each, in microseconds, and the difference, which
is what fephp's client adds.  Run: ``python3 benchmarks/fastcgi_roundtrip.py``
(``--requests``, ``--rounds``).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fephp.fastcgi import ClientConnection, EndRequest, Stdout  # noqa: E402
from fephp.process.binaries import find_php  # noqa: E402
from fephp.process.fpmconfig import PoolSpec, php_fpm_argv, render_config  # noqa: E402

SCRIPT = "<?php echo 'Hello, world!';\n"


def params(script: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"SCRIPT_FILENAME", script.encode()),
        (b"SCRIPT_NAME", b"/hello.php"),
        (b"REQUEST_METHOD", b"GET"),
        (b"QUERY_STRING", b""),
        (b"CONTENT_LENGTH", b""),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"GATEWAY_INTERFACE", b"CGI/1.1"),
        (b"REDIRECT_STATUS", b"200"),
    ]


def bare_loop(sock_path: str, script: str, n: int) -> list[float]:
    """Sequential requests on one kept connection, blocking socket, codec only."""
    times = []
    p = params(script)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock_path)
        codec = ClientConnection()
        for _ in range(n):
            start = time.perf_counter()
            s.sendall(codec.begin_request(1, p) + codec.end_stdin(1))
            done = False
            body = b""
            while not done:
                for event in codec.receive_data(s.recv(65536)):
                    if type(event) is Stdout:
                        body += event.data
                    elif type(event) is EndRequest:
                        done = True
            times.append(time.perf_counter() - start)
            assert body.endswith(b"Hello, world!")
    return times


def pool_loop(sock_path: str, script: str, n: int) -> list[float]:
    """Sequential requests through FastCGIPool on the real reactor."""
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    from fephp.backend.endpoints import parse_client_endpoint
    from fephp.backend.pool import FastCGIPool

    class Sink:
        def response_started(self, producer: object) -> None:
            pass

        def stdout_received(self, data: bytes) -> None:
            pass

        def stderr_received(self, data: bytes) -> None:
            pass

    times: list[float] = []
    p = params(script)

    async def run() -> None:
        pool = FastCGIPool(parse_client_endpoint(reactor, sock_path), clock=reactor, size=1)
        sink = Sink()
        for _ in range(n):
            start = time.perf_counter()
            await pool.request(p, None, sink)
            times.append(time.perf_counter() - start)
        await pool.close()

    d = ensureDeferred(run())
    d.addBoth(lambda r: (reactor.stop(), r)[1])
    reactor.run(installSignalHandlers=False)
    return times


def pool_loop_in_child(sock_path: str, script: str, n: int) -> list[float]:
    """The reactor can run once per process: each pool round runs in a child."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", sock_path, script, str(n)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return [float(x) for x in out.split()]


def describe(label: str, times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    median = statistics.median(times) * 1e6
    p99 = times[int(len(times) * 0.99) - 1] * 1e6
    print(f"{label:6s} median {median:7.1f} us   p99 {p99:7.1f} us   ({len(times)} requests)")
    return median, p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sock_path, script, n = args.child
        print(" ".join(f"{t:.9f}" for t in pool_loop(sock_path, script, int(n))))
        return 0

    binary = find_php("php-fpm")
    if not binary:
        print("php-fpm not found (apt-get install php8.2-fpm)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "hello.php")
        Path(script).write_text(SCRIPT)
        sock_path = os.path.join(tmp, "fpm.sock")
        conf = os.path.join(tmp, "php-fpm.conf")
        Path(conf).write_text(
            render_config(
                [PoolSpec("bench", sock_path, max_children=1, php_admin_values={"opcache.enable": "1"})],
                pid_file=os.path.join(tmp, "fpm.pid"),
                error_log=os.path.join(tmp, "fpm.log"),
            )
        )
        fpm = subprocess.Popen(php_fpm_argv(binary, conf), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(sock_path):
                if time.monotonic() > deadline or fpm.poll() is not None:
                    raise RuntimeError("php-fpm did not start")
                time.sleep(0.02)
            bare_loop(sock_path, script, 200)  # warm opcache and the child
            bare: list[float] = []
            pool: list[float] = []
            for _ in range(args.rounds):
                bare += bare_loop(sock_path, script, args.requests)
                pool += pool_loop_in_child(sock_path, script, args.requests)
            bare_median, _ = describe("bare", bare)
            pool_median, _ = describe("pool", pool)
            print(f"fephp's client adds {pool_median - bare_median:.1f} us per round trip (median)")
        finally:
            fpm.terminate()
            fpm.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
