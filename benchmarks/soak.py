"""A long soak of fephp under a steady mixed load, from the client's side: unexpected errors, and fephp's RSS over time.

Starts ``twistd -n fephp`` (its own managed php-fpm, ``php.max_requests``
small enough that children are recycled all through the run) on a docroot
this script writes, then sends ``--rps`` requests a second for
``--minutes`` from a pool of keep-alive connections, the mix being:

==========  ====  =======================================================
kind        part  what and what is checked
==========  ====  =======================================================
php         40 %  GET /hello.php: 200, "Hello"
page        15 %  GET /page.php: 200, 20,000 bytes of a known pattern
static      20 %  GET /static/style.css (2 KB) or /static/blob.bin (64 KB): 200, the bytes
upload      10 %  POST /upload.php, 64 KB (a third of them chunked): 200, PHP's sha256 of it
form         5 %  POST /form.php, a small urlencoded form: 200, the field echoed
abort       10 %  GET /sleep.php?ms=200 on a connection of its own, closed after 20 ms
==========  ====  =======================================================

Every answer but an abort's must be exactly right; anything else (another
status, a wrong body, a reset, no answer within 10 s) is an unexpected
error, counted by kind.  fephp's RSS is read every ``--sample`` seconds.
Prints a Markdown summary (and ``--json`` writes the raw figures).

Run as root from a clone: ``python3 benchmarks/soak.py`` (fephp on CPython),
``python3 benchmarks/soak.py --python .venv-pypy/bin/python`` (on PyPy).
Every process it starts is stopped at the end; the load stops at the end of
its time whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from compare import Processes, fephp_port, rss_kib, twistd_argv  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE_SIZE = 20000
BLOB = bytes(range(256)) * 256  # 64 KiB
STYLE = b"body { color: #333; }\n" * 93  # about 2 KB
UPLOAD_SIZE = 64 * 1024
REQUEST_TIMEOUT = 10.0

FILES = {
    "hello.php": "<?php\nheader('Content-Type: text/plain');\necho 'Hello';\n",
    "page.php": (
        "<?php\nheader('Content-Type: text/html');\n"
        f"echo str_repeat('0123456789', {PAGE_SIZE // 10});\n"
    ),
    "upload.php": "<?php\nheader('Content-Type: text/plain');\necho hash('sha256', file_get_contents('php://input'));\n",
    "form.php": "<?php\nheader('Content-Type: text/plain');\necho $_POST['field'] ?? 'none';\n",
    "sleep.php": "<?php\nusleep((int)($_GET['ms'] ?? 0) * 1000);\necho 'slept';\n",
    "index.php": "<?php\necho 'front controller';\n",
}

#: (kind, share of the requests).
MIX = [("php", 40), ("page", 15), ("static", 20), ("upload", 10), ("form", 5), ("abort", 10)]


def write_docroot(base: str) -> str:
    root = os.path.join(base, "root")
    os.makedirs(os.path.join(root, "static"))
    for name, text in FILES.items():
        with open(os.path.join(root, name), "w") as f:
            f.write(text)
    with open(os.path.join(root, "static", "style.css"), "wb") as f:
        f.write(STYLE)
    with open(os.path.join(root, "static", "blob.bin"), "wb") as f:
        f.write(BLOB)
    return root


def fephp_config(port: int, root: str, pool_size: int, max_requests: int) -> str:
    return (
        f'server: {{listen: ["tcp:{port}:interface=127.0.0.1"], root: "{root}", shutdown_grace: 2}}\n'
        f"php: {{worker_pool_size: {pool_size}, max_requests: {max_requests}, queue_size: 1024}}\n"
        "limits: {max_body_size: 1m}\n"
        "logging: {access_log: null, level: warn}\n"
    )


# -- the client ---------------------------------------------------------------


class Failure(Exception):
    """An answer that is not the one expected."""


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    else:
        raise Failure("no length")
    return status, headers, body


def build(kind: str, rng: random.Random) -> tuple[bytes, object]:
    """The request bytes of *kind* and what its answer must be (status 200 and this check)."""
    host = b"Host: 127.0.0.1\r\n"
    if kind == "php":
        return b"GET /hello.php HTTP/1.1\r\n" + host + b"\r\n", b"Hello"
    if kind == "page":
        return b"GET /page.php HTTP/1.1\r\n" + host + b"\r\n", b"0123456789" * (PAGE_SIZE // 10)
    if kind == "static":
        if rng.random() < 0.5:
            return b"GET /static/style.css HTTP/1.1\r\n" + host + b"\r\n", STYLE
        return b"GET /static/blob.bin HTTP/1.1\r\n" + host + b"\r\n", BLOB
    if kind == "upload":
        body = rng.randbytes(UPLOAD_SIZE) if hasattr(rng, "randbytes") else os.urandom(UPLOAD_SIZE)
        digest = hashlib.sha256(body).hexdigest().encode()
        head = b"POST /upload.php HTTP/1.1\r\n" + host + b"Content-Type: application/octet-stream\r\n"
        if rng.random() < 1 / 3:
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 16384]), body[i : i + 16384]) for i in range(0, len(body), 16384))
            return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n", digest
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body, digest
    if kind == "form":
        value = b"v%d" % rng.randrange(10**6)
        body = b"field=" + value
        return (
            b"POST /form.php HTTP/1.1\r\n" + host + b"Content-Type: application/x-www-form-urlencoded\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body) + body
        ), value
    raise ValueError(kind)


class Soak:
    def __init__(self, port: int, rps: float, seconds: float, connections: int, seed: int) -> None:
        self.port = port
        self.rps = rps
        self.seconds = seconds
        self.connections = connections
        self.rng = random.Random(seed)
        self.sent = collections.Counter()
        self.ok = collections.Counter()
        self.errors: collections.Counter[tuple[str, str]] = collections.Counter()
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.late = 0
        self.queue: asyncio.Queue[tuple[float, str]] = asyncio.Queue()

    def pick(self) -> str:
        roll = self.rng.randrange(100)
        for kind, share in MIX:
            if roll < share:
                return kind
            roll -= share
        return MIX[-1][0]

    async def run(self) -> None:
        workers = [asyncio.ensure_future(self.worker()) for _ in range(self.connections)]
        aborts = []
        start = time.monotonic()
        n = 0
        while True:
            due = start + n / self.rps
            if due - start >= self.seconds:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            kind = self.pick()
            self.sent[kind] += 1
            if kind == "abort":
                aborts.append(asyncio.ensure_future(self.abort()))
            else:
                if self.queue.qsize() > self.connections:
                    self.late += 1  # the server (or this client) fell behind the schedule
                self.queue.put_nowait((time.monotonic(), kind))
            n += 1
            if len(aborts) > 200:
                aborts = [a for a in aborts if not a.done()]
        for _ in workers:
            self.queue.put_nowait((0.0, ""))
        await asyncio.wait_for(asyncio.gather(*workers, *aborts), REQUEST_TIMEOUT * 3)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), REQUEST_TIMEOUT)

    async def worker(self) -> None:
        conn = None
        while True:
            queued, kind = await self.queue.get()
            if not kind:
                break
            data, expected = build(kind, self.rng)
            try:
                if conn is None:
                    conn = await self.connect()
                reader, writer = conn
                writer.write(data)
                status, headers, body = await asyncio.wait_for(read_response(reader), REQUEST_TIMEOUT)
                if status != 200:
                    raise Failure(f"status {status}")
                if body != expected:
                    raise Failure("wrong body")
                if headers.get(b"connection") == b"close":
                    writer.close()
                    conn = None
                self.ok[kind] += 1
                self.latency[kind].append(time.monotonic() - queued)
            except (Failure, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError) as e:
                self.errors[(kind, str(e) if isinstance(e, Failure) else type(e).__name__)] += 1
                if conn is not None:
                    conn[1].close()
                conn = None
        if conn is not None:
            conn[1].close()

    async def abort(self) -> None:
        """A client that goes away 20 ms into a 200 ms script."""
        try:
            reader, writer = await self.connect()
            writer.write(b"GET /sleep.php?ms=200 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await asyncio.sleep(0.02)
            writer.transport.abort()
            self.ok["abort"] += 1
        except (OSError, asyncio.TimeoutError) as e:
            self.errors[("abort", type(e).__name__)] += 1


# -- the run ------------------------------------------------------------------


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fephp exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"fephp did not answer within 60 s; see {log}")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rps", type=float, default=500.0)
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections of the steady part")
    parser.add_argument("--pool-size", type=int, default=16, help="php.worker_pool_size (and php-fpm's children)")
    parser.add_argument("--max-requests", type=int, default=500, help="php.max_requests: children recycled all through the run")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--python", help="run fephp on this interpreter (e.g. .venv-pypy/bin/python)")
    parser.add_argument("--json", help="also write the raw figures to this file")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not (0.1 <= args.minutes <= 120 and 1 <= args.rps <= 5000 and 1 <= args.connections <= 1000):
        parser.error("--minutes 0.1..120, --rps 1..5000, --connections 1..1000")

    tmp = tempfile.mkdtemp(prefix="fephp-soak-")
    procs = Processes()
    samples: list[tuple[float, int]] = []
    try:
        root = write_docroot(tmp)
        config = os.path.join(tmp, "fephp.yaml")
        with open(config, "w") as f:
            f.write(fephp_config(0, root, args.pool_size, args.max_requests))
        log = os.path.join(tmp, "fephp.log")
        env = dict(os.environ, PYTHONPATH=REPO)
        python = os.path.abspath(args.python) if args.python else None
        argv = twistd_argv(python) + ["-n", "--pidfile", os.path.join(tmp, "fephp.pid"), "fephp", "--config", config]
        proc = procs.start("fephp", argv, log=log, env=env, cwd=tmp)
        port = fephp_port(proc)
        wait_ready(f"http://127.0.0.1:{port}/hello.php", proc, log)

        soak = Soak(port, args.rps, args.minutes * 60, args.connections, args.seed)
        started = time.monotonic()

        async def sample() -> None:
            while True:
                kib = rss_kib(proc.pid)
                if kib is not None:
                    samples.append((time.monotonic() - started, kib))
                await asyncio.sleep(args.sample)

        async def both() -> None:
            sampler = asyncio.ensure_future(sample())
            try:
                await soak.run()
            finally:
                sampler.cancel()

        asyncio.run(both())
        elapsed = time.monotonic() - started
        alive = proc.poll() is None
        with open(log, errors="replace") as f:
            log_text = f.read()
        tracebacks = log_text.count("Traceback")
    finally:
        procs.stop_all()

    after_first = [k for t, k in samples if t >= 60] or [k for _, k in samples]
    at_minute = after_first[0]
    growth = (max(after_first) - at_minute) / at_minute * 100
    total_sent = sum(soak.sent.values())
    unexpected = sum(soak.errors.values())
    interpreter = "PyPy" if args.python and "pypy" in args.python else platform.python_implementation()
    print(f"fephp on {interpreter} ({args.python or sys.executable}), {args.minutes:g} min at {args.rps:g} req/s, "
          f"{args.connections} connections, pool {args.pool_size}, php.max_requests {args.max_requests}")
    print()
    print("| kind | sent | right | unexpected | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|")
    for kind, _ in MIX:
        errors = sum(n for (k, _), n in soak.errors.items() if k == kind)
        lat = soak.latency.get(kind, [])
        print(f"| {kind} | {soak.sent[kind]} | {soak.ok[kind]} | {errors} | "
              f"{percentile(lat, 50) * 1000:.1f} | {percentile(lat, 99) * 1000:.1f} |" if lat else
              f"| {kind} | {soak.sent[kind]} | {soak.ok[kind]} | {errors} | - | - |")
    print()
    print(f"- requests: {total_sent} in {elapsed:.0f} s ({total_sent / elapsed:.0f} req/s); unexpected errors: {unexpected}"
          + (f" {dict(soak.errors)}" if unexpected else ""))
    print(f"- behind schedule (more queued than connections): {soak.late} times")
    print(f"- fephp alive at the end: {alive}; tracebacks in its log: {tracebacks}")
    print(f"- fephp RSS: {samples[0][1] / 1024:.1f} MiB at start, {at_minute / 1024:.1f} MiB after the first minute, "
          f"{max(after_first) / 1024:.1f} MiB at most after it ({growth:+.1f} %), {samples[-1][1] / 1024:.1f} MiB at the end")
    minute_marks = [k for t, k in samples if int(t) % 60 < args.sample]
    print("- RSS each minute (MiB): " + ", ".join(f"{k / 1024:.1f}" for k in minute_marks))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sent": soak.sent, "ok": soak.ok, "errors": {f"{k}: {e}": n for (k, e), n in soak.errors.items()},
                       "rss_kib": samples, "late": soak.late, "elapsed": elapsed, "tracebacks": tracebacks}, f, indent=1)
    return 0 if unexpected == 0 and alive and tracebacks == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
