"""The PHP app as a Twisted Web resource, from the HTTP side: route a request, then serve a file, run PHP or refuse.

:class:`PHPResource` renders a PHP app (a document root's static files and
scripts, the rules before them) for any twisted.web ``Request``: fephp's own
site has it as its root, and anyone's ``twisted.web.server.Site`` may hold
it as a child beside Python resources.  It serves an
:class:`fephp.web.exchange.Exchange`: the request itself when it is one,
else the Request adapted (:func:`fephp.web.adapt.exchange_of`).  It is a
leaf: everything under where it is mounted is the app's, and the router
sees the whole URL path (as nginx's ``root``: ``/php/a.php`` under a mount
at ``/php`` is the file ``php/a.php`` of the document root).

Every refusal and failure becomes a short page from
:func:`fephp.web.errors.error_page`, which names the status and nothing
else: no path, no backend address, no PHP message.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import bcrypt
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ..backend.interface import Backend
from ..cgi.routing import BadRequest, Forbidden, PHPWorkers, Redirect, Router, Script, StaticFile
from ..cgi.rules import Answer, Proceed, RequestView, RuleSet, Verify
from .adapt import exchange_of
from .errors import send_error
from .exchange import ExchangeState
from .hints import EarlyHints
from .php import PHPHandler
from .sendfile import SendfileRoots
from .static import CacheHeaders, CacheRule, FileCache, serve_static

__all__ = ["PHPApp", "PHPResource", "check_bcrypt"]


def check_bcrypt(password: bytes, hashed: bytes) -> bool:
    """bcrypt's own comparison (tens of milliseconds by design): for a thread, never the reactor's."""
    return bool(bcrypt.checkpw(password, hashed))


class PHPResource(Resource):
    """A PHP app as one leaf resource: static files and PHP scripts under one document root, PHP through *backend*."""

    isLeaf = True

    def __init__(
        self,
        *,
        router: Router,
        backend: Backend,
        server_software: str = "fephp",
        server_name: Optional[str] = None,
        max_cgi_head_size: int = 64 * 1024,
        static_cache: "tuple[CacheRule, ...]" = (),
        memory_cache_size: int = 0,
        sendfile: Optional[SendfileRoots] = None,
        early_hints: Optional[EarlyHints] = None,
        rules: Optional[RuleSet] = None,
        in_thread: "Callable[[Callable[[], bool]], Deferred[bool]]" = deferToThread,
        workers: Optional[Backend] = None,
        worker_script: str = "",
    ) -> None:
        super().__init__()
        self.router = router
        #: ``rules``, evaluated before routing (fephp.cgi.rules), and how a password check leaves the reactor thread.
        self.rules = rules
        self._in_thread = in_thread
        #: Cache-Control and Expires for static files by URL prefix (``static.cache``).
        self.static_cache = CacheHeaders(static_cache, router.root) if static_cache else None
        #: Small static files' bytes in memory (``static.memory_cache_size``; None when 0).
        self.files = FileCache(memory_cache_size) if memory_cache_size > 0 else None
        self.server_software = server_software
        self.php = PHPHandler(
            backend,
            document_root=router.root,
            server_software=server_software,
            server_name=server_name,
            max_cgi_head_size=max_cgi_head_size,
            sendfile=sendfile,
            early_hints=early_hints,
        )
        #: The PHP workers of a mixed site (``php.worker.match``: the router's PHPWorkers routes), or None.
        self.workers = None if workers is None else PHPHandler(
            workers,
            document_root=router.root,
            server_software=server_software,
            server_name=server_name,
            max_cgi_head_size=max_cgi_head_size,
            sendfile=sendfile,
        )
        self.worker_script = worker_script

    @property
    def backend(self) -> Backend:
        return self.php.backend

    @property
    def in_flight(self) -> int:
        """Requests handed to PHP and not yet finished."""
        return self.php.in_flight + (self.workers.in_flight if self.workers is not None else 0)

    def wait_idle(self) -> "Deferred[None]":
        """A Deferred that fires when no PHP request is in flight (for a graceful stop)."""
        if self.workers is None:
            return self.php.wait_idle()
        both = gatherResults([self.php.wait_idle(), self.workers.wait_idle()])
        return both.addCallback(lambda _: None)

    def render(self, request: Any) -> Any:
        """Serve *request* (twisted.web's IResource.render) through its Exchange; the answer comes later."""
        exchange = getattr(request, "exchange", None)  # a request that made its own (the tests' reference engine)
        if exchange is None:
            exchange = exchange_of(request)
        if self.rules is None:  # serve()'s common case, one call less per request
            path, _, query = exchange.target.partition(b"?")
            if path[:1] == b"/":
                self._serve(exchange, path, query)
                return NOT_DONE_YET
        self.serve(exchange)
        return NOT_DONE_YET

    def serve(self, exchange: Any) -> None:
        """Answer *exchange* (an :class:`fephp.web.exchange.Exchange`): the rules, then PHP, a file, a redirect or a page."""
        path, _, query = exchange.target.partition(b"?")
        if not path.startswith(b"/"):
            # "*" (OPTIONS *) and absolute-form targets are not for PHP.
            send_error(exchange, 400)
            return
        if self.rules is not None:
            self._ruled(exchange, self.rules.evaluate(_view(exchange, path, query)))
            return
        self._serve(exchange, path, query)

    def _ruled(self, exchange: Any, outcome: Any) -> None:
        """Go on as the rules' *outcome* says: route its path, answer, or check a password first."""
        kind = type(outcome)
        if kind is Verify:
            self._verify(exchange, outcome)
            return
        if outcome.edits:
            exchange.header_edits = outcome.edits  # the exchange applies them to the head as it goes out
        if kind is Proceed:
            self._serve(exchange, outcome.raw_path, outcome.query)
            return
        assert kind is Answer
        if outcome.body is None:
            send_error(exchange, outcome.status, [(name.lower(), value) for name, value in outcome.headers])
            return
        headers = [(name.lower(), value) for name, value in outcome.headers]
        if outcome.status not in (204, 304):
            # RFC 9110 8.6: neither 204 nor 304 has a Content-Length.
            headers.append((b"content-length", b"%d" % len(outcome.body)))
        exchange.start_response(outcome.status, headers)
        exchange.write(outcome.body)
        exchange.finish()

    def _verify(self, exchange: Any, check: Verify) -> None:
        """A password checked in a thread (bcrypt takes tens of milliseconds), then the rest of the rules and the request."""
        rules = self.rules
        assert rules is not None

        def checked(ok: "bool | Failure") -> None:
            resumed = rules.resume(check, ok is True)
            if exchange.state is not ExchangeState.LOST:
                self._ruled(exchange, resumed)

        self._in_thread(lambda: rules.verify(check)).addBoth(checked)

    def _serve(self, exchange: Any, path: bytes, query: bytes) -> None:
        route = self.router.route(path)
        kind = type(route)
        if kind is Script:
            self.php.run(exchange, route, query)  # type: ignore[arg-type]
            return
        if kind is StaticFile:
            exchange.kind = "static"  # for the access log and the figures
            serve_static(exchange, route, cache=self.static_cache, files=self.files)  # type: ignore[arg-type]
            return
        if kind is Redirect:
            location = route.location.encode("utf-8")  # type: ignore[union-attr]
            if query:
                location += b"?" + query
            send_error(exchange, 301, [(b"location", location)])
            return
        if kind is PHPWorkers and self.workers is not None:
            # php.worker.match: the workers' app routes it, file or no file; the CGI paths name the worker script.
            uri = route.uri  # type: ignore[union-attr]
            self.workers.run(exchange, Script(self.worker_script, uri, "", uri), query)
            return
        if kind is Forbidden:
            send_error(exchange, 403)
        elif kind is BadRequest:
            send_error(exchange, 400)
        else:
            send_error(exchange, 404)


#: The name fephp's site and its tests knew the resource by.
PHPApp = PHPResource


def _view(exchange: Any, path: bytes, query: bytes) -> RequestView:
    """What the rules see of *exchange*: its address is the client's after trusted_proxies; a header is its last value."""
    headers = exchange.headers

    def header(name: bytes) -> Optional[bytes]:
        found = None
        lower = name.lower()
        for key, value in headers:
            if key == lower:
                found = value
        return found

    return RequestView(exchange.method, path, query, exchange.client.host, header)
