"""The percentile distribution text (HdrHistogram's .hgrm): written as HdrHistogram writes it, and read back."""

from __future__ import annotations

import pytest

from fephp.bench.hdr import (
    PercentileRow,
    parse_percentile_distribution,
    percentile_bounds,
    percentile_distribution,
    percentile_rows,
)
from fephp.bench.report import LatencySummary, _histogram


def sample_histogram() -> object:
    histogram = _histogram()
    for value_us, count in ((100, 500), (250, 300), (1_000, 150), (12_345, 49), (250_000, 1)):
        histogram.record_value(value_us, count)
    return histogram


def test_layout_is_hdrhistograms() -> None:
    """Header, rows of four columns, a last row of three at 100%, and the three footer lines, in ms."""
    lines = percentile_distribution(sample_histogram()).splitlines()
    assert lines[0] == "       Value     Percentile TotalCount 1/(1-Percentile)"
    assert lines[1] == ""
    assert lines[2] == "       0.100 0.000000000000        500           1.00"
    assert lines[-4] == "     250.111 1.000000000000       1000"
    assert lines[-3].startswith("#[Mean    = ") and ", StdDeviation   = " in lines[-3]
    assert lines[-2] == "#[Max     =      250.111, Total count    =         1000]"
    assert lines[-1] == "#[Buckets =           22, SubBuckets     =         2048]"
    assert all(len(line.split()) == 4 for line in lines[2:-4])


def test_read_back_gives_the_reports_percentiles() -> None:
    """Parsed back, the first row at or past each percentile holds the value the report gives for it."""
    histogram = sample_histogram()
    rows, footer = parse_percentile_distribution(percentile_distribution(histogram))
    assert rows == [PercentileRow(round(r.value_ms, 3), round(r.percentile, 12), r.total_count)
                    for r in percentile_rows(histogram)]
    summary = LatencySummary.from_histogram(histogram)
    assert percentile_bounds(rows, 50) == (summary.p50_ms, summary.p50_ms)
    assert percentile_bounds(rows, 90) == (summary.p90_ms, summary.p90_ms)
    for percentile, expected in ((99, summary.p99_ms), (99.9, summary.p99_9_ms)):
        low, high = percentile_bounds(rows, percentile)
        assert low <= round(expected, 3) <= high
    assert footer["max"] == pytest.approx(summary.max_ms, abs=0.0005)
    assert footer["mean"] == pytest.approx(summary.mean_ms, abs=0.0005)
    assert footer["total_count"] == summary.count == 1000


def test_an_empty_histogram_still_has_its_frame() -> None:
    """No samples: the header and the footer, with zero counts, and no rows."""
    rows, footer = parse_percentile_distribution(percentile_distribution(_histogram()))
    assert rows == [] and footer["total_count"] == 0 and footer["max"] == 0


@pytest.mark.parametrize(
    "text", ["", "Value Percentile\n", "       Value     Percentile TotalCount 1/(1-Percentile)\n\n1 2\n",
             "       Value     Percentile TotalCount 1/(1-Percentile)\n#[Colour = 3]\n"],
    ids=["empty", "bad-header", "short-row", "unknown-footer"],
)
def test_what_is_not_the_format_is_refused(text: str) -> None:
    """Text that is not a percentile distribution raises ValueError."""
    with pytest.raises(ValueError):
        parse_percentile_distribution(text)
