"""HdrHistogram's percentile distribution text (``.hgrm``): written from a run's histogram, and read back.

The format is the one HdrHistogram's ``outputPercentileDistribution`` and
wrk2 print, and that HdrHistogram's plotter reads: a header, one row per
step of the percentile iterator (value, percentile as a fraction, count up
to it, and 1/(1-percentile)), the last row without that last column, and
three ``#[...]`` footer lines with the mean, standard deviation, maximum,
total count and the histogram's bucket layout.  Values are in milliseconds
(the histograms count microseconds), with as many decimals as the
histogram has significant digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PercentileRow",
    "parse_percentile_distribution",
    "percentile_distribution",
    "percentile_bounds",
    "percentile_rows",
]

#: Steps of the percentile iterator per halving of the distance to 100%, as HdrHistogram's default.
TICKS_PER_HALF_DISTANCE = 5
#: Microseconds per millisecond: the unit scaling of the text.
US_PER_MS = 1000.0


@dataclass(frozen=True)
class PercentileRow:
    """One row of the distribution: *value_ms* is reached by *percentile* (0 to 1) of *total_count* samples."""

    value_ms: float
    percentile: float
    total_count: int


def percentile_rows(histogram: Any) -> list[PercentileRow]:
    """The rows of *histogram*'s distribution (an ``hdrh`` histogram of microseconds); empty if it is.

    The steps are HdrHistogram's (Java, C, wrk2): from 0% by 100/(2 x
    TICKS_PER_HALF_DISTANCE) until 50%, then twice as fine in each half of the
    distance left (50, 55, ... 75, 77.5, ... 87.5, 88.75, ...), each row at
    the first recorded value whose count reaches its level, and a last row at
    100%.  (The ``hdrh`` package's own percentile iterator takes other steps,
    and its ``output_percentile_distribution`` another footer; neither is
    used here.)
    """
    total = histogram.get_total_count()
    if not total:
        return []
    rows = []
    level = 0.0
    value_ms = 0.0
    for step in histogram.get_recorded_iterator():
        value_ms = step.value_iterated_to / US_PER_MS
        count = step.total_count_to_this_value
        last = count >= total
        while level <= 100.0 * count / total:
            rows.append(PercentileRow(value_ms, level / 100, count))
            level += _step_after(level)
            if last:
                break  # HdrHistogram's iterator stops at the last value, then steps to 100%
        if last:
            break
    rows.append(PercentileRow(value_ms, 1.0, total))
    return rows


def _step_after(level: float) -> float:
    """The next percentile step after *level* (0 to 100), as HdrHistogram's PercentileIterator computes it."""
    halvings = int(math.log(100.0 / (100.0 - level)) / math.log(2))
    return 100.0 / (TICKS_PER_HALF_DISTANCE * 2 ** (halvings + 1))


def percentile_distribution(histogram: Any) -> str:
    """The ``.hgrm`` text of *histogram*, as HdrHistogram's outputPercentileDistribution writes it, in ms."""
    digits = histogram.significant_figures
    lines = [f"{'Value':>12} {'Percentile':>14} {'TotalCount':>10} {'1/(1-Percentile)':>14}", ""]
    for row in percentile_rows(histogram):
        line = f"{row.value_ms:12.{digits}f} {row.percentile:2.12f} {row.total_count:10d}"
        if row.percentile < 1.0:
            line += f" {1 / (1 - row.percentile):14.2f}"
        lines.append(line)
    mean = histogram.get_mean_value() / US_PER_MS if histogram.get_total_count() else 0.0
    stddev = histogram.get_stddev() / US_PER_MS if histogram.get_total_count() else 0.0
    top = histogram.get_max_value() / US_PER_MS if histogram.get_total_count() else 0.0
    lines.append(f"#[Mean    = {mean:12.{digits}f}, StdDeviation   = {stddev:12.{digits}f}]")
    lines.append(f"#[Max     = {top:12.{digits}f}, Total count    = {histogram.get_total_count():12d}]")
    lines.append(f"#[Buckets = {histogram.bucket_count:12d}, SubBuckets     = {histogram.sub_bucket_count:12d}]")
    return "\n".join(lines) + "\n"


def parse_percentile_distribution(text: str) -> tuple[list[PercentileRow], dict[str, float]]:
    """The rows and the footer figures (mean, stddev, max, total_count, buckets, sub_buckets) of a ``.hgrm`` text.

    Raises ValueError for text that is not in the format.
    """
    rows: list[PercentileRow] = []
    footer: dict[str, float] = {}
    names = {"Mean": "mean", "StdDeviation": "stddev", "Max": "max", "Total count": "total_count",
             "Buckets": "buckets", "SubBuckets": "sub_buckets"}
    lines = text.splitlines()
    if not lines or lines[0].split() != ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]:
        raise ValueError("not a percentile distribution: the header line is missing")
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        if line.startswith("#["):
            for part in line.strip("#[]").split(","):
                name, _, value = part.partition("=")
                if name.strip() not in names:
                    raise ValueError(f"line {number}: unknown footer field {name.strip()!r}")
                footer[names[name.strip()]] = float(value)
            continue
        fields = line.split()
        if len(fields) not in (3, 4):
            raise ValueError(f"line {number}: expected 3 or 4 columns, not {len(fields)}")
        rows.append(PercentileRow(float(fields[0]), float(fields[1]), int(fields[2])))
    return rows, footer


def percentile_bounds(rows: list[PercentileRow], percentile: float) -> tuple[float, float]:
    """Between which two values (ms) the one that *percentile* (0 to 100) of the samples reach lies, read from rows.

    Exact (both the same) where a row sits at that level, as 50%, 75% and
    90% do; otherwise the rows on either side of it.
    """
    if not rows:
        raise ValueError("no rows: the histogram was empty")
    for row in rows:
        if abs(row.percentile * 100 - percentile) < 1e-9:
            return row.value_ms, row.value_ms
    needed = math.ceil(percentile / 100 * rows[-1].total_count)
    low = rows[0].value_ms
    for row in rows:
        if row.total_count >= needed:
            return low, row.value_ms
        low = row.value_ms
    return low, rows[-1].value_ms
