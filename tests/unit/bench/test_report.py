"""The bench report: warnings, CI thresholds, the text and progress lines, and flags to config."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pytest

from fephp.bench.command import add_arguments, config_from_args
from fephp.bench.report import (
    LatencySummary,
    Recorder,
    Report,
    format_progress,
    format_text,
    threshold_failures,
    warnings_for,
)


def summary(p50: float, p99: float, count: int = 1000) -> LatencySummary:
    return LatencySummary(count, p50 / 2, p50, p50, p99 / 2, p99, p99 * 1.5, p99 * 2)


NO_ERRORS = {"connect_refused": 0, "connect_error": 0, "timeout": 0, "reset": 0, "malformed": 0}
GOOD = Report(
    urls=("http://127.0.0.1:8080/",),
    method="GET",
    concurrency=10,
    target_rps=100.0,
    duration_s=10.0,
    warmup_s=0.0,
    timeout_s=10.0,
    elapsed_s=10.0,
    responses=1000,
    errors=dict(NO_ERRORS),
    status_codes={200: 990, 404: 10},
    bytes_received=123_456,
    latency=summary(2.0, 9.0),
    service=summary(1.9, 8.0),
    lateness=summary(0.1, 0.3),
    queued=0,
    unsent=0,
    cpu_fraction=0.2,
)


def test_a_clean_run_has_no_warnings() -> None:
    """Rate held, no queueing, small lateness, idle CPU: nothing to warn about."""
    assert warnings_for(GOOD) == []


def test_rate_not_held_says_by_how_much() -> None:
    """An achieved rate under 98% of the target is reported with the shortfall."""
    report = replace(GOOD, responses=900)
    (note,) = warnings_for(report)
    assert note.startswith("target rate not held: achieved 90.0 of 100 req/s (10.0% short)")


def test_queueing_and_unsent_are_reported() -> None:
    """Busy connections and requests never sent each get a warning with their counts."""
    report = replace(GOOD, queued=50, unsent=20, lateness=summary(0.1, 300.0))
    notes = warnings_for(report)
    assert any("all 10 connections were busy for 50 requests (5.0%)" in n and "600.0 ms" in n for n in notes)
    assert any("20 requests were due but never sent" in n for n in notes)
    assert any(n.startswith("target rate not held") for n in notes)


def test_lateness_warning_when_it_matters() -> None:
    """Send lateness comparable to the server's own latency is called out."""
    report = replace(GOOD, lateness=summary(0.5, 1.0), service=summary(0.2, 0.5))
    (note,) = warnings_for(report)
    assert "median 0.500 ms late" in note


def test_cpu_warning_above_80_percent() -> None:
    """A generator above ~80% of a core warns that its numbers are suspect."""
    assert warnings_for(replace(GOOD, cpu_fraction=0.79)) == []
    (note,) = warnings_for(replace(GOOD, cpu_fraction=0.95))
    assert "95% of a core" in note and "suspect" in note


def test_thresholds() -> None:
    """--fail-p99 and --fail-error-rate fail only when crossed; no responses fails the p99 check."""
    assert threshold_failures(GOOD, 9.0, 0.0) == []
    assert threshold_failures(GOOD, 8.99, None) == ["p99 9.00 ms is above --fail-p99 8.99 ms"]
    errors = replace(GOOD, responses=990, errors={**NO_ERRORS, "timeout": 10})
    assert errors.error_rate == pytest.approx(0.01)
    assert threshold_failures(errors, None, 0.01) == []
    assert threshold_failures(errors, None, 0.005) == ["error rate 0.0100 is above --fail-error-rate 0.005"]
    empty = replace(GOOD, responses=0, latency=LatencySummary(0, 0, 0, 0, 0, 0, 0, 0))
    assert threshold_failures(empty, 100.0, None) == ["p99 unknown (no responses), limit 100 ms"]
    assert empty.error_rate == 1.0


