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
    """Each row has its ratio to nginx (one worker), to nginx-auto and to Caddy, and the load generator's µs per request."""
    scenario = compare.Scenario("hello c=10", "/hello.php", 10, 1.0)
    scenario.rounds = [measured("fephp", 2000.0), measured("nginx", 4000.0), measured("nginx-auto", 5000.0),
                       measured("caddy", 3000.0, tool_cpu_s=0.3)]
    rows = {row["front"]: row for row in compare.summarize([scenario])}
    assert set(rows) == {"fephp", "nginx", "nginx-auto", "caddy"}
    assert (rows["fephp"]["vs_nginx"], rows["fephp"]["vs_nginx_auto"]) == (0.5, 0.4)
    assert (rows["fephp"]["vs_caddy"], rows["caddy"]["vs_caddy"]) == (2000.0 / 3000.0, 1.0)
    assert round(rows["caddy"]["tool_us_per_req"], 6) == 30.0
    table = compare.markdown_table(list(rows.values()))
    header = table.splitlines()[0]
    for title in ("front CPU µs/req", "php-fpm CPU µs/req", "load gen CPU µs/req", "vs nginx", "vs nginx auto", "vs Caddy"):
        assert f"| {title} |" in header


def test_nginx_auto_config_shares_the_upstream_keepalive() -> None:
    """The 'auto' nginx runs a worker per core with its own files, and the one-worker nginx keeps its config."""
    auto = compare.nginx_conf("/t", 8080, "/t/fpm.sock", 4, "auto", "nginx-auto")
    assert "worker_processes auto;" in auto and "keepalive 4;" in auto and "pid /t/nginx-auto.pid;" in auto
    one = compare.nginx_conf("/t", 8080, "/t/fpm.sock", 8, "1")
    assert "worker_processes 1;" in one and "keepalive 8;" in one and "pid /t/nginx.pid;" in one


def test_every_scenario_has_both_nginx() -> None:
    """Both nginx candidates run in every plain HTTP scenario; the TLS ones (HTTP/2 beside HTTP/1.1) have nginx and Caddy on TLS."""
    for scenario in compare.scenarios(compare.parse_args(["--quick"])):
        if scenario.tool.startswith("h2load"):
            assert scenario.fronts == ("fephp-tls", "nginx-tls", "caddy-tls"), scenario.name
        elif scenario.name.startswith("2 backends"):
            assert set(scenario.fronts) == set(compare.TWO_BACKENDS) == {"fephp-2b", "nginx-2b"}, scenario.name
        else:
            assert {"nginx", "nginx-auto"} <= set(scenario.fronts), scenario.name


def test_tls_scenarios_have_fephp_on_pypy_with_pypy() -> None:
    """With --pypy the three TLS scenarios also measure fephp-pypy-tls, last; the plain scenarios keep their fronts."""
    by_name = {s.name: s.fronts for s in compare.scenarios(compare.parse_args(["--quick", "--pypy", "/p/bin/pypy3"]))}
    for name in ("h2 hello c=10 m=10", "https/1.1 hello c=10", "h2 static 1 KiB c=10 m=10"):
        assert by_name[name] == ("fephp-tls", "nginx-tls", "caddy-tls", "fephp-pypy-tls"), name
    assert by_name["static 1 KiB c=64"] == ("fephp", "nginx", "nginx-auto", "caddy", "fephp-pypy")


def test_tls_rows_compare_with_nginx_and_caddy_on_tls() -> None:
    """An HTTP/2 row's ratios are to nginx-tls and caddy-tls, none to nginx-auto (there is none over TLS)."""
    scenario = compare.Scenario("h2 hello c=10 m=10", "/hello.php", 10, 1.0, tool="h2load", streams=10,
                                fronts=compare.TLS_FRONTS)
    scenario.rounds = [measured("fephp-tls", 1000.0), measured("nginx-tls", 4000.0), measured("caddy-tls", 2000.0),
                       measured("fephp-pypy-tls", 3000.0)]
    rows = {row["front"]: row for row in compare.summarize([scenario])}
    assert list(rows) == ["fephp-tls", "nginx-tls", "caddy-tls", "fephp-pypy-tls"]
    assert (rows["fephp-tls"]["vs_nginx"], rows["fephp-tls"]["vs_caddy"]) == (0.25, 0.5)
    assert (rows["fephp-pypy-tls"]["vs_nginx"], rows["fephp-pypy-tls"]["vs_caddy"]) == (0.75, 1.5)
    assert rows["fephp-tls"]["vs_nginx_auto"] != rows["fephp-tls"]["vs_nginx_auto"]  # nan
    conf = compare.nginx_tls_conf("/t", 8443, "/t/fpm.sock", 8, "1", "/t/k.pem", "/t/c.pem")
    assert "listen 127.0.0.1:8443 ssl http2;" in conf and "ssl_certificate_key /t/k.pem;" in conf
    assert "pid /t/nginx-tls.pid;" in conf


