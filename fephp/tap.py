"""``twistd fephp``: the command-line options, and the service tree built from the configuration.

An entry point: this module and :mod:`fephp.cli` (and a worker's
:func:`fephp.server.worker.main`) are the only places that touch the global
reactor; everything they build takes it as an argument.
"""

from __future__ import annotations

import signal
import sys

from twisted.application.service import Service
from twisted.python import usage

from .server.running import build_server
from .server.config import ConfigError, load_config
from .server.logs import setup_logging
from .server.reactor import install_if_free
from .server.signals import install_signal_handlers, not_supported, reload_handler, reopen_handler

__all__ = ["Options", "makeService"]


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


def makeService(options: Options) -> Service:  # noqa: N802 - twistd's name
    reactor = install_if_free()
    config = options["loaded"]
    log_files = setup_logging(config.logging.level, config.logging.format)
    service = build_server(config, options["config_text"], reactor)
    # None of the signals an operator commonly sends may end fephp uncleanly.
    handlers = {
        signal.SIGHUP: reload_handler(service),
        signal.SIGUSR1: reopen_handler(service, log_files),
        signal.SIGUSR2: not_supported(signal.SIGUSR2, "SIGUSR2"),
    }
    reactor.callWhenRunning(install_signal_handlers, reactor, handlers)
    how = f" with {config.server.workers} worker processes" if config.server.workers > 1 else ""
    what = f"{len(config.sites)} sites" if config.sites else config.server.root
    for description in config.server.listen:
        print(f"fephp: serving {what} on {_describe(description)}{how}", file=sys.stderr)
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
