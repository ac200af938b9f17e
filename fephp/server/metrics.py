"""The server's figures as one document (for /status) and as Prometheus metric families (for /metrics).

A *snapshot* is a JSON-able dict gathered when someone asks (the admin side,
:mod:`fephp.server.admin`): the server's identity, one entry per serving
process (the single process, or each worker of ``server.workers``) with its
site's and pools' figures, and one entry per backend merging the pools'
figures over the processes with php-fpm's own status page.  Everything here
is pure: snapshot in, families or merged figures out; prometheus_client
writes the exposition format.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["SnapshotCollector", "merge_pools", "registry_for"]

#: php-fpm status fields -> (metric suffix, kind, help).
_FPM_FIELDS = (
    ("accepted conn", "accepted_connections", "counter", "Connections php-fpm accepted since it started."),
    ("listen queue", "listen_queue", "gauge", "Connections waiting in php-fpm's listen backlog now."),
    ("max listen queue", "listen_queue_max", "gauge", "The longest php-fpm's listen backlog was since it started."),
    ("max children reached", "max_children_reached", "counter", "Times php-fpm wanted more children than pm.max_children."),
    ("slow requests", "slow_requests", "counter", "Requests slower than php-fpm's request_slowlog_timeout."),
)


def _add_histogram(family: HistogramMetricFamily, labels: list[str], figures: dict[str, Any], extra_first: int = 0) -> None:
    """One histogram series from :meth:`fephp._stats.Histogram.figures` (per-bucket counts made cumulative)."""
    counts = list(figures["counts"])
    counts[0] += extra_first
    buckets = []
    total = 0
    for bound, count in zip(figures["bounds"], counts):
        total += count
        buckets.append((repr(float(bound)), total))
    total += counts[-1]
    buckets.append(("+Inf", total))
    family.add_metric(labels, buckets, figures["sum"])


def _sum_histograms(items: Iterable[dict[str, Any]]) -> Optional[dict[str, Any]]:
    out: Optional[dict[str, Any]] = None
    for h in items:
        if out is None:
            out = {"bounds": list(h["bounds"]), "counts": list(h["counts"]), "sum": h["sum"]}
        else:
            out["counts"] = [a + b for a, b in zip(out["counts"], h["counts"])]
            out["sum"] += h["sum"]
    return out


def merge_pools(pools: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """One backend's pool figures summed over the processes that each hold a pool to it."""
    if not pools:
        return None
    merged: dict[str, Any] = {"name": pools[0]["name"]}
    for key in ("size", "idle", "busy", "connecting", "waiting", "immediate", "connects_failed", "retries", "aborts"):
        merged[key] = sum(p[key] for p in pools)
    merged["errors"] = {k: sum(p["errors"].get(k, 0) for p in pools) for k in pools[0]["errors"]}
    merged["queue_wait"] = _sum_histograms(p["queue_wait"] for p in pools)
    if "restarts" in pools[0]:
        # PHP workers (fephp.backend.workers): replaced workers by reason, whether they boot.
        merged["kind"] = pools[0]["kind"]
        merged["restarts"] = {k: sum(p["restarts"].get(k, 0) for p in pools) for k in pools[0]["restarts"]}
        merged["healthy"] = all(p["healthy"] for p in pools)
    return merged


