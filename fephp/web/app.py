"""The site's one resource, from the HTTP side: route a request, then serve a file, run PHP or refuse.

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
from twisted.web.server import NOT_DONE_YET, Request

from .._twisted import request_disconnected
from ..backend.interface import Backend
from ..cgi.routing import BadRequest, Forbidden, PHPWorkers, Redirect, Router, Script, StaticFile
from ..cgi.rules import Answer, Proceed, RequestView, RuleSet, Verify
from .errors import send_error
from .hints import EarlyHints
from .php import PHPHandler
from .sendfile import SendfileRoots
from .static import CacheHeaders, CacheRule, FileCache, serve_static

__all__ = ["PHPApp", "check_bcrypt"]


def check_bcrypt(password: bytes, hashed: bytes) -> bool:
    """bcrypt's own comparison (tens of milliseconds by design): for a thread, never the reactor's."""
    return bool(bcrypt.checkpw(password, hashed))


class PHPApp(Resource):
    """The whole site as one leaf resource: static files and PHP scripts under one root."""

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

    def render(self, request: Request) -> Any:
        uri = request.uri
        path, _, query = uri.partition(b"?")
        if not path.startswith(b"/"):
            # "*" (OPTIONS *) and absolute-form targets are not for PHP.
            return send_error(request, 400)
        if self.rules is not None:
            return self._ruled(request, self.rules.evaluate(_view(request, path, query)))
        return self._serve(request, path, query)

    def _ruled(self, request: Request, outcome: Any) -> Any:
        """Go on as the rules' *outcome* says: route its path, answer, or check a password first."""
        kind = type(outcome)
        if kind is Verify:
            return self._verify(request, outcome)
        if outcome.edits:
            request.header_edits = outcome.edits  # type: ignore[attr-defined]  # FrontRequest applies them to the head
        if kind is Proceed:
            return self._serve(request, outcome.raw_path, outcome.query)
        assert kind is Answer
        if outcome.body is None:
            return send_error(request, outcome.status, dict(outcome.headers))
        request.setResponseCode(outcome.status)
        for name, value in outcome.headers:
            request.setHeader(name, value)
        if outcome.status in (204, 304):
            # RFC 9110 8.6: neither has a Content-Length, which Twisted's render adds to any body returned.
            request.finish()
            return NOT_DONE_YET
        request.setHeader(b"content-length", b"%d" % len(outcome.body))
        return outcome.body

    def _verify(self, request: Request, check: Verify) -> Any:
        """A password checked in a thread (bcrypt takes tens of milliseconds), then the rest of the rules and the request."""
        rules = self.rules
        assert rules is not None

        def checked(ok: "bool | Failure") -> None:
            resumed = rules.resume(check, ok is True)
            if not request_disconnected(request):
                request.render(_Resume(self, resumed))  # Twisted's render writes and finishes what it returns

        self._in_thread(lambda: rules.verify(check)).addBoth(checked)
        return NOT_DONE_YET

    def _serve(self, request: Request, path: bytes, query: bytes) -> Any:
        route = self.router.route(path)
        kind = type(route)
        if kind is Script:
            return self.php.run(request, route, query)  # type: ignore[arg-type]
        if kind is StaticFile:
            request.kind = "static"  # type: ignore[attr-defined]  # for the access log and the figures
            return serve_static(request, route, cache=self.static_cache, files=self.files)  # type: ignore[arg-type]
        if kind is Redirect:
            location = route.location.encode("utf-8")  # type: ignore[union-attr]
            if query:
                location += b"?" + query
            return send_error(request, 301, {b"location": location})
        if kind is PHPWorkers and self.workers is not None:
            # php.worker.match: the workers' app routes it, file or no file; the CGI paths name the worker script.
            uri = route.uri  # type: ignore[union-attr]
            return self.workers.run(request, Script(self.worker_script, uri, "", uri), query)
        if kind is Forbidden:
            return send_error(request, 403)
        if kind is BadRequest:
            return send_error(request, 400)
        return send_error(request, 404)


def _view(request: Request, path: bytes, query: bytes) -> RequestView:
    """What the rules see of *request*: its address is the client's after trusted_proxies (FrontRequest)."""
    headers = request.requestHeaders

    def header(name: bytes) -> Optional[bytes]:
        values = headers.getRawHeaders(name)
        return values[-1] if values else None

    return RequestView(
        request.method, path, query, getattr(request.getClientAddress(), "host", "unix:"), header,
    )


class _Resume(Resource):
    """The rest of a request whose password was checked in a thread, rendered through Twisted's own render."""

    isLeaf = True

    def __init__(self, app: PHPApp, outcome: Any) -> None:
        super().__init__()
        self.app = app
        self.outcome = outcome

    def render(self, request: Request) -> Any:
        return self.app._ruled(request, self.outcome)
