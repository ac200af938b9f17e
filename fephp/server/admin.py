"""The admin listener, from the operator's side: /metrics, /status, /healthz and /readyz on ``admin.listen``.

Never on a public listener (the configuration refuses one in both lists).
Every answer is built when asked: the server's figures come from a
*view* (:class:`LocalView` in a single process, the workers' parent's own in
``server.workers``), php-fpm's from its status page over FastCGI
(:class:`PHPFPMStatus`, on a connection of its own so that it answers even
when every serving connection is busy), and :mod:`fephp.server.metrics`
turns them into Prometheus's format or the merged JSON document.

- ``/metrics``: Prometheus text format (prometheus_client).
- ``/status``: JSON; for a browser (``Accept: text/html``) a small HTML page
  that refreshes itself every :data:`REFRESH_SECONDS`, no script, no
  external asset.
- ``/healthz``: 200 while the process runs its event loop.
- ``/readyz``: 200 when php-fpm answers its ping now (and, with workers, at
  least one worker runs), else 503.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import time
from typing import Any, Callable, Optional, Protocol

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import Resource

from .. import __version__
from ..backend.interface import Backend, Chunk
from .metrics import merge_pools, registry_for

__all__ = [
    "AdminResource",
    "AdminSite",
    "LocalView",
    "PHPFPMStatus",
    "REFRESH_SECONDS",
    "View",
    "backend_part",
    "backend_pools",
    "sites_figures",
    "backends_part",
    "render_status_html",
    "server_part",
]

#: How often the HTML status page reloads itself.
REFRESH_SECONDS = 5
#: Seconds php-fpm's status page or ping may take before it counts as down.
FPM_TIMEOUT = 2.0


class View(Protocol):
    def snapshot(self) -> "Deferred[dict[str, Any]]":
        """The whole server's figures now (see fephp.server.metrics)."""

    def ready(self) -> "Deferred[tuple[bool, str]]":
        """Whether the server can serve PHP now, and why not."""


