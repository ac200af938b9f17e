"""``fephp bench`` end to end: the real command against small real servers on 127.0.0.1.

Each server runs in a subprocess (``tests/support/bench_server.py``) and
each bench run is the real ``python3 -m fephp.cli bench`` with ``--json``
(``tests/support/bench.py``).
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def test_progress_line_only_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal a progress line is redrawn each second; piped, there is none."""
    with bench_server("--mode", "ok") as port:
        url = f"http://127.0.0.1:{port}/"
        _, _, piped_stderr, _ = bench(tmp_path, "--url", url, "--rps", "50", "--duration", "2")
        master, slave = pty.openpty()
        process = subprocess.Popen(
            [sys.executable, "-m", "fephp.cli", "bench", "--url", url, "--rps", "50", "--duration", "2"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=slave,
        )
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        os.close(master)
        assert process.wait(timeout=RUN_TIMEOUT) == 0
    assert b"\r" in seen and b"req/s" in seen and b"p99 so far" in seen and b"errors 0" in seen
    assert "\r" not in piped_stderr and "req/s" not in piped_stderr


def test_interrupt_prints_the_partial_report() -> None:
    """Ctrl-C ends a long run early: exit status 130, and the report covers what was measured."""
    with bench_server("--mode", "ok") as port:
        master, slave = pty.openpty()
        process = subprocess.Popen(
            [sys.executable, "-m", "fephp.cli", "bench", "--url", f"http://127.0.0.1:{port}/", "--rps", "50",
             "--duration", "60"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=slave, text=True,
        )
        os.close(slave)
        try:
            # The first progress line (after one second of load) says the run is under way.
            ready, _, _ = select.select([master], [], [], RUN_TIMEOUT)
            assert ready and b"req/s" in os.read(master, 4096)
            process.send_signal(signal.SIGINT)
            stdout, _ = process.communicate(timeout=RUN_TIMEOUT)
        finally:
            os.close(master)
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 130
    assert "Achieved rate" in stdout and "from intended" in stdout
    requests = int(stdout.split("Requests")[1].split()[0])
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
