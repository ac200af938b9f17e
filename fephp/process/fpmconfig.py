"""php-fpm's configuration as fephp writes it: pure text in, nothing started.

The managed mode (:class:`fephp.process.phpfpm.ManagedPHPFPM`) and the test
fixtures both use :func:`render_config`, so what the tests run is what
users get.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Optional

__all__ = ["PING_PATH", "PING_RESPONSE", "STATUS_PATH", "PoolSpec", "php_fpm_argv", "render_config"]

#: php-fpm's status page (``pm.status_path``) and liveness answer (``ping.path``).
#: php-fpm answers them itself, matched on the SCRIPT_NAME a web server sends;
#: fephp's router only ever sends the name of an existing ``.php`` file, so no
#: URL of the site reaches them: only fephp's own admin side asks.
STATUS_PATH = "/fephp-fpm-status"
PING_PATH = "/fephp-fpm-ping"
PING_RESPONSE = "pong"


@dataclass(frozen=True)
class PoolSpec:
    """One php-fpm pool: where it listens and how many children it keeps."""

    name: str
    listen: str  # a socket path, or "127.0.0.1:PORT"
    max_children: int = 8
    max_requests: int = 0
    request_terminate_timeout: int = 0
    php_admin_values: Mapping[str, str] = field(default_factory=dict)
    status_path: Optional[str] = STATUS_PATH
    ping_path: Optional[str] = PING_PATH
    #: The children's user and group; php-fpm switches to them only when run as root.
    user: Optional[str] = None
    group: Optional[str] = None


def render_config(
    pools: list[PoolSpec],
    *,
    pid_file: str,
    error_log: str,
) -> str:
    """A complete php-fpm.conf for *pools*, in the foreground, logging to *error_log*.

    Children are static (``pm = static``): a kept FastCGI connection pins a
    child, so fephp sizes its pool to ``max_children`` and a dynamic pool would
    only add spawn latency.  ``clear_env`` stays on so PHP sees only the CGI
    environment fephp sends, never fephp's own.
    """
    lines = [
        "[global]",
        f"pid = {pid_file}",
        f"error_log = {error_log}",
        "daemonize = no",
        "log_level = notice",
        "",
    ]
    for pool in pools:
        lines += [
            f"[{pool.name}]",
            f"listen = {pool.listen}",
            "listen.backlog = 511",
            "pm = static",
            f"pm.max_children = {pool.max_children}",
            f"pm.max_requests = {pool.max_requests}",
            f"request_terminate_timeout = {pool.request_terminate_timeout}",
            # PHP's stderr (error_log() to stderr, warnings) comes back to fephp
            # over FastCGI STDERR records; workers' own output goes to the log.
            "catch_workers_output = yes",
            "decorate_workers_output = no",
            "clear_env = yes",
            "security.limit_extensions = .php",
        ]
        if pool.status_path:
            lines.append(f"pm.status_path = {pool.status_path}")
        if pool.ping_path:
            lines += [f"ping.path = {pool.ping_path}", f"ping.response = {PING_RESPONSE}"]
        if pool.user:
            lines.append(f"user = {pool.user}")
        if pool.group:
            lines.append(f"group = {pool.group}")
        if pool.listen.startswith("/"):
            # php-fpm's master (fephp's user) owns the socket; the pool's children need not reach it.
            lines.append("listen.mode = 0600")
        for key, value in sorted(pool.php_admin_values.items()):
            lines.append(f"php_admin_value[{key}] = {value}")
        lines.append("")
    return "\n".join(lines)


def php_fpm_argv(binary: str, config_file: str) -> list[str]:
    """The command line that runs php-fpm on *config_file* in the foreground.

    As root, php-fpm refuses to start unless told ``--allow-to-run-as-root``;
    the pools then carry no user/group lines and the children keep root's
    identity, which is what a container's single user expects.
    """
    argv = [binary, "--nodaemonize", "--fpm-config", config_file]
    if os.geteuid() == 0:
        argv.append("--allow-to-run-as-root")
    return argv
