"""fephp.web.hosts: the name a Host gives, the site a name finds, and what HostDispatch answers."""

from __future__ import annotations

from typing import Any, Optional

import pytest
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.test.requesthelper import DummyChannel

from fephp.web.hosts import HOST_CACHE_SIZE, HostDispatch, HostMap, VirtualSite, host_name


@pytest.mark.parametrize(
    ("given", "name"),
    [
        (b"Example.COM", b"example.com"),
        (b"example.com:8080", b"example.com"),
        (b"example.com.", b"example.com"),
        (b"[::1]:8443", b"[::1]"),
        (b"[2001:DB8::1]", b"[2001:db8::1]"),
        (b"127.0.0.1:80", b"127.0.0.1"),
    ],
)
def test_host_name(given: bytes, name: bytes) -> None:
    """A Host value's name is lowercase, without its port or final dot; an IPv6 literal keeps its brackets."""
    assert host_name(given) == name


HOSTS = HostMap(
    [(("a.example", "www.a.example"), "A"), (("*.example",), "ANY"), (("*.shop.example",), "SHOP"), (("[::1]",), "V6")],
    default=None,
)


@pytest.mark.parametrize(
    ("name", "site"),
    [
        (b"a.example", "A"),
        (b"www.a.example", "A"),  # exact before the wildcard *.example
        (b"b.example", "ANY"),
        (b"x.shop.example", "SHOP"),  # the longest wildcard wins
        (b"y.x.shop.example", "SHOP"),
        (b"shop.example", "ANY"),
        (b"example", None),  # *.example does not cover example itself
        (b"[::1]", "V6"),
        (b"other.org", None),
        (None, None),
    ],
)
def test_host_map_finds(name: Optional[bytes], site: Optional[str]) -> None:
    """Exact names first, then the longest matching wildcard, then the default (none here)."""
    assert HOSTS.find(name) == site


def test_host_map_default() -> None:
    """An unknown name, and no name at all, find the default site."""
    hosts = HostMap([(("a.example",), "A")], default="D")
    assert (hosts.find(b"a.example"), hosts.find(b"b.example"), hosts.find(None)) == ("A", "D", "D")


class _App:
    def __init__(self, name: str) -> None:
        self.name = name
        self.in_flight = 0

    def render(self, request: Any) -> bytes:
        return self.name.encode()


def _request(host: Optional[bytes]) -> Request:
    request = Request(DummyChannel(), False)
    if host is not None:
        request.requestHeaders.setRawHeaders(b"host", [host])
    return request


def _dispatch(unknown_status: int = 421) -> HostDispatch:
    sites = [VirtualSite("a", _App("a"), compression=None), VirtualSite("b", _App("b"), compression=None)]
    return HostDispatch(sites, HostMap([(("a.example",), sites[0]), (("*.b.example",), sites[1])]),
                        unknown_status=unknown_status)


def test_dispatch_renders_the_hosts_site() -> None:
    """The Host's site renders the request, and becomes request.site (its compression, its log)."""
    dispatch = _dispatch()
    request = _request(b"x.B.example:8080")
    assert dispatch.render(request) == b"b"
    assert request.site is dispatch.sites[1]


@pytest.mark.parametrize(("host", "status"), [(b"other.example", 421), (None, 421)])
def test_dispatch_unknown_host(host: Optional[bytes], status: int) -> None:
    """A Host no site names (or none) without a default site gets the configured status and fephp's page."""
    request = _request(host)
    channel: Any = request.channel
    assert _dispatch().render(request) is NOT_DONE_YET  # written through the request's Exchange
    assert request.code == status
    body = channel.transport.written.getvalue().partition(b"\r\n\r\n")[2]
    assert body == (b"<!DOCTYPE html>\n<html><head><title>421 Misdirected Request</title></head>"
                    b"<body><h1>421 Misdirected Request</h1></body></html>\n")


def test_dispatch_unknown_host_404() -> None:
    """server.unknown_host: 404 answers 404 Not Found."""
    request = _request(b"other.example")
    _dispatch(404).render(request)
    assert request.code == 404


def test_dispatch_remembers_a_bounded_number_of_host_values() -> None:
    """Host values are remembered with their site, at most HOST_CACHE_SIZE of them, whatever a client sends."""
    dispatch = _dispatch()
    for n in range(HOST_CACHE_SIZE + 10):
        dispatch.render(_request(b"n%d.example" % n))
    assert len(dispatch._by_value) == 10
    request = _request(b"A.example:80")
    assert (dispatch.render(request), dispatch.render(_request(b"A.example:80"))) == (b"a", b"a")
    assert dispatch._by_value[b"A.example:80"] is dispatch.sites[0]
