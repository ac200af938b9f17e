"""``fephp bench`` end to end: the real command against small real servers on 127.0.0.1.

Each server runs in a subprocess (``tests/support/bench_server.py``) and
each bench run is the real ``python3 -m fephp.cli bench`` with ``--json``
(``tests/support/bench.py``).
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fephp.cli import main
from tests.support import REPO
from tests.support.bench import RUN_TIMEOUT, bench, bench_server, closed_port

ROOT = REPO


def test_rate_is_held_within_two_percent(tmp_path: Path) -> None:
    """At --rps 200 for 3 s the achieved rate is within 2% of 200 and every request is answered."""
    with bench_server("--mode", "ok") as port:
        status, stdout, _, report = bench(
            tmp_path, "--url", f"http://127.0.0.1:{port}/", "--rps", "200", "--duration", "3", "--concurrency", "10"
        )
    assert status == 0
    assert report["achieved_rps"] == pytest.approx(200, rel=0.02)
    assert report["responses"] == 600
    assert report["status_codes"] == {"200": 600}
    assert report["error_count"] == 0
    assert report["bytes_received"] == 600 * len(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100)
    for figure in ("Achieved rate   ", "p50", "p99", "from intended", "from sent", "send lateness"):
        assert figure in stdout


def test_stalled_server_pushes_p99_toward_a_second(tmp_path: Path) -> None:
    """A 1 s stall in a 100 req/s run lifts the intended-time p99 near 1 s, which the from-sent view misses."""
    with bench_server("--mode", "stall", "--stall-at", "1.0", "--stall-for", "1.0") as port:
        status, stdout, _, report = bench(
            tmp_path, "--url", f"http://127.0.0.1:{port}/", "--rps", "100", "--duration", "3", "--concurrency", "10"
        )
    assert status == 0
    assert report["error_count"] == 0
    intended = report["latency_ms"]["intended"]
    sent = report["latency_ms"]["sent"]
    # About 100 of 300 requests fell due during the stall, waiting 1000 .. 0 ms.
    assert intended["p99_ms"] > 800
    assert intended["p90_ms"] > 300
    # Only the 10 requests in flight when it stalled look slow from their actual send.
    assert sent["p90_ms"] < 100
    assert report["schedule"]["queued"] > 50
    assert "connections were busy" in stdout
    # The time series shows the stall in the second it ended.
    assert max(second["max_ms"] for second in report["timeseries"]) > 800


def test_refused_connections(tmp_path: Path) -> None:
    """Nothing listening: every request is a connect_refused error, and the error-rate threshold fails the run."""
    port = closed_port()
    status, stdout, stderr, report = bench(
        tmp_path, "--url", f"http://127.0.0.1:{port}/", "--rps", "50", "--duration", "1", "--fail-error-rate", "0.5"
    )
    assert status == 1
    assert report["errors"] == {"connect_refused": 50, "connect_error": 0, "timeout": 0, "reset": 0, "malformed": 0}
    assert report["responses"] == 0
    assert "connect_refused" in stdout
    assert "FAIL: error rate 1.0000 is above --fail-error-rate 0.5" in stderr


def test_timeouts(tmp_path: Path) -> None:
    """A server that never answers gives timeout errors after --timeout, and nothing else."""
    with bench_server("--mode", "hang") as port:
        status, _, _, report = bench(
            tmp_path, "--url", f"http://127.0.0.1:{port}/", "--rps", "20", "--duration", "1",
            "--concurrency", "5", "--timeout", "0.3",
        )
    assert status == 0
    errors = report["errors"]
    assert errors["timeout"] >= 10
    assert errors["timeout"] == report["error_count"]
    assert report["responses"] == 0


@pytest.mark.parametrize(("mode", "kind"), [("close-mid", "reset"), ("malformed", "malformed")])
def test_broken_responses_by_kind(tmp_path: Path, mode: str, kind: str) -> None:
    """A close in the middle of a response counts as reset, bytes that are not HTTP as malformed."""
    with bench_server("--mode", mode) as port:
        status, _, _, report = bench(
            tmp_path, "--url", f"http://127.0.0.1:{port}/", "--rps", "20", "--duration", "1"
        )
    assert status == 0
    assert report["errors"][kind] == 20
    assert report["error_count"] == 20
    assert report["responses"] == 0


def test_max_mode_closed_loop_with_chunked_bodies(tmp_path: Path) -> None:
    """--rps 0 drives the server as fast as it answers, over kept-alive connections, parsing chunked bodies."""
    with bench_server("--mode", "chunked", "--body-size", "1000") as port:
        status, stdout, _, report = bench(
            tmp_path, "--url", f"http://127.0.0.1:{port}/", "--rps", "0", "--duration", "1", "--concurrency", "4"
        )
    assert status == 0
    assert report["mode"] == "max" and report["target_rps"] is None
    assert report["error_count"] == 0
    assert report["responses"] > 200
    assert report["latency_ms"]["send_lateness"] is None
    assert report["latency_ms"]["intended"]["count"] == report["latency_ms"]["sent"]["count"] == report["responses"]
    assert "as fast as possible" in stdout


def test_json_shape(tmp_path: Path) -> None:
    """The JSON report holds the text report's numbers and a per-second time series, under stable keys."""
    with bench_server("--mode", "ok") as port:
        status, _, _, report = bench(
            tmp_path, "--url", f"http://127.0.0.1:{port}/a", "--url", f"http://127.0.0.1:{port}/b",
            "--rps", "50", "--duration", "2", "--quiet",
        )
    assert status == 0
    assert set(report) == {
        "urls", "method", "concurrency", "mode", "target_rps", "achieved_rps", "duration_s", "warmup_s",
        "timeout_s", "elapsed_s", "requests", "responses", "errors", "error_count", "error_rate",
        "status_codes", "bytes_received", "latency_ms", "schedule", "cpu_fraction", "warnings", "timeseries",
    }
    assert report["urls"] == [f"http://127.0.0.1:{port}/a", f"http://127.0.0.1:{port}/b"]
    assert (report["mode"], report["target_rps"], report["method"], report["concurrency"]) == ("rate", 50.0, "GET", 10)
    assert set(report["latency_ms"]) == {"intended", "sent", "send_lateness"}
    for summary in report["latency_ms"].values():
        assert set(summary) == {"count", "min_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms"}
        assert summary["min_ms"] <= summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert set(report["schedule"]) == {"queued", "unsent"}
    assert [round(s["end_s"]) for s in report["timeseries"]] == [1, 2]
    for second in report["timeseries"]:
        assert set(second) == {"end_s", "seconds", "requests", "errors", "rps", "p50_ms", "p99_ms", "max_ms"}
    assert sum(s["requests"] for s in report["timeseries"]) == report["requests"] == 100


