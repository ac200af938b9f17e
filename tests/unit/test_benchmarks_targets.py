"""benchmarks/targets.py: issue 18's targets judged from the rows of a benchmarks/run results.json."""

from __future__ import annotations

import json
import sys
from typing import Any

from tests.support import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import targets


def row(scenario: str, front: str, vs_nginx: float, *, vs_caddy: float = 2.0, p99_ms: float = 1.0,
        front_us: float = 100.0, rps: float = 1000.0, errors: int = 0) -> dict[str, Any]:
    return {"scenario": scenario, "front": front, "vs_nginx": vs_nginx, "vs_caddy": vs_caddy, "p99_ms": p99_ms,
            "front_us_per_req": front_us, "rps": rps, "errors": errors}


def lines_of(table: list[dict[str, Any]], baseline: dict[tuple[str, str], float] = targets.BEFORE) -> dict[str, str]:
    """The markdown table's rows by target name, the name cut off."""
    out = {}
    for line in targets.markdown(table, baseline, 0.05).splitlines()[2:]:
        name, rest = line[2:].split(" | ", 1)
        out[name] = rest
    return out


def test_ratio_targets_met_and_missed_on_each_interpreter() -> None:
    """hello needs both c=10 and c=64 at the bound; TLS rows read fephp-tls and fephp-pypy-tls; h2 checks p99 against nginx-tls's on CPython."""
    table = [
        row("hello c=10", "fephp", 0.60), row("hello c=64", "fephp", 0.50),
        row("hello c=10", "fephp-pypy", 1.10), row("hello c=64", "fephp-pypy", 1.00),
        row("https/1.1 hello c=10", "fephp-tls", 0.45), row("https/1.1 hello c=10", "fephp-pypy-tls", 0.79),
        row("h2 hello c=10 m=10", "fephp-tls", 0.40, p99_ms=30.0), row("h2 hello c=10 m=10", "nginx-tls", 1.0, p99_ms=2.0),
        row("h2 static 1 KiB c=10 m=10", "fephp-tls", 0.36, p99_ms=20.0),
        row("h2 static 1 KiB c=10 m=10", "nginx-tls", 1.0, p99_ms=2.0),
    ]
    lines = lines_of(table)
    assert lines["hello.php c=10, c=64 vs nginx"] == ">= 0.55x | 0.60x, 0.50x | **missed** | >= 1.0x | 1.10x, 1.00x | met |"
    assert lines["static 1 KiB c=64 vs nginx"] == ">= 0.45x | - | not measured | >= 1.0x | - | not measured |"
    assert lines["https/1.1 hello c=10 vs nginx-tls"] == ">= 0.45x | 0.45x | met | >= 0.8x | 0.79x | **missed** |"
    assert lines["h2 hello c=10 m=10, h2 static vs nginx-tls"] == (
        ">= 0.35x, p99 <= 10x nginx's | 0.40x (p99 30.0 against 2.0 ms), 0.36x (p99 20.0 against 2.0 ms) "
        "| **missed** | >= 0.6x | - | not measured |"
    )


def test_floor_ratio_is_front_cpu_over_the_floors_at_both_concurrencies() -> None:
    """fephp's µs per hello request over the floor's, c=10 and c=64, each at most 1.5x."""
    table = [
        row("hello c=10", "fephp", 0.3, front_us=140.0), row("hello c=10", "floor", 0.5, front_us=100.0),
        row("hello c=64", "fephp", 0.3, front_us=150.0), row("hello c=64", "floor", 0.5, front_us=100.0),
        row("hello c=10", "fephp-pypy", 0.5, front_us=60.0), row("hello c=10", "floor-pypy", 0.7, front_us=30.0),
        row("hello c=64", "fephp-pypy", 0.5, front_us=45.0), row("hello c=64", "floor-pypy", 0.7, front_us=30.0),
    ]
    assert lines_of(table)["front CPU per hello request (c=10, c=64) vs the floor's"] == (
        "<= 1.5x | 1.40x (140 / 100 µs), 1.50x (150 / 100 µs) | met "
        "| <= 1.5x | 2.00x (60 / 30 µs), 1.50x (45 / 30 µs) | **missed** |"
    )


