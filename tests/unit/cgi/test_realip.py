"""RealIP: who the client is behind trusted proxies, case by case, as nginx's realip module with real_ip_recursive on."""

from __future__ import annotations

from typing import Optional

import pytest

from fephp.cgi.realip import Forwarded, RealIP, parse_trusted

TRUSTED = tuple(parse_trusted(t) for t in ("10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "unix:"))
XFF = RealIP(TRUSTED)

#: (id, peer, X-Forwarded-For values, expected (host, port) or None to keep the peer)
CASES: list[tuple[str, str, list[bytes], Optional[tuple[str, int]]]] = [
    ("one-proxy", "10.0.0.1", [b"203.0.113.9"], ("203.0.113.9", 0)),
    ("untrusted-peer-is-ignored", "198.51.100.1", [b"203.0.113.9"], None),
    ("right-most-untrusted-wins", "10.0.0.1", [b"6.6.6.6, 203.0.113.9, 10.1.1.1"], ("203.0.113.9", 0)),
    ("forged-left-most-is-not-taken", "10.0.0.1", [b"1.2.3.4, 203.0.113.9"], ("203.0.113.9", 0)),
    ("all-trusted-gives-the-left-most", "10.0.0.1", [b"10.9.9.9, 192.0.2.7"], ("10.9.9.9", 0)),
    ("several-headers-are-one-list", "10.0.0.1", [b"6.6.6.6", b"203.0.113.9, 10.2.2.2"], ("203.0.113.9", 0)),
    ("a-port-is-kept", "10.0.0.1", [b"203.0.113.9:4711"], ("203.0.113.9", 4711)),
    ("ipv6", "10.0.0.1", [b"2001:db9::1"], ("2001:db9::1", 0)),
    ("ipv6-bracketed-with-port", "10.0.0.1", [b"[2001:db9::1]:443"], ("2001:db9::1", 443)),
    ("ipv6-trusted-proxy", "2001:db8::5", [b"203.0.113.9"], ("203.0.113.9", 0)),
    ("ipv4-mapped-peer", "::ffff:10.0.0.1", [b"203.0.113.9"], ("203.0.113.9", 0)),
    ("unix-socket-peer", "unix:", [b"203.0.113.9"], ("203.0.113.9", 0)),
    ("garbage-right-most-keeps-the-peer", "10.0.0.1", [b"203.0.113.9, not-an-address"], None),
    ("garbage-further-left-stops-at-the-last-good", "10.0.0.1", [b"6.6.6.6, junk, 10.3.3.3"], ("10.3.3.3", 0)),
    ("empty-header", "10.0.0.1", [b""], None),
]


@pytest.mark.parametrize(("peer", "values", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_x_forwarded_for(peer: str, values: list[bytes], expected: Optional[tuple[str, int]]) -> None:
    """The client is the right-most address that no trusted proxy owns, and only a trusted peer may say so."""
    found = XFF.client(peer, values)
    assert (None if found is None else (found.host, found.port)) == expected


def test_x_real_ip_is_one_address() -> None:
    """X-Real-IP names the client, from a trusted peer only; the last header counts, a list in it is walked as nginx does."""
    real = RealIP(TRUSTED, "X-Real-IP")
    assert real.client("10.0.0.1", [b"203.0.113.9"]) == Forwarded("203.0.113.9", 0, None)
    assert real.client("198.51.100.1", [b"203.0.113.9"]) is None
    assert real.client("10.0.0.1", [b"1.1.1.1, 2.2.2.2"]) == Forwarded("2.2.2.2", 0, None)
    assert real.client("10.0.0.1", [b"1.1.1.1", b"2.2.2.2, 10.0.0.9"]) == Forwarded("2.2.2.2", 0, None)


def test_forwarded_header() -> None:
    """RFC 7239 Forwarded: quoted and bracketed for= values, the right-most untrusted one, its proto."""
    real = RealIP(TRUSTED, "Forwarded")
    values = [b'for=1.2.3.4, for="[2001:db9::7]:4711";proto=https, for=10.4.4.4;proto=https']
    assert real.client("10.0.0.1", values) == Forwarded("2001:db9::7", 4711, True)
    assert real.client("10.0.0.1", [b"for=unknown"]) is None


def test_x_forwarded_proto_from_a_trusted_peer() -> None:
    """X-Forwarded-Proto gives the scheme (its right-most value), from a trusted peer only, with or without an address."""
    assert XFF.client("10.0.0.1", [b"203.0.113.9"], [b"https"]) == Forwarded("203.0.113.9", 0, True)
    assert XFF.client("10.0.0.1", [b"203.0.113.9"], [b"https, http"]) == Forwarded("203.0.113.9", 0, False)
    assert XFF.client("198.51.100.1", [b"203.0.113.9"], [b"https"]) is None
    assert XFF.client("10.0.0.1", [b"junk"], [b"https"]) == Forwarded(None, 0, True)
    assert XFF.client("10.0.0.1", [], [b"https"]) == Forwarded(None, 0, True)


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "example.org", "", "unix"])
def test_bad_trusted_entries(entry: str) -> None:
    """An entry that is no address, range or 'unix:' is refused."""
    with pytest.raises(ValueError):
        parse_trusted(entry)