class _Collect:
    """A ResponseSink that keeps one small answer (php-fpm's status JSON, its ping)."""

    def __init__(self) -> None:
        self.stdout = b""

    def response_started(self, producer: Any) -> None:
        pass

    def stdout_received(self, data: Chunk) -> None:
        if len(self.stdout) < 64 * 1024:  # php-fpm's status is a few hundred bytes
            self.stdout += data

    def stderr_received(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass

    def body(self) -> bytes:
        return self.stdout.partition(b"\r\n\r\n")[2]


class PHPFPMStatus:
    """php-fpm's own status page and ping, asked over a pool of one connection to the same socket.

    *pool* is that pool (its connection pins one php-fpm child: the managed
    php-fpm gets one child more for it), or with several php-fpm backends a
    balancer of one connection to each: it asks whichever is in service, so
    /readyz holds while any answers.  Paths None: not available.
    """

    log = Logger()

    def __init__(self, pool: Backend, *, status_path: Optional[str], ping_path: Optional[str], clock: Any) -> None:
        self.pool = pool
        self.status_path = status_path
        self.ping_path = ping_path
        self._clock = clock

    def _ask(self, path: str, query: bytes) -> "Deferred[Optional[bytes]]":
        sink = _Collect()
        params = [
            (b"SCRIPT_NAME", path.encode()),
            (b"SCRIPT_FILENAME", path.encode()),
            (b"REQUEST_METHOD", b"GET"),
            (b"QUERY_STRING", query),
            (b"GATEWAY_INTERFACE", b"CGI/1.1"),
        ]
        d: Deferred[Any] = self.pool.request(params, None, sink)
        d.addTimeout(FPM_TIMEOUT, self._clock)
        d.addCallbacks(lambda _: sink.body(), lambda f: None)
        return d

    def status(self) -> "Deferred[Optional[dict[str, Any]]]":
        """php-fpm's status page as a dict, or None when it has none or does not answer."""
        if not self.status_path:
            return succeed(None)

        def parse(body: Optional[bytes]) -> Optional[dict[str, Any]]:
            try:
                return json.loads(body) if body else None
            except ValueError:
                return None

        return self._ask(self.status_path, b"json").addCallback(parse)

    def ping(self) -> "Deferred[bool]":
        """Whether php-fpm answers its ping (or, without one, its status page) now."""
        if self.ping_path:
            return self._ask(self.ping_path, b"").addCallback(lambda body: body is not None and body.strip() == b"pong" or bool(body))
        return self.status().addCallback(lambda status: status is not None)

    def close(self) -> "Deferred[None]":
        return self.pool.close()


def backend_pools(backend: Any) -> list[dict[str, Any]]:
    """The figures of every pool behind *backend*: the pool itself, each member of a balancer, none for php-cgi.

    With several sites (``by_site``), each site's pools, their names prefixed
    with the site's ("shop: managed php-fpm") and the site in ``site``.
    """
    by_site = getattr(backend, "by_site", None)
    if by_site is not None:
        return [dict(pool, name=f"{site}: {pool['name']}", site=site)
                for site, one in by_site.items() for pool in backend_pools(one)]
    if hasattr(backend, "figures"):
        return [backend.figures()]
    parts = getattr(backend, "parts", None)
    if parts is not None:  # a mixed site: php-fpm's pool and the PHP workers
        return [figures for part in parts for figures in backend_pools(part)]
    members = getattr(backend, "members", None)
    if members is not None:
        return [dict(m.pool.figures(), name=m.name, state=m.state) for m in members]
    return []


def sites_figures(site: Any) -> dict[str, Any]:
    """Each site's own figures by name, when the FrontSite serves several (``sites``) and keeps figures."""
    return {v.name: v.site_figures.figures() for v in getattr(site, "virtual_sites", ()) if v.site_figures is not None}


def config_digest(text: Optional[str]) -> Optional[str]:
    return hashlib.sha256(text.encode("utf-8")).hexdigest() if text is not None else None


class LocalView:
    """The figures of the one serving process: *front* is its FrontService (read anew at each ask, so a reload shows at once)."""

    def __init__(self, front: Any, *, config: Callable[[], Any], config_text: Callable[[], Optional[str]],
                 fpm: Callable[[], Optional[PHPFPMStatus]], reloads: Callable[[], int] = lambda: 0,
                 certificates: Callable[[], "list[dict[str, Any]]"] = lambda: [],
                 on_demand: Callable[[], "dict[str, Any]"] = lambda: {}) -> None:
        self._front = front
        #: The ACME certificates' figures (AcmeService.figures), for /status and /metrics.
        self._certificates = certificates
        #: On-demand TLS's names by site (OnDemand.figures).
        self._on_demand = on_demand
        self._config = config
        self._config_text = config_text
        self._fpm = fpm
        self._reloads = reloads
        self.started = time.time()

    def snapshot(self) -> "Deferred[dict[str, Any]]":
        front = self._front
        config = self._config()
        site = front.site
        connections, in_flight = site.activity()
        pools = backend_pools(front.backend)
        process = {
            "index": 0,
            "pid": os.getpid(),
            "site": site.figures.figures() if site.figures is not None else None,
            "sites": sites_figures(site),
            "connections": connections,
            "in_flight": in_flight,
            "pools": pools,
        }
        fpm = self._fpm()
        managed = front.php_fpm

        def done(status: Optional[dict[str, Any]]) -> dict[str, Any]:
            return {
                "server": server_part(config, self._config_text(), self.started, "single", reloads=self._reloads()),
                "processes": [process],
                "backends": backends_part(config, pools, status, managed),
                "certificates": self._certificates(),
                "on_demand": self._on_demand(),
            }

        return (fpm.status() if fpm is not None else succeed(None)).addCallback(done)

    def ready(self) -> "Deferred[tuple[bool, str]]":
        backend = self._front.backend
        for part in getattr(backend, "parts", (backend,)):
            health = getattr(part, "health", None)
            if health is not None:
                # PHP workers (fephp.backend.workers): unhealthy after max_consecutive_failures boot failures.
                ok, why = health()
                if not ok or part is backend:
                    return succeed((ok, why))
        fpm = self._fpm()
        if fpm is None:
            return succeed((True, "php-cgi runs per request"))
        return fpm.ping().addCallback(lambda ok: (ok, "php-fpm answers" if ok else "php-fpm does not answer its ping"))


def server_part(config: Any, text: Optional[str], started: float, mode: str, **extra: Any) -> dict[str, Any]:
    now = time.time()
    part = {
        "version": __version__,
        "mode": mode,
        "pid": os.getpid(),
        "started": started,
        "uptime_seconds": round(now - started, 3),
        "config_file": config.source,
        "config_sha256": config_digest(text),
        "root": config.server.root,
    }
    part.update(extra)
    return part


def backends_part(config: Any, pools: list[dict[str, Any]], status: Optional[dict[str, Any]], managed: Any) -> list[dict[str, Any]]:
    """One entry per backend the pools lead to (several behind a balancer); php-fpm's status goes with the first."""
    names = list(dict.fromkeys(p["name"] for p in pools))
    if len(names) <= 1:
        return [backend_part(config, pools, status, managed)]
    return [
        backend_part(config, [p for p in pools if p["name"] == name], status if i == 0 else None, managed if i == 0 else None)
        for i, name in enumerate(names)
    ]


def backend_part(config: Any, pools: list[dict[str, Any]], status: Optional[dict[str, Any]], managed: Any) -> dict[str, Any]:
    """One backend: its pools' figures summed, php-fpm's status page, the managed php-fpm's restarts."""
    merged = merge_pools(pools)
    name = merged["name"] if merged else ("php-cgi" if config.php.mode == "php-cgi" else "managed php-fpm")
    return {
        "name": name,
        "kind": pools[0].get("kind", config.php.mode) if pools else config.php.mode,
        "pool": merged,
        "php_fpm": status,
        "php_fpm_restarts": managed.restarts if managed is not None else None,
    }


class AdminResource(Resource):
    """The four endpoints; anything else is 404."""

    isLeaf = True
    log = Logger()

    def __init__(self, view: View) -> None:
        super().__init__()
        self.view = view

    def render_GET(self, request: server.Request) -> Any:  # noqa: N802 - Twisted's name
        path = request.path
        if path == b"/healthz":
            return self._text(request, 200, b"ok\n")
        if path == b"/readyz":
            self._answer(request, self.view.ready(), self._readyz)
        elif path == b"/metrics":
            self._answer(request, self.view.snapshot(), self._metrics)
        elif path == b"/status":
            self._answer(request, self.view.snapshot(), self._status)
        else:
            return self._text(request, 404, b"not found\n")
        return server.NOT_DONE_YET

    render_HEAD = render_GET

    def _text(self, request: server.Request, code: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8") -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", content_type)
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-length", b"%d" % len(body))
        return body

    def _answer(self, request: server.Request, d: "Deferred[Any]", render: Callable[[server.Request, Any], bytes]) -> None:
        finished: list[Any] = []

        def gone(result: Any) -> None:
            finished.append(result)

        request.notifyFinish().addBoth(gone)

        def write(result: Any) -> None:
            if finished:
                return
            body = render(request, result)
            request.write(body)
            request.finish()

        def failed(failure: Any) -> None:
            self.log.failure("admin request {path} failed", failure, path=request.path)
            if not finished:
                request.write(self._text(request, 500, b"internal error\n"))
                request.finish()

        d.addCallback(write).addErrback(failed)

    def _readyz(self, request: server.Request, result: "tuple[bool, str]") -> bytes:
        ok, why = result
        return self._text(request, 200 if ok else 503, (why + "\n").encode())

    def _metrics(self, request: server.Request, snapshot: dict[str, Any]) -> bytes:
        return self._text(request, 200, generate_latest(registry_for(snapshot)), CONTENT_TYPE_LATEST.encode())

    def _status(self, request: server.Request, snapshot: dict[str, Any]) -> bytes:
        accept = request.getHeader(b"accept") or b""
        if b"text/html" in accept:
            return self._text(request, 200, render_status_html(snapshot).encode(), b"text/html; charset=utf-8")
        return self._text(request, 200, json.dumps(snapshot, indent=1, sort_keys=True).encode() + b"\n", b"application/json")


class AdminSite(server.Site):
    """The admin listener's Site: quiet (no access log through the global log)."""

    noisy = False

    def __init__(self, view: View, reactor: Any = None) -> None:
        kwargs = {"reactor": reactor} if reactor is not None else {}
        super().__init__(AdminResource(view), **kwargs)

    def log(self, request: Any) -> None:
        pass


# -- the HTML page ---------------------------------------------------------------------------------


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.2em 0 .4em}
table{border-collapse:collapse;margin:.3em 0 1em}td,th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}
.bar{display:inline-block;width:12em;height:.9em;background:#e3e3e3;vertical-align:middle;border-radius:2px}
.bar>span{display:block;height:100%;border-radius:2px}.bar.busy>span{background:#3778c2}.bar.queue>span{background:#d9822b}
.meta{color:#666}
"""


def _bar(kind: str, value: int, of: int, title: str) -> str:
    width = 0.0 if of <= 0 else min(100.0, 100.0 * value / of)
    return f'<span class="bar {kind}" title="{html.escape(title)}"><span style="width:{width:.1f}%"></span></span>'


def _total(site: Optional[dict[str, Any]]) -> int:
    return sum(row[3] for row in site["requests"]) if site else 0


def render_status_html(snapshot: dict[str, Any]) -> str:
    """The status page: the server, each serving process, each backend (busy connections and the queue as bars)."""
    e = html.escape
    server = snapshot["server"]
    rows = []
    for p in snapshot["processes"]:
        pools = p.get("pools", [])
        busy = sum(x["busy"] for x in pools)
        size = sum(x["size"] for x in pools)
        waiting = sum(x["waiting"] for x in pools)
        rows.append(
            f'<tr class="process"><td>{e(str(p["index"]))}</td><td>{e(str(p.get("pid") or "-"))}</td>'
            f'<td class="requests">{_total(p.get("site"))}</td><td>{p.get("in_flight", 0)}</td><td>{p.get("connections", 0)}</td>'
            f'<td class="busy">{busy} / {size} {_bar("busy", busy, size, "busy connections")}</td>'
            f'<td class="queue">{waiting} {_bar("queue", waiting, max(size, 1), "waiting requests")}</td></tr>'
        )
    backends = []
    for b in snapshot["backends"]:
        pool = b.get("pool") or {}
        fpm = b.get("php_fpm") or {}
        size = pool.get("size", 0)
        busy = pool.get("busy", 0)
        waiting = pool.get("waiting", 0)
        errors = pool.get("errors", {})
        total = fpm.get("total processes", 0)
        active = fpm.get("active processes", 0)
        backends.append(
            f'<tr class="backend"><td>{e(b["name"])}</td><td>{e(b["kind"])}</td>'
            f'<td class="busy">{busy} / {size} {_bar("busy", busy, size, "busy connections")}</td>'
            f'<td class="queue">{waiting} {_bar("queue", waiting, max(size, 1), "waiting requests")}</td>'
            f'<td>{pool.get("idle", 0)}</td>'
            f'<td>{errors.get("502", 0)} / {errors.get("503", 0)} / {errors.get("504", 0)}</td>'
            f'<td class="fpm">{active} / {total} {_bar("busy", active, total, "php-fpm active children")}</td>'
            f'<td>{fpm.get("listen queue", "-")}</td><td>{fpm.get("max children reached", "-")}</td>'
            f'<td>{b.get("php_fpm_restarts") if b.get("php_fpm_restarts") is not None else "-"}</td></tr>'
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>fephp status</title><style>{_CSS}</style></head><body>
<h1>fephp {e(server["version"])}</h1>
<p class="meta">pid {server["pid"]}, up <span id="uptime">{server["uptime_seconds"]:.0f}</span> s, {e(server["mode"])},
config {e(server["config_file"])} (sha256 {e((server.get("config_sha256") or "-")[:12])}), reloads {server.get("reloads", 0)};
this page refreshes every {REFRESH_SECONDS} s</p>
<h2>Processes</h2>
<table id="processes"><tr><th>worker</th><th>pid</th><th>requests</th><th>in flight</th><th>connections</th><th>busy connections</th><th>queue</th></tr>
{"".join(rows)}</table>
<h2>Backends</h2>
<table id="backends"><tr><th>backend</th><th>kind</th><th>busy connections</th><th>queue</th><th>idle</th><th>502 / 503 / 504</th>
<th>php-fpm active / total</th><th>listen queue</th><th>max children reached</th><th>restarts</th></tr>
{"".join(backends)}</table>
</body></html>
"""