def test_caddy_rows_name_the_ones_behind_and_level_leaving_out_the_fixed_rate_one() -> None:
    """Every scenario with Caddy (caddy-tls over TLS) counts, but the 100 req/s one; within 2 % of Caddy is level."""
    table = [
        row("hello c=10", "caddy", 0.2, vs_caddy=1.0), row("hello c=10", "fephp", 0.3, vs_caddy=1.5),
        row("sleep50 c=64", "caddy", 1.0, vs_caddy=1.0), row("sleep50 c=64", "fephp", 1.0, vs_caddy=0.99),
        row("fe-php 100 rps c=10", "caddy", 1.0, vs_caddy=1.0), row("fe-php 100 rps c=10", "fephp", 1.0, vs_caddy=0.97),
        row("https/1.1 hello c=10", "caddy-tls", 0.3, vs_caddy=1.0),
        row("https/1.1 hello c=10", "fephp-tls", 0.2, vs_caddy=0.65),
        row("https/1.1 hello c=10", "fephp-pypy-tls", 0.4, vs_caddy=1.3),
        row("hello c=10", "fephp-pypy", 0.5, vs_caddy=2.5),
    ]
    assert lines_of(table)["every row vs Caddy (caddy-tls over TLS)"] == (
        "ahead | ahead in 1 of 3; level: sleep50 c=64 0.99x; behind: https/1.1 hello c=10 0.65x | **missed** "
        "| ahead | ahead in 2 of 2 | met |"
    )


def test_no_worse_than_the_baseline_within_the_tolerance() -> None:
    """1 MiB and sleep50 vs nginx and the 100 req/s scenario's req/s are judged against the baseline less 5 %."""
    table = [
        row("1 MiB c=10", "fephp", 1.11), row("sleep50 c=64", "fephp", 1.00),
        row("fe-php 100 rps c=10", "fephp", 1.0, rps=99.9, p99_ms=4.2),
        row("1 MiB c=10", "fephp-pypy", 1.30), row("sleep50 c=64", "fephp-pypy", 1.00),
        row("fe-php 100 rps c=10", "fephp-pypy", 1.0, rps=100.0, p99_ms=6.0, errors=1),
    ]
    assert lines_of(table)["1 MiB, sleep50 vs nginx; the seed's 100 req/s"] == (
        "no worse than now | 1.11x (before 1.16x), 1.00x (before 1.01x), 99.9 req/s, p99 4.2 ms (before 100.0 req/s) "
        "| met | no worse than now | 1.30x (before 1.41x), 1.00x (before 1.01x), 100.0 req/s, p99 6.0 ms "
        "(before 100.0 req/s) | **missed** |"
    )


def test_main_reads_a_results_json_and_a_baseline(tmp_path, capsys) -> None:
    """The command prints the run's command and the table, taking "now" from --baseline's rows; a bad file exits 2."""
    run = {"command": "benchmarks/run --rounds 3", "started_at": "2026-12-07 18:00:00 UTC",
           "table": [row("1 MiB c=10", "fephp", 1.0), row("sleep50 c=64", "fephp", 1.0),
                     row("fe-php 100 rps c=10", "fephp", 1.0, rps=100.0)]}
    old = {"table": [row("1 MiB c=10", "fephp", 1.2), row("sleep50 c=64", "fephp", 1.0),
                     row("fe-php 100 rps c=10", "fephp", 1.0, rps=100.0)]}
    (tmp_path / "new.json").write_text(json.dumps(run))
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert targets.main([str(tmp_path / "new.json"), "--baseline", str(tmp_path / "old.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Issue 18's targets against `benchmarks/run --rounds 3` (2026-12-07 18:00:00 UTC):\n\n| target |")
    assert "| no worse than now | 1.00x (before 1.20x), 1.00x (before 1.00x), 100.0 req/s, p99 1.0 ms (before 100.0 req/s) | **missed** |" in out
    (tmp_path / "bad.json").write_text("{}")
    assert targets.main([str(tmp_path / "bad.json")]) == 2
    assert capsys.readouterr().err == (
        f"targets: {tmp_path / 'bad.json'} is not a results.json of benchmarks/run (KeyError: 'table')\n"
    )
