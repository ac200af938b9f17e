"""From a validated Config to running parts: php-fpm, the backend, the site, one serving process.

The one place that reads the configuration to build objects, used alike by
the server as it starts and reloads (:mod:`fephp.server.running`) and by
each worker process of ``server.workers`` (:func:`build_front` over the
sockets it inherited).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Callable, Mapping, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.threads import deferToThreadPool

from ..backend.balancer import BackendConfig, Balancer
from ..backend.endpoints import parse_client_endpoint
from ..backend.interface import Backend
from ..backend.phpcgi import PHPCGIBackend
from ..backend.pool import FastCGIPool
from ..backend.mixed import MixedBackend
from ..backend.workers import WorkerBackend
from ..cgi.multipart import MultipartLimits
from ..cgi.realip import RealIP, parse_trusted
from ..cgi.routing import Router
from ..cgi.rules import RuleSet
from ..process.binaries import find_php
from ..process.fpmconfig import PING_PATH, STATUS_PATH
from ..process.phpfpm import ManagedPHPFPM, ManagedPool, PHPFPMError, pool_socket_name
from ..web.app import PHPApp, check_bcrypt
from ..web.compress import Compression
from ..web.figures import SiteFigures
from ..web.hints import EarlyHints
from ..web.hosts import HostDispatch, HostMap, VirtualSite
from ..web.sendfile import SendfileRoots
from ..web.site import FrontSite
from .admin import FPM_TIMEOUT, PHPFPMStatus
from .config import Config
from ..acme import TlsAlpnResponder
from .listeners import SNIMap
from .settings import SiteConfig, site_configs
from .service import FrontService
from .workers import (
    connections_per_worker,
)

__all__ = [
    "admin_spare_children",
    "backend_specs",
    "balancer_keeps",
    "build_backend",
    "build_balancer",
    "build_compression",
    "build_fpm_status",
    "build_front",
    "build_managed_php_fpm",
    "build_site",
    "build_worker_backend",
    "worker_argv",
    "build_sites",
    "build_sni",
    "tls_protocols",
    "managed_pools",
    "needs_managed",
    "managed_settings",
    "pool_settings",
    "site_view",
    "SiteBackends",
]


def admin_spare_children(config: Config) -> int:
    """php-fpm children kept for the admin side's own connection (status page, ping): one with an admin listener."""
    return 1 if config.admin.listen else 0


def managed_settings(config: Config) -> tuple[Any, ...]:
    """What the managed php-fpm is made from: a reload that changes any of it starts a new one."""
    php = config.php
    if config.sites:
        return ("sites", managed_binary(config), tuple(managed_pools(config)), config.server.workers)
    return (php.mode, php.php_fpm_binary, php.worker_pool_size, php.max_requests, tuple(sorted(php.ini.items())),
            config.server.workers, admin_spare_children(config))


def site_view(config: Config, site: SiteConfig) -> Config:
    """*config* as if *site* were its only one: its root, php, static and compression at the top level.

    What builds one site's backend and app reads the top level; a view lets
    the same functions build each of several.
    """
    server = replace(
        config.server, root=site.root, index=site.index, front_controller=site.front_controller, deny=site.deny,
        server_name=site.server_name, x_sendfile_roots=site.x_sendfile_roots, early_hints=site.early_hints,
        early_hints_max_routes=site.early_hints_max_routes,
    )
    return replace(config, server=server, php=site.php, static=site.static, compression=site.compression,
                   rules=site.rules, sites=())


def managed_pools(config: Config, workers: int = 1) -> "list[ManagedPool]":
    """The managed php-fpm's pools of ``sites``: one for each site whose PHP is the managed pool, in the file's order.

    With *workers* processes, a pool's children are the workers' connections
    together (each at least one); the first pool also keeps one for the
    admin side's status and ping.
    """
    pools: list[ManagedPool] = []
    for site in config.sites:
        php = site.php
        if php.mode != "managed" or php.workers_only:
            continue
        children = connections_per_worker(php.worker_pool_size, workers) * workers
        if not pools:
            children += admin_spare_children(config)
        pools.append(ManagedPool(site.name, children, php.max_requests, dict(sorted(php.ini.items())),
                                 php.user, php.group))
    return pools


def needs_managed(config: Config) -> bool:
    """Whether *config* runs the managed php-fpm: its PHP, or any site's, is the managed mode."""
    return any(site.php.mode == "managed" and not site.php.workers_only for site in site_configs(config))


def managed_binary(config: Config) -> Optional[str]:
    """The php-fpm binary of the managed pools: the first managed site's ``php.php_fpm_binary``."""
    for site in site_configs(config):
        if site.php.mode == "managed":
            return site.php.php_fpm_binary
    return config.php.php_fpm_binary


