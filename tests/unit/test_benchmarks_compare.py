"""benchmarks/compare.py's table: nginx with one worker and with 'auto' side by side, and the CPU of each process per request."""

from __future__ import annotations

import sys
from typing import Any

from tests.support import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import compare  # noqa: E402


def measured(front: str, rps: float, tool_cpu_s: float = 0.5) -> dict[str, Any]:
    return {
        "front": front, "rps": rps, "p50_ms": 1.0, "p99_ms": 2.0, "requests": 10_000, "errors": 0, "non_2xx": 0,
        "front_us_per_req": 100.0, "php_us_per_req": 50.0, "tool_us_per_req": tool_cpu_s / 10_000 * 1e6,
        "other_cores": 0.1,
    }


def test_rows_compare_with_both_nginx_and_give_the_load_generators_cpu() -> None:
    """Each row has its ratio to nginx (one worker) and to nginx-auto, and the load generator's µs per request."""
    scenario = compare.Scenario("hello c=10", "/hello.php", 10, 1.0)
    scenario.rounds = [measured("fephp", 2000.0), measured("nginx", 4000.0), measured("nginx-auto", 5000.0),
                       measured("caddy", 3000.0, tool_cpu_s=0.3)]
    rows = {row["front"]: row for row in compare.summarize([scenario])}
    assert set(rows) == {"fephp", "nginx", "nginx-auto", "caddy"}
    assert (rows["fephp"]["vs_nginx"], rows["fephp"]["vs_nginx_auto"]) == (0.5, 0.4)
    assert round(rows["caddy"]["tool_us_per_req"], 6) == 30.0
    table = compare.markdown_table(list(rows.values()))
    header = table.splitlines()[0]
    for title in ("front CPU µs/req", "php-fpm CPU µs/req", "load gen CPU µs/req", "vs nginx", "vs nginx auto"):
        assert f"| {title} |" in header


def test_nginx_auto_config_shares_the_upstream_keepalive() -> None:
    """The 'auto' nginx runs a worker per core with its own files, and the one-worker nginx keeps its config."""
    auto = compare.nginx_conf("/t", 8080, "/t/fpm.sock", 4, "auto", "nginx-auto")
    assert "worker_processes auto;" in auto and "keepalive 4;" in auto and "pid /t/nginx-auto.pid;" in auto
    one = compare.nginx_conf("/t", 8080, "/t/fpm.sock", 8, "1")
    assert "worker_processes 1;" in one and "keepalive 8;" in one and "pid /t/nginx.pid;" in one


def test_every_scenario_has_both_nginx() -> None:
    """Both nginx candidates run in every scenario."""
    for scenario in compare.scenarios(compare.parse_args(["--quick"])):
        assert {"nginx", "nginx-auto"} <= set(scenario.fronts), scenario.name
