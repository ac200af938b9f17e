"""HTTPS with ``server.workers``: each worker runs TLS on the parent's ssl: socket, and the parent alone obtains ACME
certificates (HTTP-01 against Debian's Pebble) that every worker then serves."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any, Callable, Generator, Iterator, cast

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IListeningPort
from twisted.internet.threads import deferToThread
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.protocols.portforward import ProxyFactory

from fephp.server.config import load_config
from fephp.server.metrics import registry_for
from fephp.server.running import ParentServer, build_server
from tests.support import REPO
from tests.support.daemon import (
    daemonize,
    listening_on,
    wait_for,
    worker_processes,
    zombie,
)
from tests.support.docroot import make_docroot
from tests.support.pebble import Pebble, acme_site_config, start_pebble
from tests.support.processes import processes_with, require_binary
from tests.support.tls import https_get, self_signed_pem

NAME = "shop.example.test"


def only(worker: int, workers: list[int], ask: Callable[[], Any]) -> Any:
    """*ask()* while every worker but *worker* is stopped (SIGSTOP): the kernel hands its connection to *worker*."""
    others = [pid for pid in workers if pid != worker]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        return ask()
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)


def curl(port: int, ca: Path, version: str) -> tuple[str, str]:
    """GET /hello.txt over HTTPS with curl trusting only *ca*, as HTTP *version* (``--http1.1``, ``--http2``): the
    HTTP version curl reports, and the body."""
    curl = require_binary(shutil.which("curl"), "curl")
    done = subprocess.run(
        [curl, "-sS", "--max-time", "10", "--cacert", str(ca), version, "-w", "\n%{http_version}",
         f"https://127.0.0.1:{port}/hello.txt"],
        capture_output=True, text=True, timeout=20, check=False,
    )
    assert done.returncode == 0, done.stderr
    body, _, used = done.stdout.rpartition("\n")
    return used, body


def test_two_workers_each_answer_https_over_http11_and_h2(tmp_path: Path) -> None:
    """twistd with workers: 2 and an ssl: listener: each worker, alone in accept, answers HTTPS with the endpoint's
    certificate, HTTP/1.1 and h2 as ALPN chose."""
    root = make_docroot(tmp_path)
    (root / "hello.txt").write_text("hello from a worker\n")
    pem = self_signed_pem(tmp_path)
    config = tmp_path / "fephp.yaml"
    config.write_text(
        f"""
server:
  listen: ["ssl:0:interface=127.0.0.1:privateKey={pem}"]
  root: {root}
  workers: 2
  shutdown_grace: 5
php:
  fpm_socket: {tmp_path / "no-php-fpm.sock"}
"""
    )
    pidfile = daemonize(tmp_path, config)
    parent = 0
    try:
        wait_for(pidfile.exists, "the pidfile")
        parent = int(pidfile.read_text())
        (port,) = listening_on(parent)  # the parent binds, the workers inherit it
        workers = worker_processes(parent)
        for worker in workers:
            answers = [only(worker, workers, functools.partial(curl, port, pem, v)) for v in ("--http1.1", "--http2")]
            assert answers == [("1.1", "hello from a worker\n"), ("2", "hello from a worker\n")]
        os.kill(parent, signal.SIGTERM)
        wait_for(lambda: zombie(parent), "the parent to exit")
        wait_for(lambda: not processes_with(str(config)), "no worker left")
    finally:
        if parent and not zombie(parent):
            os.kill(parent, signal.SIGKILL)


# -- ACME with workers, against Pebble ---------------------------------------------------


@pytest.fixture(scope="module")
def relay() -> Iterator[ProxyFactory]:
    """A TCP relay on 127.0.0.1 (Pebble's httpPort), pointed at the parent's plain listener once it is bound."""
    factory = ProxyFactory("127.0.0.1", 0)
    port: IListeningPort = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined, arg-type]
    factory.listening = port  # type: ignore[attr-defined]
    try:
        yield factory
    finally:
        pytest_twisted.blockon(port.stopListening())


@pytest.fixture(scope="module")
def pebble(relay: ProxyFactory, tmp_path_factory: pytest.TempPathFactory) -> Generator[Pebble, None, None]:
    yield from start_pebble(tmp_path_factory.mktemp("pebble"), relay.listening.getHost().port)  # type: ignore[attr-defined]


def acme_config(tmp_path: Path, pebble: Pebble) -> Path:
    """workers: 2, one site NAME with tls.acme (HTTP-01) at *pebble*; a plain and an ssl: listener on port 0."""
    settings = acme_site_config(tmp_path, pebble, NAME, ["http-01"])
    settings["server"].update({"workers": 2, "shutdown_grace": 5})
    path = tmp_path / "fephp.yaml"
    path.write_text(json.dumps(settings))  # JSON is YAML
    return path


def certificates_loaded(count: int) -> "tuple[Deferred[list[str]], Callable[[], None]]":
    """Fires with the log systems of the first *count* workers' "certificates loaded" events; and a remover."""
    seen: list[str] = []
    done: Deferred[list[str]] = Deferred()
    done.addTimeout(60, reactor)  # a bound, should no "certs" ever come

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_format", "").startswith("the stored certificates loaded") and not done.called:
            seen.append(event.get("log_system", ""))
            if len(set(seen)) == count:
                done.callback(sorted(set(seen)))

    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    return done, lambda: globalLogPublisher.removeObserver(observer)


@pytest_twisted.ensureDeferred
async def test_the_parent_alone_orders_and_both_workers_serve_the_certificate(
    pebble: Pebble, relay: ProxyFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """workers: 2 and a fresh ACME site: one order, by the parent, validated by HTTP-01 through whichever worker
    accepts the CA's connection; after "certs" each worker, alone in accept, shows Pebble's certificate for NAME; the
    parent's /metrics has its expiry."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the workers run this checkout's fephp
    path = acme_config(tmp_path, pebble)
    server = build_server(load_config(str(path)), path.read_text(), reactor)
    assert isinstance(server, ParentServer)
    loaded, forget = certificates_loaded(2)
    server.privilegedStartService()
    plain, tls = (int(listener.port.getHost().port) for listener in server.listeners)
    relay.port = plain
    server.startService()
    try:
        [acme] = server.acme
        await acme.idle()
        [figures] = acme.figures()
        assert (figures["state"], figures["failures"], acme.client.orders) == ("valid", 0, 1), figures["last_error"]
        systems = await loaded
        workers = server.supervisor.pids
        assert systems == [f"worker 1 pid {workers[0]}", f"worker 2 pid {workers[1]}"]
        root = pebble.root_pem()
        for worker in workers:
            answer, leaf = await deferToThread(only, worker, workers, lambda: https_get(tls, root, "/hello.txt", NAME))
            assert answer.split(b"\r\n", 1)[0] == b"HTTP/1.1 200 OK"
            assert answer.endswith(b"\r\n\r\nhello over https\n")
            names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert names.get_values_for_type(x509.DNSName) == [NAME]
        assert list((tmp_path / "acme" / "http-01").iterdir()) == []  # the answer removed once validated
        snapshot = await server.admin_site.resource.view.snapshot()
        expiry = registry_for(snapshot).get_sample_value("fephp_tls_certificate_expiry_seconds", {"name": NAME})
        assert expiry is not None and figures["expiry_seconds"] - 60 < expiry <= figures["expiry_seconds"]
    finally:
        forget()
        await DeferredList([server.stopService()])
