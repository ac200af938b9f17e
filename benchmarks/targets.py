"""Issue 18's targets table from a results.json that benchmarks/compare.py (benchmarks/run) wrote: met or missed.

    python3 benchmarks/targets.py RESULTS/results.json [--baseline OLD/results.json] [--tolerance 0.05]

It prints a markdown table to paste into docs/performance.md: each target of
issue 18 (item 6), on CPython and on PyPy, what the run measured, and "met",
"missed" or "not measured" (a front or a scenario the run did not have).
The ratios are the run's own medians (of 3 rounds at the defaults).

"No worse than now" (1 MiB, sleep50, the seed's 100 req/s scenario) compares
with a baseline: another results.json given with --baseline, or else the
figures of the last full run before issue 18's engine (8a471a3, 2026-12-02,
docs/performance.md's changelog of figures), within --tolerance (a run's
rounds spread by a few percent).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["BEFORE", "Verdict", "main", "markdown", "targets"]

#: The "now" of "no worse than now" when no --baseline is given: the third round's full
#: run (8a471a3), vs nginx for 1 MiB and sleep50, achieved req/s for the 100 req/s scenario.
BEFORE: dict[tuple[str, str], float] = {
    ("1 MiB c=10", "fephp"): 1.16,
    ("1 MiB c=10", "fephp-pypy"): 1.41,
    ("sleep50 c=64", "fephp"): 1.01,
    ("sleep50 c=64", "fephp-pypy"): 1.01,
    ("fe-php 100 rps c=10", "fephp"): 100.0,
    ("fe-php 100 rps c=10", "fephp-pypy"): 100.0,
}

#: The interpreters' fronts: plain HTTP, over TLS, the floor.
FRONTS = {
    "CPython": ("fephp", "fephp-tls", "floor"),
    "PyPy": ("fephp-pypy", "fephp-pypy-tls", "floor-pypy"),
}
CADDY = {"caddy", "caddy-tls"}
#: A ratio to Caddy within this of 1 is "level": rounds of the same front spread by about as much.
LEVEL = 0.02


@dataclass(frozen=True)
class Verdict:
    """One cell pair of the table: what was measured and whether it meets the target (None: not measured)."""

    measured: str
    met: bool | None

    @property
    def word(self) -> str:
        return "not measured" if self.met is None else ("met" if self.met else "**missed**")


NOT_MEASURED = Verdict("-", None)


@dataclass(frozen=True)
class Target:
    """A row of the table: its name, the target on each interpreter and how to judge it."""

    name: str
    cpython: str
    pypy: str
    judge: Callable[[str, dict[tuple[str, str], dict[str, Any]]], Verdict]


def _ratio_at_least(scenarios: tuple[str, ...], bound: dict[str, float], p99_times: float | None = None,
                    ) -> Callable[[str, dict[tuple[str, str], dict[str, Any]]], Verdict]:
    """vs nginx of the interpreter's front in each scenario at least bound[interpreter] (and, on CPython, p99 bound)."""

    def judge(interpreter: str, rows: dict[tuple[str, str], dict[str, Any]]) -> Verdict:
        parts = []
        met = True
        for scenario in scenarios:
            tls = scenario.startswith(("h2 ", "https/"))
            front = FRONTS[interpreter][1 if tls else 0]
            row = rows.get((scenario, front))
            if row is None:
                return NOT_MEASURED
            ratio = row["vs_nginx"]
            met = met and ratio >= bound[interpreter]
            text = f"{ratio:.2f}x"
            if p99_times is not None and interpreter == "CPython":
                nginx = rows.get((scenario, "nginx-tls" if tls else "nginx"))
                if nginx is None:
                    return NOT_MEASURED
                met = met and row["p99_ms"] <= p99_times * nginx["p99_ms"]
                text += f" (p99 {row['p99_ms']:.1f} against {nginx['p99_ms']:.1f} ms)"
            parts.append(text)
        return Verdict(", ".join(parts), met)

    return judge


def _floor_ratio(interpreter: str, rows: dict[tuple[str, str], dict[str, Any]]) -> Verdict:
    """The front's CPU per hello.php request over the floor's, at c=10 and c=64, each at most 1.5."""
    front, _, floor = FRONTS[interpreter]
    parts = []
    met = True
    for scenario in ("hello c=10", "hello c=64"):
        mine, theirs = rows.get((scenario, front)), rows.get((scenario, floor))
        if mine is None or theirs is None or not theirs["front_us_per_req"] > 0:
            return NOT_MEASURED
        ratio = mine["front_us_per_req"] / theirs["front_us_per_req"]
        met = met and ratio <= 1.5
        parts.append(f"{ratio:.2f}x ({mine['front_us_per_req']:.0f} / {theirs['front_us_per_req']:.0f} µs)")
    return Verdict(", ".join(parts), met)


def _ahead_of_caddy(interpreter: str, rows: dict[tuple[str, str], dict[str, Any]]) -> Verdict:
    """vs Caddy in every scenario where the interpreter's front and Caddy both ran: none below LEVEL.

    The fixed-rate scenario is left out (every front answers its 100 req/s), and a ratio
    within LEVEL of 1 (a pool-bound row such as sleep50) is named "level", not "ahead".
    """
    plain, tls, _ = FRONTS[interpreter]
    scenarios = sorted({s for (s, f) in rows if f in CADDY and not s.startswith("fe-php")})
    compared = [(s, rows[(s, f)]["vs_caddy"]) for s in scenarios for f in (plain, tls) if (s, f) in rows]
    if not compared:
        return NOT_MEASURED
    behind = [f"{s} {r:.2f}x" for s, r in compared if r < 1 - LEVEL]
    level = [f"{s} {r:.2f}x" for s, r in compared if 1 - LEVEL <= r <= 1 + LEVEL]
    text = f"ahead in {len(compared) - len(behind) - len(level)} of {len(compared)}"
    if level:
        text += "; level: " + ", ".join(level)
    if behind:
        text += "; behind: " + ", ".join(behind)
    return Verdict(text, not behind)


