"""The ``fephp bench`` subcommand: its arguments, and a run from parsed arguments to an exit status."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import signal
import sys
import time
from types import FrameType
from typing import Any, Callable, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.error import ReactorNotRunning
from twisted.python.failure import Failure

from .hdr import percentile_distribution, percentile_rows
from .plot import PlotUnavailable, plot_run
from .report import Report, format_text, report_to_json, threshold_failures, warnings_for
from .runner import BenchConfig, BenchRun, encode_requests

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_THRESHOLD",
    "EXIT_USAGE",
    "Session",
    "add_arguments",
    "config_from_args",
    "exit_status",
    "run",
]

#: Exit status when ``--fail-p99`` or ``--fail-error-rate`` is crossed.
EXIT_THRESHOLD = 1
#: Exit status for bad arguments, as argparse uses.
EXIT_USAGE = 2
#: Exit status after Ctrl-C (the partial report is still printed).
EXIT_INTERRUPTED = 130
#: What --plot draws, by the file's extension (matplotlib's format names).
PLOT_FORMATS = {".svg": "svg", ".png": "png"}
PLOT_NEEDS = "drawing needs matplotlib, an optional extra: pip install 'fephp[plot]' (or pip install matplotlib)"

DESCRIPTION = """\
Load an HTTP server and report throughput, errors and latency percentiles.

With --rps N (open loop) requests are scheduled at N per second and each
latency counts from the moment the schedule meant to send it, so a server
that stalls shows up in the percentiles even while every connection waits
(no coordinated omission).  With --rps 0 (closed loop) each connection sends
its next request as soon as the previous answer arrives: the server's
maximum throughput.
"""

EPILOG = """\
exit status: 0 normally; 1 when --fail-p99 or --fail-error-rate is crossed;
2 for bad arguments; 130 when interrupted (the partial report is printed).

