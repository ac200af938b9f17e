"""What a run measured: HDR histograms, counters, and the text and JSON reports made from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from hdrh.histogram import HdrHistogram

__all__ = [
    "ErrorKind",
    "IntervalStats",
    "LatencySummary",
    "Recorder",
    "Report",
    "format_progress",
    "format_text",
    "report_to_json",
    "threshold_failures",
    "warnings_for",
]

#: Histograms hold microseconds from 1 us to one hour with 3 significant digits.
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
#: The per-second histogram needs less precision.
INTERVAL_SIGNIFICANT_DIGITS = 2
#: Share of one core above which the generator's own numbers are suspect.
CPU_WARNING_FRACTION = 0.8
#: Achieved rate below this share of the target counts as "not held".
RATE_HELD_FRACTION = 0.98


class ErrorKind(str, Enum):
    """Why a request got no response; each member is its own JSON key (``str``, as 3.11's StrEnum)."""

    CONNECT_REFUSED = "connect_refused"
    CONNECT_ERROR = "connect_error"
    TIMEOUT = "timeout"
    RESET = "reset"
    MALFORMED = "malformed"

    def __str__(self) -> str:
        return self.value


_ERROR_HELP = {
    ErrorKind.CONNECT_REFUSED: "nothing listening",
    ErrorKind.CONNECT_ERROR: "other connect failure",
    ErrorKind.TIMEOUT: "no complete answer within --timeout",
    ErrorKind.RESET: "connection closed or reset before the response was complete",
    ErrorKind.MALFORMED: "not an HTTP/1.x response",
}


def _histogram(digits: int = SIGNIFICANT_DIGITS) -> HdrHistogram:
    return HdrHistogram(1, HIGHEST_US, digits)


@dataclass(frozen=True)
class LatencySummary:
    """Latency percentiles in milliseconds, from an HDR histogram."""

    count: int
    min_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p99_9_ms: float
    max_ms: float

    @classmethod
    def from_histogram(cls, histogram: HdrHistogram) -> "LatencySummary":
        count = histogram.get_total_count()
        if not count:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        at = histogram.get_value_at_percentile
        return cls(
            count=count,
            min_ms=histogram.get_min_value() / 1000,
            mean_ms=histogram.get_mean_value() / 1000,
            p50_ms=at(50.0) / 1000,
            p90_ms=at(90.0) / 1000,
            p99_ms=at(99.0) / 1000,
            p99_9_ms=at(99.9) / 1000,
            max_ms=histogram.get_max_value() / 1000,
        )


@dataclass(frozen=True)
class IntervalStats:
    """One slice of the time series (normally one second), by completion time."""

    end_s: float
    seconds: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class Report:
    """Everything a run measured; times in seconds, latencies in milliseconds."""

    urls: tuple[str, ...]
    method: str
    concurrency: int
    target_rps: float | None  # None: as fast as possible (closed loop)
    duration_s: float
    warmup_s: float
    timeout_s: float
    elapsed_s: float  # the sending window: from the end of warmup to the later of the deadline and the last send
    responses: int
    errors: dict[str, int]
    status_codes: dict[int, int]
    bytes_received: int
    latency: LatencySummary  # from the intended send time: the headline
    service: LatencySummary  # from the actual send
    lateness: LatencySummary | None  # actual send minus intended send (rate mode)
    queued: int  # requests that waited for a free connection
    unsent: int  # requests due but never sent before the run ended
    cpu_fraction: float  # the generator's CPU time / wall time, 1.0 = one core
    timeseries: tuple[IntervalStats, ...] = field(default=())

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def requests(self) -> int:
        """Requests that ended, with a response or an error."""
        return self.responses + self.error_count

    @property
    def achieved_rps(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def error_rate(self) -> float:
        """Errors (and requests never sent) per request due; 1.0 when nothing was done."""
        due = self.requests + self.unsent
        return (self.error_count + self.unsent) / due if due else 1.0


class Recorder:
    """Collects per-request outcomes; cheap enough for the hot loop.

    Latencies are counted per whole microsecond in plain dicts and only
    poured into the HDR histograms (``record_value(value, count)``) once a
    second and at the end: a response costs a dict update or two instead of
    pure-Python histogram insertions.  The current second's dict serves both
    the per-second slice and the run's totals: warmup responses are also
    counted apart, to be left out of the totals.  In a closed loop a request
    is sent the moment it is issued, so the latency from the send *is* the
    latency from the intended time: :attr:`service` is :attr:`intended`.
    """

    def __init__(self, rate_mode: bool) -> None:
        self.rate_mode = rate_mode
        self.intended = _histogram()
        self.service = _histogram() if rate_mode else self.intended
        self.lateness = _histogram()
        self.status_codes: dict[int, int] = {}
        self.errors: dict[str, int] = {kind.value: 0 for kind in ErrorKind}
        self.bytes_received = 0
        self.queued = 0
        self.timeseries: list[IntervalStats] = []
        self._interval = _histogram(INTERVAL_SIGNIFICANT_DIGITS)
        self._pending: dict[int, int] = {}  # this second's latencies from intended, warmup included
        self._pending_warmup: dict[int, int] = {}  # the warmup part of _pending
        self._pending_service: dict[int, int] = {}
        self._pending_lateness: dict[int, int] = {}
        self._interval_errors = 0
        self._total_errors_seen = 0
        #: ``response(measured, status, size, intended, sent, done)``: a complete response, three times on one clock.
        self.response = self._response_rate if rate_mode else self._response_closed

    def _response_closed(self, measured: bool, status: int, size: int, intended: float, sent: float, done: float) -> None:
        latency = int((done - intended) * 1_000_000)
        counts = self._pending
        counts[latency] = counts.get(latency, 0) + 1
        if measured:
            codes = self.status_codes
            codes[status] = codes.get(status, 0) + 1
            self.bytes_received += size
        else:
            counts = self._pending_warmup
            counts[latency] = counts.get(latency, 0) + 1

    def _response_rate(self, measured: bool, status: int, size: int, intended: float, sent: float, done: float) -> None:
        latency = int((done - intended) * 1_000_000)
        counts = self._pending
        counts[latency] = counts.get(latency, 0) + 1
        if not measured:
            counts = self._pending_warmup
            counts[latency] = counts.get(latency, 0) + 1
            return
        service = int((done - sent) * 1_000_000)
        counts = self._pending_service
        counts[service] = counts.get(service, 0) + 1
        late = int((sent - intended) * 1_000_000)
        counts = self._pending_lateness
        counts[late] = counts.get(late, 0) + 1
        codes = self.status_codes
        codes[status] = codes.get(status, 0) + 1
        self.bytes_received += size

    def error(self, measured: bool, kind: str) -> None:
        self._interval_errors += 1
        self._total_errors_seen += 1
        if measured:
            self.errors[kind] += 1

    def flush(self) -> None:
        """Pour the counted latencies into the histograms."""
        pending = self._pending
        warmup = self._pending_warmup
        interval = self._interval
        intended = self.intended
        for value, count in pending.items():
            clamped = min(HIGHEST_US, max(1, value))
            interval.record_value(clamped, count)
            measured = count - warmup.get(value, 0)
            if measured:
                intended.record_value(clamped, measured)
        pending.clear()
        warmup.clear()
        for counts, histogram in ((self._pending_service, self.service), (self._pending_lateness, self.lateness)):
            for value, count in counts.items():
                histogram.record_value(min(HIGHEST_US, max(1, value)), count)
            counts.clear()

    def close_interval(self, end_s: float, seconds: float, keep: bool) -> IntervalStats:
        """End the current slice of the time series (kept in :attr:`timeseries` if *keep*)."""
        self.flush()
        histogram = self._interval
        responses = histogram.get_total_count()
        requests = responses + self._interval_errors
        stats = IntervalStats(
            end_s=round(end_s, 6),
            seconds=round(seconds, 6),
            requests=requests,
            errors=self._interval_errors,
            rps=requests / seconds if seconds > 0 else 0.0,
            p50_ms=histogram.get_value_at_percentile(50.0) / 1000 if responses else 0.0,
            p99_ms=histogram.get_value_at_percentile(99.0) / 1000 if responses else 0.0,
            max_ms=histogram.get_max_value() / 1000 if responses else 0.0,
        )
        histogram.reset()
        self._interval_errors = 0
        if keep:
            self.timeseries.append(stats)
        return stats

    def p99_so_far_ms(self) -> float | None:
        """The measured p99 from the intended time so far (None before any measured response)."""
        self.flush()
        if not self.intended.get_total_count():
            return None
        return float(self.intended.get_value_at_percentile(99.0)) / 1000

    @property
    def errors_so_far(self) -> int:
        """Errors seen since the start, warmup included (for the progress line)."""
        return self._total_errors_seen


def warnings_for(report: Report) -> list[str]:
    """What makes the numbers less than they seem, in plain words."""
    notes = []
    target = report.target_rps
    if target is not None:
        if report.achieved_rps < target * RATE_HELD_FRACTION or report.unsent:
            short = 1 - report.achieved_rps / target
            notes.append(
                f"target rate not held: achieved {report.achieved_rps:.1f} of {target:g} req/s "
                f"({short:.1%} short) on {report.concurrency} connections"
            )
        if report.queued:
            behind = report.lateness.max_ms if report.lateness else 0.0
            notes.append(
                f"all {report.concurrency} connections were busy for {report.queued} requests "
                f"({report.queued / max(1, report.requests):.1%}), which left up to {behind:.1f} ms "
                f"behind schedule; their latency still counts from the intended time"
            )
        if report.unsent:
            notes.append(f"{report.unsent} requests were due but never sent before the run ended")
        lateness = report.lateness
        if lateness and lateness.count and lateness.p50_ms >= 0.2 * max(report.service.p50_ms, 0.001):
            notes.append(
                f"the scheduler sent requests a median {lateness.p50_ms:.3f} ms late (timer granularity: "
                f"Twisted's epoll reactor sleeps in whole milliseconds, select() finer; and the generator's "
                f"own work); that lateness is part of the intended-time latency, compare with the 'from sent' row"
            )
    if report.cpu_fraction > CPU_WARNING_FRACTION:
        notes.append(
            f"the generator used {report.cpu_fraction:.0%} of a core: it may be the bottleneck, "
            f"treat its numbers as suspect"
        )
    return notes


def threshold_failures(report: Report, fail_p99_ms: float | None, fail_error_rate: float | None) -> list[str]:
    """The CI thresholds this report crosses (none crossed: an empty list)."""
    failures = []
    if fail_p99_ms is not None:
        if not report.latency.count:
            failures.append(f"p99 unknown (no responses), limit {fail_p99_ms:g} ms")
        elif report.latency.p99_ms > fail_p99_ms:
            failures.append(f"p99 {report.latency.p99_ms:.2f} ms is above --fail-p99 {fail_p99_ms:g} ms")
    if fail_error_rate is not None and report.error_rate > fail_error_rate:
        failures.append(
            f"error rate {report.error_rate:.4f} is above --fail-error-rate {fail_error_rate:g}"
        )
    return failures


def _latency_row(name: str, summary: LatencySummary) -> str:
    if not summary.count:
        return f"  {name:<15}{'(no responses)':>9}"
    values = (
        summary.min_ms,
        summary.mean_ms,
        summary.p50_ms,
        summary.p90_ms,
        summary.p99_ms,
        summary.p99_9_ms,
        summary.max_ms,
    )
    return f"  {name:<15}" + "".join(f"{value:>10.3f}" for value in values)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


def format_text(report: Report) -> str:
    """The human report, ending with a newline."""
    target = "as fast as possible" if report.target_rps is None else f"{report.target_rps:g} req/s"
    urls = report.urls[0] if len(report.urls) == 1 else f"{len(report.urls)} URLs, first {report.urls[0]}"
    lines = [
        f"fephp bench {urls}",
        f"  {report.method}, {report.concurrency} connections, {report.duration_s:g} s"
        + (f" after {report.warmup_s:g} s warmup" if report.warmup_s else "")
        + f", timeout {report.timeout_s:g} s",
        "",
        f"Target rate     {target}",
        f"Achieved rate   {report.achieved_rps:.2f} req/s",
        f"Requests        {report.requests} sent in {report.elapsed_s:.2f} s: "
        f"{report.responses} responses, {report.error_count} errors",
    ]
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(report.status_codes.items()))
    lines.append(f"Status codes    {codes or 'none'}")
    if report.error_count:
        lines.append("Errors")
        for kind in ErrorKind:
            if report.errors.get(kind.value):
                lines.append(f"  {kind.value:<16}{report.errors[kind.value]:>8}  {_ERROR_HELP[kind]}")
    else:
        lines.append("Errors          none")
    lines.append(f"Received        {_size(report.bytes_received)}")
    lines.append("")
    header = "".join(f"{name:>10}" for name in ("min", "mean", "p50", "p90", "p99", "p99.9", "max"))
    lines.append(f"Latency (ms)     {header[2:]}")
    lines.append(_latency_row("from intended", report.latency))
    lines.append(_latency_row("from sent", report.service))
    if report.lateness is not None:
        lines.append(_latency_row("send lateness", report.lateness))
        lines.append(
            f"  ('from intended' is the headline: it counts from when the schedule meant to send, "
            f"so time spent waiting for a connection or a stalled server is not lost)"
        )
    lines.append("")
    lines.append(f"Generator CPU   {report.cpu_fraction:.0%} of one core")
    notes = warnings_for(report)
    if notes:
        lines.append("")
        lines.extend(f"WARNING: {note}" for note in notes)
    return "\n".join(lines) + "\n"


def format_progress(
    elapsed_s: float, total_s: float, current_rps: float, p99_ms: float | None, errors: int, warming_up: bool
) -> str:
    """The live line shown on a terminal once a second: elapsed of total, current rate, p99 so far, errors so far."""
    phase = "warmup " if warming_up else ""
    p99 = "p99 so far        -" if p99_ms is None else f"p99 so far {p99_ms:9.2f} ms"
    return f"{phase}{elapsed_s:6.1f} s of {total_s:g} s  {current_rps:9.1f} req/s  {p99}  errors {errors}"


def report_to_json(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data: the same numbers plus the per-second time series."""
    return {
        "urls": list(report.urls),
        "method": report.method,
        "concurrency": report.concurrency,
        "mode": "max" if report.target_rps is None else "rate",
        "target_rps": report.target_rps,
        "achieved_rps": report.achieved_rps,
        "duration_s": report.duration_s,
        "warmup_s": report.warmup_s,
        "timeout_s": report.timeout_s,
        "elapsed_s": report.elapsed_s,
        "requests": report.requests,
        "responses": report.responses,
        "errors": dict(report.errors),
        "error_count": report.error_count,
        "error_rate": report.error_rate,
        "status_codes": {str(code): n for code, n in sorted(report.status_codes.items())},
        "bytes_received": report.bytes_received,
        "latency_ms": {
            "intended": asdict(report.latency),
            "sent": asdict(report.service),
            "send_lateness": asdict(report.lateness) if report.lateness is not None else None,
        },
        "schedule": {"queued": report.queued, "unsent": report.unsent},
        "cpu_fraction": report.cpu_fraction,
        "warnings": warnings_for(report),
        "timeseries": [asdict(stats) for stats in report.timeseries],
    }