def pool_settings(config: Config) -> tuple[Any, ...]:
    """What a backend is made from: a reload that changes any of it builds a new pool."""
    return (managed_settings(config), config.php, config.timeouts)


def build_managed_php_fpm(config: Config, reactor: Any, *, children: Optional[int] = None) -> ManagedPHPFPM:
    """The php-fpm fephp runs itself (``php.fpm_socket`` unset), with *children* (default: the pool size, plus the admin side's).

    With ``sites``, one master with a pool for each site of the managed
    mode (:func:`managed_pools`, the ``server.workers`` processes sharing each).
    """
    php = config.php
    binary = managed_binary(config) or find_php("php-fpm")
    if binary is None:
        raise PHPFPMError("no php-fpm binary found; set php.php_fpm_binary")
    return ManagedPHPFPM(
        reactor,
        binary=binary,
        children=children or php.worker_pool_size + admin_spare_children(config),
        max_requests=php.max_requests,
        ini=php.ini,
        pools=managed_pools(config, config.server.workers) if config.sites else None,
    )


def build_backend(
    config: Config,
    reactor: Any,
    *,
    fpm_socket_path: Optional[str] = None,
    pool_size: Optional[int] = None,
    workers: int = 1,
) -> "tuple[Backend, Optional[ManagedPHPFPM]]":
    """The PHP backend for *config*, and the managed php-fpm it needs (or None).

    *fpm_socket_path* is the socket of a php-fpm managed by someone else (a
    worker's parent): the pool connects to it and starts nothing.
    *pool_size* overrides ``php.worker_pool_size`` (a worker's share).
    *workers* is ``server.workers`` in a worker process: each of several
    backends gets that share of its ``pool_size`` in this process.
    """
    php = config.php
    timeouts = config.timeouts
    managed = None
    if php.workers_only:
        return build_worker_backend(config, reactor), None
    if php.worker is not None:
        # php.worker.match: php-fpm (or php-cgi) for the rest of the site, the workers for the matched paths.
        rest, managed = build_backend(replace(config, php=replace(php, worker=None)), reactor,
                                      fpm_socket_path=fpm_socket_path, pool_size=pool_size, workers=workers)
        return MixedBackend(rest, build_worker_backend(config, reactor)), managed
    if not php.use_fpm:
        binary = php.php_cgi_binary or find_php("php-cgi") or "php-cgi"  # a missing one fails each request with 502
        return PHPCGIBackend(reactor, binary, ini=dict(php.ini), timeout=timeouts.response), None
    if php.backends or (php.fpm_socket and php.ping_path):
        # A single pool pinged is a balancer of one: a hung php-fpm is taken
        # out, and requests fail after connect_timeout instead of hanging.
        return build_balancer(config, reactor, workers=workers), None
    if php.fpm_socket:
        endpoint = parse_client_endpoint(reactor, php.fpm_socket)
        name = php.fpm_socket
    else:
        if fpm_socket_path is None:
            managed = build_managed_php_fpm(config, reactor)
            fpm_socket_path = managed.socket_path
        endpoint = UNIXClientEndpoint(reactor, fpm_socket_path)
        name = "managed php-fpm"
    pool = FastCGIPool(
        endpoint,
        clock=reactor,
        size=pool_size or php.worker_pool_size,
        queue_size=php.queue_size,
        connect_timeout=timeouts.connect,
        response_timeout=timeouts.response,
        idle_timeout=timeouts.idle,
        queue_timeout=timeouts.queue,
        name=name,
    )
    return pool, managed


def worker_argv(config: Config) -> "list[str]":
    """What runs one PHP worker: the php binary, ``php.ini`` as ``-d`` settings, the command's arguments, the script."""
    worker = config.php.worker
    assert worker is not None
    binary, *args = worker.command
    ini = [f"-d{key}={value}" for key, value in sorted(config.php.ini.items())]
    return [binary, *ini, *args, worker.script]