def test_fail_p99_threshold(tmp_path: Path) -> None:
    """--fail-p99 makes the exit status 1 when p99 is above it, and leaves it 0 when below."""
    with bench_server("--mode", "ok") as port:
        url = f"http://127.0.0.1:{port}/"
        failed = bench(tmp_path, "--url", url, "--rps", "50", "--duration", "1", "--quiet", "--fail-p99", "0.001")
        passed = bench(tmp_path, "--url", url, "--rps", "50", "--duration", "1", "--quiet", "--fail-p99", "5000")
    assert failed[0] == 1 and "FAIL: p99" in failed[2]
    assert failed[1] == "", "--quiet prints no report"
    assert passed[0] == 0 and "FAIL" not in passed[2]


def _on_terminal(
    *args: str, interrupt_on: bytes | None = None, sigint: Any = signal.SIG_DFL
) -> tuple[int, bytes, bytes]:
    """Run ``fephp bench`` with stdout on a pseudo-terminal: its exit status, what the terminal got, its stderr.

    With *interrupt_on*, one SIGINT as soon as those bytes are on the
    terminal.  *sigint* is the SIGINT disposition the command inherits
    (SIG_IGN: a background job of a shell script).
    """
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "fephp.cli", "bench", *args],
        cwd=ROOT, stdout=slave, stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"fephp bench still running after {RUN_TIMEOUT} s; its terminal got {seen!r}"
            ready, _, _ = select.select([master], [], [], remaining)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the command has closed the terminal, it is ending
                break
            if not chunk:
                break
            seen += chunk
            if interrupt_on is not None and interrupt_on in seen:
                process.send_signal(signal.SIGINT)
                interrupt_on = None
        _, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, seen, stderr


