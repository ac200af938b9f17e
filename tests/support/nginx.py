"""A real nginx in front of the session php-fpm, for differential tests.

:class:`Nginx` writes a complete ``nginx.conf`` into a temp dir and runs
``nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'`` in the foreground, on
127.0.0.1 and a port the kernel chose (bound by the test, inherited by nginx), with the front-controller configuration PHP
applications document (the one docs/routing.md mirrors):

* ``try_files $uri $uri/ /index.php?$query_string`` for pretty URLs;
* ``fastcgi_split_path_info`` + ``try_files $fastcgi_script_name =404``
  (CVE-2019-11043: a missing script is 404, never a PATH_INFO trick);
* hidden segments (except ``.well-known``) and the ``deny`` prefixes refused.

The FastCGI parameters are written out one by one rather than included from
/etc/nginx/fastcgi_params, so the test does not depend on the host's copy:
they are Debian's file as installed with nginx 1.22.1 (its security update
included, which sends ``HTTP_HOST $host``), plus SCRIPT_FILENAME and PATH_INFO.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import bound_listener
from tests.support.processes import require_binary

__all__ = ["Nginx", "FASTCGI_PARAMS", "find_nginx"]

READY_WITHIN = 15.0

#: Debian's /etc/nginx/fastcgi_params (nginx 1.22.1 package), in its order.
FASTCGI_PARAMS: tuple[tuple[str, str], ...] = (
    ("QUERY_STRING", "$query_string"),
    ("REQUEST_METHOD", "$request_method"),
    ("CONTENT_TYPE", "$content_type"),
    ("CONTENT_LENGTH", "$content_length"),
    ("SCRIPT_NAME", "$fastcgi_script_name"),
    ("REQUEST_URI", "$request_uri"),
    ("DOCUMENT_URI", "$document_uri"),
    ("DOCUMENT_ROOT", "$document_root"),
    ("SERVER_PROTOCOL", "$server_protocol"),
    ("REQUEST_SCHEME", "$scheme"),
    ("HTTPS", "$https if_not_empty"),
    ("GATEWAY_INTERFACE", "CGI/1.1"),
    ("SERVER_SOFTWARE", "nginx/$nginx_version"),
    ("REMOTE_ADDR", "$remote_addr"),
    ("REMOTE_PORT", "$remote_port"),
    ("REMOTE_USER", "$remote_user"),
    ("SERVER_ADDR", "$server_addr"),
    ("SERVER_PORT", "$server_port"),
    ("SERVER_NAME", "$server_name"),
    ("REDIRECT_STATUS", "200"),
    ("HTTP_HOST", "$host"),
)

#: The MIME types the test sites use (nginx's mime.types spellings).
_TYPES = {
    "text/html": "html htm",
    "text/css": "css",
    "text/plain": "txt",
    "application/javascript": "js",
    "application/json": "json",
    "image/jpeg": "jpg jpeg",
    "image/gif": "gif",
    "image/png": "png",
}


def find_nginx() -> str:
    """The nginx binary, or skip (locally) / fail (under CI)."""
    return require_binary(shutil.which("nginx") or _sbin("nginx"), "nginx")


def _sbin(name: str) -> str | None:
    for folder in ("/usr/sbin", "/usr/local/sbin"):
        candidate = Path(folder) / name
        if candidate.is_file():
            return str(candidate)
    return None


@dataclass
class Nginx:
    """One nginx master with one server block, serving *root* through php-fpm at *fpm_socket*."""

    workdir: Path
    root: Path
    fpm_socket: str
    binary: str
    deny: tuple[str, ...] = ("/data/",)
    server_name: str = "127.0.0.1"
    #: Keep PATH_INFO across try_files (nginx ticket #321): without it the
    #: recommended config sends PATH_INFO "" because try_files resets the
    #: captures of fastcgi_split_path_info.
    keep_path_info: bool = False
    #: nginx.conf lines added to the http block, the server block and the PHP
    #: location (gzip, expires, X-Accel-Redirect locations of the feature tests).
    http_extra: str = ""
    server_extra: str = ""
    php_extra: str = ""
    #: Parameters of the listen directive ("ssl http2" for HTTP/2 over TLS).
    listen_options: str = ""
    port: int = 0
    process: subprocess.Popen | None = None
    config: Path = field(init=False)
    error_log: Path = field(init=False)
    #: The listening socket, bound here on port 0 (nginx refuses ``listen
    #: 127.0.0.1:0``) and handed to nginx at start, which then holds it alone.
    _listener: socket.socket | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self._listener = bound_listener()
            self.port = int(self._listener.getsockname()[1])
        self.config = self.workdir / "nginx.conf"
        self.error_log = self.workdir / "error.log"
        self.config.write_text(self.render())

    def render(self) -> str:
        """The whole nginx.conf."""
        d = self.workdir
        params = "\n".join(f"            fastcgi_param {name} {value};" for name, value in FASTCGI_PARAMS)
        types = "\n".join(f"        {mime} {exts};" for mime, exts in _TYPES.items())
        denies = "\n".join(f"        location ^~ {prefix} {{ deny all; }}" for prefix in self.deny)
        # Workers of a root master would switch to "nobody" and could not
        # reach php-fpm's 0600 root socket; as another user the line is moot.
        user = "user root;\n" if _is_root() else ""
        keep = "            set $path_info $fastcgi_path_info;\n" if self.keep_path_info else ""
        path_info = "$path_info" if self.keep_path_info else "$fastcgi_path_info"
        return f"""\
{user}worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    types {{
{types}
    }}
    default_type application/octet-stream;
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    fastcgi_temp_path {d}/fastcgi;
    proxy_temp_path {d}/proxy;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 64m;
    sendfile on;
{self.http_extra}
    server {{
        listen 127.0.0.1:{self.port}{" " + self.listen_options if self.listen_options else ""};
        server_name {self.server_name};
        root {self.root};
        index index.php;

        location ~ /\\.(?!well-known) {{ deny all; }}
{denies}
{self.server_extra}

        location / {{
            try_files $uri $uri/ /index.php?$query_string;
        }}

        location ~ \\.php(/|$) {{
            fastcgi_split_path_info ^(.+?\\.php)(/.*)$;
{keep}            try_files $fastcgi_script_name =404;
{params}
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_param PATH_INFO {path_info};
{self.php_extra}
            fastcgi_pass unix:{self.fpm_socket};
        }}
    }}
}}
"""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Nginx":
        """Run nginx in the foreground; return once it accepts connections."""
        for folder in ("client_body", "fastcgi", "proxy", "uwsgi", "scgi"):
            (self.workdir / folder).mkdir(exist_ok=True)
        check = subprocess.run(
            [self.binary, "-t", "-q", "-p", str(self.workdir), "-c", str(self.config)],
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            raise RuntimeError(f"nginx rejected its config: {check.stderr}")
        inherited = (self._listener.fileno(),) if self._listener is not None else ()
        self.process = subprocess.Popen(
            [self.binary, "-p", str(self.workdir), "-c", str(self.config), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            # nginx adopts the listening sockets named in $NGINX ("fd;fd;"), as in
            # its binary upgrade, when their address matches a listen directive.
            pass_fds=inherited,
            env=dict(os.environ, NGINX="".join(f"{fd};" for fd in inherited)) if inherited else None,
        )
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        try:
            self._wait_connectable()
        except RuntimeError:
            self.stop()
            raise
        return self

    def _wait_connectable(self) -> None:
        deadline = time.monotonic() + READY_WITHIN
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}: {self._log()}")
            with socket.socket() as s:
                try:
                    s.connect(("127.0.0.1", self.port))
                    return
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"nginx not ready in {READY_WITHIN} s: {self._log()}")
            time.sleep(0.02)  # readiness polling of an external process, bounded by the deadline

    def _log(self) -> str:
        try:
            return self.error_log.read_text()
        except OSError:
            return "(no error log)"

    def stop(self) -> None:
        """SIGQUIT (graceful), then SIGKILL the group if it lingers."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


def _is_root() -> bool:
    return os.geteuid() == 0
