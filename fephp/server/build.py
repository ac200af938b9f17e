"""From a validated Config to running parts: the backend, the site, the whole service.

The one place that reads the configuration to build objects, used alike by
the single process (:func:`build_server` from ``twistd fephp``) and by each
worker process of ``server.workers`` (:func:`build_front` over the sockets
it inherited).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
import time
from typing import Any, Callable, Optional

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, succeed
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.logger import Logger

from ..backend.balancer import BackendSpec, Balancer
from ..backend.endpoints import parse_client_endpoint
from ..backend.interface import Backend
from ..backend.phpcgi import PHPCGIBackend
from ..backend.pool import FastCGIPool
from ..cgi.realip import RealIP, parse_trusted
from ..cgi.routing import Router
from ..process.binaries import find_php
from ..process.fpmconfig import PING_PATH, STATUS_PATH
from ..process.phpfpm import ManagedPHPFPM, PHPFPMError
from ..web.app import PHPApp
from ..web.compress import Compression
from ..web.figures import SiteFigures
from ..web.hints import EarlyHints
from ..web.sendfile import SendfileRoots
from ..web.site import FrontSite
from .admin import FPM_TIMEOUT, AdminSite, LocalView, PHPFPMStatus, backends_part, server_part
from .config import Config, ConfigError, load_config
from .listeners import Listener
from .service import FrontService, adopt, release
from .workers import (
    FIRST_LISTEN_FD,
    SharedListener,
    WorkersService,
    WorkerSupervisor,
    connections_per_worker,
)

__all__ = [
    "ParentServer",
    "SingleServer",
    "backend_specs",
    "balancer_keeps",
    "build_backend",
    "build_balancer",
    "build_compression",
    "build_fpm_status",
    "build_front",
    "build_managed_php_fpm",
    "build_server",
    "build_site",
]


def admin_spare_children(config: Config) -> int:
    """php-fpm children kept for the admin side's own connection (status page, ping): one with an admin listener."""
    return 1 if config.admin.listen else 0


def managed_settings(config: Config) -> tuple[Any, ...]:
    """What the managed php-fpm is made from: a reload that changes any of it starts a new one."""
    php = config.php
    return (php.mode, php.php_fpm_binary, php.worker_pool_size, php.max_requests, tuple(sorted(php.ini.items())),
            config.server.workers, admin_spare_children(config))


def pool_settings(config: Config) -> tuple[Any, ...]:
    """What a backend is made from: a reload that changes any of it builds a new pool."""
    return (managed_settings(config), config.php, config.timeouts)


