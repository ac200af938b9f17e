"""A snapshot as Prometheus families (parsed back with prometheus_client's parser), pools merged over workers, the status page escaped."""

from __future__ import annotations

from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fephp._stats import QUEUE_WAIT_BOUNDS, Histogram
from fephp.server.admin import render_status_html
from fephp.server.metrics import merge_pools, registry_for
from fephp.web.figures import SiteFigures


def _pool(name: str, busy: int, waited: float) -> dict[str, Any]:
    wait = Histogram(QUEUE_WAIT_BOUNDS)
    wait.observe(waited)
    return {
        "name": name, "size": 4, "idle": 4 - busy, "busy": busy, "connecting": 0, "waiting": 1, "immediate": 10,
        "queue_wait": wait.figures(), "connects_failed": 1, "retries": 0, "errors": {"502": 1, "503": 0, "504": 2},
        "aborts": 0,
    }


def _snapshot(mode: str, processes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "server": {"version": "0.1.0", "mode": mode, "pid": 1, "started": 1.0, "uptime_seconds": 5.0,
                   "config_file": "/etc/fephp.yaml", "config_sha256": "ab", "root": "/srv", "worker_restarts": 2},
        "processes": processes,
        "backends": [{"name": "php <fpm>", "kind": "external", "pool": merge_pools([p for x in processes for p in x["pools"]]),
                      "php_fpm": {"active processes": 3, "idle processes": 1, "total processes": 4, "listen queue": 0,
                                  "accepted conn": 99, "max children reached": 1, "slow requests": 0},
                      "php_fpm_restarts": None}],
    }


def _samples(snapshot: dict[str, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry_for(snapshot)).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _process(index: int, busy: int) -> dict[str, Any]:
    site = SiteFigures()
    site.request_done(b"GET", 200, "php", 0.004, 0.003, 13)
    site.request_done(b"BREW", 418, "other", 0.0001, None, 0)
    return {"index": index, "pid": 100 + index, "site": site.figures(), "connections": 2, "in_flight": 1,
            "pools": [_pool("php <fpm>", busy, 0.002)]}


def test_one_process_has_no_worker_label() -> None:
    """A single process's series carry their own labels only; an unknown method counts as "other"; the idle connections taken at once land in the first wait bucket."""
    m = _samples(_snapshot("single", [_process(0, 1)]))
    assert m[("fephp_http_requests_total", (("code", "2xx"), ("kind", "php"), ("method", "GET")))] == 1
    assert m[("fephp_http_requests_total", (("code", "4xx"), ("kind", "other"), ("method", "other")))] == 1
    assert m[("fephp_http_first_byte_seconds_count", (("kind", "php"),))] == 1
    assert m[("fephp_http_first_byte_seconds_count", (("kind", "other"),))] == 0
    backend = (("backend", "php <fpm>"),)
    assert m[("fephp_pool_queue_wait_seconds_count", backend)] == 11
    assert m[("fephp_pool_queue_wait_seconds_bucket", (*backend, ("le", "0.0005")))] == 10
    assert m[("fephp_pool_errors_total", (*backend, ("status", "504")))] == 2
    assert m[("fephp_php_fpm_processes", (*backend, ("state", "total")))] == 4
    assert ("fephp_workers", ()) not in m


def test_workers_are_labelled_and_their_pools_summed_for_status() -> None:
    """With workers every HTTP and pool series has a worker label; /status's backend sums the workers' pools."""
    snapshot = _snapshot("workers", [_process(1, 1), _process(2, 3)])
    m = _samples(snapshot)
    for worker in ("1", "2"):
        assert m[("fephp_pool_connections", (("backend", "php <fpm>"), ("state", "busy"), ("worker", worker)))] in (1, 3)
        assert m[("fephp_http_requests_in_flight", (("worker", worker),))] == 1
    assert m[("fephp_workers", ())] == 2
    assert m[("fephp_worker_restarts_total", ())] == 2
    pool = snapshot["backends"][0]["pool"]
    assert (pool["busy"], pool["size"], pool["waiting"], pool["errors"]["502"]) == (4, 8, 2, 2)
    assert sum(pool["queue_wait"]["counts"]) == 2


def test_the_status_page_escapes_what_it_shows() -> None:
    """A backend's name is text on the page, never markup."""
    page = render_status_html(_snapshot("single", [_process(0, 1)]))
    assert "php &lt;fpm&gt;" in page and "php <fpm>" not in page
