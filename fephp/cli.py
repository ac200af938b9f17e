"""The ``fephp`` console entry point: one argparse subcommand per tool.

Adding a subcommand is one entry in :data:`COMMANDS`: a help line, a
function that declares its arguments, and a function that runs it and
returns the exit status.  This module and ``fephp.tap`` are the only places
that touch the global reactor.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any, Callable, NamedTuple

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


class Command(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    from .bench.command import add_arguments

    add_arguments(parser)


def _run_bench(args: argparse.Namespace) -> int:
    from .bench.reactor import install

    # select() for a fixed rate's fine timers, epoll for a closed loop.
    install(args.concurrency, rate_mode=args.rps > 0)
    from twisted.internet import reactor as _reactor

    from .bench.command import Session, run

    reactor: Any = _reactor
    started = run(args, reactor)
    if isinstance(started, int):
        return started
    bench, status = started
    session = Session(bench, status, reactor)
    # Ours whatever SIGINT was on entry: Twisted installs its handler only over
    # Python's default one, so a run that inherited SIGINT ignored (a background
    # job of a shell script, a CI step) would ignore Ctrl-C and run to its end.
    signal.signal(signal.SIGINT, session.interrupt_received)
    # SIGTERM stops the reactor (Twisted's handler); end the run first so its partial report is printed.
    reactor.addSystemEventTrigger("before", "shutdown", bench.stop)
    if not session.ended:
        reactor.run()
    return session.exit_status()


def _check_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--probe", action="store_true",
        help="also contact the configured php-fpm (the managed one is started for it) and run a script of the root",
    )
    parser.add_argument("file", metavar="FILE", help="the YAML configuration file to validate")


def _probe(config: Any) -> list[Any]:
    """The doctor's findings, each site's (``sites``) in turn; fephp's own php-fpm started for the probe and stopped after."""
    from .server.build import admin_spare_children, build_managed_php_fpm, needs_managed, site_view
    from .server.doctor import STATUS_PATH, Finding, probe_address, probe_config

    spare = admin_spare_children(config)

    def probe_all(managed: Any) -> list[Any]:
        found: list[Any] = []
        for site in config.sites or (None,):
            view = site_view(config, site) if site is not None else config
            php = view.php
            if php.mode == "php-cgi":
                findings = [Finding(False, "php-cgi runs per request: no php-fpm to probe")]
            elif php.mode == "external":
                address = php.fpm_socket or php.external_backends[0].address
                findings = probe_config(view, probe_address(address), php.status_path, spare=spare)
            else:
                socket = managed.socket_for(site.name) if site is not None else managed.socket_path
                findings = probe_config(view, socket, STATUS_PATH, spare=spare)
            if site is not None:
                findings = [Finding(f.problem, f"site {site.name}: {f.text}") for f in findings]
            found.extend(findings)
        return found

    if not needs_managed(config):
        return probe_all(None)
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    managed = build_managed_php_fpm(config, reactor)
    found: list[Any] = []

    def ready(_: object) -> None:
        found.extend(probe_all(managed))

    def failed(failure: Any) -> None:
        found.append(Finding(True, f"the managed php-fpm did not start: {failure.getErrorMessage()}"))

    def run() -> None:
        managed.startService()
        d = managed.ready()
        d.addCallbacks(ready, failed)
        d.addBoth(lambda _: managed.stopService())
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run()
    return found


def _run_check_config(args: argparse.Namespace) -> int:
    from .server.check import check_config_main

    return check_config_main(args.file, probe=_probe if args.probe else None)


COMMANDS: dict[str, Command] = {
    "bench": Command("load an HTTP server and report latency percentiles", _bench_arguments, _run_bench),
    "check-config": Command(
        "validate a configuration file without starting anything",
        _check_config_arguments,
        _run_check_config,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fephp", description="fephp: a front server for PHP applications.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help)
        command.add_arguments(sub)
        sub.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line *argv* (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
