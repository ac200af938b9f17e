"""Backend addresses: plain forms (as php-fpm's ``listen`` writes them) and Twisted endpoint strings."""

from __future__ import annotations

import pytest
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor

from fephp.backend.endpoints import normalize_client_endpoint, parse_client_endpoint

VALID = [
    # plain forms
    pytest.param("127.0.0.1:9000", "tcp:host=127.0.0.1:port=9000", TCP4ClientEndpoint, ("127.0.0.1", 9000), id="ipv4:port"),
    pytest.param("localhost:9000", "tcp:host=localhost:port=9000", TCP4ClientEndpoint, ("localhost", 9000), id="name:port"),
    pytest.param("php-fpm.internal:9001", "tcp:host=php-fpm.internal:port=9001", TCP4ClientEndpoint, ("php-fpm.internal", 9001), id="dotted name with dash"),
    pytest.param("9000", "tcp:host=127.0.0.1:port=9000", TCP4ClientEndpoint, ("127.0.0.1", 9000), id="bare port is loopback"),
    pytest.param("  9000\n", "tcp:host=127.0.0.1:port=9000", TCP4ClientEndpoint, ("127.0.0.1", 9000), id="surrounding blanks"),
    pytest.param("65535", "tcp:host=127.0.0.1:port=65535", TCP4ClientEndpoint, ("127.0.0.1", 65535), id="highest port"),
    pytest.param("[::1]:9000", "tcp:host=\\:\\:1:port=9000", TCP4ClientEndpoint, ("::1", 9000), id="bracketed ipv6"),
    pytest.param("[::ffff:127.0.0.1]:9000", "tcp:host=\\:\\:ffff\\:127.0.0.1:port=9000", TCP4ClientEndpoint, ("::ffff:127.0.0.1", 9000), id="v4-mapped ipv6"),
    pytest.param("/run/php/php8.2-fpm.sock", "unix:path=/run/php/php8.2-fpm.sock", UNIXClientEndpoint, "/run/php/php8.2-fpm.sock", id="absolute socket path"),
    pytest.param("/tmp/odd:name=x.sock", "unix:path=/tmp/odd\\:name=x.sock", UNIXClientEndpoint, "/tmp/odd:name=x.sock", id="socket path with colon and equals"),
    pytest.param("unix:/run/php.sock", "unix:path=/run/php.sock", UNIXClientEndpoint, "/run/php.sock", id="nginx unix: spelling"),
    # Twisted endpoint strings pass through untouched
    pytest.param("unix:path=/run/php.sock", "unix:path=/run/php.sock", UNIXClientEndpoint, "/run/php.sock", id="unix endpoint string"),
    pytest.param("tcp:host=10.0.0.5:port=9000", "tcp:host=10.0.0.5:port=9000", TCP4ClientEndpoint, ("10.0.0.5", 9000), id="tcp endpoint string"),
    pytest.param("tcp:host=10.0.0.5:port=9000:timeout=3", "tcp:host=10.0.0.5:port=9000:timeout=3", TCP4ClientEndpoint, ("10.0.0.5", 9000), id="tcp endpoint string with options"),
]


@pytest.mark.parametrize("text, normalized, endpoint_type, target", VALID)
def test_valid_addresses(text: str, normalized: str, endpoint_type: type, target: object) -> None:
    """Each form normalizes to its endpoint string and parses to an endpoint that connects where it says."""
    assert normalize_client_endpoint(text) == normalized
    reactor = MemoryReactor()
    endpoint = parse_client_endpoint(reactor, text)
    assert type(endpoint) is endpoint_type
    endpoint.connect(Factory.forProtocol(Protocol))
    if endpoint_type is TCP4ClientEndpoint:
        assert [client[:2] for client in reactor.tcpClients] == [target]
    else:
        assert [client[0] for client in reactor.unixClients] == [target]


def test_endpoint_string_options_are_kept() -> None:
    """Options of an endpoint string, such as a connect timeout, reach the endpoint."""
    reactor = MemoryReactor()
    parse_client_endpoint(reactor, "tcp:host=10.0.0.5:port=9000:timeout=3").connect(Factory.forProtocol(Protocol))
    assert reactor.tcpClients[0][3] == 3


INVALID = [
    pytest.param("", id="empty"),
    pytest.param("   ", id="blank"),
    pytest.param("0", id="port 0"),
    pytest.param("65536", id="port 65536"),
    pytest.param("127.0.0.1:0", id="host with port 0"),
    pytest.param("127.0.0.1:70000", id="host with port 70000"),
    pytest.param("127.0.0.1:123456", id="six-digit port"),
    pytest.param("127.0.0.1:", id="missing port"),
    pytest.param(":9000", id="missing host"),
    pytest.param("[::1]", id="ipv6 without port"),
    pytest.param("[fe80::1%eth0]:9000", id="scoped ipv6"),
    pytest.param("my_host:9000", id="underscore in host"),
    pytest.param("nonsense", id="a word"),
    pytest.param("foo:bar", id="unknown endpoint type"),
    pytest.param("tcp:host=127.0.0.1", id="tcp without port"),
    pytest.param("tcp:host=127.0.0.1:port=abc", id="tcp with a non-numeric port"),
    pytest.param("run/php.sock", id="relative socket path"),
]


@pytest.mark.parametrize("text", INVALID)
def test_invalid_addresses_raise_value_error(text: str) -> None:
    """What is neither a plain form nor a client endpoint string is a ValueError, never another exception."""
    with pytest.raises(ValueError):
        parse_client_endpoint(MemoryReactor(), text)


@pytest.mark.parametrize("text", ["0", "65536", "127.0.0.1:0", "[::1]:99999", "", " "])
def test_normalize_refuses_bad_ports_and_empty_text(text: str) -> None:
    """Port numbers outside 1..65535 and empty text are refused before Twisted sees them."""
    with pytest.raises(ValueError):
        normalize_client_endpoint(text)


@pytest.mark.parametrize("text", ["unix:", "unix:path="])
def test_empty_socket_path_is_refused(text: str) -> None:
    """A UNIX socket address with an empty path is a ValueError at parse time."""
    with pytest.raises(ValueError):
        parse_client_endpoint(MemoryReactor(), text)
