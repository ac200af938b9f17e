"""``fephp check-config --probe FILE``: the configuration checked, then the configured php-fpm asked, from the operator's side.

Where :mod:`fephp.server.check` only reads the file, the probe talks to
php-fpm as fephp would and explains, one sentence each, the mistakes that
make a deployment answer 502 or 404 for every PHP request:

- nothing listens at ``php.fpm_socket``, or its socket's permissions keep
  fephp's user out;
- php-fpm cannot find the script fephp names ("Primary script unknown":
  php-fpm sees another filesystem or root, as in another container, or a
  ``chroot``), cannot read it (its pool's ``user``), or refuses it
  (``security.limit_extensions``);
- its ``pm.max_children`` (read from its status page, when it has one) is
  below the connections fephp keeps.

The probe runs the front controller (or the first index file) as a plain
GET of ``/``: that is what the first visitor would run.  The managed mode
starts fephp's own php-fpm for the probe and stops it after.  Blocking
sockets with timeouts and the sans-io codec are enough for a one-shot tool.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
from dataclasses import dataclass
from typing import Optional, Union

from ..backend.endpoints import normalize_client_endpoint
from ..cgi.environ import RequestFacts, build_env
from ..cgi.routing import Router, Script
from ..fastcgi import ClientConnection, EndRequest, ProtocolError, Stderr, Stdout
from ..process.fpmconfig import STATUS_PATH
from .settings import Config

__all__ = ["PROBE_TIMEOUT", "STATUS_PATH", "Answer", "Finding", "probe_config", "probe_address"]

#: Seconds for a connect and for each answer.
PROBE_TIMEOUT = 5.0
#: Bound on what the probe keeps of an answer.
MAX_ANSWER = 1024 * 1024

Address = Union[str, "tuple[str, int]"]


@dataclass(frozen=True)
class Finding:
    """One line of the probe's report; ``problem`` ones make the exit status non-zero."""

    problem: bool
    text: str


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    stderr: str


def probe_address(fpm_socket: str) -> Address:
    """A socket path, or (host, port), from a ``php.fpm_socket`` value."""
    description = normalize_client_endpoint(fpm_socket)
    kind, *parts = re.split(r"(?<!\\):", description)
    kwargs = {}
    for part in parts:
        name, _, value = part.partition("=")
        kwargs[name] = value.replace("\\:", ":").replace("\\\\", "\\")
    if kind == "unix":
        return str(kwargs["path"])
    return str(kwargs["host"]), int(kwargs["port"])


def _describe(address: Address) -> str:
    return address if isinstance(address, str) else f"{address[0]}:{address[1]}"


