"""Wiring: a schedule (or a closed loop), a set of connections, a recorder, on an injected reactor.

Two modes:

- **rate** (``rps > 0``), open loop: a central scheduler makes request *i*
  due at ``start + i / rps`` and hands it to a free connection.  When every
  connection is busy the request waits in a queue, and its latency keeps
  counting from its intended time, so a stalled server shows in the
  percentiles instead of silently slowing the generator down.
- **max** (``rps == 0``), closed loop: each connection sends its next
  request as soon as the previous answer arrived.

The reactor must provide ``IReactorTCP`` and ``IReactorTime``
(``MemoryReactorClock`` in unit tests).  ``now`` is the clock latencies are
measured on; it defaults to ``reactor.seconds`` and ``fephp.cli`` passes
``time.perf_counter``.  Timers are only ever armed with relative delays, so
the two clocks need not agree on the epoch.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from twisted.internet import error as tx_error
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ClientFactory
from twisted.python.failure import Failure

from .client import HTTPClientConnection
from .report import ErrorKind, LatencySummary, Recorder, Report, format_progress
from .schedule import Schedule

__all__ = ["BenchConfig", "BenchRun", "Origin", "encode_requests"]

USER_AGENT = "fephp-bench/0.1"
#: How long after the last send a run may wait for answers beyond ``timeout``.
DRAIN_MARGIN = 1.0


@dataclass(frozen=True)
class BenchConfig:
    """What to send, how fast and for how long; see ``fephp bench --help``."""

    urls: tuple[str, ...]
    duration: float = 10.0
    rps: float = 100.0  # 0: as fast as possible
    concurrency: int = 10
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    timeout: float = 10.0
    warmup: float = 0.0

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("at least one URL is needed")
        if not (self.duration > 0 and math.isfinite(self.duration)):
            raise ValueError(f"duration must be a positive number of seconds, not {self.duration!r}")
        if not (self.rps >= 0 and math.isfinite(self.rps)):
            raise ValueError(f"rps must be 0 (as fast as possible) or positive, not {self.rps!r}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {self.concurrency!r}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, not {self.timeout!r}")
        if not self.warmup >= 0:
            raise ValueError(f"warmup must not be negative, not {self.warmup!r}")


@dataclass(frozen=True)
class Origin:
    """Where every connection goes."""

    host: str
    port: int


def _check_token(text: str, what: str) -> str:
    if not text or any(c in text for c in "\r\n\0") or text != text.strip():
        raise ValueError(f"bad {what} {text!r}")
    return text


def encode_requests(config: BenchConfig) -> tuple[Origin, tuple[bytes, ...]]:
    """The origin and the complete bytes of each URL's request, encoded once before the run.

    Raises ValueError for URLs that are not ``http://`` or that name
    different origins (each connection is kept to one origin).
    """
    method = _check_token(config.method.upper(), "method")
    if " " in method:
        raise ValueError(f"bad method {config.method!r}")
    for name, value in config.headers:
        if ":" in name or " " in name:
            raise ValueError(f"bad header name {name!r}")
        _check_token(name, "header name")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"bad value for header {name!r}")
    names = {name.lower() for name, _ in config.headers}
    origin: Origin | None = None
    requests = []
    for url in config.urls:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"only http:// URLs are supported, not {url!r}")
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}")
        try:
            port = parts.port or 80
        except ValueError:
            raise ValueError(f"bad port in {url!r}") from None
        this = Origin(parts.hostname, port)
        if origin is None:
            origin = this
        elif this != origin:
            raise ValueError(f"all URLs must share one origin: {url!r} is not on {origin.host}:{origin.port}")
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        if any(c in target for c in " \r\n\0"):
            raise ValueError(f"bad path in {url!r}")
        lines = [f"{method} {target} HTTP/1.1"]
        if "host" not in names:
            lines.append(f"Host: {parts.netloc.rpartition('@')[2]}")
        if "user-agent" not in names:
            lines.append(f"User-Agent: {USER_AGENT}")
        if (config.body or method in ("POST", "PUT", "PATCH")) and not names & {
            "content-length",
            "transfer-encoding",
        }:
            lines.append(f"Content-Length: {len(config.body)}")
        lines.extend(f"{name}: {value}" for name, value in config.headers)
        requests.append(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + config.body)
    assert origin is not None
    return origin, tuple(requests)


def _error_kind(reason: Failure) -> str:
    if reason.check(tx_error.ConnectionRefusedError):
        return ErrorKind.CONNECT_REFUSED
    if reason.check(tx_error.TimeoutError, tx_error.UserError):
        # UserError: Twisted's connector gives up when its own timeout fires.
        return ErrorKind.TIMEOUT
    return ErrorKind.CONNECT_ERROR


class _SlotFactory(ClientFactory):
    def __init__(self, slot: "_Slot") -> None:
        self.slot = slot

    def buildProtocol(self, addr: object) -> HTTPClientConnection:  # noqa: N802
        return HTTPClientConnection(self.slot, self.slot.run.head_cache)

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:  # noqa: N802
        self.slot.connect_failed(reason)


class _Slot:
    """One of ``concurrency`` connection slots: at most one request in flight."""

    __slots__ = ("run", "factory", "connection", "busy", "intended", "sent", "measured", "request")

    def __init__(self, run: "BenchRun") -> None:
        self.run = run
        self.factory = _SlotFactory(self)
        self.connection: HTTPClientConnection | None = None
        self.busy = False
        self.intended = 0.0
        self.sent: float | None = None  # None while connecting
        self.measured = False
        self.request = b""

    def start(self, intended: float, now: float) -> None:
        run = self.run
        self.busy = True
        self.intended = intended
        self.measured = intended >= run.measure_start
        request = self.request = run.single_request or run.next_request()
        run.last_send = now
        connection = self.connection
        if connection is None:
            self.sent = None
            run.reactor.connectTCP(run.address, run.origin.port, self.factory, timeout=run.config.timeout)
        else:
            self.sent = now
            connection.send(request, run.head)

    # ConnectionOwner

    def connected(self, connection: HTTPClientConnection) -> None:
        self.connection = connection
        if self.busy and self.sent is None:
            self.sent = self.run.now()
            connection.send(self.request, self.run.head)
        else:  # the run ended while connecting
            connection.close()

    def response_done(self, connection: HTTPClientConnection) -> None:
        if connection is not self.connection or not self.busy:
            return
        run = self.run
        parser = connection.parser
        now = run.now()
        sent: Any = self.sent  # set: a response came, so the request was sent
        run.record_response(self.measured, parser.status, parser.received, self.intended, sent, now)
        self.busy = False
        if not parser.keep_alive:
            self.connection = None
            transport: Any = connection.transport
            if transport is not None:
                transport.loseConnection()
        run.slot_free(self, now)

    def response_failed(self, connection: HTTPClientConnection, kind: str) -> None:
        if connection is not self.connection or not self.busy:
            return
        self.connection = None
        connection.close()
        self.fail(kind)

    def connection_lost(self, connection: HTTPClientConnection) -> None:
        if self.connection is connection:
            self.connection = None

    def connect_failed(self, reason: Failure) -> None:
        if self.busy and self.sent is None:
            self.fail(_error_kind(reason))

    def fail(self, kind: str) -> None:
        self.busy = False
        self.run.recorder.error(self.measured, kind)
        self.run.slot_free(self)

    def time_out(self) -> None:
        connection = self.connection
        self.connection = None
        if connection is not None:
            connection.close()
        self.fail(ErrorKind.TIMEOUT)

    def close(self) -> None:
        self.busy = False
        connection = self.connection
        self.connection = None
        if connection is not None:
            connection.close()


class BenchRun:
    """One benchmark run; :meth:`run` once, and its Deferred fires with the :class:`Report`."""

    def __init__(
        self,
        config: BenchConfig,
        reactor: Any,
        now: Callable[[], float] | None = None,
        cpu_time: Callable[[], float] = time.process_time,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.reactor = reactor
        self.now = now or reactor.seconds
        self._cpu_time = cpu_time
        self._on_progress = on_progress
        self.origin, self._requests = encode_requests(config)
        self.address = self.origin.host
        self.head = config.method.upper() == "HEAD"
        self.rate_mode = config.rps > 0
        self.recorder = Recorder(self.rate_mode)
        self.record_response = self.recorder.response
        # The request of a single-URL run, taken without a call per send (b"": several URLs).
        self.single_request = self._requests[0] if len(self._requests) == 1 else b""
        #: What every connection's parser remembers of the header blocks it read.
        self.head_cache: dict[bytes, tuple[int, bool, int, bool]] = {}
        self.slots = [_Slot(self) for _ in range(config.concurrency)]
        self.measure_start = math.inf
        self._request_index = 0
        self._free: deque[_Slot] = deque()
        # Due but unsent requests are the indexes [_sent, _due) of the
        # schedule: the queue is two counters, however far behind the run falls.
        self._sent = 0
        self._due = 0
        self._sending = False
        self.last_send = 0.0
        self._begun = False
        self._stopped_early = False
        self._finished: Deferred[Report] | None = None
        self._timers: dict[str, Any] = {}  # IDelayedCall
        self._schedule: Schedule | None = None
        self._t0 = 0.0
        self._cpu0 = 0.0
        self._deadline = 0.0
        self._tick_number = 0
        self._last_tick = 0.0

    def next_request(self) -> bytes:
        requests = self._requests
        if len(requests) == 1:
            return requests[0]
        index = self._request_index
        self._request_index = (index + 1) % len(requests)
        return requests[index]

    def run(self) -> "Deferred[Report]":
        """Resolve the host once, then run; fires with the report."""
        if self._finished is not None:
            raise RuntimeError("a BenchRun runs once")
        self._finished = Deferred()
        host = self.origin.host
        if isIPAddress(host) or isIPv6Address(host):
            resolved: Deferred[str] = succeed(host)
        else:
            resolved = self.reactor.resolve(host)
        resolved.addCallback(self._begin)
        resolved.addErrback(self._finished.errback)
        return self._finished

    @property
    def interrupted(self) -> bool:
        """:meth:`stop` ended the run before its time."""
        return self._stopped_early

    def stop(self) -> None:
        """End the run now (Ctrl-C): the report covers what was measured so far."""
        finished = self._finished
        if finished is None or finished.called:
            return
        self._stopped_early = True
        if self._begun:
            self._finish()
        else:
            finished.errback(Failure(RuntimeError("stopped before the run began")))

    def _later(self, name: str, delay: float, call: Callable[[], None]) -> None:
        self._timers[name] = self.reactor.callLater(max(0.0, delay), call)

    def _begin(self, address: str) -> None:
        config = self.config
        if self._finished is None or self._finished.called:
            return
        self._begun = True
        self.address = address
        self._cpu0 = self._cpu_time()
        t0 = self._t0 = self.now()
        self.measure_start = t0 + config.warmup
        self._deadline = self.measure_start + config.duration
        self._sending = True
        self._last_tick = t0
        self._tick_number = math.floor(-config.warmup) + 1
        self._later("tick", self.measure_start + self._tick_number - t0, self._tick)
        self._later("sweep", self._sweep_interval(), self._sweep)
        self._later("hard_stop", self._deadline - t0 + config.timeout + DRAIN_MARGIN, self._hard_stop)
        if self.rate_mode:
            self._schedule = Schedule.for_run(t0, config.rps, config.warmup + config.duration)
            self._free.extend(self.slots)
            self._send_due()
        else:
            self._later("deadline", self._deadline - t0, self._end_sending)
            for slot in self.slots:
                slot.start(t0, t0)

    def _sweep_interval(self) -> float:
        return min(0.25, max(0.01, self.config.timeout / 10))

    # Rate mode: the central scheduler.

    def _send_due(self) -> None:
        schedule = self._schedule
        assert schedule is not None
        now = self.now()
        due = self._due = schedule.due(now)
        free = self._free
        sent = self._sent
        while sent < due and free:
            free.popleft().start(schedule.intended(sent), now)
            sent += 1
        self._sent = sent
        if due < schedule.total:
            self._later("send", schedule.intended(due) - now, self._send_due)
        else:
            self._timers.pop("send", None)
            self._end_sending()

    def slot_free(self, slot: _Slot, now: float | None = None) -> None:
        """*slot* has no request in flight: give it the next one, if any (*now*: the clock, if just read)."""
        if self.rate_mode:
            if self._sent < self._due:
                assert self._schedule is not None
                intended = self._schedule.intended(self._sent)
                self._sent += 1
                if intended >= self.measure_start:
                    self.recorder.queued += 1
                slot.start(intended, self.now() if now is None else now)
                return
            if self._sending:
                self._free.append(slot)
                return
        elif self._sending:
            if now is None:
                now = self.now()
            slot.start(now, now)
            return
        self._maybe_finish()

    def _end_sending(self) -> None:
        self._sending = False
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self._sending or self._sent < self._due:
            return
        if any(slot.busy for slot in self.slots):
            return
        self._finish()

    # Timers.

    def _tick(self) -> None:
        now = self.now()
        tick_time = self.measure_start + self._tick_number
        stats = self.recorder.close_interval(
            end_s=tick_time - self.measure_start,
            seconds=tick_time - self._last_tick,
            keep=tick_time > self.measure_start,
        )
        self._last_tick = tick_time
        if self._on_progress is not None:
            config = self.config
            recorder = self.recorder
            warming_up = tick_time <= self.measure_start
            p99 = stats.p99_ms if warming_up else recorder.p99_so_far_ms()
            # The warmup counts from the start, the measured run from the warmup's end.
            if warming_up:
                elapsed, total = now - self._t0, config.warmup
            else:
                elapsed, total = now - self.measure_start, config.duration
            line = format_progress(elapsed, total, stats.rps, p99, recorder.errors_so_far, warming_up)
            self._on_progress(line)
        self._tick_number += 1
        self._later("tick", self.measure_start + self._tick_number - now, self._tick)

    def _sweep(self) -> None:
        now = self.now()
        limit = self.config.timeout
        for slot in self.slots:
            if slot.busy and slot.sent is not None and now - slot.sent > limit:
                slot.time_out()
        if self._finished is not None and not self._finished.called:
            self._later("sweep", self._sweep_interval(), self._sweep)

    def _hard_stop(self) -> None:
        self._timers.pop("hard_stop", None)
        self._finish()

    def _finish(self) -> None:
        finished = self._finished
        if finished is None or finished.called:
            return
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        self._sending = False
        now = self.now()
        recorder = self.recorder
        for slot in self.slots:
            if slot.busy and not self._stopped_early:
                recorder.error(slot.measured, ErrorKind.TIMEOUT)
            slot.close()
        unsent = 0
        schedule = self._schedule
        if schedule is not None:
            # Due but never sent (the measured ones), and, unless stopped on
            # purpose, those that never fell due because the run was cut short.
            unsent = max(0, self._due - max(self._sent, schedule.before(self.measure_start)))
            if not self._stopped_early:
                unsent += schedule.total - self._due
            self._sent = self._due
        end = now if self._stopped_early else max(now, self._deadline)
        if end > self._last_tick:
            recorder.close_interval(end - self.measure_start, end - self._last_tick, keep=end > self.measure_start)
        # The achieved rate is over the sending window: the run's duration,
        # stretched when queued requests could only be sent after its end.
        # Waiting for the last answers does not lower it; their latency shows.
        window_end = now if self._stopped_early else max(self.last_send, self._deadline)
        # The generator's CPU over the run, before the summaries below cost their own.
        cpu_fraction = (self._cpu_time() - self._cpu0) / max(1e-9, now - self._t0)
        recorder.flush()
        latency = LatencySummary.from_histogram(recorder.intended)
        config = self.config
        report = Report(
            urls=config.urls,
            method=config.method.upper(),
            concurrency=config.concurrency,
            target_rps=config.rps if self.rate_mode else None,
            duration_s=config.duration,
            warmup_s=config.warmup,
            timeout_s=config.timeout,
            elapsed_s=max(0.0, window_end - self.measure_start),
            responses=recorder.intended.get_total_count(),
            errors=dict(recorder.errors),
            status_codes=dict(recorder.status_codes),
            bytes_received=recorder.bytes_received,
            latency=latency,
            service=latency if recorder.service is recorder.intended else LatencySummary.from_histogram(recorder.service),
            lateness=LatencySummary.from_histogram(recorder.lateness) if self.rate_mode else None,
            queued=recorder.queued,
            unsent=unsent,
            cpu_fraction=cpu_fraction,
            timeseries=tuple(recorder.timeseries),
        )
        finished.callback(report)
