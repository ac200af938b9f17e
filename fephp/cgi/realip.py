"""The client behind trusted proxies, read from their headers as nginx's realip module does (real_ip_recursive on); pure.

A proxy in front of fephp connects from its own address; the client's is in
a header the proxy adds.  Only a connection from a trusted address
(``server.trusted_proxies``) may say who the client is, and only the part of
the header that trusted proxies wrote counts: the addresses are read from
the right, past every trusted one, and the first untrusted address is the
client.  The left-most address is never taken just because it is first: a
client can send ``X-Forwarded-For: 1.2.3.4`` itself, and a proxy appends to
it.  When every address is trusted, the left-most is the client, as nginx
says; an entry that is no address stops the walk at the last good one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union

from .._compat import SLOTS

__all__ = ["HEADERS", "UNIX", "Forwarded", "RealIP", "parse_trusted"]

#: The headers ``server.real_ip_header`` may name, as spelt in the docs.
HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
#: A trusted_proxies entry for connections over a UNIX socket (nginx's
#: ``set_real_ip_from unix:``): a local proxy in front of fephp.
UNIX = "unix:"

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def parse_trusted(entry: str) -> Union[Network, str]:
    """One trusted_proxies entry: an address, a CIDR range, or ``unix:``; ValueError otherwise."""
    if entry == UNIX:
        return UNIX
    # strict=False: "10.0.0.1/8" means 10.0.0.0/8, as nginx reads it.
    return ipaddress.ip_network(entry.strip(), strict=False)


@dataclass(frozen=True, **SLOTS)
class Forwarded:
    """Who the client is, per the trusted proxies: its address (None: the peer's), its port (0 when not said), its scheme (None when not said)."""

    host: Optional[str]
    port: int
    https: Optional[bool]


def _address(text: bytes) -> Optional[tuple[str, int]]:
    """``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]`` or ``[::1]:80`` as (address, port); None if it is none of them."""
    text = text.strip().strip(b'"')
    port = 0
    try:
        value = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return None
        host, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                return None
            port = int(rest[1:])
    elif value.count(":") == 1:
        host, _, rest = value.partition(":")
        if not rest.isdigit():
            return None
        port = int(rest)
    else:
        host = value
    if port > 65535:
        return None
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        return None


def _forwarded_elements(values: Sequence[bytes]) -> list[dict[bytes, bytes]]:
    """RFC 7239's ``Forwarded`` as a list of elements, each a map of lower-cased parameters."""
    elements = []
    for value in values:
        for element in value.split(b","):
            params: dict[bytes, bytes] = {}
            for pair in element.split(b";"):
                name, eq, param = pair.partition(b"=")
                if eq:
                    params[name.strip().lower()] = param.strip().strip(b'"')
            elements.append(params)
    return elements


@dataclass(frozen=True)
class RealIP:
    """``server.trusted_proxies`` and ``server.real_ip_header``: who may say who the client is, and where."""

    trusted: tuple[Union[Network, str], ...]
    header: str = "X-Forwarded-For"

    def __post_init__(self) -> None:
        if self.header not in HEADERS:
            raise ValueError(f"real_ip_header must be one of {', '.join(HEADERS)}, not {self.header!r}")

    @property
    def header_name(self) -> bytes:
        """The header's name, lower-cased, for a Headers lookup."""
        return self.header.lower().encode()

    def trusts(self, host: str) -> bool:
        """Whether a connection from *host* (an IP address, or ``unix:``) may speak for its client."""
        if host == UNIX:
            return UNIX in self.trusted
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)  # "::ffff:10.0.0.1" from a dual-stack socket
        for network in self.trusted:
            if isinstance(network, str):
                continue
            if address in network or (mapped is not None and mapped in network):
                return True
        return False

    def client(self, peer: str, values: Sequence[bytes], proto: Sequence[bytes] = ()) -> Optional[Forwarded]:
        """The client of a connection from *peer* per the header *values* (and X-Forwarded-Proto *proto*), or None to keep the peer.

        None when the peer is not trusted, or says nothing usable (no
        header, or a right-most entry that is no address, and no scheme).
        """
        if not (values or proto) or not self.trusts(peer):
            return None
        https: Optional[bool] = None
        if self.header == "Forwarded":
            elements = _forwarded_elements(values)
            entries = [element.get(b"for", b"") for element in elements]
            protos = [element[b"proto"] for element in elements if b"proto" in element]
            if protos:
                https = protos[-1].lower() == b"https"
        elif self.header == "X-Real-IP":
            # One header, but walked like a list if it holds one, as nginx does.
            entries = values[-1].split(b",") if values else []
        else:
            entries = [entry for value in values for entry in value.split(b",")]
        if https is None and proto:
            # The right-most: what the proxy that connected to us saw.
            https = proto[-1].split(b",")[-1].strip().lower() == b"https"
        found: Optional[tuple[str, int]] = None
        for entry in reversed(entries):
            address = _address(entry)
            if address is None:
                break
            found = address
            if not self.trusts(address[0]):
                break
        if found is None:
            return Forwarded(None, 0, https) if https is not None else None
        return Forwarded(found[0], found[1], https)