example: fephp bench --url http://127.0.0.1:8080/ --duration 60 --rps 100 --concurrency 10
"""


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text!r}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text!r}")
    return value


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', not {text!r}")
    return name.strip(), value.strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the bench flags on *parser* (a subcommand's parser)."""
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    target = parser.add_argument_group("what to request")
    target.add_argument(
        "--url", action="append", default=[], metavar="URL",
        help="http:// URL to request; repeat it to cycle through several URLs of one origin",
    )
    target.add_argument(
        "--urls-file", metavar="FILE",
        help="file with one URL per line (blank lines and lines starting with # are skipped)",
    )
    target.add_argument("--method", default="GET", help="HTTP method (default: GET)")
    target.add_argument(
        "-H", "--header", action="append", default=[], type=_header, metavar="'NAME: VALUE'",
        help="extra request header, repeatable; replaces the default Host or User-Agent",
    )
    body = target.add_mutually_exclusive_group()
    body.add_argument("--body", help="request body text (sent with a Content-Length)")
    body.add_argument("--body-file", metavar="FILE", help="request body read from FILE")

    load = parser.add_argument_group("how hard and how long")
    load.add_argument(
        "-d", "--duration", type=_positive_float, default=10.0, metavar="SECONDS",
        help="measured run time in seconds (default: 10)",
    )
    load.add_argument(
        "--rps", type=_non_negative_float, default=100.0, metavar="N",
        help="target rate in requests per second, latency counted from each request's "
        "scheduled time; 0 sends as fast as possible, each connection in a closed loop (default: 100)",
    )
    load.add_argument(
        "-c", "--concurrency", type=_positive_int, default=10, metavar="N",
        help="number of keep-alive connections, hence of requests in flight at most (default: 10)",
    )
    load.add_argument(
        "--timeout", type=_positive_float, default=10.0, metavar="SECONDS",
        help="a connect or a response taking longer counts as a timeout error (default: 10)",
    )
    load.add_argument(
        "--warmup", type=_non_negative_float, default=0.0, metavar="SECONDS",
        help="load the server this long at the same rate before measuring (default: 0)",
    )

    out = parser.add_argument_group("output and CI thresholds")
    out.add_argument("--json", metavar="FILE", help="also write the report and a per-second time series as JSON to FILE")
    out.add_argument(
        "--plot", metavar="FILE",
        help="draw latency over time (p50, p99, max per second, errors marked) and the percentile spectrum "
        "into FILE, SVG or PNG by its extension; needs matplotlib (pip install 'fephp[plot]')",
    )
    out.add_argument(
        "--hdr-out", metavar="FILE",
        help="write the latency histogram (from intended send time) as HdrHistogram's percentile "
        "distribution text, in ms, as wrk2 prints it",
    )
    out.add_argument(
        "-q", "--quiet", action="store_true",
        help="print neither the progress line nor the text report (warnings and threshold failures still go to stderr)",
    )
    out.add_argument(
        "--fail-p99", type=_positive_float, metavar="MS",
        help="exit with status 1 when the p99 latency (from intended send time) is above MS milliseconds",
    )
    out.add_argument(
        "--fail-error-rate", type=_fraction, metavar="R",
        help="exit with status 1 when errors (plus requests never sent) exceed this fraction of requests, e.g. 0.01",
    )


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """A checked :class:`BenchConfig`; ValueError (or OSError for files) says what is wrong."""
    urls = list(args.url)
    if args.urls_file:
        with open(args.urls_file, encoding="utf-8") as f:
            urls.extend(line.strip() for line in f if line.strip() and not line.lstrip().startswith("#"))
    if not urls:
        raise ValueError("give at least one --url (or a non-empty --urls-file)")
    if args.body_file:
        with open(args.body_file, "rb") as f:
            body = f.read()
    else:
        body = (args.body or "").encode("utf-8")
    config = BenchConfig(
        urls=tuple(urls),
        duration=args.duration,
        rps=args.rps,
        concurrency=args.concurrency,
        method=args.method,
        headers=tuple(args.header),
        body=body,
        timeout=args.timeout,
        warmup=args.warmup,
    )
    encode_requests(config)  # raises ValueError for bad URLs, method or headers
    check_outputs(args)
    return config


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any load is sent, a --plot the run could not draw: ValueError says why."""
    if not args.plot:
        return
    extension = os.path.splitext(args.plot)[1].lower()
    if extension not in PLOT_FORMATS:
        raise ValueError(f"--plot {args.plot}: the file must end in {' or '.join(PLOT_FORMATS)}")
    if importlib.util.find_spec("matplotlib") is None:
        raise ValueError(f"--plot {args.plot}: {PLOT_NEEDS}")


class _ProgressLine:
    """Rewrites one terminal line in place: a carriage return, the line, then erase to the end of the line."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.shown = False

    def __call__(self, line: str) -> None:
        self._stream.write("\r" + line + "\x1b[K")
        self._stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self.shown = False


