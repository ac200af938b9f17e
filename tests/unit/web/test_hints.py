"""Learned Early Hints: which Link values are hints, when a route's are learned or forgotten, and the LRU bound."""

from __future__ import annotations

import pytest

from fephp.web.hints import MAX_LINKS, EarlyHints, hint_links

CSS = b"</a.css>; rel=preload; as=style"
JS = b"</b.js>; rel=modulepreload"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([CSS], (CSS,)),
        ([CSS + b", " + JS], (CSS, JS)),
        ([b"</next>; rel=next", CSS], (CSS,)),
        ([b'<https://cdn.example>; rel="preconnect dns-prefetch"'], (b'<https://cdn.example>; rel="preconnect dns-prefetch"',)),
        ([b"</a,b.css>; rel=preload; as=style"], (b"</a,b.css>; rel=preload; as=style",)),  # a comma inside <>
        ([b'</x.css>; title="a, b"; rel=preload'], (b'</x.css>; title="a, b"; rel=preload',)),  # and inside quotes
        ([b"rel=preload"], ()),  # no URI
        ([b"</a.css>; REL=PRELOAD"], (b"</a.css>; REL=PRELOAD",)),
    ],
)
def test_hint_links(values: list[bytes], expected: tuple[bytes, ...]) -> None:
    """Only link-values with rel preload, modulepreload or preconnect are hints."""
    assert hint_links(values) == expected


def test_links_are_bounded() -> None:
    """At most MAX_LINKS links are kept for a route."""
    many = [b"</%d.js>; rel=preload" % i for i in range(MAX_LINKS + 10)]
    assert len(hint_links(many)) == MAX_LINKS


def test_learned_then_forgotten() -> None:
    """A 200 with preloads is learned; an answer without them, with a cookie or a Vary, or not 200 forgets."""
    hints = EarlyHints(10)
    for forget in ([], [(b"Set-Cookie", b"a=1"), (b"Link", CSS)], [(b"Vary", b"Cookie"), (b"Link", CSS)]):
        hints.learn(b"/", 200, [(b"Link", CSS), (b"Content-Type", b"text/html")])
        assert hints.hints_for(b"/") == (CSS,)
        hints.learn(b"/", 200, forget)
        assert hints.hints_for(b"/") is None
    hints.learn(b"/", 200, [(b"Link", CSS)])
    hints.learn(b"/", 404, [(b"Link", CSS)])
    assert hints.hints_for(b"/") is None


def test_least_recently_used_route_goes_first() -> None:
    """Past max_routes the route asked for least recently is dropped."""
    hints = EarlyHints(2)
    hints.learn(b"/a", 200, [(b"Link", CSS)])
    hints.learn(b"/b", 200, [(b"Link", CSS)])
    assert hints.hints_for(b"/a") == (CSS,)  # /a is now the most recent
    hints.learn(b"/c", 200, [(b"Link", JS)])
    assert (hints.hints_for(b"/a"), hints.hints_for(b"/b"), hints.hints_for(b"/c")) == ((CSS,), None, (JS,))
    assert len(hints) == 2
