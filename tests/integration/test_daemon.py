"""The daemon's life: twistd fephp starts, serves, and stops leaving nothing behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from fephp.process.binaries import find_php
from tests.support.daemon import (
    LISTEN,
    REPO,
    TWISTD,
    answers,
    daemonize,
    get,
    listening_on,
    start_daemon,
    wait_for,
    write_config,
    zombie,
)
from tests.support.processes import processes_with, require_binary
from tests.support.tls import self_signed_pem

pytestmark = pytest.mark.php


@pytest.mark.parametrize("mode", ["managed", "php-cgi"])
def test_daemon_starts_serves_and_stops_cleanly(tmp_path: Path, mode: str) -> None:
    """Daemonized with a pidfile it serves PHP; SIGTERM removes the pidfile and every process it started."""
    if mode == "managed":
        require_binary(find_php("php-fpm"), "php-fpm")
        php = "  use_fpm: true"
    else:
        php = "  use_fpm: false"
    config = write_config(tmp_path, php)
    pidfile = daemonize(tmp_path, config)
    try:
        wait_for(pidfile.exists, "the pidfile")
        pid = int(pidfile.read_text())
        (port,) = listening_on(pid)
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(base + "/static/hello.txt"), "the listener")
        status, body = get(base + "/status.php")
        assert (status, body) == (200, b"status body")
        status, body = get(base + "/static/hello.txt")
        assert (status, body) == (200, b"plain text\n")
        if mode == "managed":
            assert processes_with("php-fpm"), "managed mode runs php-fpm"
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pidfile.exists(), "the pidfile to go")
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or zombie(pid), "fephp to exit")
        wait_for(lambda: not processes_with(str(config)), "no process left")
        access = (tmp_path / "access.log").read_text()
        assert '"GET /status.php HTTP/1.1" 200' in access
        # twistd's own startup line: fephp's reactor, not Twisted's default one.
        assert "reactor class: fephp.server.reactor.FrontReactor." in (tmp_path / "fephp.log").read_text()
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_bad_config_fails_before_daemonizing(tmp_path: Path) -> None:
    """A config error names the key and the file and twistd exits non-zero, no pidfile written."""
    config = tmp_path / "bad.yaml"
    config.write_text("server:\n  root: /nonexistent/dir\n  listen: [tcp:1]\nphp:\n  worker_pool_size: many\n")
    pidfile = tmp_path / "fephp.pid"
    result = subprocess.run(
        [*TWISTD, "--pidfile", str(pidfile), "fephp", "--config", str(config)],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        timeout=60,
    )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode != 0
    assert "bad.yaml" in output
    assert "worker_pool_size" in output or "server.root" in output
    assert not pidfile.exists()


@pytest.mark.php
def test_log_level_error_keeps_info_out_of_the_logfile(tmp_path: Path) -> None:
    """With logging.level error, twistd's --logfile gets fephp's errors (php-fpm killed) but not its info lines (php-fpm started)."""
    require_binary(find_php("php-fpm"), "php-fpm")
    config = write_config(tmp_path, "  use_fpm: true", logging="  level: error\n")
    pidfile = tmp_path / "fephp.pid"
    logfile = tmp_path / "fephp.log"
    daemonize(tmp_path, config)
    pid = 0
    try:
        wait_for(pidfile.exists, "the pidfile")
        pid = int(pidfile.read_text())
        (port,) = listening_on(pid)
        wait_for(lambda: get(f"http://127.0.0.1:{port}/status.php")[0] == 200 if answers(f"http://127.0.0.1:{port}/static/hello.txt") else False, "PHP")
        master = next(p for p in processes_with("php-fpm: master") if _parent(p) == pid)
        os.kill(master, signal.SIGKILL)
        wait_for(lambda: "exited unexpectedly" in logfile.read_text(), "the error line")
        text = logfile.read_text()
        assert f"[fephp.process.phpfpm.ManagedPHPFPM#error] php-fpm (pid {master}) exited unexpectedly" in text
        assert "php-fpm started" not in text
        assert "#info]" not in text
    finally:
        if pid:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not pidfile.exists(), "the pidfile to go")


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def test_sigterm_lets_a_request_in_flight_finish(tmp_path: Path) -> None:
    """A response still streaming when SIGTERM arrives is completed, to its last byte, before the daemon exits."""
    require_binary(find_php("php-fpm"), "php-fpm")
    config = write_config(tmp_path, "  use_fpm: true")
    pidfile, pid = start_daemon(tmp_path, config)
    try:
        (port,) = listening_on(pid)
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/static/hello.txt"), "the listener")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /stream.php?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while b"first\n" not in received:
                received += s.recv(65536)
            os.kill(pid, signal.SIGTERM)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                received += chunk
        assert b"first\n" in received and b"last\n" in received
        assert received.endswith(b"0\r\n\r\n")  # the chunked body's end, not a cut
        wait_for(lambda: not pidfile.exists(), "the pidfile to go")
        wait_for(lambda: not processes_with(str(config)), "no process left")
    finally:
        if pidfile.exists():
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("engine", ["pyopenssl", "stdlib"])
def test_tcp_unix_and_tls_listeners_serve_together(tmp_path: Path, engine: str) -> None:
    """One daemon listening on TCP, a UNIX socket and TLS (either server.tls_engine) answers PHP on each; HTTPS is on only over TLS."""
    require_binary(find_php("php-fpm"), "php-fpm")
    import json
    import ssl

    unix_path = tmp_path / "fephp.sock"
    pem = self_signed_pem(tmp_path)
    config = write_config(tmp_path, "  use_fpm: true")
    config.write_text(
        config.read_text().replace(
            f'listen: ["{LISTEN}"]',
            f'tls_engine: {engine}\n  listen: ["{LISTEN}", "unix:{unix_path}", "ssl:0:interface=127.0.0.1:privateKey={pem}"]',
        )
    )
    pidfile, pid = start_daemon(tmp_path, config)
    try:
        tcp, tls = listening_on(pid, 2)  # in server.listen's order
        wait_for(lambda: answers(f"http://127.0.0.1:{tcp}/static/hello.txt"), "the listener")
        request = b"GET /env.php HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"

        def env_over(sock: socket.socket) -> dict:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            if b"\r\nTransfer-Encoding: chunked" in head:  # PHP's answer came in more than one read
                size, _, body = body.partition(b"\r\n")
                body = body[: int(size, 16)]
            return json.loads(body)

        with socket.create_connection(("127.0.0.1", tcp), timeout=10) as s:
            over_tcp = env_over(s)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(unix_path))
            over_unix = env_over(s)
        context = ssl.create_default_context(cafile=str(pem))
        with socket.create_connection(("127.0.0.1", tls), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                over_tls = env_over(s)
        assert (over_tcp["REQUEST_SCHEME"], "HTTPS" in over_tcp) == ("http", False)
        assert (over_unix["REQUEST_SCHEME"], over_unix["REMOTE_ADDR"], over_unix["SERVER_ADDR"]) == ("http", "unix:", "unix:")
        assert (over_tls["REQUEST_SCHEME"], over_tls["HTTPS"], over_tls["SERVER_PORT"]) == ("https", "on", str(tls))
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pidfile.exists(), "the pidfile to go")


def test_a_reactor_chosen_on_the_command_line_is_kept(tmp_path: Path) -> None:
    """``twistd --reactor poll fephp`` runs on poll: fephp installs its reactor only when none was chosen."""
    config = write_config(tmp_path, "  use_fpm: false")
    pidfile = daemonize(tmp_path, config, "--reactor", "poll")
    try:
        wait_for(pidfile.exists, "the pidfile")
        (port,) = listening_on(int(pidfile.read_text()))
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/static/hello.txt"), "the listener")
        assert "reactor class: twisted.internet.pollreactor.PollReactor." in (tmp_path / "fephp.log").read_text()
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
            wait_for(lambda: not pidfile.exists(), "the pidfile to go")
