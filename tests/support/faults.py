"""The fault suite's tools, from the test's side: fephp in this process on a real port, clients good and hostile, and what must hold after every fault.

Each fault test builds a :class:`Served` front (the real FrontSite, PHPApp
and FastCGIPool, listening on 127.0.0.1) over a real php-fpm or a
:class:`tests.support.fake_fpm.FakeFPM`, does harm, and then checks the five
things that must always hold (:meth:`Served.check_after`): no request hung
(every client call here is bounded), nothing unhandled in the log
(:class:`LogWatch`), no POST run twice (:class:`Runs`, fed by the site's
``once.php``), memory bounded (:func:`rss_mib`), and the next normal
request served.

Blocking clients (:func:`exchange`, :func:`request`, :func:`run_load`) run
in threads (``deferToThread``) so that the reactor serving fephp keeps
turning.
"""

from __future__ import annotations

import collections
import gc
import http.client
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher

from tests.support.inprocess import InProcessFront
from tests.support.inprocess import pool as fastcgi_pool

__all__ = [
    "Exchange",
    "HeldClient",
    "LogWatch",
    "Outcome",
    "Runs",
    "Served",
    "exchange",
    "mixed",
    "request",
    "rss_mib",
    "run_load",
    "wait_until",
]


def rss_mib() -> float:
    """This process's resident memory, after a collection, in MiB."""
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def wait_until(predicate: Any, what: str, within: float = 10.0) -> None:
    """Poll *predicate* on the reactor until it holds; fail after *within* seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await deferLater(reactor, 0.02)


class LogWatch:
    """Every twisted.logger event from :meth:`start` on; :meth:`unhandled` is what carried a traceback."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def start(self) -> "LogWatch":
        globalLogPublisher.addObserver(self.events.append)
        return self

    def stop(self) -> None:
        globalLogPublisher.removeObserver(self.events.append)

    def unhandled(self) -> list[str]:
        """Events with a failure attached: an exception that escaped, an error in a Deferred nobody handled."""
        return [formatEvent(e) + "\n" + e["log_failure"].getTraceback() for e in self.events if "log_failure" in e]

    def lines(self, level_at_least: Any) -> list[str]:
        return [formatEvent(e) for e in self.events if e.get("log_level") is not None and e["log_level"] >= level_at_least]


class Runs:
    """How often PHP ran each tag of the site's ``once.php?tag=`` (it appends one line per run).

    Tags of POSTs start with ``p`` (see :func:`mixed`): one of them must never
    run twice.  Any other request may run at most twice: an idempotent one is
    sent once more when its connection dies before any answer (docs/fastcgi.md).
    """

    def __init__(self, root: Path) -> None:
        self.log = root / "runs.log"

    def counts(self) -> collections.Counter[str]:
        if not self.log.exists():
            return collections.Counter()
        return collections.Counter(self.log.read_text().split())

    def too_often(self) -> list[str]:
        return [tag for tag, n in self.counts().items() if n > (1 if tag.startswith("p") else 2)]


def mixed(count: int, *, ms: int = 10, prefix: str = "") -> list[tuple[str, str, bytes, str]]:
    """*count* requests to once.php, every other one a POST with a body (tag ``p...``), the others GETs (``g...``)."""
    requests = []
    for i in range(count):
        if i % 2:
            tag = f"p{prefix}{i}"
            requests.append(("POST", f"/once.php?tag={tag}&ms={ms}", b"field=value&n=%d" % i, tag))
        else:
            tag = f"g{prefix}{i}"
            requests.append(("GET", f"/once.php?tag={tag}&ms={ms}", b"", tag))
    return requests


@dataclass(frozen=True)
class Exchange:
    """What came back on one raw connection: the bytes, whether the server closed, whether the client gave up waiting."""

    raw: bytes
    closed: bool
    timed_out: bool
    seconds: float

    @property
    def status(self) -> Optional[int]:
        if not self.raw.startswith(b"HTTP/1."):
            return None
        return int(self.raw.split(b" ", 2)[1])


def exchange(port: int, data: bytes, *, timeout: float = 5.0, drip: float = 0.0) -> Exchange:
    """Send *data* (one byte each *drip* seconds if given), then read until the server closes or *timeout* passes."""
    started = time.monotonic()
    raw = b""
    closed = timed_out = False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            if drip:
                for i in range(len(data)):
                    s.sendall(data[i : i + 1])
                    time.sleep(drip)  # the client's pace is the fault under test
            else:
                s.sendall(data)
        except OSError:
            pass  # the server closed as we sent: read what it answered
        s.settimeout(max(0.1, timeout - (time.monotonic() - started)))
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                raw += chunk
        except socket.timeout:
            timed_out = True
        except ConnectionResetError:
            closed = True
    return Exchange(raw, closed, timed_out, time.monotonic() - started)


