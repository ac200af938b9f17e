"""The PHP workers on the admin side: their restarts and health in /metrics, and /readyz from their health."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fephp.backend.workers import RESTART_REASONS
from fephp.server.admin import LocalView, backend_part
from fephp.server.metrics import registry_for
from fephp.server.settings import PHPConfig


def _workers(busy: int, crashes: int, healthy: bool) -> dict[str, Any]:
    return {
        "name": "php workers", "kind": "workers", "size": 4, "idle": 4 - busy, "busy": busy, "connecting": 0,
        "waiting": 2, "immediate": 7, "queue_wait": {"bounds": [1.0], "counts": [0, 0], "sum": 0.0},
        "connects_failed": 0, "retries": 0, "errors": {"500": 1, "502": 0, "503": 0, "504": 3}, "aborts": 0,
        "restarts": dict({r: 0 for r in RESTART_REASONS}, crash=crashes, max_jobs=5), "healthy": healthy,
    }


def test_worker_restarts_and_health_in_metrics() -> None:
    """Restarts by reason and the health gauge come out per backend, busy and idle workers as pool connections."""
    pools = [_workers(3, 2, False)]
    snapshot: dict[str, Any] = {
        "server": {"version": "0", "mode": "single", "pid": 1, "started": 1.0},
        "processes": [{"index": 0, "pid": 1, "site": None, "connections": 0, "in_flight": 0, "pools": pools}],
        "backends": [backend_part(SimpleNamespace(php=PHPConfig()), pools, None, None)],
    }
    text = generate_latest(registry_for(snapshot)).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("fephp_php_worker_restarts_total", (("backend", "php workers"), ("reason", "crash")))] == 2
    assert samples[("fephp_php_worker_restarts_total", (("backend", "php workers"), ("reason", "max_jobs")))] == 5
    assert samples[("fephp_php_workers_healthy", (("backend", "php workers"),))] == 0
    assert samples[("fephp_pool_connections", (("backend", "php workers"), ("state", "busy")))] == 3
    assert samples[("fephp_pool_errors_total", (("backend", "php workers"), ("status", "500")))] == 1
    assert not any(name.startswith("fephp_php_fpm_up") for name, _ in samples)
    assert snapshot["backends"][0]["kind"] == "workers"


class _Workers:
    def __init__(self, ok: bool) -> None:
        self.ok = ok

    def health(self) -> tuple[bool, str]:
        return (self.ok, "php workers: 3 workers in a row failed to boot (x)" if not self.ok else "php workers: 2 of 2 workers ready")


def _ready(backend: Any) -> Any:
    view = LocalView(SimpleNamespace(backend=backend), config=lambda: None, config_text=lambda: None, fpm=lambda: None)
    return view.ready().result


def test_readyz_answers_from_the_workers_health() -> None:
    """Workers alone answer /readyz with their health; in a mixed site unhealthy workers make it fail too."""
    assert _ready(_Workers(True)) == (True, "php workers: 2 of 2 workers ready")
    assert _ready(_Workers(False)) == (False, "php workers: 3 workers in a row failed to boot (x)")
    mixed = SimpleNamespace(parts=(object(), _Workers(False)))
    assert _ready(mixed) == (False, "php workers: 3 workers in a row failed to boot (x)")
    assert _ready(SimpleNamespace(parts=(object(), _Workers(True)))) == (True, "php-cgi runs per request")
