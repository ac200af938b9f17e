"""From a validated Config to running parts: the backend, the site, the whole service.

The one place that reads the configuration to build objects, used alike by
the single process (:func:`build_server` from ``twistd fephp``) and by each
worker process of ``server.workers`` (:func:`build_front` over the sockets
it inherited).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet.endpoints import UNIXClientEndpoint, serverFromString

from .._twisted import raise_listen_errors
from ..backend.balancer import BackendSpec, Balancer
from ..backend.endpoints import parse_client_endpoint
from ..backend.interface import Backend
from ..backend.phpcgi import PHPCGIBackend
from ..backend.pool import FastCGIPool
from ..cgi.realip import RealIP, parse_trusted
from ..cgi.routing import Router
from ..process.binaries import find_php
from ..process.phpfpm import ManagedPHPFPM, PHPFPMError
from ..web.app import PHPApp
from ..web.compress import Compression
from ..web.figures import SiteFigures
from ..web.hints import EarlyHints
from ..web.sendfile import SendfileRoots
from ..web.site import FrontSite
from .config import Config
from .service import FrontService
from .workers import (
    FIRST_LISTEN_FD,
    SharedListener,
    WorkersService,
    WorkerSupervisor,
    connections_per_worker,
)

__all__ = [
    "backend_specs",
    "build_backend",
    "build_balancer",
    "build_compression",
    "build_front",
    "build_managed_php_fpm",
    "build_server",
    "build_site",
]


def build_managed_php_fpm(config: Config, reactor: Any, *, children: Optional[int] = None) -> ManagedPHPFPM:
    """The php-fpm fephp runs itself (``php.fpm_socket`` unset), with *children* (default: the pool size)."""
    php = config.php
    binary = php.php_fpm_binary or find_php("php-fpm")
    if binary is None:
        raise PHPFPMError("no php-fpm binary found; set php.php_fpm_binary")
    return ManagedPHPFPM(
        reactor,
        binary=binary,
        children=children or php.worker_pool_size,
        max_requests=php.max_requests,
        ini=php.ini,
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


def build_balancer(config: Config, reactor: Any, *, workers: int = 1) -> Balancer:
    """The balancer over every external php-fpm of ``php``, each pool this process's share of its ``pool_size``."""
    php = config.php
    timeouts = config.timeouts

    def make_pool(spec: BackendSpec) -> FastCGIPool:
        return FastCGIPool(
            parse_client_endpoint(reactor, spec.address),
            clock=reactor,
            size=spec.pool_size,
            connect_timeout=timeouts.connect,
            response_timeout=timeouts.response,
            idle_timeout=timeouts.idle,
            name=spec.address,
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


def backend_specs(config: Config, workers: int = 1) -> "list[BackendSpec]":
    """The balancer's backends for *config*: with *workers* processes, each holds its share of every pool.

    A kept connection pins a php-fpm child, so the workers together hold at
    most ``pool_size`` connections to a backend (at least one each).
    """
    return [
        BackendSpec(b.address, b.weight, connections_per_worker(b.pool_size, workers), b.drain)
        for b in config.php.external_backends
    ]


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
    server = config.server
    router = Router(
        root=server.root,
        index=tuple(server.index),
        front_controller=server.front_controller,
        deny=tuple(server.deny),
    )
    app = PHPApp(
        router=router,
        backend=backend,
        server_software=server.server_software,
        server_name=server.server_name,
        static_cache=config.static.cache,
        sendfile=SendfileRoots(server.x_sendfile_roots) if server.x_sendfile_roots else None,
        early_hints=EarlyHints(server.early_hints_max_routes) if server.early_hints else None,
    )
    logging = config.logging
    site = FrontSite(
        app,
        access_log=logging.access_log,
        access_log_format=logging.access_log_format,
        access_log_duration=logging.access_log_duration,
        secret_query=logging.secret_query,
        # Counting costs a little per request: only when someone can read it.
        figures=SiteFigures() if config.admin.listen else None,
        max_body_size=config.limits.max_body_size,
        max_header_size=config.limits.max_header_size,
        reactor=reactor,
        http2=server.http2,
        real_ip=RealIP(tuple(parse_trusted(t) for t in server.trusted_proxies), server.real_ip_header)
        if server.trusted_proxies
        else None,
        compression=build_compression(config),
    )
    return app, site


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


def build_server(config: Config, config_text: str, reactor: Any) -> Service:
    """The whole server for *config*: one serving process, or the parent of ``server.workers`` processes."""
    if config.server.workers > 1:
        return _build_workers_parent(config, config_text, reactor)

    def listeners(site: FrontSite) -> list[Service]:
        # A port that cannot be bound stops twistd with the error, instead
        # of a server that runs and serves nothing.
        return [
            raise_listen_errors(StreamServerEndpointService(serverFromString(reactor, description), site))
            for description in config.server.listen
        ]

    return build_front(config, reactor, listeners)


def _build_workers_parent(config: Config, config_text: str, reactor: Any) -> WorkersService:
    """The parent of ``server.workers`` processes: shared listeners, php-fpm for all, the supervisor."""
    workers = config.server.workers
    per_worker = connections_per_worker(config.php.worker_pool_size, workers)
    # As many php-fpm children as the workers' connections together.
    managed = build_managed_php_fpm(config, reactor, children=per_worker * workers) if config.php.mode == "managed" else None
    listeners = [SharedListener(reactor, description) for description in config.server.listen]

    def argv(index: int) -> list[str]:
        args = [
            sys.executable, "-m", "fephp.server.worker",
            "--config", config.source,
            "--index", str(index),
            "--workers", str(workers),
            "--parent", str(os.getpid()),
        ]
        for i, listener in enumerate(listeners):
            args += ["--listen", f"{FIRST_LISTEN_FD + i}:{listener.family}"]
        if managed is not None:
            args += ["--fpm-socket", managed.socket_path]
        return args

    # Not systemd's variables: a worker is not the unit's main process.
    env = {k: v for k, v in os.environ.items() if k not in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET")}
    supervisor = WorkerSupervisor(
        reactor,
        count=workers,
        argv=argv,
        config_text=config_text,
        listeners=listeners,
        env=env,
        stop_grace=config.server.shutdown_grace + 5.0,
    )
    return WorkersService(listeners, supervisor, managed)