def build_managed_php_fpm(config: Config, reactor: Any, *, children: Optional[int] = None) -> ManagedPHPFPM:
    """The php-fpm fephp runs itself (``php.fpm_socket`` unset), with *children* (default: the pool size, plus the admin side's)."""
    php = config.php
    binary = php.php_fpm_binary or find_php("php-fpm")
    if binary is None:
        raise PHPFPMError("no php-fpm binary found; set php.php_fpm_binary")
    return ManagedPHPFPM(
        reactor,
        binary=binary,
        children=children or php.worker_pool_size + admin_spare_children(config),
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
        memory_cache_size=config.static.memory_cache_size,
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
        timeout=config.timeouts.keepalive,
        client_header_timeout=config.timeouts.client_header,
        client_body_timeout=config.timeouts.client_body,
        client_send_timeout=config.timeouts.client_send,
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


def build_fpm_status(config: Config, reactor: Any, socket_path: Optional[str]) -> Optional[PHPFPMStatus]:
    """The admin side's own way to php-fpm's status page and ping, or None (php-cgi, or no admin listener)."""
    php = config.php
    if not config.admin.listen or php.mode == "php-cgi":
        return None
    if php.backends:
        # Several php-fpm: the admin side asks whichever is in service (one connection to each).
        def admin_pool(spec: BackendSpec) -> FastCGIPool:
            return FastCGIPool(
                parse_client_endpoint(reactor, spec.address), clock=reactor, size=1,
                connect_timeout=min(config.timeouts.connect, FPM_TIMEOUT), response_timeout=FPM_TIMEOUT,
                idle_timeout=config.timeouts.idle, name=f"{spec.address} (admin)",
            )

        balancer = Balancer(
            [BackendSpec(b.address, 1, 1, b.drain) for b in php.backends], admin_pool, clock=reactor,
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


def build_server(config: Config, config_text: Optional[str], reactor: Any) -> Service:
    """The whole server for *config*: one serving process, or the parent of ``server.workers`` processes."""
    if config.server.workers > 1:
        return _build_workers_parent(config, config_text or "", reactor)
    return SingleServer(config, config_text, reactor)


class SingleServer(MultiService):
    """One serving process (a FrontService), its admin listeners, and its reload on SIGHUP.

    :meth:`reload` reads the file again and builds what changed with the
    same functions as at start: a new site always (a new root, routes, log
    settings), a new pool when the php or timeouts settings changed, a new
    managed php-fpm (started and ready before anything switches) when its
    settings changed.  Unchanged listeners keep their sockets; requests in
    flight finish on the old parts, which then close.  A configuration that
    does not load changes nothing.
    """

    log = Logger()

    def __init__(self, config: Config, config_text: Optional[str], reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.config_text = config_text
        self._reactor = reactor
        self.reloads = 0
        self._reloading = False

        def listeners(site: FrontSite) -> list[Service]:
            # A port that cannot be bound stops twistd with the error, instead
            # of a server that runs and serves nothing.
            return [Listener(reactor, description, site) for description in config.server.listen]

        self.front = build_front(config, reactor, listeners)
        self.front.setServiceParent(self)
        self.fpm_status = build_fpm_status(config, reactor, self._managed_socket())
        self.view = LocalView(
            self.front,
            config=lambda: self.config,
            config_text=lambda: self.config_text,
            fpm=lambda: self.fpm_status,
            reloads=lambda: self.reloads,
        )
        self.admin_site = AdminSite(self.view, reactor)
        self.admin: dict[str, Listener] = {}
        for description in config.admin.listen:
            listener = Listener(reactor, description, self.admin_site)
            self.admin[description] = listener
            listener.setServiceParent(self)

    def _managed_socket(self) -> Optional[str]:
        managed = self.front.php_fpm
        return managed.socket_path if isinstance(managed, ManagedPHPFPM) else None

    def stopService(self) -> "Deferred[Any]":  # noqa: N802 - Twisted's name
        d: Deferred[Any] = super().stopService()

        def close_status(result: Any) -> Any:
            return self.fpm_status.close() if self.fpm_status is not None else result

        return d.addBoth(close_status)

    def reopen_logs(self) -> None:
        """SIGUSR1: the access log opens its file anew."""
        self.front.site.reopen_logs()

    def reload(self) -> "Deferred[bool]":
        """SIGHUP: switch to the configuration in the file now, or keep this one; fires with whether it switched."""
        if self._reloading:
            self.log.warn("reload: SIGHUP received while a reload is under way; ignored")
            return succeed(False)
        self._reloading = True
        d: Deferred[bool] = self._reload()

        def done(result: Any) -> Any:
            self._reloading = False
            return result

        return d.addBoth(done)

    @inlineCallbacks
    def _reload(self) -> Any:
        path = self.config.source
        try:
            with open(path, encoding="utf-8") as f:
                text: Optional[str] = f.read()
        except (OSError, UnicodeDecodeError):
            text = None
        try:
            config = load_config(path, text)
        except ConfigError as e:
            self.log.error("reload: the configuration is not valid, keeping the running one: {error}", error=str(e))
            return False
        if config.server.workers > 1:
            self.log.error("reload: server.workers cannot change from 1 without a restart; keeping the running configuration")
            return False
        old = self.config
        reactor = self._reactor
        front = self.front
        managed = front.php_fpm if isinstance(front.php_fpm, ManagedPHPFPM) else None
        new_managed = managed if config.php.mode == "managed" else None
        started: list[Service] = []
        try:
            if config.php.mode == "managed" and (managed is None or managed_settings(config) != managed_settings(old)):
                new_managed = build_managed_php_fpm(config, reactor)
                new_managed.startService()
                started.append(new_managed)
                # The new pool takes requests only once its php-fpm answers.
                yield new_managed.ready()
            retell = balancer_keeps(front.backend, old, config)
            if retell:
                backend = front.backend  # told its new backends below, once nothing can fail
            elif new_managed is not managed or pool_settings(config) != pool_settings(old):
                socket_path = new_managed.socket_path if new_managed is not None else None
                backend, _ = build_backend(config, reactor, fpm_socket_path=socket_path)
            else:
                backend = front.backend
            app, site = build_site(config, reactor, backend)
            current: dict[str, Any] = {getattr(l, "description", ""): l for l in front.listeners}
            listeners: list[Any] = []
            for description in config.server.listen:
                listener = current.get(description)
                if listener is None:
                    listener = Listener(reactor, description, site)
                    listener.startService()  # binds now: a port in use fails the reload here
                    started.append(listener)
                listeners.append(listener)
            admin_new = []
            for description in config.admin.listen:
                if description not in self.admin:
                    listener = Listener(reactor, description, self.admin_site)
                    listener.startService()
                    started.append(listener)
                    admin_new.append(listener)
        except Exception as e:
            self.log.error("reload: {error}; keeping the running configuration", error=str(e) or type(e).__name__)
            for part in reversed(started):
                yield part.stopService()
            return False
        # Nothing can fail from here on: switch.
        for new_admin in admin_new:
            self.admin[new_admin.description] = new_admin
            adopt(self, new_admin)  # running already: joined without a second start
        for description in [d for d in self.admin if d not in config.admin.listen]:
            self.removeService(self.admin.pop(description))  # stops it
        old_status = self.fpm_status
        self.config, self.config_text = config, text
        self.fpm_status = build_fpm_status(config, reactor, new_managed.socket_path if new_managed is not None else None)
        if old_status is not None:
            old_status.close()
        front.shutdown_grace = config.server.shutdown_grace
        if retell:
            assert isinstance(backend, Balancer)
            backend.reconfigure(backend_specs(config))
        self.reloads += 1
        retired = front.swap(app=app, site=site, backend=backend, listeners=listeners, php_fpm=new_managed)
        changed = [name for name in ("server", "php", "timeouts", "limits", "logging", "admin")
                   if getattr(config, name) != getattr(old, name)]
        self.log.info(
            "reload: serving the configuration in {file} ({changed}){fpm}",
            file=path,
            changed=", ".join(changed) + " changed" if changed else "nothing changed",
            fpm="; a new php-fpm took over" if new_managed is not managed else "",
        )
        retired.addErrback(lambda f: self.log.failure("reload: closing the previous configuration's parts", f))
        return True


def _worker_argv(config: Config, listeners: "list[SharedListener]", managed: Optional[ManagedPHPFPM]) -> Callable[[int], list[str]]:
    workers = config.server.workers

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

    return argv


def _build_workers_parent(config: Config, config_text: str, reactor: Any) -> "ParentServer":
    """The parent of ``server.workers`` processes: shared listeners, php-fpm for all, the supervisor."""
    workers = config.server.workers
    per_worker = connections_per_worker(config.php.worker_pool_size, workers)
    # As many php-fpm children as the workers' connections together.
    managed = build_managed_php_fpm(config, reactor, children=per_worker * workers + admin_spare_children(config)) if config.php.mode == "managed" else None
    listeners = [SharedListener(reactor, description) for description in config.server.listen]
    # Not systemd's variables: a worker is not the unit's main process.
    env = {k: v for k, v in os.environ.items() if k not in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET")}
    supervisor = WorkerSupervisor(
        reactor,
        count=workers,
        argv=_worker_argv(config, listeners, managed),
        config_text=config_text,
        listeners=listeners,
        env=env,
        stop_grace=config.server.shutdown_grace + 5.0,
    )
    return ParentServer(config, config_text, reactor, listeners, supervisor, managed)


class _WorkersView:
    """The admin side's figures in the parent: each worker's (asked over its pipe), php-fpm's (asked by the parent)."""

    def __init__(self, parent: "ParentServer") -> None:
        self._parent = parent
        self.started = time.time()

    def snapshot(self) -> "Deferred[dict[str, Any]]":
        parent = self._parent
        fpm = parent.fpm_status
        status = fpm.status() if fpm is not None else succeed(None)
        figures = parent.supervisor.ask_figures()

        def merge(results: Any) -> dict[str, Any]:
            (_, fpm_status), (_, processes) = results
            config = parent.config
            pools = [pool for p in processes for pool in p.get("pools", [])]
            return {
                "server": server_part(
                    config, parent.config_text, self.started, "workers",
                    reloads=parent.reloads, worker_restarts=parent.supervisor.restarts, workers=config.server.workers,
                ),
                "processes": processes,
                "backends": backends_part(config, pools, fpm_status, parent.php_fpm),
            }

        both: Deferred[Any] = DeferredList([status, figures], consumeErrors=True)
        return both.addCallback(merge)

    def ready(self) -> "Deferred[tuple[bool, str]]":
        parent = self._parent
        if not parent.supervisor.pids:
            return succeed((False, "no worker process runs"))
        fpm = parent.fpm_status
        if fpm is None:
            return succeed((True, "php-cgi runs per request"))
        return fpm.ping().addCallback(lambda ok: (ok, "php-fpm answers" if ok else "php-fpm does not answer its ping"))


class ParentServer(WorkersService):
    """The parent of ``server.workers``: WorkersService, its admin listeners, and its reload on SIGHUP.

    :meth:`reload` validates the file, binds new listeners (unchanged ones
    keep their sockets), starts a new managed php-fpm when its settings
    changed and waits until it is ready, then replaces the workers one at
    a time (:meth:`WorkerSupervisor.replace`); the old php-fpm and the
    listeners no longer configured close once the old workers are gone.
    """

    log = Logger()

    def __init__(self, config: Config, config_text: str, reactor: Any, listeners: "list[SharedListener]",
                 supervisor: WorkerSupervisor, managed: Optional[ManagedPHPFPM]) -> None:
        super().__init__(listeners, supervisor, managed)
        self.config = config
        self.config_text: Optional[str] = config_text
        self._reactor = reactor
        self.reloads = 0
        self._reloading = False
        self.fpm_status = build_fpm_status(config, reactor, managed.socket_path if managed is not None else None)
        self.admin_site = AdminSite(_WorkersView(self), reactor)
        self.admin: dict[str, Listener] = {}
        for description in config.admin.listen:
            listener = Listener(reactor, description, self.admin_site)
            self.admin[description] = listener
            listener.setServiceParent(self)

    def stopService(self) -> "Deferred[Any]":  # noqa: N802 - Twisted's name
        d: Deferred[Any] = super().stopService()

        def admin_and_status(result: Any) -> Any:
            stops = [listener.stopService() for listener in self.admin.values()]
            if self.fpm_status is not None:
                stops.append(self.fpm_status.close())
            return DeferredList(stops)

        return d.addBoth(admin_and_status)

    def reopen_logs(self) -> None:
        self.supervisor.reopen_logs()

    def reload(self) -> "Deferred[bool]":
        if self._reloading:
            self.log.warn("reload: SIGHUP received while a reload is under way; ignored")
            return succeed(False)
        self._reloading = True
        d: Deferred[bool] = self._reload()

        def done(result: Any) -> Any:
            self._reloading = False
            return result

        return d.addBoth(done)

    @inlineCallbacks
    def _reload(self) -> Any:
        path = self.config.source
        try:
            with open(path, encoding="utf-8") as f:
                text: Optional[str] = f.read()
        except (OSError, UnicodeDecodeError):
            text = None
        try:
            config = load_config(path, text)
        except ConfigError as e:
            self.log.error("reload: the configuration is not valid, keeping the running one: {error}", error=str(e))
            return False
        if config.server.workers < 2 or config.admin.listen != self.config.admin.listen:
            self.log.error("reload: server.workers down to 1 and admin.listen need a restart with workers; keeping the running configuration")
            return False
        assert text is not None
        old = self.config
        reactor = self._reactor
        managed = self.php_fpm if isinstance(self.php_fpm, ManagedPHPFPM) else None
        new_managed = managed if config.php.mode == "managed" else None
        started: list[Service] = []
        current = {listener.description: listener for listener in self.listeners}
        try:
            if config.php.mode == "managed" and (managed is None or managed_settings(config) != managed_settings(old)):
                per_worker = connections_per_worker(config.php.worker_pool_size, config.server.workers)
                new_managed = build_managed_php_fpm(
                    config, reactor, children=per_worker * config.server.workers + admin_spare_children(config)
                )
                new_managed.startService()
                started.append(new_managed)
                yield new_managed.ready()
            listeners = []
            for description in config.server.listen:
                listener = current.get(description)
                if listener is None:
                    listener = SharedListener(reactor, description)
                    listener.startService()
                    started.append(listener)
                listeners.append(listener)
        except Exception as e:
            self.log.error("reload: {error}; keeping the running configuration", error=str(e) or type(e).__name__)
            for part in reversed(started):
                yield part.stopService()
            return False
        self.config, self.config_text = config, text
        self.reloads += 1
        old_status = self.fpm_status
        self.fpm_status = build_fpm_status(config, reactor, new_managed.socket_path if new_managed is not None else None)
        if old_status is not None:
            old_status.close()
        self.log.info("reload: replacing {count} workers one at a time", count=self.supervisor.count)
        try:
            yield self.supervisor.replace(
                count=config.server.workers,
                argv=_worker_argv(config, listeners, new_managed),
                config_text=text,
                listeners=listeners,
            )
        except Exception as e:
            self.log.error("reload: {error}; the workers not yet replaced keep the previous configuration", error=str(e))
        gone = [listener for listener in self.listeners if listener not in listeners]
        self.listeners = listeners
        for part in started:
            if isinstance(part, SharedListener):
                adopt(self, part)  # running already: joined without a second start
        for old_listener in gone:
            release(self, old_listener)
            yield old_listener.stopService()
        if new_managed is not managed:
            if new_managed is not None:
                adopt(self, new_managed)
            self.php_fpm = new_managed
            if managed is not None:
                release(self, managed)
                yield managed.stopService()
        self.log.info("reload: serving the configuration in {file}", file=path)
        return True