#: One progress line as a terminal gets it: rewritten in place, then erased to the end of the line.
PROGRESS = re.compile(rb"\r +\d+\.\d s of 3 s +\d+\.\d req/s  p99 so far +\d+\.\d\d ms  errors 0\x1b\[K")


def test_progress_line_on_a_terminal() -> None:
    """With stdout on a terminal, a progress line each second, erased before the report."""
    with bench_server("--mode", "ok") as port:
        url = f"http://127.0.0.1:{port}/"
        status, seen, stderr = _on_terminal("--url", url, "--rps", "50", "--duration", "3")
    assert (status, stderr) == (0, b"")
    lines = PROGRESS.findall(seen)
    assert 1 <= len(lines) <= 3, seen
    # The terminal turns each newline of the report into CR LF.
    assert seen.startswith(b"".join(lines) + b"\r\x1b[Kfephp bench " + url.encode() + b"\r\n")
    assert re.search(rb"\r\nRequests        150 sent in \d\.\d\d s: 150 responses, 0 errors\r\n", seen), seen


def test_no_progress_line_quiet_or_piped(tmp_path: Path) -> None:
    """With -q a terminal gets nothing; piped, stdout is the report alone and stderr is empty."""
    with bench_server("--mode", "ok") as port:
        url = f"http://127.0.0.1:{port}/"
        quiet = _on_terminal("--url", url, "--rps", "50", "--duration", "2", "-q")
        status, stdout, stderr, report = bench(tmp_path, "--url", url, "--rps", "50", "--duration", "2")
    # With -q stderr may still hold the report's warnings, never a progress line.
    assert quiet[:2] == (0, b"") and b"p99 so far" not in quiet[2] and b"\r" not in quiet[2]
    assert (status, stderr, report["responses"]) == (0, "", 100)
    assert stdout.startswith(f"fephp bench {url}\n")
    assert ("\r" in stdout, "\x1b" in stdout, "p99 so far" in stdout) == (False, False, False)


@pytest.mark.parametrize("sigint", [signal.SIG_DFL, signal.SIG_IGN], ids=["sigint-default", "sigint-ignored"])
def test_interrupt_prints_the_partial_report(sigint: Any) -> None:
    """Ctrl-C ends a long run early, even one started with SIGINT ignored: exit status 130, the partial report."""
    with bench_server("--mode", "ok") as port:
        url = f"http://127.0.0.1:{port}/"
        # The first progress line (after one second of load) says the run is under way.
        status, seen, stderr = _on_terminal(
            "--url", url, "--rps", "50", "--duration", "60", interrupt_on=b"req/s", sigint=sigint
        )
    assert (status, stderr) == (130, b"")
    assert b"\r\x1b[Kfephp bench " + url.encode() + b"\r\n" in seen
    text = seen.decode()
    assert "Achieved rate" in text and "from intended" in text
    requests = int(text.split("Requests")[1].split()[0])
    assert 40 <= requests < 60 * 50 / 2


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    """Bad arguments give exit status 2 and a message, before any load is sent."""
    assert main(["bench"]) == 2  # no URL
    assert main(["bench", "--url", "http://127.0.0.1:1/", "--rps", "-1"]) == 2
    assert main(["bench", "--url", "http://127.0.0.1:1/", "--concurrency", "0"]) == 2
    assert main(["bench", "--url", "http://127.0.0.1:1/", "--fail-error-rate", "2"]) == 2
    assert main(["no-such-command"]) == 2
    status, _, stderr, _ = bench(tmp_path, "--url", "https://127.0.0.1:1/")
    assert status == 2 and "only http:// URLs" in stderr
    status, _, stderr, _ = bench(tmp_path, "--url", "http://127.0.0.1:1/", "--body-file", str(tmp_path / "missing"))
    assert status == 2 and "missing" in stderr


def test_help_explains_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """--help exits 0 and documents each flag of the issue."""
    assert main(["bench", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in (
        "--url", "--urls-file", "--duration", "--rps", "--concurrency", "--method", "--header", "--body",
        "--body-file", "--timeout", "--warmup", "--json", "--quiet", "--fail-p99", "--fail-error-rate",
    ):
        assert flag in text