def _no_worse(baseline: dict[tuple[str, str], float], tolerance: float,
              ) -> Callable[[str, dict[tuple[str, str], dict[str, Any]]], Verdict]:
    """1 MiB and sleep50 vs nginx, and the 100 req/s scenario's req/s (no errors), at least the baseline's less tolerance."""

    def judge(interpreter: str, rows: dict[tuple[str, str], dict[str, Any]]) -> Verdict:
        front = FRONTS[interpreter][0]
        parts = []
        met = True
        for scenario, key in (("1 MiB c=10", "vs_nginx"), ("sleep50 c=64", "vs_nginx"), ("fe-php 100 rps c=10", "rps")):
            row, before = rows.get((scenario, front)), baseline.get((scenario, front))
            if row is None or before is None:
                return NOT_MEASURED
            met = met and row[key] >= before * (1 - tolerance) and (key != "rps" or row["errors"] == 0)
            if key == "rps":
                parts.append(f"{row['rps']:.1f} req/s, p99 {row['p99_ms']:.1f} ms (before {before:.1f} req/s)")
            else:
                parts.append(f"{row[key]:.2f}x (before {before:.2f}x)")
        return Verdict(", ".join(parts), met)

    return judge


def targets(baseline: dict[tuple[str, str], float], tolerance: float) -> list[Target]:
    """Issue 18's item 6, row by row."""
    return [
        Target("hello.php c=10, c=64 vs nginx", ">= 0.55x", ">= 1.0x",
               _ratio_at_least(("hello c=10", "hello c=64"), {"CPython": 0.55, "PyPy": 1.0})),
        Target("static 1 KiB c=64 vs nginx", ">= 0.45x", ">= 1.0x",
               _ratio_at_least(("static 1 KiB c=64",), {"CPython": 0.45, "PyPy": 1.0})),
        Target("https/1.1 hello c=10 vs nginx-tls", ">= 0.45x", ">= 0.8x",
               _ratio_at_least(("https/1.1 hello c=10",), {"CPython": 0.45, "PyPy": 0.8})),
        Target("h2 hello c=10 m=10, h2 static vs nginx-tls", ">= 0.35x, p99 <= 10x nginx's", ">= 0.6x",
               _ratio_at_least(("h2 hello c=10 m=10", "h2 static 1 KiB c=10 m=10"), {"CPython": 0.35, "PyPy": 0.6},
                               p99_times=10.0)),
        Target("front CPU per hello request (c=10, c=64) vs the floor's", "<= 1.5x", "<= 1.5x", _floor_ratio),
        Target("every row vs Caddy (caddy-tls over TLS)", "ahead", "ahead", _ahead_of_caddy),
        Target("1 MiB, sleep50 vs nginx; the seed's 100 req/s", "no worse than now", "no worse than now",
               _no_worse(baseline, tolerance)),
    ]


def markdown(table: list[dict[str, Any]], baseline: dict[tuple[str, str], float], tolerance: float) -> str:
    """The targets table of a run's rows (results.json's "table")."""
    rows = {(r["scenario"], r["front"]): r for r in table}
    lines = [
        "| target | CPython target | CPython measured | | PyPy target | PyPy measured | |",
        "|---|---|---|---|---|---|---|",
    ]
    for target in targets(baseline, tolerance):
        cpython = target.judge("CPython", rows)
        pypy = target.judge("PyPy", rows)
        lines.append(f"| {target.name} | {target.cpython} | {cpython.measured} | {cpython.word} "
                     f"| {target.pypy} | {pypy.measured} | {pypy.word} |")
    return "\n".join(lines)


def baseline_of(table: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """The "no worse than now" figures of another run's rows."""
    found = {}
    for row in table:
        key = (row["scenario"], row["front"])
        if key in BEFORE:
            found[key] = row["rps"] if row["scenario"].startswith("fe-php") else row["vs_nginx"]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/targets.py", description=__doc__.splitlines()[0])
    parser.add_argument("results", help="results.json written by benchmarks/run")
    parser.add_argument("--baseline", help="an earlier results.json: the 'now' of 'no worse than now' "
                        "(default: the figures of the run at 8a471a3)")
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="how much below the baseline still counts as no worse (default 0.05: 5 %%)")
    args = parser.parse_args(argv)
    if not 0 <= args.tolerance < 1:
        parser.error("--tolerance must be at least 0 and below 1")
    baseline = BEFORE
    path = args.results
    try:
        with open(path) as f:
            run = json.load(f)
        table = run["table"]
        if args.baseline:
            path = args.baseline
            with open(path) as f:
                baseline = baseline_of(json.load(f)["table"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"targets: {path} is not a results.json of benchmarks/run ({type(e).__name__}: {e})", file=sys.stderr)
        return 2
    print(f"Issue 18's targets against `{run.get('command', '?')}` ({run.get('started_at', '?')}):\n")
    print(markdown(table, baseline, args.tolerance))
    return 0


if __name__ == "__main__":
    sys.exit(main())