class SnapshotCollector(Collector):
    """The metric families of one snapshot; with several processes each series carries a ``worker`` label."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        server = snap["server"]
        info = GaugeMetricFamily("fephp_info", "fephp's version and how it runs.", labels=["version", "mode"])
        info.add_metric([server["version"], server["mode"]], 1)
        yield info
        yield GaugeMetricFamily("fephp_start_time_seconds", "When fephp started, seconds since the epoch.", value=server["started"])
        yield GaugeMetricFamily("fephp_config_reloads", "Configurations loaded by SIGHUP since start.", value=server.get("reloads", 0))
        processes = snap["processes"]
        labelled = server["mode"] == "workers"
        wl = ["worker"] if labelled else []

        def key(process: dict[str, Any]) -> list[str]:
            return [str(process["index"])] if labelled else []

        requests = CounterMetricFamily(
            "fephp_http_requests", "HTTP requests finished, by method, status class and what served them (php, static, other).",
            labels=["method", "code", "kind", *wl],
        )
        duration = HistogramMetricFamily(
            "fephp_http_request_duration_seconds", "From the end of the request head to the end of the response.", labels=["kind", *wl]
        )
        first = HistogramMetricFamily(
            "fephp_http_first_byte_seconds", "From the end of the request head to the first response byte.", labels=["kind", *wl]
        )
        sent = CounterMetricFamily("fephp_http_response_bytes", "Response body bytes sent.", labels=["kind", *wl])
        in_flight = GaugeMetricFamily("fephp_http_requests_in_flight", "Requests received and not yet answered.", labels=wl)
        connections = GaugeMetricFamily("fephp_http_connections", "Open client connections.", labels=wl)
        for process in processes:
            site = process.get("site")
            if site is None:
                continue
            k = key(process)
            for method, code, kind, n in site["requests"]:
                requests.add_metric([method, code, kind, *k], n)
            for kind, h in site["duration"].items():
                _add_histogram(duration, [kind, *k], h)
            for kind, h in site["first_byte"].items():
                _add_histogram(first, [kind, *k], h)
            for kind, n in site["bytes_sent"].items():
                sent.add_metric([kind, *k], n)
            in_flight.add_metric(k, process["in_flight"])
            connections.add_metric(k, process["connections"])
        yield from (requests, duration, first, sent, in_flight, connections)

        # Several sites (``sites``): each one's requests apart, by its name.
        site_requests = CounterMetricFamily(
            "fephp_site_http_requests", "HTTP requests one site of several finished, by method, status class and kind.",
            labels=["site", "method", "code", "kind", *wl],
        )
        site_duration = HistogramMetricFamily(
            "fephp_site_http_request_duration_seconds", "One site's requests, from the end of the head to the end of the response.",
            labels=["site", "kind", *wl],
        )
        for process in processes:
            k = key(process)
            for name, figures in sorted((process.get("sites") or {}).items()):
                for method, code, kind, n in figures["requests"]:
                    site_requests.add_metric([name, method, code, kind, *k], n)
                for kind, h in figures["duration"].items():
                    _add_histogram(site_duration, [name, kind, *k], h)
        if site_requests.samples:
            yield from (site_requests, site_duration)

        bl = ["backend", *wl]
        conns = GaugeMetricFamily("fephp_pool_connections", "Kept FastCGI connections, by state.", labels=[*bl, "state"])
        size = GaugeMetricFamily("fephp_pool_size", "The most connections the pool may hold (php.worker_pool_size).", labels=bl)
        depth = GaugeMetricFamily("fephp_pool_queue_depth", "Requests waiting for a free connection now.", labels=bl)
        wait = HistogramMetricFamily(
            "fephp_pool_queue_wait_seconds", "How long requests waited for a connection (0 for an idle one taken at once).", labels=bl
        )
        failed = CounterMetricFamily("fephp_pool_connects_failed", "Connects to the backend that failed or timed out.", labels=bl)
        retries = CounterMetricFamily("fephp_pool_retries", "Requests sent again after a stale kept connection.", labels=bl)
        errors = CounterMetricFamily("fephp_pool_errors", "Requests the backend failed, by the status sent (502, 503, 504).", labels=[*bl, "status"])
        aborts = CounterMetricFamily("fephp_pool_client_aborts", "Requests the client gave up on before the end.", labels=bl)
        restarted = CounterMetricFamily(
            "fephp_php_worker_restarts", "PHP workers replaced, by why (max_jobs, max_memory, exec_timeout, crash...).",
            labels=[*bl, "reason"],
        )
        healthy = GaugeMetricFamily(
            "fephp_php_workers_healthy", "0 after php.worker.max_consecutive_failures boot failures in a row, else 1.", labels=bl
        )
        for process in processes:
            k = key(process)
            for pool in process.get("pools", []):
                labels = [pool["name"], *k]
                for state in ("busy", "idle", "connecting"):
                    conns.add_metric([*labels, state], pool[state])
                size.add_metric(labels, pool["size"])
                depth.add_metric(labels, pool["waiting"])
                _add_histogram(wait, labels, pool["queue_wait"], extra_first=pool["immediate"])
                failed.add_metric(labels, pool["connects_failed"])
                retries.add_metric(labels, pool["retries"])
                for status, n in pool["errors"].items():
                    errors.add_metric([*labels, status], n)
                aborts.add_metric(labels, pool["aborts"])
                if "restarts" in pool:
                    for reason, n in pool["restarts"].items():
                        restarted.add_metric([*labels, reason], n)
                    healthy.add_metric(labels, 1 if pool["healthy"] else 0)
        yield from (conns, size, depth, wait, failed, retries, errors, aborts, restarted, healthy)

        up = GaugeMetricFamily("fephp_php_fpm_up", "1 when php-fpm's status page answered this scrape.", labels=["backend"])
        procs = GaugeMetricFamily("fephp_php_fpm_processes", "php-fpm's children, by state (its status page).", labels=["backend", "state"])
        fields = {
            suffix: (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(f"fephp_php_fpm_{suffix}", text, labels=["backend"])
            for _, suffix, kind, text in _FPM_FIELDS
        }
        restarts = CounterMetricFamily("fephp_php_fpm_restarts", "Times fephp started its managed php-fpm again after it died.", labels=["backend"])
        for backend in snap["backends"]:
            name = backend["name"]
            fpm = backend.get("php_fpm")
            if backend.get("php_fpm_restarts") is not None:
                restarts.add_metric([name], backend["php_fpm_restarts"])
            if backend.get("kind") in ("php-cgi", "workers"):
                continue
            up.add_metric([name], 1 if fpm else 0)
            if not fpm:
                continue
            for state, field in (("active", "active processes"), ("idle", "idle processes"), ("total", "total processes")):
                procs.add_metric([name, state], fpm.get(field, 0))
            for field, suffix, _, _ in _FPM_FIELDS:
                if field in fpm:
                    fields[suffix].add_metric([name], fpm[field])
        yield from (up, procs, *fields.values(), restarts)

        certificates = snap.get("certificates") or []
        if certificates:
            expiry = GaugeMetricFamily(
                "fephp_tls_certificate_expiry_seconds", "Seconds until the ACME certificate serving the name expires.",
                labels=["name"],
            )
            renewal_failures = CounterMetricFamily(
                "fephp_tls_renewal_failures", "Failed attempts to obtain or renew the name's certificate.", labels=["name"]
            )
            for certificate in certificates:
                for name in certificate["names"]:
                    if certificate["expiry_seconds"] is not None:
                        expiry.add_metric([name], certificate["expiry_seconds"])
                    renewal_failures.add_metric([name], certificate["failures_total"])
            yield from (expiry, renewal_failures)

        if labelled:
            yield GaugeMetricFamily("fephp_workers", "Worker processes running now.", value=sum(1 for p in processes if p.get("pid")))
            yield CounterMetricFamily("fephp_worker_restarts", "Times a worker process was started again after it died.", value=server.get("worker_restarts", 0))


def registry_for(snapshot: dict[str, Any]) -> CollectorRegistry:
    """A registry holding nothing but *snapshot*'s families (fresh per scrape)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return registry
