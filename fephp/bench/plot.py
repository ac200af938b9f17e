"""``fephp bench --plot``: a run's latency over time and its percentile spectrum, drawn with matplotlib.

Imported only when ``--plot`` is given, after the run: matplotlib is an
optional extra (``pip install fephp[plot]``) and never near the load loop.
The picture has two panels:

- latency over time: p50, p99 and max of each second (from the intended
  send time, by completion), on a log scale, and red bars for the seconds
  that had errors, as many high as there were (right-hand axis);
- the percentile spectrum of the whole run, in HdrHistogram's layout: the
  x axis spreads the tail (90%, 99%, 99.9%, ...) evenly.

SVG or PNG by the file's extension.  In the SVG each series is a group
whose id names it (``p50``, ``p99``, ``max``, ``errors``, ``spectrum``),
and text stays text, so a reader (or a test) can find them.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from .hdr import PercentileRow
from .report import IntervalStats, Report

__all__ = ["PlotUnavailable", "plot_run"]

#: The spectrum's x axis stops at this many nines (99.9999%) unless the run has fewer samples.
MAX_NINES = 6


class PlotUnavailable(Exception):
    """matplotlib is not installed: the message says how to get it."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(
            "drawing needs matplotlib, an optional extra: pip install 'fephp[plot]' (or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")  # files only, no display
    matplotlib.rcParams["svg.fonttype"] = "none"  # text as <text>, not glyph paths
    matplotlib.rcParams["svg.hashsalt"] = "fephp-bench"  # the same run draws the same file
    import matplotlib.pyplot as pyplot

    return pyplot


def _nines(percentile: float) -> float:
    """HdrHistogram's spectrum axis: 1/(1 - p) on a log scale, so 90%, 99%, 99.9% are evenly spaced."""
    return 1 / max(1 - percentile, 10.0 ** -MAX_NINES)


def plot_run(report: Report, spectrum: Sequence[PercentileRow], path: str, file_format: str) -> None:
    """Draw *report*'s time series and *spectrum* (the run's percentile rows) into *path*.

    Raises PlotUnavailable without matplotlib, OSError when *path* cannot be written.
    """
    pyplot = _pyplot()
    figure, (over_time, percentiles) = pyplot.subplots(2, 1, figsize=(10, 8), constrained_layout=True)
    try:
        mode = "as fast as possible" if report.target_rps is None else f"{report.target_rps:g} req/s target"
        figure.suptitle(
            f"fephp bench {report.urls[0]}{' (+%d URLs)' % (len(report.urls) - 1) if len(report.urls) > 1 else ''}\n"
            f"{report.method}, {report.concurrency} connections, {mode}: {report.achieved_rps:.1f} req/s achieved, "
            f"{report.error_count} errors"
        )
        _draw_over_time(over_time, report.timeseries)
        _draw_spectrum(percentiles, spectrum)
        figure.savefig(path, format=file_format)
    finally:
        pyplot.close(figure)


def _draw_over_time(axes: Any, series: Sequence[IntervalStats]) -> None:
    seconds = [stats.end_s for stats in series]
    answered = [stats for stats in series if stats.requests > stats.errors]
    for name, color, pick in (
        ("p50", "tab:blue", lambda s: s.p50_ms),
        ("p99", "tab:orange", lambda s: s.p99_ms),
        ("max", "tab:gray", lambda s: s.max_ms),
    ):
        (line,) = axes.plot([_middle(s) for s in answered], [pick(s) for s in answered], marker=".", color=color,
                            label=name)
        line.set_gid(name)
    # Errors as red bars on their own axis (right), one per second that had any.
    errors_axis = axes.twinx()
    failed = [stats for stats in series if stats.errors]
    bars = errors_axis.vlines(
        [_middle(s) for s in failed], 0, [s.errors for s in failed],
        colors="tab:red", linewidth=6, alpha=0.45, label="errors in that second",
    )
    bars.set_gid("errors")
    errors_axis.set_ylim(0, max((s.errors for s in failed), default=1) * 1.3)
    errors_axis.set_ylabel("errors in that second", color="tab:red")
    errors_axis.tick_params(axis="y", colors="tab:red")
    if answered:
        axes.set_yscale("log")
        axes.yaxis.set_major_formatter(_plain_numbers())
    axes.set_xlim(0, max(seconds, default=1.0))
    axes.set_xlabel("seconds into the measurement (each point: one second, by completion)")
    axes.set_ylabel("latency from intended send (ms)")
    axes.set_title("Latency over time")
    axes.grid(True, which="both", alpha=0.3)
    lines, labels = axes.get_legend_handles_labels()
    errors_lines, errors_labels = errors_axis.get_legend_handles_labels()
    errors_axis.legend(lines + errors_lines, labels + errors_labels, loc="best")


def _middle(stats: IntervalStats) -> float:
    return stats.end_s - stats.seconds / 2


def _draw_spectrum(axes: Any, spectrum: Sequence[PercentileRow]) -> None:
    rows = [row for row in spectrum if row.percentile < 1.0]
    (line,) = axes.plot([_nines(row.percentile) for row in rows], [row.value_ms for row in rows],
                        color="tab:blue", label="from intended send")
    line.set_gid("spectrum")
    axes.set_xscale("log")
    top = max((row.total_count for row in spectrum), default=1)
    nines = max(1, min(MAX_NINES, math.ceil(math.log10(max(top, 10)))))
    ticks = [10.0 ** k for k in range(nines + 1)]
    axes.set_xticks(ticks)
    axes.set_xticklabels([_percent_label(1 - 1 / tick) for tick in ticks])
    axes.set_xlim(1, ticks[-1])
    axes.xaxis.set_minor_locator(_null_locator())
    axes.set_xlabel("percentile")
    axes.set_ylabel("latency (ms)")
    axes.set_title("Percentile spectrum of the whole run")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper left")


def _plain_numbers() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value:g}")


def _null_locator() -> Any:
    from matplotlib.ticker import NullLocator

    return NullLocator()


def _percent_label(fraction: float) -> str:
    text = f"{fraction * 100:.6f}".rstrip("0").rstrip(".")
    return f"{text}%"
