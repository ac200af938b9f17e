"""``fephp check-config --probe`` against real php-fpm pools set up wrong in each of the usual ways, and one set up right."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from fephp.process.fpmconfig import STATUS_PATH, php_fpm_argv
from fephp.server.config import config_from_dict
from fephp.server.doctor import Finding, probe_address, probe_config
from tests.support import REPO
from tests.support.php_fpm import wait_connectable
from tests.support.ports import refusing_port

pytestmark = pytest.mark.php

#: Pool name -> its lines beyond listen (each pool is one misconfiguration).
POOLS = {
    "good": [f"pm.status_path = {STATUS_PATH}", "pm.max_children = 5"],
    "jail": ["chroot = {jail}", "pm.max_children = 1"],
    "ext": ["security.limit_extensions = .php5", "pm.max_children = 1"],
    "user": ["user = nobody", "group = nogroup", "pm.max_children = 1"],
    "small": [f"pm.status_path = {STATUS_PATH}", "pm.max_children = 1"],
    "perm": ["listen.mode = 0600", "pm.max_children = 1"],
}


@pytest.fixture(scope="module")
def world() -> Iterator[Path]:
    """A folder every user may enter (the probe also runs as nobody), with a root, a private root and a jail."""
    base = Path(tempfile.mkdtemp(prefix="fephp-doctor-", dir="/tmp"))
    base.chmod(0o755)
    for name in ("root", "private", "jail"):
        (base / name).mkdir()
        (base / name).chmod(0o755)
    (base / "root" / "index.php").write_text("<?php echo 'probe me';\n")
    (base / "root" / "index.php").chmod(0o644)
    (base / "private" / "index.php").write_text("<?php echo 'secret';\n")
    (base / "private" / "index.php").chmod(0o600)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def pools(world: Path, php_fpm_binary: str) -> Iterator[dict[str, str]]:
    """One php-fpm master with a pool per case, each on a UNIX socket in *world*."""
    lines = ["[global]", f"pid = {world}/fpm.pid", f"error_log = {world}/fpm.log", "daemonize = no", ""]
    sockets = {}
    for name, extra in POOLS.items():
        sockets[name] = str(world / f"{name}.sock")
        lines += [f"[{name}]", f"listen = {sockets[name]}", "pm = static", "catch_workers_output = yes"]
        lines += [line.format(jail=world / "jail") for line in extra] + [""]
    (world / "fpm.conf").write_text("\n".join(lines))
    if os.geteuid() != 0:
        pytest.skip("the pools set user and chroot, which php-fpm allows as root only")
    process = subprocess.Popen(php_fpm_argv(php_fpm_binary, str(world / "fpm.conf")), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for path in sockets.values():
            wait_connectable(path, process, world / "fpm.log")
        yield sockets
    finally:
        process.terminate()
        process.wait(timeout=10)


def probe(world: Path, name: str, php: str, *, root: str = "root") -> tuple[int, str, str]:
    """``fephp check-config --probe`` on a config of *php* lines: its exit status, stdout and stderr."""
    config = world / f"{name}.yaml"
    config.write_text(f"server:\n  root: {world / root}\nphp:\n{php}")
    result = subprocess.run(
        [sys.executable, "-m", "fephp.cli", "check-config", "--probe", str(config)],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    return result.returncode, result.stdout, result.stderr


def probe_as_nobody(world: Path, php: dict[str, Any]) -> list[Finding]:
    """probe_config in a child process that dropped to uid/gid 65534 (fephp's code is loaded already: nothing to read but the socket)."""
    config = config_from_dict({"server": {"root": str(world / "root")}, "php": php}, base_dir=str(world))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave, never back into pytest
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            assert config.php.fpm_socket is not None
            findings = probe_config(config, probe_address(config.php.fpm_socket), None)
            os.write(write, json.dumps([[f.problem, f.text] for f in findings]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return [Finding(problem, text) for problem, text in json.loads(data)]


def test_a_sound_pool_passes(world, pools) -> None:
    """A pool that runs the root's front controller and has children enough: every line ok, exit 0."""
    code, out, err = probe(world, "good", f"  fpm_socket: {pools['good']}\n  worker_pool_size: 4\n  status_path: {STATUS_PATH}\n")
    assert (code, err) == (0, "")
    assert f"ok: php-fpm ran {world}/root/index.php: status 200" in out
    assert "ok: php-fpm's pool: pm.max_children = 5 for 4 connections" in out


def test_nothing_listening(world, pools) -> None:
    """A TCP address nobody listens on, and a socket path that does not exist: each named with what to do."""
    with refusing_port() as port:
        code, _, err = probe(world, "refused", f"  fpm_socket: 127.0.0.1:{port}\n")
    assert code == 1 and "problem: nothing accepts connections at 127.0.0.1:" in err and "php-fpm is not running" in err
    code, _, err = probe(world, "missing", f"  fpm_socket: {world}/nowhere.sock\n")
    assert code == 1 and f"problem: there is no socket at {world}/nowhere.sock" in err


def test_socket_permissions_keep_fephps_user_out(world, pools) -> None:
    """Run as nobody, a socket of mode 0600 owned by root is refused: the message names listen.owner, listen.group and listen.mode."""
    (finding,) = probe_as_nobody(world, {"fpm_socket": pools["perm"]})
    assert finding.problem
    assert finding.text.startswith(f"permission denied on the socket {pools['perm']} for uid 65534") and "listen.mode" in finding.text


def test_primary_script_unknown_in_a_chroot(world, pools) -> None:
    """A pool chrooted elsewhere cannot find the root's script: "Primary script unknown", another filesystem or root."""
    code, _, err = probe(world, "jail", f"  fpm_socket: {pools['jail']}\n  worker_pool_size: 1\n")
    assert code == 1
    assert f"problem: php-fpm cannot find {world}/root/index.php (\"Primary script unknown\")" in err
    assert "another filesystem or root" in err and "chroot" in err


def test_limit_extensions_refuses_php(world, pools) -> None:
    """A pool whose security.limit_extensions leaves out .php refuses the script: the message says which setting."""
    code, _, err = probe(world, "ext", f"  fpm_socket: {pools['ext']}\n  worker_pool_size: 1\n")
    assert code == 1 and "problem: php-fpm refuses to run" in err and "security.limit_extensions" in err


def test_the_pools_user_cannot_read_the_root(world, pools) -> None:
    """A pool running as nobody finds a script only root may read: the message points at the pool's user."""
    code, _, err = probe(world, "user", f"  fpm_socket: {pools['user']}\n  worker_pool_size: 1\n", root="private")
    assert code == 1 and f"problem: php-fpm finds {world}/private/index.php but cannot read it" in err and "user" in err


def test_too_few_children_for_the_pool(world, pools) -> None:
    """pm.max_children below php.worker_pool_size, read from the status page, is a problem."""
    code, _, err = probe(world, "small", f"  fpm_socket: {pools['small']}\n  worker_pool_size: 4\n  status_path: {STATUS_PATH}\n")
    assert code == 1
    assert "problem: php-fpm's pool has pm.max_children = 1 but fephp keeps up to 4 connections" in err
