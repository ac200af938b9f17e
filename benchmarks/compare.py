"""fephp against nginx and Caddy in front of one php-fpm pool, on loopback.

Started by ``benchmarks/run`` (which installs what is missing first).  It
starts one php-fpm pool and, in front of it, fephp (``twistd -n fephp``),
nginx with one worker (``nginx``) and with ``worker_processes auto``
(``nginx-auto``, what users run) and Caddy, plus a fephp in php-cgi mode for
the before/after line, and issue 18's floor (``benchmarks/floor.py``, a raw
Twisted Protocol that does only what a PHP front must: ``floor``, and
``floor-pypy`` with ``--pypy``) in the hello.php scenarios.
Each scenario runs its candidates interleaved round by round (A B C A B C
...), with wrk for the throughput scenarios, ``fephp bench`` for fe-php's
fixed-rate scenario and h2load for HTTP/2 (fephp, nginx, Caddy and with
``--pypy`` fephp-pypy on TLS listeners, HTTP/2 beside HTTP/1.1 over the
same TLS), and reads the CPU time of every process group from
/proc before and after each measurement: the front's, php-fpm's and the load
generator's CPU per request are columns, so that the table shows where the
cores go.  The result is one table, printed
and written as markdown and JSON into the results folder.

Everything started here runs in its own session and is killed at the end,
on an error, on Ctrl-C or on SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DOCROOT = os.path.join(HERE, "docroot")
sys.path.insert(0, REPO)

from fephp.process.binaries import find_php  # noqa: E402
from fephp.process.fpmconfig import PoolSpec, php_fpm_argv, render_config  # noqa: E402
from tests.support.ports import bound_listener, wait_listening  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
BIG_SIZE = 1024 * 1024
#: benchmarks/docroot/page.php's HTML page, uncompressed.
PAGE_SIZE = 61505
#: The compressed-HTML scenarios ask for gzip only, which every front has.
GZIP = ("Accept-Encoding: gzip",)

#: fephp-pypy's young generation, as etc/fephp-pypy.service sets it: PyPy's
#: default follows the cache size /proc/cpuinfo reports, a few hundred KB on
#: virtual machines, where collections then take most of a large response's CPU.
PYPY_GC_NURSERY = "32MB"
#: ... and the heap below which PyPy never collects its old generation, also
#: as the unit sets it: 8 times the nursery unless set, which let fephp-pypy
#: grow by 256 MB under steady load (benchmarks/memory.py).
PYPY_GC_MIN = "64MB"

#: Bounds on every wait, so that a stuck server cannot hang the run.
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
TOOL_SLACK = 60.0


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: unwind and clean up as for Ctrl-C."""


# --------------------------------------------------------------------------
# processes


class Processes:
    """Every process this script starts, each in its own session, killed at the end."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], *, log: str, env: dict[str, str] | None = None,
              cwd: str | None = None, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=cwd, start_new_session=True, pass_fds=pass_fds,
            )
        self.started.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """TERM to the process's own group, KILL after STOP_TIMEOUT."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        # Children that outlived their leader (php-fpm workers, nginx workers).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self) -> None:
        for _name, proc in reversed(self.started):
            self.stop(proc)
        self.started.clear()


# --------------------------------------------------------------------------
# /proc


def _proc_stats() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, utime+stime, cutime+cstime) in clock ticks, for every process."""
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        rest = raw[raw.rindex(b")") + 2:].split()
        # Fields after the name: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
        stats[int(entry)] = (int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14]))
    return stats


def group_cpu(root: int, stats: dict[int, tuple[int, int, int]]) -> tuple[float, float]:
    """CPU seconds of *root* and its live descendants, and of its reaped children (cutime)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    own = 0
    todo = [root]
    seen = set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        own += stats[pid][1]
        todo.extend(children.get(pid, ()))
    reaped = stats[root][2] if root in stats else 0
    return own / CLK_TCK, reaped / CLK_TCK


def busy_cpu_s() -> float:
    """CPU seconds spent by the whole machine (all cores, not idle or iowait), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------
# small helpers


def free_port() -> int:
    """A port nothing listened on a moment ago: only for Caddy (see start_caddy), racing anything else that binds."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fephp_port(proc: subprocess.Popen[bytes]) -> int:
    """The port fephp (started on tcp:0 or ssl:0, its first listener) got, read from /proc once it listens.

    *proc* is fephp's own process: taskset and valgrind exec it in place.
    """
    return wait_listening(proc.pid, within=READY_TIMEOUT)[0][1]


def start_nginx(procs: Processes, name: str, argv: list[str], listener: socket.socket, *, log: str) -> subprocess.Popen[bytes]:
    """nginx on *listener*, a socket bound here on port 0 (nginx refuses ``listen ...:0``).

    nginx adopts the listening sockets named in $NGINX ("fd;fd;"), as in its
    binary upgrade, when their address matches a listen directive.
    """
    env = dict(os.environ, NGINX=f"{listener.fileno()};")
    proc = procs.start(name, argv, log=log, env=env, pass_fds=(listener.fileno(),))
    listener.close()
    return proc


