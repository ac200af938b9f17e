"""A real php-fpm for tests, from a generated config in a temp dir: a UNIX-socket pool and a TCP pool."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from fephp.fastcgi import ClientConnection, EndRequest, Stderr, Stdout
from fephp.process.fpmconfig import PoolSpec, php_fpm_argv, render_config
from tests.support import PHP_DIR
from tests.support.ports import alive, bound_listener
from tests.support.processes import group_members

READY_WITHIN = 15.0


def wait_connectable(address: str | tuple[str, int], process: subprocess.Popen, log: Path) -> None:
    """Block until a connect to *address* succeeds; fail if php-fpm exits or takes too long."""
    deadline = time.monotonic() + READY_WITHIN
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"php-fpm exited with {process.returncode}: {log.read_text()}")
        with socket.socket(family) as s:
            try:
                s.connect(address)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"php-fpm not ready in {READY_WITHIN} s: {log.read_text()}")
        time.sleep(0.02)  # readiness polling of an external process, bounded by the deadline


def fastcgi_get(
    sock: socket.socket, script: str, name: str, extra: Optional[Mapping[bytes, bytes]] = None
) -> tuple[bytes, bytes, EndRequest]:
    """One FastCGI GET of *script* (its SCRIPT_NAME and REQUEST_URI *name*, more PARAMS in *extra*) on the connected *sock*.

    Returns PHP's stdout, its stderr and the END_REQUEST; the socket's own
    timeout bounds each read, and a close before END_REQUEST fails.
    """
    conn = ClientConnection()
    params = {
        b"GATEWAY_INTERFACE": b"CGI/1.1",
        b"REQUEST_METHOD": b"GET",
        b"SCRIPT_FILENAME": script.encode(),
        b"SCRIPT_NAME": name.encode(),
        b"REQUEST_URI": name.encode(),
        b"QUERY_STRING": b"",
        b"SERVER_PROTOCOL": b"HTTP/1.1",
        **(extra or {}),
    }
    sock.sendall(conn.begin_request(1, params, keep_conn=False) + conn.end_stdin(1))
    stdout = stderr = b""
    while True:
        data = sock.recv(65536)
        assert data, "php-fpm closed the connection before END_REQUEST"
        for event in conn.receive_data(data):
            if isinstance(event, Stdout):
                stdout += event.data
            elif isinstance(event, Stderr):
                stderr += event.data
            elif isinstance(event, EndRequest):
                return stdout, stderr, event


@dataclass
class PHPFPM:
    """A php-fpm master with a UNIX-socket pool and a TCP pool, each of ``children`` children."""

    workdir: Path
    children: int = 8
    max_requests: int = 0
    request_terminate_timeout: int = 0
    binary: str = ""
    unix_path: str = ""
    tcp_port: int = 0
    process: subprocess.Popen | None = None
    config: Path = field(init=False)
    log: Path = field(init=False)
    #: The TCP pool's socket, bound by the test on a port the kernel chose and
    #: handed to php-fpm at start (then closed here: php-fpm holds it).
    _tcp_socket: Optional[socket.socket] = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.unix_path = str(self.workdir / "fpm.sock")
        if not self.tcp_port:
            self._tcp_socket = bound_listener()
            self.tcp_port = int(self._tcp_socket.getsockname()[1])
        self.config = self.workdir / "php-fpm.conf"
        self.log = self.workdir / "php-fpm.log"
        pools = [
            PoolSpec("unix", self.unix_path, self.children, self.max_requests, self.request_terminate_timeout),
            PoolSpec("tcp", f"127.0.0.1:{self.tcp_port}", self.children, self.max_requests, self.request_terminate_timeout),
        ]
        self.config.write_text(
            render_config(pools, pid_file=str(self.workdir / "php-fpm.pid"), error_log=str(self.log))
        )

    @property
    def unix_endpoint(self) -> str:
        return f"unix:path={self.unix_path}"

    @property
    def tcp_endpoint(self) -> str:
        return f"tcp:host=127.0.0.1:port={self.tcp_port}"

    def start(self) -> "PHPFPM":
        if os.path.exists(self.unix_path):
            os.unlink(self.unix_path)
        listener = self._tcp_socket or self._rebind()
        self.process = subprocess.Popen(
            php_fpm_argv(self.binary, str(self.config)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # A group of its own, so kill() reaches children forked after it looked.
            start_new_session=True,
            # php-fpm adopts a listening socket named in FPM_SOCKETS ("address=fd"),
            # as it does across its own re-exec, instead of binding the address.
            pass_fds=(listener.fileno(),),
            env=dict(os.environ, FPM_SOCKETS=f"127.0.0.1:{self.tcp_port}={listener.fileno()}"),
        )
        listener.close()  # php-fpm has its copy; a killed php-fpm refuses connections, as a real crash does
        self._tcp_socket = None
        wait_connectable(self.unix_path, self.process, self.log)
        wait_connectable(("127.0.0.1", self.tcp_port), self.process, self.log)
        return self

    def _rebind(self) -> socket.socket:
        """The TCP pool's port again, for a start after a stop or kill (a restarted php-fpm comes back on its address)."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.tcp_port))
        s.listen(511)
        s.set_inheritable(True)
        return s

    def kill(self) -> None:
        """SIGKILL the master and its children, as a crash would."""
        if self.process is None:
            return
        pid = self.process.pid
        os.killpg(pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        children = group_members(pid)
        self.process = None
        deadline = time.monotonic() + 10
        while any(alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.01)  # the kernel closes a killed child's sockets a moment later

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def script(self, name: str) -> str:
        return str(PHP_DIR / "fastcgi" / name)
