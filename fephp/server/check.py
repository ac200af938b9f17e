"""``fephp check-config [--probe] FILE``: validate a configuration and say what it would run; with --probe, ask php-fpm too (:mod:`fephp.server.doctor`)."""

from __future__ import annotations

import datetime
import sys
from typing import Callable, Optional, Sequence, TextIO

from ..web.compress import AVAILABLE
from .acme import acme_findings
from .config import Config, ConfigError, load_config
from .settings import PHPConfig
from .doctor import Finding

__all__ = ["check_config_main"]


def _php_summary(php: PHPConfig) -> str:
    if php.backends:
        parts = [
            f"{b.address} (weight {b.weight}, {b.pool_size} connections{', drains' if b.drain else ''})"
            for b in php.backends
        ]
        how = f"{len(parts)} php-fpm backends: " + ", ".join(parts)
        if php.session_affinity:
            how += f"; sessions kept by cookie {php.session_cookie}"
    elif php.mode == "external":
        how = f"php-fpm at {php.fpm_socket}, up to {php.worker_pool_size} connections"
    elif php.mode == "managed":
        how = f"managed php-fpm ({php.php_fpm_binary}), {php.worker_pool_size} children"
    else:
        how = f"php-cgi ({php.php_cgi_binary}), one process per request"
    return how


def _summary(config: Config) -> list[str]:
    how = _php_summary(config.php)
    lines = [f"  listen: {', '.join(config.server.listen)}"]
    if config.server.workers > 1:
        lines.append(f"  workers: {config.server.workers} processes sharing the listeners")
    server = config.server
    if any("ssl" in listener.split(":")[:2] for listener in server.listen):
        lines.append("  http2: " + ("offered on the ssl: listeners" if server.http2 else "off (HTTP/1.1 only)"))
    if server.trusted_proxies:
        lines.append(f"  trusted proxies: {', '.join(server.trusted_proxies)} ({server.real_ip_header})")
    if config.rules:
        kinds: dict[str, int] = {}
        for rule in config.rules:
            name = type(rule.action).__name__
            kinds[name] = kinds.get(name, 0) + 1
        lines.append(f"  rules: {len(config.rules)} (" + ", ".join(f"{n} {k}" for k, n in kinds.items()) + ")")
    compression = config.compression
    offered = [a for a in compression.algorithms if a in AVAILABLE]
    if not compression.enabled:
        compressed = "off"
    else:
        # zstd has no build for PyPy 3.9: say so, where the operator looks.
        missing = [a for a in compression.algorithms if a not in AVAILABLE]
        compressed = ", ".join(offered) + f" from {compression.min_size} bytes"
        if missing:
            compressed += f" ({', '.join(missing)} not available on this Python)"
    if config.sites:
        for site in config.sites:
            names = ", ".join(site.hosts) + (" (default)" if site.default and site.hosts else "")
            lines.append(f"  site {site.name}: {names or 'default'}; root {site.root}; php: {_php_summary(site.php)}"
                         + ("; tls" if site.tls is not None else ""))
        if not any(site.default for site in config.sites):
            lines.append(f"  unknown hosts: {config.server.unknown_host}")
    else:
        lines += [f"  root: {config.server.root}", f"  php: {how}"]
    return lines + [
        f"  access log: {config.logging.access_log or 'off'}",
        f"  compression: {compressed}",
    ]


def check_config_main(
    path: str,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    probe: Optional[Callable[[Config], Sequence[Finding]]] = None,
) -> int:
    """Validate the file at *path*: print ``OK: <file>`` and a summary (0) or the error (1).

    With *probe*, then print what it found about php-fpm: ``ok:`` lines, and
    ``problem:`` lines (on *err*) that make the status 1.
    """
    try:
        config = load_config(path)
    except ConfigError as e:
        print(f"error: {e}", file=err)
        return 1
    print(f"OK: {config.source}", file=out)
    for line in _summary(config):
        print(line, file=out)
    if probe is None:
        return 0
    # Sites with tls.acme: can the CA reach the listeners, and what is stored (issue 20 item 6).
    findings = list(probe(config)) + acme_findings(config, datetime.datetime.now(datetime.timezone.utc))
    for finding in findings:
        if finding.problem:
            print(f"problem: {finding.text}", file=err)
        else:
            print(f"  ok: {finding.text}", file=out)
    return 1 if any(f.problem for f in findings) else 0