@dataclass(frozen=True)
class Outcome:
    """One request of a load: its status (None: no answer), the error if any, how long it took."""

    tag: str
    status: Optional[int]
    error: Optional[str]
    seconds: float
    body: bytes = b""


def request(
    port: int, method: str, path: str, body: bytes = b"", *, timeout: float = 10.0, tag: str = "", headers: Optional[dict[str, str]] = None
) -> Outcome:
    """One request on a connection of its own, bounded by *timeout*."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers={"Connection": "close", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        return Outcome(tag, response.status, None, time.monotonic() - started, data)
    except socket.timeout:
        return Outcome(tag, None, "timeout", time.monotonic() - started)
    except (OSError, http.client.HTTPException) as e:
        return Outcome(tag, None, type(e).__name__, time.monotonic() - started)
    finally:
        conn.close()


def run_load(port: int, requests: Iterable[tuple[str, str, bytes, str]], *, concurrency: int = 8, timeout: float = 10.0) -> list[Outcome]:
    """Every (method, path, body, tag) of *requests*, *concurrency* at a time; blocks: call through deferToThread."""
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(request, port, m, p, b, timeout=timeout, tag=t) for m, p, b, t in requests]
        return [f.result(timeout=timeout * 4 + 30) for f in futures]


class HeldClient(Protocol):
    """A client connection in the test's reactor: it sends what it is told, when told; what came back and when it closed are kept.

    Thousands fit in one process, where threads would not: the floods of idle
    and slow clients are made of these.
    """

    def __init__(self) -> None:
        self.received = b""
        self.opened_at = time.monotonic()
        self.closed_at: Optional[float] = None
        self._drip: Optional[LoopingCall] = None

    @classmethod
    async def open(cls, port: int) -> "HeldClient":
        return await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), cls())

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 - Twisted's name
        self.closed_at = time.monotonic()
        if self._drip is not None and self._drip.running:
            self._drip.stop()

    def send(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def drip(self, data: bytes, interval: float) -> None:
        """Send *data* one byte every *interval* seconds, as a slowloris client does, until it is all out or the connection closes."""
        pending = iter(data)

        def one() -> None:
            byte = next(pending, None)
            if byte is None or self.closed_at is not None:
                assert self._drip is not None
                self._drip.stop()
                return
            self.transport.write(bytes([byte]))  # type: ignore[union-attr]

        self._drip = LoopingCall(one)
        self._drip.clock = reactor
        self._drip.start(interval)

    def close(self) -> None:
        if self.closed_at is None and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    @property
    def status(self) -> Optional[int]:
        return Exchange(self.received, self.closed_at is not None, False, 0.0).status


class Served:
    """fephp's front in this process on 127.0.0.1 (a free port), over the backend at *backend*, serving *root*, watched.

    The front is a :class:`tests.support.inprocess.InProcessFront`; what
    this adds is the watching (log, runs, memory).  States: built,
    listening (:meth:`start`), stopped (:meth:`stop`).
    """

    def __init__(self, root: Path, backend: str, *, pool: Optional[dict[str, Any]] = None, **site: Any) -> None:
        self.root = root
        options = {"connect_timeout": 2.0, "response_timeout": 10.0, "queue_timeout": 10.0, **(pool or {})}
        site.setdefault("max_body_size", 1024 * 1024)
        self.front = InProcessFront.php(
            root, fastcgi_pool(backend, **options), router={"index": ("index.php",)}, server_software="fephp-faults",
            reactor=reactor, **site,
        )
        self.pool = self.front.backend
        self.runs = Runs(root)
        self.log = LogWatch()
        self.rss_at_start = 0.0

    async def start(self) -> "Served":
        self.log.start()
        await self.front.start()
        self.rss_at_start = rss_mib()
        return self

    @property
    def port(self) -> int:
        return self.front.port

    async def exchange(self, data: bytes, **options: Any) -> Exchange:
        return await deferToThread(exchange, self.port, data, **options)

    async def request(self, method: str, path: str, body: bytes = b"", **options: Any) -> Outcome:
        return await deferToThread(request, self.port, method, path, body, **options)

    async def load(self, requests: Iterable[tuple[str, str, bytes, str]], **options: Any) -> list[Outcome]:
        return await deferToThread(run_load, self.port, list(requests), **options)

    async def check_after(self, *, memory_mib: float = 64.0, normal: str = "/once.php?tag=after") -> None:
        """What must hold after any fault: the next request served, no run twice, nothing unhandled, memory bounded."""
        after = await self.request("GET", normal, timeout=15.0)
        assert (after.status, after.error) == (200, None), after
        assert self.runs.too_often() == []
        assert self.log.unhandled() == []
        grown = rss_mib() - self.rss_at_start
        assert grown < memory_mib, f"RSS grew by {grown:.1f} MiB"

    async def stop(self) -> None:
        self.log.stop()
        await self.front.stop()