def build_worker_backend(config: Config, reactor: Any) -> WorkerBackend:
    """The PHP workers of ``php.worker``, spawned once the reactor runs.

    Their environment is ``php.worker.env`` over PATH and the two variables
    RoadRunner's PHP packages read to pick the HTTP worker over pipes;
    nothing else of fephp's own environment is passed on.
    """
    worker = config.php.worker
    assert worker is not None
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "RR_MODE": "http", "RR_RELAY": "pipes"}
    env.update(worker.env)
    return WorkerBackend(
        reactor,
        worker_argv(config),
        env=env,
        cwd=os.path.dirname(worker.script),
        count=worker.count,
        max_jobs=worker.max_jobs,
        max_memory=worker.max_memory,
        ttl=worker.ttl,
        idle_ttl=worker.idle_ttl,
        exec_timeout=worker.exec_timeout,
        boot_timeout=worker.exec_timeout,
        max_consecutive_failures=worker.max_consecutive_failures,
        queue_size=config.php.queue_size,
        queue_timeout=config.timeouts.queue,
        upload_dir=worker.upload_dir,
        form_limits=MultipartLimits(
            max_parts=worker.max_form_parts,
            max_header_size=worker.max_form_header_size,
            max_field_size=worker.max_form_field_size,
        ),
    )


def build_balancer(config: Config, reactor: Any, *, workers: int = 1) -> Balancer:
    """The balancer over every external php-fpm of ``php``, each pool this process's share of its ``pool_size``."""
    php = config.php
    timeouts = config.timeouts

    def make_pool(backend: BackendConfig) -> FastCGIPool:
        return FastCGIPool(
            parse_client_endpoint(reactor, backend.address),
            clock=reactor,
            size=backend.pool_size,
            connect_timeout=timeouts.connect,
            response_timeout=timeouts.response,
            idle_timeout=timeouts.idle,
            name=backend.address,
        )

    return Balancer(
        backend_specs(config, workers),
        make_pool,
        clock=reactor,
        queue_size=php.queue_size,
        queue_timeout=timeouts.queue,
        connect_timeout=timeouts.connect,
        session_cookie=php.session_cookie if php.session_affinity else None,
        ping_path=php.ping_path,
        ping_interval=php.ping_interval,
        ping_timeout=timeouts.ping,
    )


def backend_specs(config: Config, workers: int = 1) -> "list[BackendConfig]":
    """The balancer's backends for *config*: with *workers* processes, each holds its share of every pool.

    The configured backends with ``pool_size`` this process's connections:
    a kept connection pins a php-fpm child, so the workers together hold at
    most ``pool_size`` connections to a backend (at least one each).
    """
    return [
        replace(b, pool_size=connections_per_worker(b.pool_size, workers))
        for b in config.php.external_backends
    ]


def balancer_keeps(backend: Backend, old: Config, new: Config) -> bool:
    """Whether a reload from *old* to *new* keeps *backend*, a balancer, and only tells it the new backend list.

    So a reload that adds, drains or removes a php-fpm host keeps the
    connections to the others and what the balancer knows of their health;
    any other change to ``php`` or ``timeouts`` builds a new one.
    """
    if not isinstance(backend, Balancer) or not (new.php.backends or (new.php.fpm_socket and new.php.ping_path)):
        return False
    unlisted = {"fpm_socket": None, "backends": ()}
    return (
        replace(old.php, **unlisted) == replace(new.php, **unlisted)  # type: ignore[arg-type]
        and old.timeouts == new.timeouts
        and old.server.workers == new.server.workers
    )


def build_compression(config: Config) -> Optional[Compression]:
    """The response compression policy of ``compression``, or None when it is off."""
    c = config.compression
    if not c.enabled:
        return None
    return Compression(
        algorithms=c.algorithms,
        min_size=c.min_size,
        levels={"gzip": c.gzip_level, "br": c.brotli_level, "zstd": c.zstd_level},
        types=c.types,
        precompressed=c.precompressed,
    )


def build_site(config: Config, reactor: Any, backend: Backend) -> "tuple[PHPApp, FrontSite]":
    """The application and the Site that serves it over *backend*."""
    app = build_app(config, reactor, backend)
    return app, build_front_site(config, reactor, app)


def build_app(config: Config, reactor: Any, backend: Backend) -> PHPApp:
    """The application of *config*'s top level (one site) over *backend*."""
    server = config.server
    router = Router(
        root=server.root,
        index=tuple(server.index),
        front_controller=server.front_controller,
        deny=tuple(server.deny),
        worker_match=config.php.worker.match if isinstance(backend, MixedBackend) and config.php.worker else (),
    )
    app = PHPApp(
        router=router,
        backend=backend,
        server_software=server.server_software,
        server_name=server.server_name,
        static_cache=config.static.cache,
        memory_cache_size=config.static.memory_cache_size,
        sendfile=SendfileRoots(server.x_sendfile_roots) if server.x_sendfile_roots else None,
        early_hints=EarlyHints(server.early_hints_max_routes) if server.early_hints else None,
        rules=RuleSet(config.rules, clock=reactor.seconds, check_password=check_bcrypt) if config.rules else None,
        in_thread=lambda call: deferToThreadPool(reactor, reactor.getThreadPool(), call),
        workers=backend.workers if isinstance(backend, MixedBackend) else None,
        worker_script=config.php.worker.script if config.php.worker else "",
    )
    return app


