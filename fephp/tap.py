"""``twistd fephp``: command-line options and the wiring of the service tree.

This module and :mod:`fephp.cli` are the only places that touch the global
reactor; everything they build takes it as an argument.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import UNIXClientEndpoint, serverFromString
from twisted.python import usage

from .backend import Backend
from .config import Config, ConfigError, load_config
from .endpoints import parse_client_endpoint
from .pool import FastCGIPool
from .resource import PHPApp
from .routing import Router
from .service import FrontService
from .site import FrontSite

__all__ = ["Options", "makeService", "build_service"]


class Options(usage.Options):
    synopsis = "--config FILE"
    longdesc = (
        "Serve a PHP application: static files directly, PHP through php-fpm "
        "(external, or started and supervised by fephp) or php-cgi."
    )
    optParameters = [["config", "c", "etc/fephp.yaml", "The YAML configuration file."]]

    def postOptions(self) -> None:  # noqa: N802 - Twisted's name
        try:
            self["loaded"] = load_config(self["config"])
        except ConfigError as e:
            # twistd prints UsageError's text and exits non-zero before daemonizing.
            raise usage.UsageError(str(e)) from None


def build_service(config: Config, reactor: Any) -> FrontService:
    """The whole server for *config*, built on *reactor*."""
    php = config.php
    timeouts = config.timeouts
    managed = None
    backend: Backend
    if not php.use_fpm:
        from .cgiprocess import PHPCGIBackend, find_php_cgi

        backend = PHPCGIBackend(
            reactor,
            php.php_cgi_binary or find_php_cgi(),
            ini=dict(php.ini),
            timeout=timeouts.response,
        )
    else:
        if php.fpm_socket:
            endpoint = parse_client_endpoint(reactor, php.fpm_socket)
            name = php.fpm_socket
        else:
            from .phpfpm import ManagedPHPFPM

            managed = ManagedPHPFPM.from_config(config, reactor)
            endpoint = UNIXClientEndpoint(reactor, managed.socket_path)
            name = "managed php-fpm"
        backend = FastCGIPool(
            endpoint,
            clock=reactor,
            size=php.worker_pool_size,
            queue_size=php.queue_size,
            connect_timeout=timeouts.connect,
            response_timeout=timeouts.response,
            idle_timeout=timeouts.idle,
            queue_timeout=timeouts.queue,
            name=name,
        )
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
    listeners = []
    for description in server.listen:
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
        shutdown_grace=server.shutdown_grace,
        php_fpm=managed,
    )


def makeService(options: Options) -> FrontService:  # noqa: N802 - twistd's name
    from twisted.internet import reactor

    config = options["loaded"]
    service = build_service(config, reactor)
    for description in config.server.listen:
        print(f"fephp: serving {config.server.root} on {_describe(description)}", file=sys.stderr)
    return service


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
