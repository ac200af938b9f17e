"""Learned 103 Early Hints from fephp's side: the preload links a PHP route last answered with, sent before PHP runs again.

php-fpm cannot send a 1xx response over FastCGI, so fephp learns: when a
GET to a route is answered 200 with ``Link: <...>; rel=preload`` (or
``modulepreload``, ``preconnect``) and neither sets a cookie nor varies,
those links are remembered for the route (its URL path); the next GET of
that path gets them as ``103 Early Hints`` (RFC 8297) before the request
goes to PHP, so the browser fetches CSS and JS while PHP works.  A response
of the route without such links, or one that sets a cookie or varies,
forgets them.  At most ``server.early_hints_max_routes`` routes are held,
the least recently used going first, each with at most
:data:`MAX_LINKS` links in :data:`MAX_HINT_BYTES`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Optional

__all__ = ["EarlyHints", "MAX_HINT_BYTES", "MAX_LINKS", "hint_links"]

#: Most links remembered for one route, and most bytes of them together.
MAX_LINKS = 32
MAX_HINT_BYTES = 4096
#: The relations a browser acts on from an Early Hints response.
_HINT_RELS = frozenset((b"preload", b"modulepreload", b"preconnect"))
#: Response headers that make an answer a poor guess for the next request.
_PERSONAL = (b"set-cookie", b"vary")


def _split_links(value: bytes) -> list[bytes]:
    """A Link header's link-values (RFC 8288 3): split on commas outside <...> and quotes."""
    out = []
    start = 0
    in_uri = in_quote = False
    for i, byte in enumerate(value):
        if in_quote:
            if byte == 0x22:  # "
                in_quote = False
        elif in_uri:
            if byte == 0x3E:  # >
                in_uri = False
        elif byte == 0x3C:  # <
            in_uri = True
        elif byte == 0x22:
            in_quote = True
        elif byte == 0x2C:  # ,
            out.append(value[start:i].strip())
            start = i + 1
    out.append(value[start:].strip())
    return [link for link in out if link]


def _is_hint(link: bytes) -> bool:
    """Whether a link-value's rel names a relation Early Hints carry."""
    if not link.startswith(b"<") or b">" not in link:
        return False
    for param in link[link.index(b">") + 1:].split(b";"):
        name, eq, value = param.partition(b"=")
        if eq and name.strip().lower() == b"rel":
            rels = value.strip().strip(b'"').lower().split()
            return any(rel in _HINT_RELS for rel in rels)
    return False


def hint_links(values: Iterable[bytes]) -> tuple[bytes, ...]:
    """The link-values of Link header *values* worth an Early Hint, within the bounds (the rest dropped)."""
    out: list[bytes] = []
    size = 0
    for value in values:
        for link in _split_links(value):
            if not _is_hint(link) or any(b < 0x20 or b == 0x7F for b in link):
                continue
            if len(out) == MAX_LINKS or size + len(link) > MAX_HINT_BYTES:
                return tuple(out)
            out.append(link)
            size += len(link)
    return tuple(out)


class EarlyHints:
    """The learned links of at most *max_routes* routes, least recently used dropped first."""

    def __init__(self, max_routes: int) -> None:
        if max_routes < 1:
            raise ValueError("max_routes must be at least 1")
        self.max_routes = max_routes
        self._routes: OrderedDict[bytes, tuple[bytes, ...]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._routes)

    def hints_for(self, route: bytes) -> Optional[tuple[bytes, ...]]:
        """The links to send ahead of a GET of *route*, or None."""
        links = self._routes.get(route)
        if links is not None:
            self._routes.move_to_end(route)
        return links

    def learn(self, route: bytes, status: int, headers: "Iterable[tuple[bytes, bytes]]") -> None:
        """Remember (or forget) what PHP's answer to a GET of *route* says about the next one."""
        links: list[bytes] = []
        for name, value in headers:
            lower = name.lower()
            if lower in _PERSONAL:
                self._routes.pop(route, None)  # a cookie or a variant: not the same for the next client
                return
            if lower == b"link":
                links.append(value)
        found = hint_links(links) if status == 200 and links else ()
        if not found:
            self._routes.pop(route, None)
            return
        routes = self._routes
        routes[route] = found
        routes.move_to_end(route)
        while len(routes) > self.max_routes:
            routes.popitem(last=False)