def build_front_site(config: Config, reactor: Any, resource: Any) -> FrontSite:
    """The Site serving *resource* (one app, or the HostDispatch of several) with *config*'s limits and logs."""
    server = config.server
    logging = config.logging
    site = FrontSite(
        resource,
        access_log=logging.access_log,
        access_log_format=logging.access_log_format,
        access_log_duration=logging.access_log_duration,
        secret_query=logging.secret_query,
        # Counting costs a little per request: only when someone can read it.
        figures=SiteFigures() if config.admin.listen else None,
        max_body_size=config.limits.max_body_size,
        max_header_size=config.limits.max_header_size,
        timeout=config.timeouts.keepalive,
        client_header_timeout=config.timeouts.client_header,
        client_body_timeout=config.timeouts.client_body,
        client_send_timeout=config.timeouts.client_send,
        reactor=reactor,
        http2=server.http2,
        real_ip=RealIP(tuple(parse_trusted(t) for t in server.trusted_proxies), server.real_ip_header)
        if server.trusted_proxies
        else None,
        # Several sites: each has its own (VirtualSite.compression).
        compression=build_compression(config) if not config.sites else None,
    )
    return site


class SiteBackends:
    """The backends of several sites as one, for what closes or shows them all (the service, the admin side).

    Each site's app holds its own backend; this only closes and drains them
    together.  :meth:`keep` takes out the ones a reload hands on to the next
    configuration, so that the retiring set drains only the others.
    """

    def __init__(self, by_site: Mapping[str, Backend]) -> None:
        self.by_site = dict(by_site)

    def keep(self, kept: "list[Backend]") -> None:
        self.by_site = {name: b for name, b in self.by_site.items() if all(b is not k for k in kept)}

    def _distinct(self) -> "list[Backend]":
        seen: list[Backend] = []
        for backend in self.by_site.values():
            if all(backend is not s for s in seen):
                seen.append(backend)
        return seen

    def close(self) -> "Deferred[None]":
        return DeferredList([b.close() for b in self._distinct()]).addCallback(lambda _: None)

    def drain(self) -> "Deferred[None]":
        return DeferredList([
            b.drain() if hasattr(b, "drain") else b.close() for b in self._distinct()  # type: ignore[attr-defined]
        ]).addCallback(lambda _: None)


def build_site_backends(
    config: Config,
    reactor: Any,
    *,
    managed: Optional[ManagedPHPFPM] = None,
    fpm_socket_path: Optional[str] = None,
    workers: int = 1,
    keep: Optional[Callable[[SiteConfig], Optional[Backend]]] = None,
) -> "dict[str, Backend]":
    """Each site's backend, by name: its external pool or balancer, its pool of the managed php-fpm, or php-cgi.

    The managed pools' sockets are *managed*'s, or (in a worker process)
    beside *fpm_socket_path*, the first pool's.  *keep* gives a running
    backend a reload hands on (or None to build one).
    """
    backends: dict[str, Backend] = {}
    for site in config.sites:
        kept = keep(site) if keep is not None else None
        if kept is not None:
            backends[site.name] = kept
            continue
        path = None
        if site.php.mode == "managed":
            if managed is not None:
                path = managed.socket_for(site.name)
            elif fpm_socket_path is not None:
                path = os.path.join(os.path.dirname(fpm_socket_path), pool_socket_name(site.name))
        view = site_view(config, site)
        pool_size = connections_per_worker(site.php.worker_pool_size, workers) if workers > 1 else None
        backend, _ = build_backend(view, reactor, fpm_socket_path=path, pool_size=pool_size, workers=workers)
        backends[site.name] = backend
    return backends


def build_sites(config: Config, reactor: Any, backends: Mapping[str, Backend]) -> "tuple[HostDispatch, FrontSite]":
    """The sites of ``sites`` behind one FrontSite: each its own app over its backend, the Host choosing."""
    sites = []
    default = None
    for site in config.sites:
        view = site_view(config, site)
        app = build_app(view, reactor, backends[site.name])
        virtual = VirtualSite(site.name, app, compression=build_compression(view), access_log=site.access_log,
                              figures=SiteFigures() if config.admin.listen else None)
        sites.append(virtual)
        if site.default:
            default = virtual
    hosts = HostMap([(s.hosts, v) for s, v in zip(config.sites, sites)], default)
    dispatch = HostDispatch(sites, hosts, unknown_status=config.server.unknown_host,
                            server_software=config.server.server_software)
    front = build_front_site(config, reactor, dispatch)
    dispatch.bind(front)
    front.virtual_sites = sites
    return dispatch, front


