"""Several sites in one twistd fephp (issue 19) with real php-fpm: the Host and the TLS name choose the site, each with its own root, pool, php.ini and user."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from fephp.process.binaries import find_php
from tests.support import REPO
from tests.support.daemon import listening_on, start_daemon, wait_for
from tests.support.h2client import H2Client
from tests.support.load import HTTPLoad
from tests.support.processes import processes_with, require_binary
from tests.support.tls import (
    named_certificate,
    self_signed_pem,
    served_certificate,
    served_der,
)

pytestmark = pytest.mark.php

#: Each site: its hosts, its php.ini date.timezone, and its pool's user (as root).
SITES = {
    "a": (["a.example"], "Europe/Paris", "www-data"),
    "b": (["b.example"], "Asia/Tokyo", "nobody"),
    "c": (["*.c.example"], "America/New_York", None),
}


def _root(base: Path, name: str) -> Path:
    root = base / f"root-{name}"
    root.mkdir()
    (root / "who.php").write_text(
        f"<?php usleep(1000); echo 'site-{name} ', ini_get('date.timezone'), ' ', posix_getpwuid(posix_geteuid())['name'];\n"
    )
    (root / f"only-{name}.txt").write_text(f"file of {name}\n")
    (root / "big.txt").write_text("compressible text\n" * 200)
    # Opens the FIFO ?fifo= (the test holds it open already), touches ?mark= (for the test to wait for), then
    # answers with what it reads from the FIFO up to its end: the request is held until the test writes and closes it.
    (root / "held.php").write_text(
        f"<?php $f = fopen($_GET['fifo'], 'r'); touch($_GET['mark']); echo 'held {name} ', stream_get_contents($f);\n"
    )
    (root / "index.php").write_text(f"<?php echo 'home {name}';\n")
    (root / "peek.php").write_text("<?php $r = @file_get_contents($_GET['f']); echo $r === false ? 'denied' : $r;\n")
    secret = root / "secret.txt"
    secret.write_text(f"secret of {name}\n")
    user = SITES.get(name, (None, None, None))[2]
    if user is not None and os.geteuid() == 0:
        shutil.chown(secret, user)  # readable by this site's pool's user only
        secret.chmod(0o600)
    return root


def _site_yaml(name: str, root: Path, tls: Optional[tuple[Path, Path]], default: bool = False) -> str:
    hosts, zone, user = SITES.get(name, ([f"{name}.example"], "UTC", None))
    lines = [f"  - name: {name}", f"    hosts: [{', '.join(repr(h) for h in hosts)}]", f"    root: {root}",
             "    php:", "      worker_pool_size: 2", "      ini:", f"        date.timezone: {zone}"]
    if user is not None and os.geteuid() == 0:
        lines += [f"      user: {user}", f"      group: {'nogroup' if user == 'nobody' else user}"]
    if tls is not None:
        lines += ["    tls:", f"      certificate: {tls[0]}", f"      key: {tls[1]}"]
    if default:
        lines.append("    default: true")
    return "\n".join(lines) + "\n"


class Sites:
    """A twistd fephp with sites a, b and *.c on one plain and one TLS listener, each site's pool of the managed php-fpm."""

    def __init__(self, tmp_path: Path, shared: Path, tls_engine: Optional[str] = None, workers: int = 1) -> None:
        require_binary(find_php("php-fpm"), "php-fpm")
        self.tls_engine = tls_engine
        self.tmp = tmp_path
        self.shared = shared
        self.config = tmp_path / "fephp.yaml"
        self.workers = workers
        self.roots = {name: _root(shared, name) for name in ("a", "b", "c", "d")}
        self.certs = {name: named_certificate(tmp_path, f"{name}.example") for name in ("a", "b")}
        self.fallback = self_signed_pem(tmp_path)
        self.write(["a", "b", "c"])
        self.pidfile, self.pid = start_daemon(tmp_path, self.config)
        if workers > 1:
            self.port, self.admin_port = listening_on(self.pid, 2)
        else:
            self.port, self.tls_port, self.admin_port = listening_on(self.pid, 3)
        self.log = tmp_path / "fephp.log"
        wait_for(lambda: self.ask("a.example", "/only-a.txt")[0] == 200, "the listener", within=60)

    def write(self, names: list[str], unknown_host: int = 421, own_logs: tuple[str, ...] = ("a",)) -> None:
        # The same strings at every reload: the listeners keep their sockets.
        listen = [
            "tcp:0:interface=127.0.0.1",
            f"ssl:0:interface=127.0.0.1:privateKey={self.fallback}:certKey={self.fallback}",
        ]
        if self.workers > 1:
            listen = listen[:1]  # TLS is not shared by worker processes
        text = (
            "server:\n"
            f"  workers: {self.workers}\n"
            f"  listen: [{', '.join(repr(x) for x in listen)}]\n"
            "  shutdown_grace: 5\n"
            f"  unknown_host: {unknown_host}\n"
            + (f"  tls_engine: {self.tls_engine}\n" if self.tls_engine else "")
            + "admin:\n"
            "  listen: ['tcp:port=0:interface=127.0.0.1']\n"
            "sites:\n"
        )
        for name in names:
            text += _site_yaml(name, self.roots[name], self.certs.get(name))
            if name == "c":
                text += "    compression: {enabled: false}\n"
            if name in own_logs:
                text += f"    access_log: {self.tmp / (name + '.log')}\n"
            if name == "a":
                text += "    rules:\n      - match: {path: /healthz}\n        respond: {status: 200, body: a-ok}\n"
        text += f"logging:\n  access_log: {self.tmp / 'all.log'}\n"
        self.config.write_text(text)

    def ask(self, host: Optional[str], path: str, version: str = "HTTP/1.1", extra: str = "",
            timeout: float = 10.0) -> tuple[int, bytes]:
        """One GET with *host* as Host (none when None, over HTTP/1.0) and *extra* header lines on a fresh connection."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            head = (f"GET {path} {version}\r\n" + (f"Host: {host}\r\n" if host is not None else "") + extra
                    + "Connection: close\r\n\r\n")
            s.sendall(head.encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head_bytes, _, body = data.partition(b"\r\n\r\n")
        return int(head_bytes.split()[1]), body

    def status(self) -> Any:
        """The admin side's /status, parsed."""
        with socket.create_connection(("127.0.0.1", self.admin_port), timeout=10) as s:
            s.sendall(b"GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return json.loads(data.partition(b"\r\n\r\n")[2])

    def reload(self) -> None:
        def count() -> tuple[int, int]:
            text = self.log.read_text()
            return text.count("reload: serving the configuration"), text.count("keeping the running configuration")

        before = count()
        os.kill(self.pid, signal.SIGHUP)
        wait_for(lambda: count() != before, "the reload", within=120)
        assert count()[1] == before[1], self.log.read_text()[-3000:]

    def stop(self) -> None:
        if self.pidfile.exists():
            os.kill(self.pid, signal.SIGTERM)
            wait_for(lambda: not self.pidfile.exists(), "the pidfile to go")
            wait_for(lambda: not processes_with(str(self.config)), "no process left")


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder the pools' users can traverse (pytest's tmp_path is root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="fephp-sites-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def sites(tmp_path: Path, shared: Path) -> Iterator[Sites]:
    s = Sites(tmp_path, shared)
    yield s
    s.stop()


@pytest.fixture
def sites_pyopenssl(tmp_path: Path, shared: Path) -> Iterator[Sites]:
    """The same sites with server.tls_engine pyopenssl (Twisted's TLS; the others run the default, stdlib)."""
    s = Sites(tmp_path, shared, tls_engine="pyopenssl")
    yield s
    s.stop()


def test_sites_with_worker_processes(tmp_path: Path, shared: Path) -> None:
    """With server.workers: 2, each worker process finds each site's pool of the parent's php-fpm beside the first."""
    s = Sites(tmp_path, shared, workers=2)
    try:
        user = {name: (SITES[name][2] if os.geteuid() == 0 and SITES[name][2] else "root") for name in "abc"}
        for _ in range(4):  # both worker processes, whichever accepts
            assert s.ask("a.example", "/who.php") == (200, f"site-a Europe/Paris {user['a']}".encode())
            assert s.ask("b.example", "/who.php") == (200, f"site-b Asia/Tokyo {user['b']}".encode())
        assert s.ask("other.example", "/who.php")[0] == 421
    finally:
        s.stop()


def test_each_site_sees_its_own_root_and_php_ini(sites: Sites) -> None:
    """Two sites by name and one by wildcard each answer from their own root with their own pool's php.ini value."""
    user = {name: (SITES[name][2] if os.geteuid() == 0 and SITES[name][2] else "root") for name in "abc"}
    assert sites.ask("a.example", "/who.php") == (200, f"site-a Europe/Paris {user['a']}".encode())
    assert sites.ask("B.Example:8080", "/who.php") == (200, f"site-b Asia/Tokyo {user['b']}".encode())
    assert sites.ask("x.c.example", "/who.php") == (200, f"site-c America/New_York {user['c']}".encode())
    assert sites.ask("deep.x.c.example.", "/who.php") == (200, f"site-c America/New_York {user['c']}".encode())
    assert sites.ask("a.example", "/only-a.txt") == (200, b"file of a\n")
    # Not the other site's file: the site's own front controller answers for it.
    assert sites.ask("b.example", "/only-a.txt") == (200, b"home b")
    assert sites.ask("x.c.example", "/only-b.txt") == (200, b"home c")


@pytest.mark.skipif(os.geteuid() != 0, reason="a pool's own user needs fephp to run as root")
def test_a_site_cannot_read_another_sites_files(sites: Sites) -> None:
    """With its own user, site b's PHP cannot read a file only site a's user may read; site a's can."""
    secret = sites.roots["a"] / "secret.txt"
    assert sites.ask("a.example", f"/peek.php?f={secret}") == (200, b"secret of a\n")
    assert sites.ask("b.example", f"/peek.php?f={secret}") == (200, b"denied")


def test_unknown_host_gets_421_and_no_sites_content(sites: Sites) -> None:
    """A Host no site names, or none (HTTP/1.0), is answered 421 with fephp's own page when no site is the default."""
    page = (b"<!DOCTYPE html>\n<html><head><title>421 Misdirected Request</title></head>"
            b"<body><h1>421 Misdirected Request</h1></body></html>\n")
    assert sites.ask("c.example", "/who.php") == (421, page)  # the wildcard's parent itself is not covered
    assert sites.ask("other.example", "/only-a.txt") == (421, page)
    assert sites.ask(None, "/who.php", "HTTP/1.0") == (421, page)


def _tls_subject(port: int, server_name: str) -> str:
    return served_certificate(port, server_name).subject.rfc4514_string()


def test_unknown_host_404_and_default_site_after_reload(sites: Sites) -> None:
    """server.unknown_host: 404 answers 404; a default site then takes unknown hosts and HTTP/1.0 without Host."""
    sites.write(["a", "b", "c"], unknown_host=404)
    sites.reload()
    assert sites.ask("other.example", "/who.php")[0] == 404
    text = sites.config.read_text().replace("  - name: b\n", "  - name: b\n    default: true\n")
    sites.config.write_text(text)
    sites.reload()
    assert sites.ask("other.example", "/who.php")[1].startswith(b"site-b ")
    assert sites.ask(None, "/who.php", "HTTP/1.0")[1].startswith(b"site-b ")
    assert sites.ask("a.example", "/who.php")[1].startswith(b"site-a ")


def test_sni_picks_the_sites_certificate(sites: Sites) -> None:
    """The TLS listener shows a.example's certificate to SNI a.example, b's to b, and the endpoint's own to a name without one."""
    assert _tls_subject(sites.tls_port, "a.example") == "CN=a.example"
    assert _tls_subject(sites.tls_port, "b.example") == "CN=b.example"
    assert _tls_subject(sites.tls_port, "x.c.example") == "CN=127.0.0.1"


def test_sni_and_alpn_with_the_pyopenssl_engine(sites_pyopenssl: Sites) -> None:
    """With tls_engine pyopenssl the sites' certificates are chosen by SNI too, h2 is agreed on a site's context, and another site's Host gets 421."""
    port = sites_pyopenssl.tls_port
    subjects = [_tls_subject(port, name) for name in ("a.example", "b.example", "x.c.example")]
    client = H2Client(port, server_hostname="a.example")
    try:
        alpn = client.alpn
        mine = client.wait(client.request("GET", "/only-a.txt", authority="a.example"))
        other = client.wait(client.request("GET", "/only-b.txt", authority="b.example"))
    finally:
        client.close()
    assert (subjects, alpn, mine.status, bytes(mine.body), other.status) == (
        ["CN=a.example", "CN=b.example", "CN=127.0.0.1"], "h2", 200, b"file of a\n", 421)


def test_http2_host_not_of_the_sni_site_is_misdirected(sites: Sites) -> None:
    """Over HTTP/2 on a connection for a.example, a request for a.example is served and one for b.example gets 421."""
    client = H2Client(sites.tls_port, server_hostname="a.example")
    try:
        assert client.alpn == "h2"
        mine = client.wait(client.request("GET", "/only-a.txt", authority="a.example"))
        other = client.wait(client.request("GET", "/only-b.txt", authority="b.example"))
    finally:
        client.close()
    assert (mine.status, bytes(mine.body)) == (200, b"file of a\n")
    assert other.status == 421


def test_reload_adding_a_site_under_load_drops_nothing(sites: Sites) -> None:
    """A steady load on site a runs through a reload that adds site d (a new pool): every request is answered by a, and d answers after."""
    assert sites.ask("d.example", "/who.php")[0] == 421
    load = HTTPLoad(None, ("127.0.0.1", sites.port), "/who.php", total=20000, concurrency=4, timeout=10.0,
                    within=240.0, host="a.example").start()
    wait_for(lambda: load.completed >= 200, "the first 200 answers", within=120)
    sites.write(["a", "b", "c", "d"])
    sites.reload()
    seen = load.completed
    wait_for(lambda: load.completed >= seen + 200, "200 answers after the reload", within=120)
    load.stop()
    outcomes = load.wait()
    failed = [o for o in outcomes if not o.ok]
    bodies = {o.body.split(b" ")[0] for o in outcomes}
    print(f"{len(outcomes)} requests, {len(failed)} failed")
    assert len(outcomes) == load.started
    assert failed == []
    assert bodies == {b"site-a"}
    assert sites.ask("d.example", "/who.php") == (200, b"site-d UTC root")


def test_doctor_probes_each_site(sites: Sites) -> None:
    """``fephp check-config --probe`` runs a script of each site's root through that site's own pool."""
    result = subprocess.run(
        [sys.executable, "-m", "fephp.cli", "check-config", "--probe", str(sites.config)],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    ran = [line.strip() for line in result.stdout.splitlines() if " ran " in line]
    assert ran == [f"ok: site {name}: php-fpm ran {sites.roots[name]}/index.php: status 200, 6 bytes" for name in "abc"]
    accepts = [line.strip().rsplit("/", 1)[1] for line in result.stdout.splitlines() if "accepts connections" in line]
    assert accepts == ["site-a.sock", "site-b.sock", "site-c.sock"]


def test_metrics_count_each_site_apart(sites: Sites) -> None:
    """/metrics counts each site's requests under its own site label, beside the whole's."""
    for _ in range(3):
        assert sites.ask("a.example", "/only-a.txt")[0] == 200
    assert sites.ask("x.c.example", "/who.php")[0] == 200
    with socket.create_connection(("127.0.0.1", sites.admin_port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = [line for line in data.decode().splitlines() if line.startswith("fephp_site_http_requests_total")]
    assert lines == [
        'fephp_site_http_requests_total{code="2xx",kind="static",method="GET",site="a"} 4.0',
        'fephp_site_http_requests_total{code="2xx",kind="php",method="GET",site="c"} 1.0',
    ]


def test_a_site_with_its_own_access_log(sites: Sites) -> None:
    """A site with access_log writes its requests there; the others write to logging.access_log."""
    assert sites.ask("a.example", "/only-a.txt?site=a")[0] == 200
    assert sites.ask("b.example", "/only-b.txt?site=b")[0] == 200
    own, shared = sites.tmp / "a.log", sites.tmp / "all.log"
    wait_for(lambda: own.exists() and "site=a" in own.read_text(), "site a's line in its own log")
    wait_for(lambda: shared.exists() and "site=b" in shared.read_text(), "site b's line in the shared log")
    assert [line.split('"')[3] for line in own.read_text().splitlines() if "site=" in line] == [
        "GET /only-a.txt?site=a HTTP/1.1"
    ]
    assert [line.split('"')[3] for line in shared.read_text().splitlines() if "site=" in line] == [
        "GET /only-b.txt?site=b HTTP/1.1"
    ]


def test_reload_reads_the_sites_certificates_again(sites: Sites) -> None:
    """A site's certificate files replaced, SIGHUP: the TLS listener shows the new certificate for its name, the other site's as before."""
    before_a, before_b = served_der(sites.tls_port, "a.example"), served_der(sites.tls_port, "b.example")
    fresh = sites.tmp / "fresh"
    fresh.mkdir()
    cert, key = named_certificate(fresh, "a.example")
    shutil.copy(cert, sites.certs["a"][0])
    shutil.copy(key, sites.certs["a"][1])
    sites.reload()
    after_a, after_b = served_der(sites.tls_port, "a.example"), served_der(sites.tls_port, "b.example")
    assert (after_a != before_a, after_a == ssl.PEM_cert_to_DER_cert(cert.read_text()), after_b == before_b) == (True, True, True)


def _php_fpm_started(log: str) -> list[tuple[int, Path]]:
    """Each managed php-fpm the log says started, in order: its pid and its run directory."""
    found = re.findall(r"php-fpm started \(pid (\d+)\), (\S+)", log)
    return [(int(pid), Path(socket_path).parent) for pid, socket_path in found]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pool_of(status: Any, site: str) -> tuple[int, int]:
    """Site *site*'s pool in a /status: its busy connections and its requests waiting for one."""
    [pool] = [b["pool"] for b in status["backends"] if b["name"] == f"{site}: managed php-fpm"]
    return pool["busy"], pool["waiting"]


def test_reload_removing_a_site(sites: Sites) -> None:
    """A reload removes site b while b holds two requests in PHP and a third waiting for b's pool: b's names get 421 at once, all three still get their whole answers from b's pool and are logged to b's own log, and the old php-fpm holding b's pool is stopped only after them."""
    sites.write(["a", "b", "c"], own_logs=("a", "b"))
    sites.reload()
    marks = sites.shared / "marks"
    marks.mkdir()
    marks.chmod(0o777)  # site b's PHP runs as its own user
    released: list[int] = []
    answers: dict[str, tuple[int, bytes]] = {}

    def ask(key: str, path: str) -> threading.Thread:
        def run() -> None:
            answers[key] = sites.ask("b.example", path, timeout=180)
        thread = threading.Thread(target=run)
        thread.start()
        return thread

    threads = []
    try:
        for key in ("one", "two"):  # b's pool has 2 connections, its php-fpm pool 2 children
            fifo, mark = marks / f"release-{key}", marks / f"held-{key}"
            os.mkfifo(fifo)
            fifo.chmod(0o666)
            # Read-write: this open does not wait for PHP, and PHP's read ends only when the test closes it.
            released.append(os.open(fifo, os.O_RDWR))
            threads.append(ask(key, f"/held.php?mark={mark}&fifo={fifo}"))
            wait_for(mark.exists, f"b's request {key} to be held in PHP", within=60)
        threads.append(ask("queued", "/who.php"))
        wait_for(lambda: _pool_of(sites.status(), "b") == (2, 1), "b's third request to wait for the pool", within=60)
        [(old_pid, old_run)] = _php_fpm_started(sites.log.read_text())
        sites.write(["a", "c"])
        sites.reload()
        # The new configuration is served while b's three requests are still on b's pool.
        assert sites.ask("b.example", "/who.php")[0] == 421
        log = sites.log.read_text()
        [_, (new_pid, new_run)] = _php_fpm_started(log)
        held = (
            "reload: 3 requests finish on the previous configuration" in log,
            f"stopping php-fpm (pid {old_pid})" in log,
            _alive(old_pid),
            (old_run / "site-b.sock").exists(),
            sorted(p.name for p in new_run.glob("site-*.sock")),
            [t.is_alive() for t in threads],
        )
        assert held == (True, False, True, True, ["site-a.sock", "site-c.sock"], [True, True, True])
        for key, fd in zip(("one", "two"), released):
            os.write(fd, key.encode())
    finally:
        for fd in released:
            os.close(fd)
        for thread in threads:
            thread.join(timeout=180)
    user = SITES["b"][2] if os.geteuid() == 0 else "root"
    assert answers == {
        "one": (200, b"held b one"),
        "two": (200, b"held b two"),
        "queued": (200, f"site-b Asia/Tokyo {user}".encode()),
    }
    # Logged to b's own log: the retiring configuration keeps it open until its last request is over.
    own = sites.tmp / "b.log"
    wait_for(lambda: own.exists() and own.read_text().count('" 200 ') == 3, "b's three requests in b's own log")
    assert sorted(line.split('"')[3].split("?")[0] for line in own.read_text().splitlines()) == [
        "GET /held.php", "GET /held.php", "GET /who.php HTTP/1.1"]
    # Then, and only then, the old php-fpm (b's pool with it) goes.
    wait_for(lambda: not _alive(old_pid) and not old_run.exists(), "the old php-fpm to stop", within=60)
    assert sites.log.read_text().count(f"stopping php-fpm (pid {old_pid})") == 1
    assert _alive(new_pid)
    assert sites.ask("b.example", "/who.php")[0] == 421
    assert sites.ask("a.example", "/only-a.txt") == (200, b"file of a\n")
    assert sites.ask("x.c.example", "/who.php")[1].startswith(b"site-c ")


def test_rules_are_per_site(sites: Sites) -> None:
    """A site's rules answer for it alone: /healthz is site a's fixed answer, and site b's front controller."""
    assert sites.ask("a.example", "/healthz") == (200, b"a-ok")
    assert sites.ask("b.example", "/healthz") == (200, b"home b")


def test_compression_is_per_site(sites: Sites) -> None:
    """Site a compresses a text file for a client that accepts gzip; site c, with compression off, sends it as it is."""
    text = b"compressible text\n" * 200
    status, body = sites.ask("a.example", "/big.txt", extra="Accept-Encoding: gzip\r\n")
    assert (status, gzip.decompress(body)) == (200, text)
    assert sites.ask("x.c.example", "/big.txt", extra="Accept-Encoding: gzip\r\n") == (200, text)
