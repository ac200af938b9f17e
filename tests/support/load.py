"""Bounded HTTP load for failover tests, from the client's side: every request accounted for as answered, failed or hung.

A failover test kills or freezes a host while requests are in flight and then
counts: how many were answered, which failed fast (refused, reset, a 5xx), and
which hung (no answer within the request timeout).  :class:`HTTPLoad` sends
GETs from the root namespace of a :class:`tests.support.netns.Network`
(source ``.1``; or, with None for the network, from 127.0.0.1 to a loopback
address) on a few threads, bounded in count and in time::

    load = HTTPLoad(network, lb.frontend_address("web"), "/", total=5000, concurrency=4, timeout=2.0, within=30).start()
    wait_until(lambda: load.completed >= 50, "the first 50 answers")
    fpm.kill()
    ...  # wait for what the test is about, then
    load.stop()                       # or let it run to total (or to within seconds)
    outcomes = load.wait()
    assert [o for o in outcomes if o.hung] == []
    assert len(outcomes) == load.started

Each :class:`Outcome` has its status (None without a response), its error
(``refused``, ``reset``, ``timeout``, or an exception's name), the body, and
when it started and ended, so a test can also ask what happened after a
given moment (``o.started > killed_at``).
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from tests.support.netns import Network

__all__ = ["HTTPLoad", "Outcome"]


@dataclass(frozen=True)
class Outcome:
    """One request of a load: what came back, and when (``time.monotonic()`` seconds)."""

    index: int
    started: float
    ended: float
    status: Optional[int]
    error: Optional[str]
    body: bytes

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def hung(self) -> bool:
        """No answer within the request timeout: what a failover must never leave behind."""
        return self.error == "timeout"


def _classify(error: BaseException) -> str:
    if isinstance(error, socket.timeout):
        return "timeout"
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
        return "reset"
    return type(error).__name__


class HTTPLoad:
    """At most *total* GETs of *path*, *concurrency* at a time, each bounded by *timeout*; stops starting new ones after *within* seconds.

    States: built, running (:meth:`start`), finished (:meth:`wait` returns
    every outcome, in the order the requests were started).
    """

    def __init__(
        self,
        network: "Optional[Network]",
        address: tuple[str, int],
        path: str = "/",
        *,
        total: int,
        concurrency: int = 4,
        timeout: float = 2.0,
        within: float = 60.0,
        keep_alive: bool = False,
        host: Optional[str] = None,
    ) -> None:
        if network is not None:
            network._check_target(address[0])
        elif not address[0].startswith("127."):
            raise ValueError(f"{address[0]}: without a Network, a load goes to loopback only")
        if total < 1 or concurrency < 1:
            raise ValueError("total and concurrency must be at least 1")
        self.network = network
        self.address = address
        self.path = path
        self.total = total
        self.concurrency = concurrency
        self.timeout = timeout
        self.within = within
        self.keep_alive = keep_alive
        #: The Host header to send (one site of several); None: the address's.
        self.host = host
        self._lock = threading.Lock()
        self._next = 0
        self._outcomes: list[Outcome] = []
        self._threads: list[threading.Thread] = []
        self._deadline = 0.0
        self._stopping = threading.Event()

    @property
    def completed(self) -> int:
        with self._lock:
            return len(self._outcomes)

    def outcomes(self) -> list[Outcome]:
        """The outcomes so far, in the order the requests were started."""
        with self._lock:
            return sorted(self._outcomes, key=lambda o: o.index)

    def start(self) -> "HTTPLoad":
        self._deadline = time.monotonic() + self.within
        for n in range(min(self.concurrency, self.total)):
            thread = threading.Thread(target=self._run, name=f"http-load-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    @property
    def started(self) -> int:
        """How many requests were started so far (each ends in exactly one outcome)."""
        with self._lock:
            return self._next

    def stop(self) -> None:
        """Start no more requests; those in flight still finish (or time out)."""
        self._stopping.set()

    def wait(self) -> list[Outcome]:
        """Every outcome, once each thread has finished (at most *within* plus one request timeout)."""
        limit = self._deadline + self.timeout + 5.0
        for thread in self._threads:
            thread.join(max(0.0, limit - time.monotonic()))
            if thread.is_alive():
                raise AssertionError(f"an HTTP load thread was still running {self.within + self.timeout + 5.0} s in")
        return self.outcomes()

    def _take(self) -> Optional[int]:
        with self._lock:
            if self._next >= self.total or self._stopping.is_set() or time.monotonic() > self._deadline:
                return None
            self._next += 1
            return self._next - 1

    def _connection(self) -> http.client.HTTPConnection:
        source = (self.network.root_address, 0) if self.network is not None else None
        return http.client.HTTPConnection(self.address[0], self.address[1], timeout=self.timeout, source_address=source)

    def _run(self) -> None:
        conn: Optional[http.client.HTTPConnection] = None
        while True:
            index = self._take()
            if index is None:
                break
            if conn is None:
                conn = self._connection()
            started = time.monotonic()
            status: Optional[int] = None
            error: Optional[str] = None
            body = b""
            try:
                headers = {} if self.keep_alive else {"Connection": "close"}
                if self.host is not None:
                    headers["Host"] = self.host
                conn.request("GET", self.path, headers=headers)
                response = conn.getresponse()
                status, body = response.status, response.read()
                if not self.keep_alive or response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                error = _classify(e)
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                self._outcomes.append(Outcome(index, started, time.monotonic(), status, error, body))
        if conn is not None:
            conn.close()