def build_sni(
    config: Config,
    alpn: Optional[TlsAlpnResponder] = None,
    on_demand: Optional[Callable[[str, str], object]] = None,
) -> Optional[SNIMap]:
    """The sites' certificates for the ``ssl:`` listeners, or None when no site has ``tls``; with *alpn*, each
    context answers TLS-ALPN-01 (sites with ``tls.acme``); *on_demand* is told the names on-demand sites see."""
    if not any(site.tls is not None for site in config.sites):
        return None
    return SNIMap(config.sites, tls_protocols(config), alpn=alpn, on_demand=on_demand)


def tls_protocols(config: Config) -> "list[bytes]":
    """What the ``ssl:`` listeners offer by ALPN, the preferred first."""
    return [b"h2", b"http/1.1"] if config.server.http2 else [b"http/1.1"]


def build_front(
    config: Config,
    reactor: Any,
    listen: Callable[[FrontSite], "list[Service]"],
    *,
    fpm_socket_path: Optional[str] = None,
    pool_size: Optional[int] = None,
    workers: int = 1,
) -> FrontService:
    """One serving process: backend, site and listeners, with php-fpm if it is fephp's to run here.

    *listen* turns the site into listener services: ``listen(site)`` returns
    them (the configured endpoints in the single process, the inherited
    sockets in a worker).
    """
    app: Any
    backend: Any
    if config.sites:
        managed = None
        if fpm_socket_path is None and needs_managed(config):
            managed = build_managed_php_fpm(config, reactor)
        backend = SiteBackends(build_site_backends(
            config, reactor, managed=managed, fpm_socket_path=fpm_socket_path, workers=workers
        ))
        app, site = build_sites(config, reactor, backend.by_site)
    else:
        backend, managed = build_backend(
            config, reactor, fpm_socket_path=fpm_socket_path, pool_size=pool_size, workers=workers
        )
        app, site = build_site(config, reactor, backend)
    return FrontService(
        app=app,
        site=site,
        backend=backend,
        listeners=list(listen(site)),
        clock=reactor,
        shutdown_grace=config.server.shutdown_grace,
        php_fpm=managed,
    )


def build_fpm_status(config: Config, reactor: Any, socket_path: Optional[str]) -> Optional[PHPFPMStatus]:
    """The admin side's own way to php-fpm's status page and ping, or None (php-cgi, or no admin listener).

    With ``sites``, the first site's php-fpm (its pool of the managed one,
    the first of *socket_path*'s run directory).
    """
    if config.sites:
        config = site_view(config, config.sites[0])
    php = config.php
    if not config.admin.listen or php.mode == "php-cgi" or php.workers_only:
        return None
    if php.backends:
        # Several php-fpm: the admin side asks whichever is in service (one connection to each).
        def admin_pool(backend: BackendConfig) -> FastCGIPool:
            return FastCGIPool(
                parse_client_endpoint(reactor, backend.address), clock=reactor, size=1,
                connect_timeout=min(config.timeouts.connect, FPM_TIMEOUT), response_timeout=FPM_TIMEOUT,
                idle_timeout=config.timeouts.idle, name=f"{backend.address} (admin)",
            )

        balancer = Balancer(
            [replace(b, weight=1, pool_size=1) for b in php.backends], admin_pool, clock=reactor,
            queue_size=16, queue_timeout=FPM_TIMEOUT, connect_timeout=min(config.timeouts.connect, FPM_TIMEOUT),
        )
        return PHPFPMStatus(balancer, status_path=php.status_path, ping_path=php.ping_path, clock=reactor)
    if php.mode == "external":
        assert php.fpm_socket is not None
        endpoint = parse_client_endpoint(reactor, php.fpm_socket)
        name, status_path, ping_path = php.fpm_socket, php.status_path, php.ping_path
    else:
        assert socket_path is not None
        endpoint = UNIXClientEndpoint(reactor, socket_path)
        name, status_path, ping_path = "managed php-fpm", STATUS_PATH, PING_PATH
    pool = FastCGIPool(
        endpoint,
        clock=reactor,
        size=1,
        queue_size=16,
        connect_timeout=min(config.timeouts.connect, FPM_TIMEOUT),
        response_timeout=FPM_TIMEOUT,
        idle_timeout=config.timeouts.idle,
        queue_timeout=FPM_TIMEOUT,
        name=f"{name} (admin)",
    )
    return PHPFPMStatus(pool, status_path=status_path, ping_path=ping_path, clock=reactor)
