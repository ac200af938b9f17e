"""Backend addresses: Twisted client endpoint strings, plus the plain forms fe-php took.

``fpm_socket`` may be any client endpoint string Twisted knows
(``unix:path=/run/php/php8.2-fpm.sock``, ``tcp:host=127.0.0.1:port=9000``) or,
as fe-php and php-fpm's own ``listen`` write them, ``127.0.0.1:9000``,
``[::1]:9000``, ``9000`` or ``/run/php/php-fpm.sock``.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.endpoints import clientFromString, quoteStringArgument
from twisted.internet.interfaces import IStreamClientEndpoint

__all__ = ["normalize_client_endpoint", "parse_client_endpoint"]

_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.\-]+)):(?P<port>\d{1,5})$")


def normalize_client_endpoint(text: str) -> str:
    """The Twisted endpoint string for *text*; raises ValueError for what is neither form."""
    text = text.strip()
    if not text:
        raise ValueError("empty backend address")
    if text.startswith("/"):
        return "unix:path=" + quoteStringArgument(text)
    if text.isdigit():
        return f"tcp:host=127.0.0.1:port={_port(text)}"
    match = _HOST_PORT.match(text)
    if match:
        port = _port(match["port"])
        if match["v6"]:
            # connectTCP takes an IPv6 literal; colons are escaped in endpoint strings.
            return "tcp:host=" + match["v6"].replace(":", "\\:") + f":port={port}"
        return f"tcp:host={match['host']}:port={port}"
    if text.startswith("unix:/"):
        # nginx's "unix:/path" spelling of a socket.
        return "unix:path=" + quoteStringArgument(text[len("unix:") :])
    if text.startswith("unix:") and not _unix_path(text[len("unix:") :]):
        # clientFromString would accept it and fail only at the first connect.
        raise ValueError(f"no socket path in {text!r}")
    return text


def _unix_path(arguments: str) -> str:
    for argument in re.split(r"(?<!\\):", arguments):
        if argument.startswith("path="):
            return argument[len("path=") :]
        if "=" not in argument:
            return argument
    return ""


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return port


def parse_client_endpoint(reactor: Any, text: str) -> IStreamClientEndpoint:
    """A client endpoint for *text*; raises ValueError when Twisted cannot parse it."""
    description = normalize_client_endpoint(text)
    try:
        return clientFromString(reactor, description)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"not a client endpoint: {text!r} ({e})") from None
