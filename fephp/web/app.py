"""The site's one resource, from the HTTP side: route a request, then serve a file, run PHP or refuse.

Every refusal and failure becomes a short page from
:func:`fephp.web.errors.error_page`, which names the status and nothing
else: no path, no backend address, no PHP message.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import Request

from ..backend.interface import Backend
from ..cgi.routing import BadRequest, Forbidden, Redirect, Router, Script, StaticFile
from .errors import send_error
from .hints import EarlyHints
from .php import PHPHandler
from .sendfile import SendfileRoots
from .static import CacheHeaders, CacheRule, FileCache, serve_static

__all__ = ["PHPApp"]


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
    ) -> None:
        super().__init__()
        self.router = router
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

    @property
    def backend(self) -> Backend:
        return self.php.backend

    @property
    def in_flight(self) -> int:
        """Requests handed to PHP and not yet finished."""
        return self.php.in_flight

    def wait_idle(self) -> "Deferred[None]":
        """A Deferred that fires when no PHP request is in flight (for a graceful stop)."""
        return self.php.wait_idle()

    def render(self, request: Request) -> Any:
        uri = request.uri
        path, _, query = uri.partition(b"?")
        if not path.startswith(b"/"):
            # "*" (OPTIONS *) and absolute-form targets are not for PHP.
            return send_error(request, 400)
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
        if kind is Forbidden:
            return send_error(request, 403)
        if kind is BadRequest:
            return send_error(request, 400)
        return send_error(request, 404)