def wait_for_unix_socket(path: str, proc: subprocess.Popen[bytes], log: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"php-fpm exited with {proc.returncode}; see {log}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"php-fpm did not listen on {path} within {READY_TIMEOUT:.0f} s; see {log}")


def http_get(url: str, timeout: float = 10.0, headers: tuple[str, ...] = ()) -> tuple[int, bytes]:
    # The TLS fronts use the run's own self-signed certificate.
    context = _unverified_tls() if url.startswith("https:") else None
    request = urllib.request.Request(url, headers=dict(h.split(": ", 1) for h in headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            if response.headers.get("Content-Encoding") == "gzip":
                import gzip

                return response.status, gzip.decompress(response.read())
            if headers and "Accept-Encoding" in headers[0]:
                return response.status, b"(not gzipped)"
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _unverified_tls() -> Any:
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def self_signed(folder: str) -> tuple[str, str]:
    """A fresh key and a one-day self-signed certificate for 127.0.0.1: (key path, certificate path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = os.path.join(folder, "tls-key.pem"), os.path.join(folder, "tls-cert.pem")
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def wait_for_http(url: str, proc: subprocess.Popen[bytes], name: str, log: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    last: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {log}:\n{tail(log)}")
        try:
            status, _ = http_get(url, timeout=2.0)
            if status == 200:
                return
            last = f"status {status}"
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{name} not ready at {url} within {READY_TIMEOUT:.0f} s ({last}); see {log}:\n{tail(log)}")


def tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def command_output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr).strip() else "?"


def machine_facts() -> dict[str, Any]:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
    except OSError:
        pass
    import twisted

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version() + " (" + platform.python_implementation() + ")",
        "twisted": twisted.__version__,
        "php_fpm": command_output([find_php("php-fpm") or "php-fpm", "-v"]),
        "nginx": command_output(["nginx", "-v"]),
        "caddy": command_output(["caddy", "version"]),
        "wrk": command_output(["wrk", "-v"]),
    }


# --------------------------------------------------------------------------
# the servers


PARAMS = """\
fastcgi_param  QUERY_STRING       $query_string;
fastcgi_param  REQUEST_METHOD     $request_method;
fastcgi_param  CONTENT_TYPE       $content_type;
fastcgi_param  CONTENT_LENGTH     $content_length;
fastcgi_param  SCRIPT_NAME        $fastcgi_script_name;
fastcgi_param  SCRIPT_FILENAME    $document_root$fastcgi_script_name;
fastcgi_param  REQUEST_URI        $request_uri;
fastcgi_param  DOCUMENT_URI       $document_uri;
fastcgi_param  DOCUMENT_ROOT      $document_root;
fastcgi_param  SERVER_PROTOCOL    $server_protocol;
fastcgi_param  REQUEST_SCHEME     $scheme;
fastcgi_param  HTTPS              $https if_not_empty;
fastcgi_param  GATEWAY_INTERFACE  CGI/1.1;
fastcgi_param  SERVER_SOFTWARE    nginx/$nginx_version;
fastcgi_param  REMOTE_ADDR        $remote_addr;
fastcgi_param  REMOTE_PORT        $remote_port;
fastcgi_param  SERVER_ADDR        $server_addr;
fastcgi_param  SERVER_PORT        $server_port;
fastcgi_param  SERVER_NAME        $server_name;
fastcgi_param  REDIRECT_STATUS    200;
"""


def nginx_conf(tmp: str, port: int, sock: str, children: int, workers: str, name: str = "nginx",
               socks: list[str] | None = None) -> str:
    # One worker by default: the upstream keepalive cache is per worker, and
    # "auto" (2 here) would let two workers keep 2 x 8 idle connections to 8
    # children, so that a worker could wait for a child pinned by the other's
    # idle connection.  keepalive_requests are raised (defaults: 1000) so that
    # nginx, like fephp and Caddy, never closes a busy kept connection.
    # (The "nginx-auto" candidate passes its keepalive share as *children*.)
    # Several pools (--only "2 backends"): nginx's defaults fail a request over
    # on a connect error or timeout (fastcgi_next_upstream error timeout) and
    # leave a failed server alone for fail_timeout=10s after max_fails=1.
    servers = "\n        ".join(f"server unix:{path};" for path in (socks or [sock]))
    return f"""\
worker_processes {workers};
user root;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    types {{ text/plain txt; text/html html; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    # As fephp's compression defaults (level 5, 512 bytes, Vary); only
    # requests with Accept-Encoding (the "gzip" scenarios) are compressed.
    gzip on;
    gzip_comp_level 5;
    gzip_min_length 512;
    gzip_vary on;
    client_body_temp_path {tmp}/{name}-body;
    fastcgi_temp_path {tmp}/{name}-fastcgi;
    proxy_temp_path {tmp}/{name}-proxy;
    uwsgi_temp_path {tmp}/{name}-uwsgi;
    scgi_temp_path {tmp}/{name}-scgi;

    upstream php {{
        {servers}
        keepalive {children};
        keepalive_timeout 1s;
        keepalive_requests 1000000;
    }}

    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {DOCROOT};
        index index.php;

        location / {{
            try_files $uri $uri/ /index.php$is_args$args;
        }}

        location ~ \\.php$ {{
            try_files $uri =404;
            fastcgi_pass php;
            fastcgi_keep_conn on;
            include {tmp}/fastcgi_params;
        }}
    }}
}}
"""


def nginx_tls_conf(tmp: str, port: int, sock: str, children: int, workers: str, key: str, cert: str) -> str:
    """The same nginx, on a TLS listener that offers HTTP/2 (``listen ... ssl http2``, as 1.22 spells it)."""
    conf = nginx_conf(tmp, port, sock, children, workers, "nginx-tls")
    return conf.replace(
        f"listen 127.0.0.1:{port};",
        f"listen 127.0.0.1:{port} ssl http2;\n        ssl_certificate {cert};\n        ssl_certificate_key {key};",
    )


def caddyfile(port: int, sock: str, tls: tuple[str, str] | None = None) -> str:
    """Caddy on plain HTTP, or with *tls* (key, certificate) on an https listener offering h2 and http/1.1.

    ``protocols h1 h2`` leaves out HTTP/3 (Caddy 2.6 opens it on UDP by default), which
    no other front offers and no scenario measures.
    """
    site = f"http://127.0.0.1:{port}"
    servers = ""
    certificate = ""
    if tls is not None:
        site = f"https://127.0.0.1:{port}"
        servers = "\tservers {\n\t\tprotocols h1 h2\n\t}\n"
        certificate = f"\ttls {tls[1]} {tls[0]}\n"
    return f"""\
{{
\tadmin off
\tauto_https off
{servers}}}

{site} {{
\tbind 127.0.0.1
{certificate}\troot * {DOCROOT}
\tencode {{
\t\tgzip 5
\t\tminimum_length 512
\t}}
\tphp_fastcgi unix/{sock}
\tfile_server
}}
"""


def fephp_yaml(port: int, sock: str, children: int, use_fpm: bool, root: str = DOCROOT) -> str:
    php = f'{{use_fpm: true, fpm_socket: "unix:path={sock}", worker_pool_size: {children}, queue_size: 1024}}'
    if not use_fpm:
        php = "{use_fpm: false}"
    # idle: 1 so that fephp's kept connections release their php-fpm children
    # soon after its turn (nginx's upstream keepalive_timeout is 1s likewise).
    return (
        f'server: {{listen: ["tcp:{port}:interface=127.0.0.1"], root: "{root}", index: [index.php], '
        f"front_controller: /index.php, deny: [], server_software: fephp, shutdown_grace: 1}}\n"
        f"php: {php}\n"
        "timeouts: {connect: 5, response: 60, idle: 1, queue: 30}\n"
        "logging: {access_log: null, level: warn}\n"
    )


def fephp_two_yaml(port: int, socks: list[str], per_pool: int) -> str:
    """fephp over the two pools of the "2 backends" scenarios: one balancer, *per_pool* connections each."""
    backends = ", ".join(f'{{address: "unix:path={sock}", pool_size: {per_pool}}}' for sock in socks)
    return (
        f'server: {{listen: ["tcp:{port}:interface=127.0.0.1"], root: "{DOCROOT}", index: [index.php], '
        f"front_controller: /index.php, deny: [], server_software: fephp, shutdown_grace: 1}}\n"
        f"php: {{backends: [{backends}], queue_size: 1024}}\n"
        "timeouts: {connect: 1, response: 60, idle: 1, queue: 30}\n"
        "logging: {access_log: null, level: warn}\n"
    )


def twistd_argv(python: str | None = None) -> list[str]:
    if python is not None:  # another interpreter (--pypy): its own twistd entry point
        return [python, "-c", "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"]
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.access(beside, os.X_OK):
        return [beside]
    found = shutil.which("twistd")
    if found:
        return [found]
    # The same entry point as the console script.
    return [sys.executable, "-c", "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"]


@dataclass
class Front:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: str


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: str, procs: Processes) -> None:
        self.args = args
        self.tmp = tmp
        self.procs = procs
        self.sock = os.path.join(tmp, "fpm.sock")
        self.fronts: dict[str, Front] = {}
        self.fpm: subprocess.Popen[bytes] | None = None
        #: The two pools of the "2 backends" scenarios: name -> (socket, argv, log, process).
        self.pair: dict[str, tuple[str, list[str], str, subprocess.Popen[bytes]]] = {}
        self.server_prefix = ["taskset", "-c", "1"] if args.pin else []
        self.load_prefix = ["taskset", "-c", "0"] if args.pin else []
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = REPO + (os.pathsep + self.env["PYTHONPATH"] if self.env.get("PYTHONPATH") else "")

    # -- start ------------------------------------------------------------

    def start_fpm(self) -> None:
        binary = find_php("php-fpm")
        if binary is None:
            raise RuntimeError("php-fpm not found (apt-get install php8.2-fpm)")
        log = os.path.join(self.tmp, "php-fpm.log")
        conf = os.path.join(self.tmp, "php-fpm.conf")
        pool = PoolSpec(
            name="bench",
            listen=self.sock,
            max_children=self.args.children,
        )
        with open(conf, "w") as f:
            f.write(render_config([pool], pid_file=os.path.join(self.tmp, "php-fpm.pid"), error_log=log))
        # OPcache on from startup: as php_admin_value[opcache.enable] it is
        # applied per request, where PHP refuses to switch it on ("can't be
        # temporary enabled") and warns; -d sets it before the children fork.
        opcache = ["-d", "opcache.enable=1", "-d", "opcache.memory_consumption=64",
                   "-d", "opcache.validate_timestamps=0"]
        self.fpm = self.procs.start("php-fpm", self.server_prefix + php_fpm_argv(binary, conf) + opcache, log=log)
        wait_for_unix_socket(self.sock, self.fpm, log)

    def start_fpm_pair(self) -> None:
        """Two more php-fpm masters, ``a`` and ``b``, of half the children each, for the "2 backends" scenarios."""
        binary = find_php("php-fpm")
        if binary is None:
            raise RuntimeError("php-fpm not found (apt-get install php8.2-fpm)")
        for name in ("a", "b"):
            sock = os.path.join(self.tmp, f"fpm-{name}.sock")
            log = os.path.join(self.tmp, f"php-fpm-{name}.log")
            conf = os.path.join(self.tmp, f"php-fpm-{name}.conf")
            pool = PoolSpec(name=f"bench_{name}", listen=sock, max_children=self.per_pool())
            with open(conf, "w") as f:
                f.write(render_config([pool], pid_file=os.path.join(self.tmp, f"php-fpm-{name}.pid"), error_log=log))
            argv = self.server_prefix + php_fpm_argv(binary, conf) + ["-d", "opcache.enable=1", "-d",
                   "opcache.memory_consumption=64", "-d", "opcache.validate_timestamps=0"]
            proc = self.procs.start(f"php-fpm-{name}", argv, log=log)
            self.pair[name] = (sock, argv, log, proc)
            wait_for_unix_socket(sock, proc, log)

    def per_pool(self) -> int:
        """Children (and connections) of each of the two pools: half of --children, so both together have as many."""
        return max(1, self.args.children // 2)

    def kill_pool_b(self) -> None:
        """SIGKILL pool b's master and children, as a crash would."""
        proc = self.pair["b"][3]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=STOP_TIMEOUT)

    def restart_pool_b(self) -> None:
        sock, argv, log, old = self.pair["b"]
        self.procs.started.remove(("php-fpm-b", old))
        if os.path.exists(sock):
            os.unlink(sock)
        proc = self.procs.start("php-fpm-b", argv, log=log)
        self.pair["b"] = (sock, argv, log, proc)
        wait_for_unix_socket(sock, proc, log)

    def start_fephp_two(self) -> None:
        conf = os.path.join(self.tmp, "fephp-2b.yaml")
        with open(conf, "w") as f:
            f.write(fephp_two_yaml(0, [self.pair[n][0] for n in ("a", "b")], self.per_pool()))
        log = os.path.join(self.tmp, "fephp-2b.log")
        argv = twistd_argv() + ["-n", "--pidfile", os.path.join(self.tmp, "fephp-2b.pid"), "fephp", "--config", conf]
        proc = self.procs.start("fephp-2b", self.server_prefix + argv, log=log, env=self.env, cwd=self.tmp)
        self.add_front("fephp-2b", fephp_port(proc), proc, log)

    def start_nginx_two(self) -> None:
        listener = bound_listener()
        port = listener.getsockname()[1]
        tmp = os.path.join(self.tmp, "nginx-2b")  # its own pid file and temp folders
        os.makedirs(tmp, exist_ok=True)
        with open(os.path.join(tmp, "fastcgi_params"), "w") as f:
            f.write(PARAMS)
        conf = os.path.join(tmp, "nginx.conf")
        socks = [self.pair[n][0] for n in ("a", "b")]
        with open(conf, "w") as f:
            f.write(nginx_conf(tmp, port, socks[0], self.args.children, self.args.nginx_workers, socks=socks))
        log = os.path.join(tmp, "nginx.log")
        argv = ["nginx", "-p", tmp + "/", "-c", conf, "-e", os.path.join(tmp, "nginx-error.log"), "-g", "daemon off;"]
        proc = start_nginx(self.procs, "nginx-2b", self.server_prefix + argv, listener, log=log)
        self.add_front("nginx-2b", port, proc, log)

    def php_groups(self, front: Front) -> list[int]:
        """The php-fpm masters whose process groups serve *front*."""
        if front.name.endswith("-2b"):
            return [self.pair[n][3].pid for n in ("a", "b")]
        assert self.fpm is not None
        return [self.fpm.pid]

    def start_fephp(self, name: str, use_fpm: bool, python: str | None = None, root: str = DOCROOT) -> None:
        env = self.env
        if python is not None:
            # As etc/fephp-pypy.service runs it (see there and docs/performance.md);
            # an exported value wins.
            env = dict({"PYPY_GC_NURSERY": PYPY_GC_NURSERY, "PYPY_GC_MIN": PYPY_GC_MIN}, **env)
        conf = os.path.join(self.tmp, f"{name}.yaml")
        with open(conf, "w") as f:
            f.write(fephp_yaml(0, self.sock, self.args.children, use_fpm, root))
        log = os.path.join(self.tmp, f"{name}.log")
        argv = twistd_argv(python) + ["-n", "--pidfile", os.path.join(self.tmp, f"{name}.pid"), "fephp", "--config", conf]
        proc = self.procs.start(name, self.server_prefix + argv, log=log, env=env, cwd=self.tmp)
        self.add_front(name, fephp_port(proc), proc, log)

    def start_floor(self, name: str, python: str | None = None) -> None:
        """benchmarks/floor.py as *name*, on port 0, keeping as many FastCGI connections as fephp."""
        env = self.env
        if python is not None:  # PyPy, with fephp-pypy's GC settings
            env = dict({"PYPY_GC_NURSERY": PYPY_GC_NURSERY, "PYPY_GC_MIN": PYPY_GC_MIN}, **env)
        log = os.path.join(self.tmp, f"{name}.log")
        argv = [python or sys.executable, os.path.join(HERE, "floor.py"), "--fpm", f"unix:{self.sock}",
                "--root", DOCROOT, "--port", "0", "--pool", str(self.args.children)]
        proc = self.procs.start(name, self.server_prefix + argv, log=log, env=env, cwd=self.tmp)
        self.add_front(name, fephp_port(proc), proc, log)

    def start_nginx(self, name: str = "nginx", workers: str | None = None) -> None:
        """nginx as *name*: "nginx" with --nginx-workers (1), "nginx-auto" with one worker per core."""
        listener = bound_listener()
        port = listener.getsockname()[1]
        with open(os.path.join(self.tmp, "fastcgi_params"), "w") as f:
            f.write(PARAMS)
        keepalive = self.args.children
        if workers == "auto":
            # What users run; each worker keeps its share of idle connections,
            # so that together they never pin more php-fpm children than exist.
            keepalive = max(1, self.args.children // (os.cpu_count() or 1))
        conf = os.path.join(self.tmp, f"{name}.conf")
        with open(conf, "w") as f:
            f.write(nginx_conf(self.tmp, port, self.sock, keepalive, workers or self.args.nginx_workers, name))
        log = os.path.join(self.tmp, f"{name}.log")
        argv = ["nginx", "-p", self.tmp + "/", "-c", conf, "-e", os.path.join(self.tmp, f"{name}-error.log"),
                "-g", "daemon off;"]
        proc = start_nginx(self.procs, name, self.server_prefix + argv, listener, log=log)
        self.add_front(name, port, proc, log)

    def start_caddy(self, name: str = "caddy", tls: tuple[str, str] | None = None) -> None:
        """Caddy as *name*: on plain HTTP, or with *tls* (key, certificate) as "caddy-tls"."""
        # Caddy takes no inherited socket without a plugin, and is not installed
        # where this was written to try a site address of port 0: the one
        # bind-close-rebind port left.
        port = free_port()
        conf = os.path.join(self.tmp, f"{name}.Caddyfile")
        with open(conf, "w") as f:
            f.write(caddyfile(port, self.sock, tls))
        env = dict(os.environ, HOME=self.tmp, XDG_CONFIG_HOME=os.path.join(self.tmp, f"{name}-config"),
                   XDG_DATA_HOME=os.path.join(self.tmp, f"{name}-data"))
        log = os.path.join(self.tmp, f"{name}.log")
        argv = ["caddy", "run", "--config", conf, "--adapter", "caddyfile"]
        proc = self.procs.start(name, self.server_prefix + argv, log=log, env=env, cwd=self.tmp)
        self.add_front(name, port, proc, log, scheme="https" if tls else "http")

    def start_tls_fronts(self, names: set[str]) -> None:
        """The TLS fronts among *names* (HTTP/2 by ALPN), one certificate for all, for the h2load scenarios."""
        key, cert = self_signed(self.tmp)
        for name in ("fephp-tls", "fephp-pypy-tls"):
            if name not in names:
                continue
            python = self.args.pypy if name == "fephp-pypy-tls" else None
            env = self.env
            if python is not None:  # as fephp-pypy
                env = dict({"PYPY_GC_NURSERY": PYPY_GC_NURSERY, "PYPY_GC_MIN": PYPY_GC_MIN}, **env)
            conf = os.path.join(self.tmp, f"{name}.yaml")
            with open(conf, "w") as f:
                f.write(fephp_yaml(0, self.sock, self.args.children, True).replace(
                    '"tcp:0:interface=127.0.0.1"', f'"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"'))
            log = os.path.join(self.tmp, f"{name}.log")
            argv = twistd_argv(python) + ["-n", "--pidfile", os.path.join(self.tmp, f"{name}.pid"), "fephp",
                                          "--config", conf]
            proc = self.procs.start(name, self.server_prefix + argv, log=log, env=env, cwd=self.tmp)
            self.add_front(name, fephp_port(proc), proc, log, scheme="https")
        if "nginx-tls" in names:
            listener = bound_listener()
            port = listener.getsockname()[1]
            conf = os.path.join(self.tmp, "nginx-tls.conf")
            with open(conf, "w") as f:
                f.write(nginx_tls_conf(self.tmp, port, self.sock, self.args.children, self.args.nginx_workers,
                                       key, cert))
            log = os.path.join(self.tmp, "nginx-tls.log")
            argv = ["nginx", "-p", self.tmp + "/", "-c", conf, "-e", os.path.join(self.tmp, "nginx-tls-error.log"),
                    "-g", "daemon off;"]
            proc = start_nginx(self.procs, "nginx-tls", self.server_prefix + argv, listener, log=log)
            self.add_front("nginx-tls", port, proc, log, scheme="https")
        if "caddy-tls" in names:
            self.start_caddy("caddy-tls", tls=(key, cert))

    def add_front(self, name: str, port: int, proc: subprocess.Popen[bytes], log: str, scheme: str = "http") -> None:
        url = f"{scheme}://127.0.0.1:{port}"
        wait_for_http(url + "/hello.php", proc, name, log)
        self.fronts[name] = Front(name, url, proc, log)

    def check(self) -> None:
        """Every front gives the same answers before anything is measured."""
        expect: dict[str, Callable[[bytes], bool]] = {
            "/hello.php": lambda b: b == b"Hello, world!\n",
            "/big.php": lambda b: len(b) == BIG_SIZE,
            "/static.txt": lambda b: len(b) == 1024,
            "/sleep50.php": lambda b: b.startswith(b"slept"),
            "/": lambda b: b.startswith(b"fephp benchmark front controller"),
            "/opcache.php": lambda b: b == b"opcache on\n",
            "/page.php": lambda b: len(b) == PAGE_SIZE,
        }
        for front in self.fronts.values():
            for path, ok in expect.items():
                if front.name in FLOOR_FRONTS and path not in FLOOR_PATHS:
                    continue  # the floor serves PHP scripts only, uncompressed
                status, body = http_get(front.url + path)
                if status != 200 or not ok(body):
                    raise RuntimeError(f"{front.name} {path}: status {status}, {len(body)} bytes: {body[:200]!r}")
            if front.name in FLOOR_FRONTS:
                continue
            # The compressed-HTML row measures gzip: every front must really send it.
            status, body = http_get(front.url + "/page.php", headers=GZIP)
            if status != 200 or len(body) != PAGE_SIZE:
                raise RuntimeError(f"{front.name} /page.php with gzip: status {status}, {len(body)} bytes: {body[:80]!r}")

    def warm_up(self) -> None:
        """Compile every script into opcache, let every front open its connections and PyPy's JIT compile."""
        for front in self.fronts.values():
            if front.name == "fephp-cgi":
                continue
            seconds = warm_up_seconds(front.name, self.args)
            for path in FLOOR_PATHS[:1] if front.name in FLOOR_FRONTS else (
                    "/hello.php", "/big.php", "/static.txt", "/", "/page.php"):
                if front.url.startswith("https:"):
                    # Both protocols the TLS scenarios measure, half the time each.
                    self.run_h2load(front.url + path, 8, seconds / 2, streams=1, h1=False)
                    self.run_h2load(front.url + path, 8, seconds / 2, streams=1, h1=True)
                else:
                    self.run_wrk(front.url + path, 8, seconds)
        time.sleep(self.args.pause)

    # -- measure ----------------------------------------------------------

    def run_wrk(self, url: str, connections: int, duration: float, headers: tuple[str, ...] = ()) -> dict[str, Any]:
        argv = self.load_prefix + ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
        for header in headers:
            argv += ["-H", header]
        argv.append(url)
        out = self.run_tool(argv, duration)
        result = parse_wrk(out)
        result["wrk_output"] = out  # kept in results.json, to check the parse
        return result

    def run_h2load(self, url: str, connections: int, duration: float, *, streams: int, h1: bool) -> dict[str, Any]:
        """h2load for *duration* seconds: HTTP/2 with *streams* per connection, or HTTP/1.1 over TLS (--h1)."""
        log_file = os.path.join(self.tmp, "h2load.tsv")
        argv = self.load_prefix + [
            "h2load", f"-c{connections}", f"-m{streams}", f"-D{max(1, round(duration))}", "-t1",
            f"--log-file={log_file}", *(["--h1"] if h1 else []), url,
        ]
        out = self.run_tool(argv, duration)
        result = parse_h2load(out, log_file)
        result["h2load_output"] = out
        os.unlink(log_file)
        return result

    def run_fephp_bench(self, url: str, rps: float, connections: int, duration: float) -> dict[str, Any]:
        out_json = os.path.join(self.tmp, "bench.json")
        if os.path.exists(out_json):
            os.unlink(out_json)
        argv = self.load_prefix + [
            sys.executable, "-m", "fephp.cli", "bench", "--url", url, "--duration", str(duration),
            "--rps", str(rps), "--concurrency", str(connections), "--json", out_json, "--quiet",
        ]
        self.run_tool(argv, duration)
        with open(out_json) as f:
            report = json.load(f)
        intended = report["latency_ms"]["intended"]
        return {
            "rps": report["achieved_rps"],
            "p50_ms": intended["p50_ms"],
            "p99_ms": intended["p99_ms"],
            "requests": report["responses"],
            "errors": report["error_count"],
            "error_kinds": report["errors"],
            "unsent": report["schedule"]["unsent"],
            "non_2xx": sum(n for code, n in report["status_codes"].items() if not code.startswith("2")),
        }

    def run_tool(self, argv: list[str], duration: float) -> str:
        log = os.path.join(self.tmp, "tool.out")
        proc = self.procs.start(argv[0], argv, log=log, env=self.env, cwd=REPO)
        try:
            proc.wait(timeout=duration + TOOL_SLACK)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{' '.join(argv)} ran past {duration + TOOL_SLACK:.0f} s")
        finally:
            self.procs.stop(proc)
            self.procs.started.remove((argv[0], proc))
        with open(log, errors="replace") as f:
            out = f.read()
        os.unlink(log)
        if proc.returncode not in (0, 1):  # fephp bench exits 1 only for thresholds, which we do not set
            raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}:\n{out[-2000:]}")
        return out

    def measure(self, scenario: "Scenario", front: Front, rss_samples: list[int] | None) -> dict[str, Any]:
        before = _proc_stats()
        busy0 = busy_cpu_s()
        tool0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        stop_sampling = threading.Event()
        sampler = None
        if rss_samples is not None:
            def sample() -> None:
                while not stop_sampling.wait(0.25):
                    value = rss_kib(front.proc.pid)
                    if value is not None:
                        rss_samples.append(value)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
        php_pids = self.php_groups(front)
        killer = None
        if scenario.kill_after:
            # One of the two pools dies a while into the measurement.
            killer = threading.Timer(scenario.kill_after, self.kill_pool_b)
            killer.start()
        started = time.monotonic()
        try:
            if scenario.tool == "wrk":
                result = self.run_wrk(front.url + scenario.path, scenario.connections, scenario.duration, scenario.headers)
            elif scenario.tool in ("h2load", "h2load-h1"):
                result = self.run_h2load(front.url + scenario.path, scenario.connections, scenario.duration,
                                         streams=scenario.streams, h1=scenario.tool == "h2load-h1")
            else:
                result = self.run_fephp_bench(front.url + scenario.path, scenario.rps, scenario.connections,
                                              scenario.duration)
        finally:
            stop_sampling.set()
            if sampler is not None:
                sampler.join(timeout=2)
            if killer is not None:
                killer.join()
        elapsed = time.monotonic() - started
        after = _proc_stats()
        busy1 = busy_cpu_s()
        tool1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        front_own0, front_reaped0 = group_cpu(front.proc.pid, before)
        front_own1, front_reaped1 = group_cpu(front.proc.pid, after)
        # A killed pool's time leaves /proc with it: it counts nothing here (the kill
        # scenario's php column undercounts), never less than nothing.
        php_spent = 0.0
        for pid in php_pids:
            php_spent += max(0.0, group_cpu(pid, after)[0] - group_cpu(pid, before)[0])
        n = max(1, result["requests"])
        result["front_cpu_s"] = front_own1 - front_own0
        # php-cgi children are the front's own, reaped after each request: their
        # time shows in the front's cutime and counts as PHP's.
        result["php_cpu_s"] = php_spent + (front_reaped1 - front_reaped0)
        result["front_us_per_req"] = result["front_cpu_s"] / n * 1e6
        result["php_us_per_req"] = result["php_cpu_s"] / n * 1e6
        result["wall_s"] = elapsed
        # The load generator is our reaped child; what the machine spent beyond
        # it, the front and php-fpm is other work (the machine is shared).
        result["tool_cpu_s"] = (tool1.ru_utime + tool1.ru_stime) - (tool0.ru_utime + tool0.ru_stime)
        result["tool_us_per_req"] = result["tool_cpu_s"] / n * 1e6
        other = (busy1 - busy0) - result["front_cpu_s"] - result["php_cpu_s"] - result["tool_cpu_s"]
        result["other_cores"] = max(0.0, other) / elapsed
        return result


WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * WRK_UNITS[match.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    """req/s, p50, p99 (ms), requests and errors from ``wrk --latency`` output."""
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", out, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = re.search(r"^\s+(\d+) requests in", out, re.M)
    if not (rps and p50 and p99 and total):
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    errors = 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        errors = sum(int(g) for g in socket_errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": _wrk_ms(p50.group(1)),
        "p99_ms": _wrk_ms(p99.group(1)),
        "requests": int(total.group(1)),
        "errors": errors,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
    }


def parse_h2load(out: str, log_file: str) -> dict[str, Any]:
    """req/s, requests and errors from h2load's summary; p50 and p99 (ms) from its per-request log."""
    rps = re.search(r"^finished in [0-9.]+m?s, ([0-9.]+) req/s", out, re.M)
    counts = re.search(r"^requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout", out, re.M)
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    if not (rps and counts and codes):
        raise RuntimeError(f"could not read h2load's output:\n{out}")
    # Each line: start time (µs since the epoch), status, duration (µs).
    durations = []
    with open(log_file) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[1].isdigit() and int(parts[1]) > 0:
                durations.append(int(parts[2]) / 1000.0)
    durations.sort()

    def percentile(p: float) -> float:
        return durations[min(len(durations) - 1, int(p * len(durations)))] if durations else float("nan")

    return {
        "rps": float(rps.group(1)),
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "requests": int(counts.group(3)),
        "errors": int(counts.group(4)) + int(counts.group(5)) + int(counts.group(6)),
        "non_2xx": int(codes.group(2)) + int(codes.group(3)) + int(codes.group(4)),
    }


# --------------------------------------------------------------------------
# scenarios and the table


@dataclass
class Scenario:
    name: str
    path: str
    connections: int
    duration: float
    tool: str = "wrk"  # or "fephp-bench", "h2load" (HTTP/2), "h2load-h1" (HTTP/1.1 over TLS)
    rps: float = 0.0
    streams: int = 1  # h2load: concurrent streams per connection
    fronts: tuple[str, ...] = ("fephp", "nginx", "nginx-auto", "caddy")
    #: Request headers wrk adds (-H).
    headers: tuple[str, ...] = ()
    rounds: list[dict[str, Any]] = field(default_factory=list)
    #: Seconds into each measurement at which pool b is killed (0: never); it is restarted after.
    kill_after: float = 0.0


#: The fronts of the "2 backends" scenarios.
TWO_BACKENDS = ("fephp-2b", "nginx-2b")
#: After a pool was killed and restarted: long enough for nginx's fail_timeout (10 s) and fephp's
#: next check (at most 10 s after its last) to take it back.
RECOVERY_S = 12.0


#: Issue 18's floor (benchmarks/floor.py) on CPython and on PyPy (with --pypy): only in the hello.php
#: scenarios without gzip; it answers the PHP scripts of check() and nothing else.
FLOOR_FRONTS = ("floor", "floor-pypy")
FLOOR_PATHS = ("/hello.php", "/big.php", "/sleep50.php", "/opcache.php", "/page.php")


#: The fronts of the TLS scenarios: the same servers on ssl: / "listen ... ssl http2" / https listeners, one
#: certificate for all; fephp-pypy-tls (the last) only with --pypy.
TLS_FRONTS = ("fephp-tls", "nginx-tls", "caddy-tls", "fephp-pypy-tls")


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    d = args.duration
    fronts: tuple[str, ...] = ("fephp", "nginx", "nginx-auto", "caddy") + (("fephp-pypy",) if args.pypy else ())
    floors = fronts + FLOOR_FRONTS[:2 if args.pypy else 1]
    tls = TLS_FRONTS if args.pypy else TLS_FRONTS[:-1]
    all_of_them = [
        Scenario("hello c=1", "/hello.php", 1, d, fronts=floors),
        Scenario("hello c=10", "/hello.php", 10, d, fronts=floors),
        Scenario("hello gzip c=10", "/hello.php", 10, d, fronts=fronts, headers=GZIP),
        Scenario("hello c=64", "/hello.php", 64, d, fronts=floors),
        Scenario("1 MiB c=10", "/big.php", 10, d, fronts=fronts),
        Scenario("HTML 60 KB c=10", "/page.php", 10, d, fronts=fronts),
        Scenario("HTML 60 KB gzip c=10", "/page.php", 10, d, fronts=fronts, headers=GZIP),
        Scenario("sleep50 c=64", "/sleep50.php", 64, d, fronts=fronts),
        Scenario("static 1 KiB c=64", "/static.txt", 64, d, fronts=fronts),
        Scenario("fe-php 100 rps c=10", "/", 10, args.fephp_duration, tool="fephp-bench", rps=100.0,
                 fronts=fronts + ("fephp-cgi",)),
        # Over TLS, h2load for both protocols: HTTP/2 (10 connections of 10
        # streams each) beside HTTP/1.1 (10 connections), fephp, nginx and Caddy.
        Scenario("h2 hello c=10 m=10", "/hello.php", 10, d, tool="h2load", streams=10, fronts=tls),
        Scenario("https/1.1 hello c=10", "/hello.php", 10, d, tool="h2load-h1", fronts=tls),
        Scenario("h2 static 1 KiB c=10 m=10", "/static.txt", 10, d, tool="h2load", streams=10, fronts=tls),
        # Two pools of half the children each, fephp's balancer beside nginx's upstream.
        Scenario("2 backends hello c=64", "/hello.php", 64, d, fronts=TWO_BACKENDS),
        Scenario("2 backends sleep50 c=64", "/sleep50.php", 64, d, fronts=TWO_BACKENDS),
        Scenario("2 backends sleep50 c=64, b killed", "/sleep50.php", 64, d, fronts=TWO_BACKENDS,
                 kill_after=round(d * 0.3, 1)),
    ]
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        all_of_them = [s for s in all_of_them if any(w in s.name for w in wanted)]
    return all_of_them


def warm_up_seconds(front: str, args: argparse.Namespace) -> float:
    """Seconds of load per path before measuring: 1, and --pypy-warmup for a front on PyPy (its JIT's warm-up)."""
    return float(args.pypy_warmup) if front.endswith(("-pypy", "-pypy-tls")) else 1.0


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(scenario_list: list[Scenario]) -> list[dict[str, Any]]:
    rows = []
    for scenario in scenario_list:
        by_front: dict[str, list[dict[str, Any]]] = {}
        for r in scenario.rounds:
            by_front.setdefault(r["front"], []).append(r)
        # The TLS scenarios compare with nginx and Caddy on TLS, the "2 backends" ones with their own nginx.
        nginx_rps = median([r["rps"] for r in by_front.get("nginx", by_front.get("nginx-tls", by_front.get("nginx-2b", [])))])
        nginx_auto_rps = median([r["rps"] for r in by_front.get("nginx-auto", [])])
        caddy_rps = median([r["rps"] for r in by_front.get("caddy", by_front.get("caddy-tls", []))])
        for front in scenario.fronts:
            runs = by_front.get(front, [])
            if not runs:
                continue
            rps = median([r["rps"] for r in runs])
            rows.append({
                "scenario": scenario.name,
                "front": front,
                "rounds": len(runs),
                "rps": rps,
                "rps_each": [round(r["rps"], 1) for r in runs],
                "p50_ms": median([r["p50_ms"] for r in runs]),
                "p99_ms": median([r["p99_ms"] for r in runs]),
                "front_us_per_req": median([r["front_us_per_req"] for r in runs]),
                "php_us_per_req": median([r["php_us_per_req"] for r in runs]),
                # Older results.json files have no load generator figure.
                "tool_us_per_req": median([r.get("tool_us_per_req", float("nan")) for r in runs]),
                "errors": sum(r["errors"] + r["non_2xx"] for r in runs),
                "other_cores": median([r["other_cores"] for r in runs]),
                "vs_nginx": rps / nginx_rps if nginx_rps == nginx_rps and nginx_rps > 0 else float("nan"),
                "vs_nginx_auto": (rps / nginx_auto_rps if nginx_auto_rps == nginx_auto_rps and nginx_auto_rps > 0
                                  else float("nan")),
                # The "ahead of Caddy in every row", at a glance.
                "vs_caddy": rps / caddy_rps if caddy_rps == caddy_rps and caddy_rps > 0 else float("nan"),
            })
    return rows


COLUMNS = [
    ("scenario", "scenario", "{}"),
    ("front", "front", "{}"),
    ("req/s", "rps", "{:.1f}"),
    ("p50 ms", "p50_ms", "{:.3f}"),
    ("p99 ms", "p99_ms", "{:.3f}"),
    ("front CPU µs/req", "front_us_per_req", "{:.0f}"),
    ("php-fpm CPU µs/req", "php_us_per_req", "{:.0f}"),
    ("load gen CPU µs/req", "tool_us_per_req", "{:.0f}"),
    ("vs nginx", "vs_nginx", "{:.2f}"),
    ("vs nginx auto", "vs_nginx_auto", "{:.2f}"),
    ("vs Caddy", "vs_caddy", "{:.2f}"),
    ("errors", "errors", "{}"),
    ("other load", "other_cores", "{:.2f}"),
]


def _cells(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [[fmt.format(row[key]) for _, key, fmt in COLUMNS] for row in rows]


def text_table(rows: list[dict[str, Any]]) -> str:
    header = [title for title, _, _ in COLUMNS]
    cells = _cells(rows)
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    for c in cells:
        lines.append("  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths))))
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = [title for title, _, _ in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(header) - 2)) + "|"]
    for c in _cells(rows):
        lines.append("| " + " | ".join(c) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run",
        description="fephp, nginx and Caddy in front of one php-fpm pool: req/s, latency, CPU per request.",
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds per scenario (default 3; 1 with --quick)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per wrk measurement (default 10; 3 with --quick)")
    parser.add_argument("--fephp-duration", type=float, default=None,
                        help="seconds per fe-php scenario measurement (default 60; 5 with --quick)")
    parser.add_argument("--quick", action="store_true", help="short everything: a smoke run of a minute or two")
    parser.add_argument("--pypy-warmup", type=float, default=None,
                        help="seconds of warm-up load per path for the PyPy fronts, for the JIT (default 5; 1 with "
                        "--quick); every other front gets 1")
    parser.add_argument("--children", type=int, default=8, help="php-fpm pm.max_children, fephp worker_pool_size "
                        "and nginx upstream keepalive (default 8)")
    parser.add_argument("--nginx-workers", default="1", help="nginx worker_processes (default 1; see the config)")
    parser.add_argument("--pause", type=float, default=2.0,
                        help="seconds between measurements, for idle FastCGI connections to close (default 2)")
    parser.add_argument("--pin", action="store_true",
                        help="taskset: load generator on CPU 0, servers and php-fpm on CPU 1")
    parser.add_argument("--only", help="comma-separated substrings of scenario names to run (default: all)")
    parser.add_argument("--out", help="results folder (default: a new temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder with configs and logs")
    parser.add_argument("--pypy", metavar="PYTHON",
                        help="also run fephp and the floor on this interpreter, as 'fephp-pypy', 'floor-pypy' "
                        "and, over TLS, 'fephp-pypy-tls' (a PyPy venv with fephp's "
                        "dependencies, e.g. .venv-pypy/bin/python)")
    args = parser.parse_args(argv)
    if args.pypy:
        args.pypy = os.path.abspath(args.pypy)  # the servers run in the temp folder
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    if args.fephp_duration is None:
        args.fephp_duration = 5.0 if args.quick else 60.0
    if args.pypy_warmup is None:
        args.pypy_warmup = 1.0 if args.quick else 5.0
    if not (1 <= args.rounds <= 20):
        parser.error("--rounds must be between 1 and 20")
    if not (1 <= args.duration <= 600 and 1 <= args.fephp_duration <= 600 and 1 <= args.pypy_warmup <= 600):
        parser.error("durations must be between 1 and 600 seconds")
    if not (1 <= args.children <= 256):
        parser.error("--children must be between 1 and 256")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("wrk", "nginx", "caddy", "h2load") + (("taskset",) if args.pin else ()):
        if shutil.which(tool) is None:
            print(f"benchmarks: {tool} not found (benchmarks/run installs it)", file=sys.stderr)
            return 2

    def on_signal(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    # Started in the background by benchmarks/run, Python would inherit an
    # ignored SIGINT; take it back so that Ctrl-C (forwarded) interrupts.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    # A short path: UNIX socket paths are limited to 107 bytes.
    tmp = tempfile.mkdtemp(prefix="fephp-bench-")
    out = args.out or tempfile.mkdtemp(prefix="fephp-bench-results-")
    os.makedirs(out, exist_ok=True)
    procs = Processes()
    bench = Bench(args, tmp, procs)
    scenario_list = scenarios(args)
    rss: dict[str, Any] = {}
    command = "benchmarks/run " + " ".join(sys.argv[1:] if argv is None else argv)
    started_at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    try:
        facts = machine_facts()
        print(f"benchmarks: {facts['nproc']} CPUs ({facts['cpu_model']}), {facts['ram_gib']} GiB; temp {tmp}",
              file=sys.stderr)
        bench.start_fpm()
        bench.start_fephp("fephp", use_fpm=True)
        bench.start_nginx()
        bench.start_nginx("nginx-auto", workers="auto")
        bench.start_caddy()
        if args.pypy:
            bench.start_fephp("fephp-pypy", use_fpm=True, python=args.pypy)
        for name in FLOOR_FRONTS:
            if any(name in s.fronts for s in scenario_list):
                bench.start_floor(name, python=args.pypy if name == "floor-pypy" else None)
        if any("fephp-cgi" in s.fronts for s in scenario_list):
            bench.start_fephp("fephp-cgi", use_fpm=False)
        tls_fronts = {name for s in scenario_list for name in s.fronts if name in TLS_FRONTS}
        if tls_fronts:
            bench.start_tls_fronts(tls_fronts)
        if any(set(TWO_BACKENDS) & set(s.fronts) for s in scenario_list):
            bench.start_fpm_pair()
            bench.start_fephp_two()
            bench.start_nginx_two()
        bench.check()
        bench.warm_up()
        rss["idle_kib"] = rss_kib(bench.fronts["fephp"].proc.pid)
        load_samples: list[int] = []

        total = sum(len(s.fronts) for s in scenario_list) * args.rounds
        done = 0
        for scenario in scenario_list:
            for round_no in range(1, args.rounds + 1):
                for name in scenario.fronts:
                    front = bench.fronts[name]
                    time.sleep(args.pause)
                    sample_rss = load_samples if (name == "fephp" and scenario.name == "hello c=64") else None
                    result = bench.measure(scenario, front, sample_rss)
                    if scenario.kill_after:
                        bench.restart_pool_b()
                        time.sleep(RECOVERY_S)  # a harness pause: each front takes pool b back on its own schedule
                    result.update(front=name, round=round_no)
                    scenario.rounds.append(result)
                    done += 1
                    print(f"[{done}/{total}] {scenario.name:<20} {name:<10} round {round_no}: "
                          f"{result['rps']:9.1f} req/s  p50 {result['p50_ms']:8.3f} ms  p99 {result['p99_ms']:8.3f} ms  "
                          f"front {result['front_us_per_req']:6.0f} µs/req  php {result['php_us_per_req']:6.0f} µs/req  "
                          f"load gen {result['tool_us_per_req']:5.0f} µs/req"
                          + f"  other load {result['other_cores']:.2f}"
                          + (f"  errors {result['errors'] + result['non_2xx']}" if result["errors"] + result["non_2xx"] else ""),
                          file=sys.stderr, flush=True)
        time.sleep(args.pause)
        rss["after_load_idle_kib"] = rss_kib(bench.fronts["fephp"].proc.pid)
        if load_samples:
            rss["hello_c64_max_kib"] = max(load_samples)
            rss["hello_c64_median_kib"] = int(statistics.median(load_samples))
            rss["hello_c64_samples"] = len(load_samples)
    except KeyboardInterrupt:
        print("benchmarks: interrupted", file=sys.stderr)
        return 130
    except Interrupted as e:
        print(f"benchmarks: stopped by {e}", file=sys.stderr)
        return 143
    except RuntimeError as e:
        print(f"benchmarks: error: {e}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if args.keep:
            print(f"benchmarks: configs and logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = summarize(scenario_list)
    table = text_table(rows)
    print(table)
    settings = {
        "rounds": args.rounds, "duration_s": args.duration, "fephp_duration_s": args.fephp_duration,
        "php_fpm_children": args.children, "nginx_workers": args.nginx_workers, "pause_s": args.pause,
        "pinned": args.pin,
    }
    if args.pypy:
        settings["pypy_warmup_s"] = args.pypy_warmup
        settings["pypy_gc_nursery"] = os.environ.get("PYPY_GC_NURSERY", PYPY_GC_NURSERY)
        settings["pypy_gc_min"] = os.environ.get("PYPY_GC_MIN", PYPY_GC_MIN)
    rss_line = ", ".join(f"{k} {v}" for k, v in rss.items())
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(f"# fephp vs nginx vs Caddy ({started_at})\n\n")
        f.write(f"Command: `{command}`\n\n")
        f.write("Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()) + "\n\n")
        f.write("Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + "\n\n")
        f.write(markdown_table(rows) + "\n\n")
        f.write(f"fephp RSS (KiB): {rss_line}\n")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({
            "started_at": started_at, "command": command, "machine": facts, "settings": settings,
            "table": rows, "rss": rss,
            "runs": [{"scenario": s.name, "path": s.path, "headers": list(s.headers), "connections": s.connections, "tool": s.tool,
                      "duration_s": s.duration, "target_rps": s.rps or None, "rounds": s.rounds}
                     for s in scenario_list],
        }, f, indent=2)
        f.write("\n")
    print(f"\nfephp RSS (KiB): {rss_line}")
    print(f"results: {out}/results.md and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