def run(
    args: argparse.Namespace,
    reactor: Any,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    now: Callable[[], float] = time.perf_counter,
    cpu_time: Callable[[], float] = time.process_time,
) -> "tuple[BenchRun, Deferred[int]] | int":
    """Start a run on *reactor*: the run (to stop it early) and a Deferred exit status, or a usage error's status.

    *now* and *cpu_time* are the clocks the run measures on (a fake clock's in unit tests).
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as e:
        stderr.write(f"fephp bench: error: {e}\n")
        return EXIT_USAGE
    # Only on a terminal: a report redirected to a file or a pipe stays as it always was.
    progress = _ProgressLine(stdout) if not args.quiet and stdout.isatty() else None
    bench = BenchRun(config, reactor, now=now, cpu_time=cpu_time, on_progress=progress)

    def done(report: Report) -> int:
        if progress is not None:
            progress.clear()
        if not args.quiet:
            stdout.write(format_text(report))
            stdout.flush()
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(report_to_json(report), f, indent=2)
                f.write("\n")
        written = _write_pictures(args, bench, report, stderr)
        failures = threshold_failures(report, args.fail_p99, args.fail_error_rate)
        for failure in failures:
            stderr.write(f"fephp bench: FAIL: {failure}\n")
        if args.quiet:
            for note in warnings_for(report):
                stderr.write(f"fephp bench: WARNING: {note}\n")
        return EXIT_THRESHOLD if failures or not written else 0

    return bench, bench.run().addCallback(done)


def exit_status(outcome: "int | Failure | None", interrupted: bool) -> int:
    """The process's exit status from the run's own (*outcome*: None if it never ended) and Ctrl-C.

    130 after an interrupt, as wrk and oha exit, unless the run's own status
    already says failure (a crossed threshold, an unwritten picture).
    """
    if isinstance(outcome, int):
        return EXIT_INTERRUPTED if interrupted and outcome == 0 else outcome
    if outcome is None or interrupted:
        return EXIT_INTERRUPTED
    return 1


class Session:
    """One ``fephp bench`` run seen from the command line: its Ctrl-C, the reactor's stop, the exit status.

    :meth:`interrupt_received` is the SIGINT handler.  Python runs a handler
    between any two bytecodes of the reactor's thread, so it only notes the
    interrupt and asks the reactor, through ``callFromThread`` (the one
    reactor call that is safe there, as Twisted's own ``sigInt`` does), to
    stop the run on its next turn.  The note, not the stop, decides the exit
    status: the turn the signal came in may end the run itself (its last
    answer, its last timer, the report being written), and then the stop
    lands on a run that is over, which ``BenchRun.interrupted`` cannot tell
    from a run nobody interrupted.
    """

    def __init__(self, bench: BenchRun, status: "Deferred[int]", reactor: Any, stderr: TextIO | None = None) -> None:
        self.bench = bench
        self._reactor = reactor
        self._stderr = stderr or sys.stderr
        self._outcome: int | Failure | None = None
        #: A SIGINT came (set in the handler itself, before any stop lands).
        self.interrupted = False
        status.addBoth(self._ended)

    @property
    def ended(self) -> bool:
        """The run's Deferred has fired (its report is out, or it failed)."""
        return self._outcome is not None

    def interrupt_received(self, signum: int = signal.SIGINT, frame: FrameType | None = None) -> None:
        """Ctrl-C: exit 130, and stop the run on the reactor's next turn so that its partial report is printed."""
        self.interrupted = True
        self._reactor.callFromThread(self.bench.stop)

    def _ended(self, outcome: "int | Failure") -> None:
        self._outcome = outcome
        try:
            self._reactor.stop()
        except ReactorNotRunning:  # stopped already (SIGTERM), or the run ended before the reactor ran
            pass

    def exit_status(self) -> int:
        """The exit status once the reactor has returned; an unexpected failure is written to stderr."""
        interrupted = self.interrupted or self.bench.interrupted  # bench: SIGTERM's stop
        outcome = self._outcome
        if isinstance(outcome, Failure) and not interrupted:
            self._stderr.write(f"fephp bench: error: {outcome.getErrorMessage()}\n")
        return exit_status(outcome, interrupted)


def _write_pictures(args: argparse.Namespace, bench: BenchRun, report: Report, stderr: TextIO) -> bool:
    """Write --hdr-out and --plot, after the run; False (and a message) if one could not be written."""
    histogram = bench.recorder.intended
    ok = True
    if args.hdr_out:
        try:
            with open(args.hdr_out, "w", encoding="ascii") as f:
                f.write(percentile_distribution(histogram))
        except OSError as e:
            stderr.write(f"fephp bench: error: --hdr-out {args.hdr_out}: {e.strerror or e}\n")
            ok = False
    if args.plot:
        # matplotlib is imported by plot_run, after the run, never near the load loop.
        extension = os.path.splitext(args.plot)[1].lower()
        try:
            plot_run(report, percentile_rows(histogram), args.plot, PLOT_FORMATS[extension])
        except PlotUnavailable as e:
            stderr.write(f"fephp bench: error: --plot {args.plot}: {e}\n")
            ok = False
        except OSError as e:
            stderr.write(f"fephp bench: error: --plot {args.plot}: {e.strerror or e}\n")
            ok = False
    return ok