def test_text_report_lines() -> None:
    """The text report shows rates, counts per status, errors by kind, bytes and the three latency rows."""
    text = format_text(replace(GOOD, responses=995, errors={**NO_ERRORS, "reset": 5}))
    lines = text.splitlines()
    assert "Target rate     100 req/s" in lines
    assert "Achieved rate   100.00 req/s" in lines
    assert "Requests        1000 sent in 10.00 s: 995 responses, 5 errors" in lines
    assert "Status codes    200: 990, 404: 10" in lines
    assert any(line.split()[:2] == ["reset", "5"] for line in lines)
    assert "Received        120.6 KiB (123456 bytes)" in lines
    header = next(line for line in lines if line.startswith("Latency (ms)"))
    assert header.split()[2:] == ["min", "mean", "p50", "p90", "p99", "p99.9", "max"]
    intended = next(line for line in lines if "from intended" in line)
    assert intended.split()[2:] == ["1.000", "2.000", "2.000", "4.500", "9.000", "13.500", "18.000"]
    assert any("from sent" in line for line in lines) and any("send lateness" in line for line in lines)


def test_progress_line() -> None:
    """The progress line holds elapsed of total time, current rate, p99 so far and errors."""
    assert (
        format_progress(12.0, 60.0, 99.5, 3.25, 2, False)
        == "  12.0 s of 60 s       99.5 req/s  p99 so far      3.25 ms  errors 2"
    )
    assert (
        format_progress(0.5, 2.5, 10.0, None, 0, True)
        == "warmup    0.5 s of 2.5 s       10.0 req/s  p99 so far        -  errors 0"
    )


def test_recorder_counts_per_microsecond_into_hdr() -> None:
    """Latencies reach the HDR histograms exactly, warmup ones only the per-second slice."""
    recorder = Recorder(rate_mode=True)
    recorder.response(True, 200, 10, intended=1.0, sent=1.001, done=1.003)
    recorder.response(True, 500, 10, intended=2.0, sent=2.0, done=2.010)
    recorder.response(False, 200, 10, intended=0.5, sent=0.5, done=0.6)
    recorder.error(True, "reset")
    assert recorder.p99_so_far_ms() == pytest.approx(10.0, rel=0.001)
    assert recorder.intended.get_total_count() == 2
    assert recorder.service.get_max_value() == pytest.approx(10_000, rel=0.001)
    assert recorder.lateness.get_max_value() == pytest.approx(1000, rel=0.001)
    assert recorder.status_codes == {200: 1, 500: 1}
    assert recorder.bytes_received == 20
    stats = recorder.close_interval(1.0, 1.0, keep=True)
    assert (stats.requests, stats.errors) == (4, 1)
    assert stats.max_ms == pytest.approx(100, rel=0.01)
    assert recorder.timeseries == [stats]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_make_one_url_enough() -> None:
    """--url alone gives the seed's load: 100 req/s on 10 connections, for 10 s, GET, 10 s timeout."""
    config = config_from_args(parse("--url", "http://127.0.0.1:8080/"))
    assert (config.rps, config.concurrency, config.duration, config.method, config.timeout, config.warmup) == (
        100.0, 10, 10.0, "GET", 10.0, 0.0,
    )


def test_flags_to_config(tmp_path: Path) -> None:
    """URLs from flags and a file, headers, and a body file end up in the config."""
    urls = tmp_path / "urls"
    urls.write_text("# comment\nhttp://127.0.0.1:8080/b\n\n  http://127.0.0.1:8080/c  \n")
    body = tmp_path / "body"
    body.write_bytes(b"\x00\x01binary")
    config = config_from_args(parse(
        "--url", "http://127.0.0.1:8080/a", "--urls-file", str(urls), "-H", "X-Token: abc",
        "--header", "Accept:text/plain", "--body-file", str(body), "--method", "PUT",
        "--rps", "0", "-c", "3", "-d", "2.5", "--timeout", "1", "--warmup", "0.5",
    ))
    assert config.urls == ("http://127.0.0.1:8080/a", "http://127.0.0.1:8080/b", "http://127.0.0.1:8080/c")
    assert config.headers == (("X-Token", "abc"), ("Accept", "text/plain"))
    assert config.body == b"\x00\x01binary"
    assert (config.method, config.rps, config.concurrency, config.duration, config.timeout, config.warmup) == (
        "PUT", 0.0, 3, 2.5, 1.0, 0.5,
    )


def test_flag_errors() -> None:
    """No URL, or a URL on another origin, is a ValueError naming the problem."""
    with pytest.raises(ValueError, match="at least one --url"):
        config_from_args(parse())
    with pytest.raises(ValueError, match="one origin"):
        config_from_args(parse("--url", "http://127.0.0.1:1/", "--url", "http://127.0.0.1:2/"))
