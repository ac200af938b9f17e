"""``fephp bench --plot`` and ``--hdr-out`` against a real server: the files exist and agree with the JSON report."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from fephp.bench.hdr import parse_percentile_distribution, percentile_bounds
from tests.support.bench import bench, bench_server

SVG = "{http://www.w3.org/2000/svg}"


def test_hdr_out_reads_back_to_the_reports_percentiles(tmp_path: Path) -> None:
    """The percentile distribution of a real run parses back to the JSON report's count, percentiles and max."""
    hgrm = tmp_path / "run.hgrm"
    with bench_server("--mode", "ok") as port:
        status, _, stderr, report = bench(
            tmp_path, "--url", f"http://127.0.0.1:{port}/", "--rps", "300", "-d", "2", "-c", "5", "--quiet",
            "--hdr-out", str(hgrm),
        )
    assert status == 0, stderr
    rows, footer = parse_percentile_distribution(hgrm.read_text())
    intended = report["latency_ms"]["intended"]
    assert footer["total_count"] == intended["count"] == report["responses"] == 600
    # 50% and 90% are rows of the distribution; 99% and 99.9% fall between two.
    assert percentile_bounds(rows, 50) == (intended["p50_ms"], intended["p50_ms"])
    assert percentile_bounds(rows, 90) == (intended["p90_ms"], intended["p90_ms"])
    for percentile, key in ((99, "p99_ms"), (99.9, "p99_9_ms")):
        low, high = percentile_bounds(rows, percentile)
        assert low <= intended[key] <= high, key
    assert footer["max"] == pytest.approx(intended["max_ms"], abs=0.0005)
    assert footer["mean"] == pytest.approx(intended["mean_ms"], abs=0.0005)


def test_plot_of_a_run_with_errors(tmp_path: Path) -> None:
    """A run where every 40th answer breaks draws p50/p99/max for each second and a bar for each second with errors."""
    pytest.importorskip("matplotlib", reason="--plot needs the optional matplotlib (pip install 'fephp[plot]')")
    svg = tmp_path / "run.svg"
    png = tmp_path / "run.png"
    with bench_server("--mode", "flaky", "--fail-every", "40") as port:
        url = f"http://127.0.0.1:{port}/"
        status, _, stderr, report = bench(
            tmp_path, "--url", url, "--rps", "200", "-d", "3", "-c", "5", "--quiet", "--plot", str(svg),
        )
        assert status == 0, stderr
        status, _, stderr, _ = bench(tmp_path, "--url", url, "--rps", "50", "-d", "1", "--quiet", "--plot", str(png))
        assert status == 0, stderr
    assert report["errors"]["reset"] >= 10
    seconds = report["timeseries"]
    tree = ElementTree.parse(svg)
    groups = {g.get("id"): g for g in tree.iter(SVG + "g")}
    for name in ("p50", "p99", "max"):
        points = next(groups[name].iter(SVG + "path")).get("d", "").count("L") + 1
        assert points == sum(1 for s in seconds if s["requests"] > s["errors"]), name
    bars = list(groups["errors"].iter(SVG + "path"))
    assert len(bars) == sum(1 for s in seconds if s["errors"]) >= 2
    assert "spectrum" in groups
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_with_a_bad_name_is_a_usage_error(tmp_path: Path) -> None:
    """--plot run.gif exits 2 before sending anything, and says which extensions work."""
    status, _, stderr, report = bench(tmp_path, "--url", "http://127.0.0.1:1/", "--plot", str(tmp_path / "run.gif"))
    assert status == 2 and ".svg or .png" in stderr and report == {}