def _connect(address: Address) -> "tuple[Optional[socket.socket], Optional[Finding]]":
    where = _describe(address)
    family = socket.AF_UNIX if isinstance(address, str) else (socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(PROBE_TIMEOUT)
    try:
        s.connect(address)
        return s, None
    except OSError as e:
        s.close()
        code = e.errno
        if isinstance(e, socket.timeout):
            text = f"connecting to {where} timed out after {PROBE_TIMEOUT:g} s: a firewall drops it, or the host is down"
        elif code == errno.ENOENT:
            text = f"there is no socket at {where}: php-fpm is not running, or its pool's listen is another path; start it or fix php.fpm_socket"
        elif code in (errno.EACCES, errno.EPERM):
            text = (
                f"permission denied on the socket {where} for uid {os.geteuid()}: set the pool's listen.owner, listen.group"
                " and listen.mode (e.g. listen.group = fephp's group, listen.mode = 0660) so that fephp's user may connect"
            )
        elif code == errno.ECONNREFUSED:
            text = f"nothing accepts connections at {where}: php-fpm is not running or listens elsewhere; start it or fix php.fpm_socket"
        else:
            text = f"cannot connect to {where}: {e.strerror or e}"
        return None, Finding(True, text)


def _exchange(address: Address, params: "list[tuple[bytes, bytes]]") -> "tuple[Optional[Answer], Optional[Finding]]":
    """One FastCGI request; the answer, or what went wrong."""
    s, problem = _connect(address)
    if s is None:
        return None, problem
    codec = ClientConnection()
    out = bytearray()
    err = bytearray()
    ended = False
    try:
        s.sendall(codec.begin_request(1, params, keep_conn=False) + codec.end_stdin(1))
        while not ended:
            data = s.recv(65536)
            if not data:
                break
            for event in codec.receive_data(data):
                if type(event) is Stdout and len(out) < MAX_ANSWER:
                    out += event.data
                elif type(event) is Stderr and len(err) < MAX_ANSWER:
                    err += event.data
                elif type(event) is EndRequest:
                    ended = True
    except socket.timeout:
        return None, Finding(
            True,
            f"{_describe(address)} accepted the connection but no php-fpm child answered within {PROBE_TIMEOUT:g} s:"
            " every child is busy or held by kept connections (pm.max_children)",
        )
    except (OSError, ProtocolError) as e:
        return None, Finding(True, f"{_describe(address)} does not speak FastCGI: {e}")
    finally:
        s.close()
    if not ended:
        return None, Finding(True, f"{_describe(address)} closed the connection without answering: is it php-fpm?")
    head, _, body = bytes(out).partition(b"\r\n\r\n")
    status = 200
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"status":
            try:
                status = int(value.split()[0])
            except (ValueError, IndexError):
                pass
    return Answer(status, body, err.decode("utf-8", "replace")), None


def _probe_script(config: Config) -> Optional[Script]:
    server = config.server
    router = Router(root=server.root, index=tuple(server.index), front_controller=server.front_controller, deny=tuple(server.deny))
    candidates = [b"/"]
    if server.front_controller:
        candidates.append(server.front_controller.encode())
    for path in candidates:
        route = router.route(path)
        if isinstance(route, Script):
            return route
    for name in sorted(os.listdir(server.root)):
        if name.endswith(".php") and not name.startswith("."):
            route = router.route(b"/" + name.encode())
            if isinstance(route, Script):
                return route
    return None


def _script_params(config: Config, script: Script) -> "list[tuple[bytes, bytes]]":
    facts = RequestFacts(
        method=b"GET",
        raw_uri=script.script_name.encode(),
        query_string=b"",
        headers=[(b"Host", b"localhost"), (b"User-Agent", b"fephp check-config --probe")],
        content_length=None,
        content_type=None,
        server_protocol=b"HTTP/1.1",
        https=False,
        remote_addr="127.0.0.1",
        remote_port=0,
        server_addr="127.0.0.1",
        server_port=0,
        host=b"localhost",
    )
    return build_env(facts, script, document_root=config.server.root, server_software=config.server.server_software)


def _judge_script(script: Script, answer: Answer) -> Finding:
    """What php-fpm's answer to the probe script says about the deployment."""
    path = script.script_filename
    stderr = answer.stderr
    if "Primary script unknown" in stderr or (answer.status == 404 and answer.body.startswith(b"File not found.")):
        return Finding(
            True,
            f"php-fpm cannot find {path} (\"Primary script unknown\"): it sees another filesystem or root than fephp"
            " (another container or host, or its pool's chroot); mount the document root at the same path for php-fpm,"
            " or point server.root at the path php-fpm sees",
        )
    if "Unable to open primary script" in stderr or "Permission denied" in stderr:
        return Finding(
            True,
            f"php-fpm finds {path} but cannot read it: its pool's user (user = ...) lacks read permission on the document"
            " root; make the files readable by that user or run the pool as the files' owner",
        )
    if "security.limit_extensions" in stderr or (answer.status == 403 and answer.body.startswith(b"Access denied.")):
        return Finding(
            True,
            f"php-fpm refuses to run {path} (security.limit_extensions): add .php to the pool's security.limit_extensions",
        )
    if answer.body.startswith(b"No input file specified."):
        return Finding(True, f"php-fpm found no input file for {path}: check the pool's chroot and doc_root settings")
    return Finding(False, f"php-fpm ran {path}: status {answer.status}, {len(answer.body)} bytes")


def _judge_status(config: Config, status: "dict[str, object]", connections: int) -> Finding:
    manager = status.get("process manager")
    total = status.get("total processes")
    if manager == "static" and isinstance(total, int):
        if total < connections:
            return Finding(
                True,
                f"php-fpm's pool has pm.max_children = {total} but fephp keeps up to {connections} connections, each holding"
                " a child: requests would wait in php-fpm's backlog; raise pm.max_children or lower php.worker_pool_size",
            )
        return Finding(False, f"php-fpm's pool: pm.max_children = {total} for {connections} connections")
    return Finding(
        False,
        f"php-fpm's pool is pm = {manager}: its status page does not tell pm.max_children; keep it at least {connections}",
    )


def probe_config(config: Config, address: Address, status_path: Optional[str], *, spare: int = 0) -> "list[Finding]":
    """Every finding of a probe of the php-fpm at *address* for *config*."""
    findings: list[Finding] = []
    s, problem = _connect(address)
    if s is None:
        assert problem is not None
        return [problem]
    s.close()
    findings.append(Finding(False, f"php-fpm accepts connections at {_describe(address)}"))
    script = _probe_script(config)
    if script is None:
        findings.append(Finding(True, f"no PHP script under {config.server.root} to probe with (front controller, index files)"))
    else:
        answer, problem = _exchange(address, _script_params(config, script))
        findings.append(problem if answer is None else _judge_script(script, answer))  # type: ignore[arg-type]
    if status_path:
        params = [(b"SCRIPT_NAME", status_path.encode()), (b"SCRIPT_FILENAME", status_path.encode()),
                  (b"QUERY_STRING", b"json"), (b"REQUEST_METHOD", b"GET")]
        answer, problem = _exchange(address, params)
        try:
            status = json.loads(answer.body) if answer is not None and answer.status == 200 else None
        except ValueError:
            status = None
        if isinstance(status, dict):
            findings.append(_judge_status(config, status, config.php.worker_pool_size + spare))
        else:
            findings.append(Finding(False, f"php-fpm's status page {status_path} did not answer: pm.max_children not checked"))
    else:
        findings.append(Finding(False, "php.status_path is not set: pm.max_children not checked"))
    return findings

