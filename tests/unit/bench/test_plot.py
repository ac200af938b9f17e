"""``--plot``: the picture's series, checked in the SVG, and a clear refusal when it cannot be drawn."""

from __future__ import annotations

import argparse
import importlib.util
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from fephp.bench.command import add_arguments, config_from_args
from fephp.bench.hdr import percentile_rows
from fephp.bench.plot import plot_run
from fephp.bench.report import IntervalStats, LatencySummary, Report, _histogram

SVG = "{http://www.w3.org/2000/svg}"
ERRORS_PER_SECOND = (0, 3, 0, 0, 7)


def report_with_errors() -> Report:
    summary = LatencySummary(490, 0.5, 1.0, 0.9, 2.0, 5.0, 8.0, 10.0)
    series = tuple(
        IntervalStats(float(second), 1.0, 100, errors, 100.0, 0.5 + second / 10, 2.0 + second, 5.0 + second)
        for second, errors in zip(range(1, 6), ERRORS_PER_SECOND)
    )
    return Report(
        urls=("http://127.0.0.1:8080/",), method="GET", concurrency=2, target_rps=None, duration_s=5.0, warmup_s=0.0,
        timeout_s=1.0, elapsed_s=5.0, responses=490, errors={"reset": 10}, status_codes={200: 490},
        bytes_received=4900, latency=summary, service=summary, lateness=None, queued=0, unsent=0, cpu_fraction=0.1,
        timeseries=series,
    )


def series_groups(path: Path) -> dict[str, ElementTree.Element]:
    tree = ElementTree.parse(path)
    return {g.get("id", ""): g for g in tree.iter(SVG + "g") if g.get("id") in ("p50", "p99", "max", "errors", "spectrum")}


def test_svg_holds_each_series_with_one_point_per_second(tmp_path: Path) -> None:
    """p50, p99 and max have a point per second, errors a bar per second that had any, and the spectrum a curve."""
    pytest.importorskip("matplotlib", reason="--plot needs the optional matplotlib (pip install 'fephp[plot]')")
    histogram = _histogram()
    for value in range(100, 5000, 7):
        histogram.record_value(value)
    out = tmp_path / "run.svg"
    plot_run(report_with_errors(), percentile_rows(histogram), str(out), "svg")
    groups = series_groups(out)
    assert set(groups) == {"p50", "p99", "max", "errors", "spectrum"}
    for name in ("p50", "p99", "max"):
        line = next(groups[name].iter(SVG + "path"))
        assert line.get("d", "").count("L") == len(ERRORS_PER_SECOND) - 1, name
    bars = [path for path in groups["errors"].iter(SVG + "path")]
    assert len(bars) == sum(1 for errors in ERRORS_PER_SECOND if errors)
    spectrum = next(groups["spectrum"].iter(SVG + "path")).get("d", "")
    assert spectrum.count("L") > 20
    texts = {text.text for text in ElementTree.parse(out).iter(SVG + "text")}
    assert {"Latency over time", "Percentile spectrum of the whole run", "99%", "errors in that second"} <= texts


def test_png_by_extension(tmp_path: Path) -> None:
    """A .png name gives a PNG file."""
    pytest.importorskip("matplotlib", reason="--plot needs the optional matplotlib (pip install 'fephp[plot]')")
    out = tmp_path / "run.png"
    plot_run(report_with_errors(), [], str(out), "png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--url", "http://127.0.0.1:8080/", *argv])


def test_plot_file_must_be_svg_or_png() -> None:
    """Another extension is refused before the run, naming the two that work."""
    with pytest.raises(ValueError, match=r"--plot run\.gif: the file must end in \.svg or \.png"):
        config_from_args(parse("--plot", "run.gif"))


def test_missing_matplotlib_is_refused_before_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without matplotlib, --plot is a usage error that says how to install it, before any load is sent."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    with pytest.raises(ValueError, match=r"pip install 'fephp\[plot\]'"):
        config_from_args(parse("--plot", "run.svg"))
    config_from_args(parse("--hdr-out", "run.hgrm"))  # the text needs no extra