def test_caddyfile_over_tls_serves_h1_and_h2_with_the_runs_certificate() -> None:
    """caddy-tls's Caddyfile is plain Caddy's on an https site with the given certificate, HTTP/3 left out."""
    plain = compare.caddyfile(8080, "/t/fpm.sock")
    tls = compare.caddyfile(8443, "/t/fpm.sock", ("/t/k.pem", "/t/c.pem"))
    assert plain.startswith("{\n\tadmin off\n\tauto_https off\n}\n\nhttp://127.0.0.1:8080 {\n\tbind 127.0.0.1\n\troot * ")
    assert tls.startswith(
        "{\n\tadmin off\n\tauto_https off\n\tservers {\n\t\tprotocols h1 h2\n\t}\n}\n\n"
        "https://127.0.0.1:8443 {\n\tbind 127.0.0.1\n\ttls /t/c.pem /t/k.pem\n\troot * "
    )
    assert plain.split("\troot * ", 1)[1] == tls.split("\troot * ", 1)[1]
    assert "php_fastcgi unix//t/fpm.sock\n" in tls


def test_parse_h2load(tmp_path) -> None:
    """h2load's summary lines and its tab-separated log (start, status, µs) become the row's figures."""
    out = (
        "finished in 10.00s, 2000.50 req/s, 1.00MB/s\n"
        "requests: 20005 total, 20005 started, 20005 done, 20000 succeeded, 5 failed, 0 errored, 0 timeout\n"
        "status codes: 20000 2xx, 0 3xx, 0 4xx, 5 5xx\n"
    )
    log = tmp_path / "h2load.tsv"
    log.write_text("".join(f"1700000000{i:06d}\t200\t{(i + 1) * 1000}\n" for i in range(100)))
    result = compare.parse_h2load(out, str(log))
    assert (result["rps"], result["requests"], result["errors"], result["non_2xx"]) == (2000.5, 20000, 5, 5)
    assert (result["p50_ms"], result["p99_ms"]) == (51.0, 100.0)


def test_two_backend_fronts_balance_over_both_pools() -> None:
    """nginx-2b's upstream and fephp-2b's backends name both pools; the kill scenario kills a while into its run."""
    nginx = compare.nginx_conf("/t", 8080, "/t/a.sock", 8, "1", socks=["/t/a.sock", "/t/b.sock"])
    assert "server unix:/t/a.sock;\n        server unix:/t/b.sock;\n        keepalive 8;" in nginx
    fephp = compare.fephp_two_yaml(8081, ["/t/a.sock", "/t/b.sock"], 4)
    assert 'backends: [{address: "unix:path=/t/a.sock", pool_size: 4}, {address: "unix:path=/t/b.sock", pool_size: 4}]' in fephp
    scenarios = {s.name: s for s in compare.scenarios(compare.parse_args(["--only", "2 backends"]))}
    assert [s.kill_after for s in scenarios.values()] == [0.0, 0.0, 3.0]
    rows = compare.summarize([_two("2 backends hello c=64")])
    assert [(r["front"], r["vs_nginx"]) for r in rows] == [("fephp-2b", 0.5), ("nginx-2b", 1.0)]


def _two(name: str) -> Any:
    scenario = compare.Scenario(name, "/hello.php", 64, 1.0, fronts=compare.TWO_BACKENDS)
    scenario.rounds = [measured("fephp-2b", 1000.0), measured("nginx-2b", 2000.0)]
    return scenario


def test_pypy_fronts_warm_up_longer() -> None:
    """The PyPy fronts get --pypy-warmup seconds per path (5 by default, 1 with --quick), every other front 1."""
    full = compare.parse_args(["--pypy", "/p/bin/pypy3"])
    quick = compare.parse_args(["--quick", "--pypy", "/p/bin/pypy3"])
    chosen = compare.parse_args(["--pypy", "/p/bin/pypy3", "--pypy-warmup", "12"])
    names = ("fephp", "fephp-tls", "caddy-tls", "floor", "fephp-pypy", "floor-pypy", "fephp-pypy-tls")
    assert [compare.warm_up_seconds(n, full) for n in names] == [1.0, 1.0, 1.0, 1.0, 5.0, 5.0, 5.0]
    assert [compare.warm_up_seconds(n, quick) for n in names] == [1.0] * 7
    assert compare.warm_up_seconds("fephp-pypy-tls", chosen) == 12.0
