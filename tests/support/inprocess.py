"""fephp's front in the test's own process, from the test's side: a FrontSite over a real php-fpm (or a fake one), listening on 127.0.0.1.

Built one of two ways, then started and stopped by the test's fixture::

    front = InProcessFront.configured(config, pool(php_fpm.unix_endpoint))   # as build.py builds it
    front = InProcessFront.php(root, pool(address), router={...}, **site)    # PHPApp + FrontSite by hand
    await front.start()                       # tcp:0 on 127.0.0.1, or any listener string
    port = await front.start_tls(pem)         # an ssl: listener too (HTTP/2 by ALPN), TLS by tls_engine()
    r = await front.get("/env.php")           # raw HTTP/1.1: a tests.support.rawhttp.Response
    response, body = await front.fetch("/x")  # through treq (redirects, cookies, forms)
    await front.stop()

A fixture hands the test a maker and stops every front it made::

    @pytest.fixture
    def front(php_fpm):
        async def make(**config):
            return await InProcessFront.configured(...).start()
        yield from stopped_at_teardown(make)

``FEPHP_TLS_ENGINE=pyopenssl`` runs every test's ssl: listener on Twisted's
TLS instead of the standard library's (``stdlib``, fephp.server.tls,
``server.tls_engine``'s default), as ``server.tls_engine`` does.

The blocking raw clients run in threads (``deferToThread``): the reactor
serving fephp keeps turning while they wait.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Mapping, Optional, Union

import pytest_twisted
import treq
from twisted.internet import defer, reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThread

from fephp.backend.endpoints import parse_client_endpoint
from fephp.backend.pool import FastCGIPool
from fephp.cgi.routing import Router
from fephp.server.build import build_backend, build_site
from fephp.server.config import Config, config_from_dict
from fephp.server.settings import ServerConfig
from fephp.server.tls import ENGINES, listen_ssl
from fephp.web.app import PHPApp
from fephp.web.site import FrontSite
from tests.support.rawhttp import Response, Timed, exchange, read_until, request_bytes, timed_exchange

__all__ = ["InProcessFront", "LOOPBACK", "pool", "stopped_at_teardown"]

#: Where a front listens unless told otherwise: a free port of 127.0.0.1.
LOOPBACK = "tcp:0:interface=127.0.0.1"

#: The pool's size unless the test sets one: enough for the few requests a test has in flight.
POOL_SIZE = 4

#: Seconds a stopping front waits for its client connections to close.
CLOSE_WITHIN = 10.0


def pool(address: str, **options: Any) -> FastCGIPool:
    """A FastCGI pool to the php-fpm (or fake) at *address* (a client endpoint string), on the global reactor."""
    options.setdefault("size", POOL_SIZE)
    return FastCGIPool(parse_client_endpoint(reactor, address), clock=reactor, **options)


def tls_engine() -> str:
    """The TLS engine of the tests' ssl: listeners: FEPHP_TLS_ENGINE, or server.tls_engine's default."""
    engine = os.environ.get("FEPHP_TLS_ENGINE", ServerConfig().tls_engine)
    if engine not in ENGINES:
        raise ValueError(f"FEPHP_TLS_ENGINE must be one of {', '.join(ENGINES)}, not {engine!r}")
    return engine


class InProcessFront:
    """A FrontSite and its backend in this process; the backend is closed with it.

    States: built, listening (:meth:`start`, :meth:`start_tls`), stopped (:meth:`stop`).
    """

    def __init__(self, site: FrontSite, backend: Any, app: Optional[PHPApp] = None) -> None:
        self.site = site
        self.backend = backend
        self.app = app
        self.listening: list[Any] = []
        self.tls_port: Optional[int] = None

    @classmethod
    def configured(cls, config: Union[Config, Mapping[str, Any]], backend: Any = None) -> "InProcessFront":
        """The site build.py makes from *config* (a Config or the dict a YAML file would hold), over *backend* or the one *config* names."""
        if not isinstance(config, Config):
            config = config_from_dict(config)
        if backend is None:
            backend, _ = build_backend(config, reactor)
        app, site = build_site(config, reactor, backend)
        return cls(site, backend, app)

    @classmethod
    def php(
        cls,
        root: Path,
        backend: Any,
        *,
        router: Optional[Mapping[str, Any]] = None,
        server_software: str = "fephp-test",
        **site: Any,
    ) -> "InProcessFront":
        """A PHPApp serving *root* (a Router with *router*'s options) over *backend*, in a FrontSite with *site*'s options."""
        app = PHPApp(router=Router(root=str(root), **(router or {})), backend=backend, server_software=server_software)
        return cls(FrontSite(app, **site), backend, app)

    async def start(self, listen: str = LOOPBACK) -> "InProcessFront":
        """Listen on *listen* (a Twisted server endpoint string); the first listener is :attr:`port`."""
        self.listening.append(await serverFromString(reactor, listen).listen(self.site))
        return self

    async def start_tls(self, pem: Path, engine: Optional[str] = None) -> int:
        """An ssl: listener on a free port of 127.0.0.1 too (HTTP/2 by ALPN), with the key and certificate in *pem*; its port.

        *engine* is a server.tls_engine value, :func:`tls_engine` by default.
        """
        description = f"ssl:0:interface=127.0.0.1:privateKey={pem}"
        if (engine or tls_engine()) == "stdlib":
            port = listen_ssl(reactor, description, self.site)
        else:
            port = await serverFromString(reactor, description).listen(self.site)
        self.listening.append(port)
        self.tls_port = int(port.getHost().port)
        return self.tls_port

    @property
    def port(self) -> int:
        return int(self.listening[0].getHost().port)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def get(self, target: str, headers: Optional[Mapping[str, str]] = None, method: str = "GET") -> Response:
        """One raw request on a connection of its own, its answer parsed (a HEAD's without a body)."""
        data = request_bytes(method, target, headers, host=f"127.0.0.1:{self.port}")
        raw = await deferToThread(exchange, self.port, data)
        return Response.parse(raw, head_only=method == "HEAD")

    async def exchange(self, data: bytes) -> bytes:
        """Send *data* as it is; every byte that came back until fephp closed."""
        return await deferToThread(exchange, self.port, data)

    async def timed(self, data: bytes, markers: tuple[bytes, ...] = ()) -> Timed:
        """Send *data*; what came back until the close, and when (see :func:`tests.support.rawhttp.timed_exchange`)."""
        return await deferToThread(timed_exchange, self.port, data, markers)

    async def read_until(self, data: bytes, done: Any, within: float = 10.0) -> bytes:
        """Send *data*; what came back once *done* held or fephp closed (see :func:`tests.support.rawhttp.read_until`)."""
        return await deferToThread(read_until, self.port, data, done, within=within)

    async def fetch(self, path: str, method: str = "GET", **kwargs: Any) -> tuple[Any, bytes]:
        """One request through treq (its keyword arguments as given); the response and its whole body."""
        response = await treq.request(method, self.base + path, **kwargs)
        return response, await treq.content(response)

    async def stop(self) -> None:
        """Stop listening, close the client connections once their bytes are out, close the backend.

        As the server's own stop, the wait for the connections is bounded
        (CLOSE_WITHIN): a client a test left open, reading nothing, has its
        connection aborted and the stop fails, instead of hanging the suite.
        """
        for port in self.listening:
            await port.stopListening()
        closed = self.site.close_connections()
        closed.addTimeout(CLOSE_WITHIN, reactor)
        left = 0
        try:
            await closed
        except defer.TimeoutError:
            channels = list(self.site._channels)
            left = len(channels)
            for channel in channels:
                transport: Any = channel.transport
                if transport is not None:
                    transport.abortConnection()
        await self.backend.close()
        assert left == 0, f"{left} client connection(s) still open {CLOSE_WITHIN} s after the front's stop: aborted"


Maker = Callable[..., Awaitable[Any]]


def stopped_at_teardown(make: Maker) -> Iterator[Maker]:
    """For a fixture's ``yield from``: *make* as the test calls it, then, at teardown, each front it started stopped in turn."""
    started: list[Any] = []

    async def tracked(*args: Any, **kwargs: Any) -> Any:
        front = await make(*args, **kwargs)
        started.append(front)
        return front

    yield tracked
    for front in started:
        pytest_twisted.blockon(defer.ensureDeferred(front.stop()))
