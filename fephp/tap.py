"""``twistd fephp``: command-line options and the wiring of the service tree.

This module and :mod:`fephp.cli` are the only places that touch the global
reactor; everything they build takes it as an argument.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Iterable, Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet.endpoints import UNIXClientEndpoint, serverFromString
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogBeginner,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
)
from twisted.python import usage

from .backend import Backend
from .config import Config, ConfigError, load_config
from .endpoints import parse_client_endpoint
from .pool import FastCGIPool
from .reactor import install_if_free
from .resource import PHPApp
from .routing import Router
from .service import FrontService
from .site import FrontSite

if TYPE_CHECKING:
    from .phpfpm import ManagedPHPFPM

__all__ = ["Options", "makeService", "build_backend", "build_service", "build_site", "filter_log_level"]


class Options(usage.Options):
    synopsis = "--config FILE"
    longdesc = (
        "Serve a PHP application: static files directly, PHP through php-fpm "
        "(external, or started and supervised by fephp) or php-cgi."
    )
    optParameters = [["config", "c", "etc/fephp.yaml", "The YAML configuration file."]]

    def postOptions(self) -> None:  # noqa: N802 - Twisted's name
        try:
            try:
                with open(self["config"], encoding="utf-8") as f:
                    # Kept for worker processes, which check this same text.
                    self["config_text"] = f.read()
            except (OSError, UnicodeDecodeError):
                self["config_text"] = None  # load_config reports it
            self["loaded"] = load_config(self["config"], self["config_text"])
        except ConfigError as e:
            # One message and a non-zero exit before anything starts or
            # daemonizes (some Twisted releases exit 0 after a UsageError).
            sys.stderr.write(f"fephp: {e}\n")
            raise SystemExit(1) from None


def build_backend(
    config: Config,
    reactor: Any,
    *,
    fpm_socket_path: Optional[str] = None,
    pool_size: Optional[int] = None,
) -> "tuple[Backend, Optional[ManagedPHPFPM]]":
    """The PHP backend for *config*, and the managed php-fpm it needs (or None).

    *fpm_socket_path* is the socket of a php-fpm managed by someone else (a
    worker's parent): the pool connects to it and starts nothing.
    *pool_size* overrides ``php.worker_pool_size`` (a worker's share).
    """
    php = config.php
    timeouts = config.timeouts
    managed = None
    if not php.use_fpm:
        from .cgiprocess import PHPCGIBackend, find_php_cgi

        cgi = PHPCGIBackend(
            reactor,
            php.php_cgi_binary or find_php_cgi(),
            ini=dict(php.ini),
            timeout=timeouts.response,
        )
        return cgi, None
    if php.fpm_socket:
        endpoint = parse_client_endpoint(reactor, php.fpm_socket)
        name = php.fpm_socket
    else:
        if fpm_socket_path is None:
            from .phpfpm import ManagedPHPFPM

            managed = ManagedPHPFPM.from_config(config, reactor)
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
    )
    site = FrontSite(
        app,
        access_log=config.logging.access_log,
        max_body_size=config.limits.max_body_size,
        max_header_size=config.limits.max_header_size,
        reactor=reactor,
    )
    return app, site


def build_service(config: Config, reactor: Any) -> FrontService:
    """The whole server for *config* in one process, built on *reactor*."""
    backend, managed = build_backend(config, reactor)
    app, site = build_site(config, reactor, backend)
    listeners = []
    for description in config.server.listen:
        listener = StreamServerEndpointService(serverFromString(reactor, description), site)
        # A port that cannot be bound stops twistd with the error, instead of
        # a server that runs and serves nothing.
        listener._raiseSynchronously = True
        listeners.append(listener)
    return FrontService(
        app=app,
        site=site,
        backend=backend,
        listeners=listeners,
        clock=reactor,
        shutdown_grace=config.server.shutdown_grace,
        php_fpm=managed,
    )


def makeService(options: Options) -> Service:  # noqa: N802 - twistd's name
    reactor = install_if_free()
    config = options["loaded"]
    filter_log_level(config.logging.level)
    service: Service
    if config.server.workers > 1:
        from .workers import build_supervisor

        service = build_supervisor(config, options["config_text"], reactor)
        how = f" with {config.server.workers} worker processes"
    else:
        service = build_service(config, reactor)
        how = ""
    for description in config.server.listen:
        print(f"fephp: serving {config.server.root} on {_describe(description)}{how}", file=sys.stderr)
    return service


def filter_log_level(level: str, beginner: LogBeginner = globalLogBeginner) -> None:
    """Make the log observers twistd is about to install drop events below *level*.

    twistd installs its observer (``--logfile``, syslog or stdout) with
    ``beginner.beginLoggingTo()`` after makeService returns, so the filter
    wraps the observers at that call, once.  Events logged before it (kept by
    the beginner and replayed) are filtered too.
    """
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    begin = beginner.beginLoggingTo

    def filtered(observers: Iterable[ILogObserver], *args: Any, **kwargs: Any) -> None:
        beginner.beginLoggingTo = begin  # type: ignore[method-assign]  # once
        begin([FilteringLogObserver(o, [predicate]) for o in observers], *args, **kwargs)

    beginner.beginLoggingTo = filtered  # type: ignore[method-assign]


def _describe(description: str) -> str:
    """``http://127.0.0.1:8080/`` for a plain TCP listener, the endpoint string otherwise."""
    parts = description.split(":")
    if parts[0] in ("tcp", "tcp6") and len(parts) >= 2 and parts[1].isdigit():
        host = "0.0.0.0"
        for part in parts[2:]:
            if part.startswith("interface="):
                host = part[len("interface=") :].replace("\\", "")
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{parts[1]}/"
    return description
