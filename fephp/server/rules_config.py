"""Reading a ``rules:`` list of the configuration into :mod:`fephp.cgi.rules`' frozen rules, each error at its key's line.

:func:`parse_rules` is called by :mod:`fephp.server.config`'s validator for
the top-level ``rules`` (the default site) and for each site's.
``docs/configuration.md`` ("Rules") describes the vocabulary.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..cgi.rules import (
    Allow,
    BasicAuth,
    Deny,
    HeaderEdit,
    Headers,
    Match,
    RateLimit,
    Redirect,
    Respond,
    Rewrite,
    Rule,
    is_password_hash,
    template_groups,
)

if TYPE_CHECKING:
    from .config import Path, _Validator

__all__ = ["ACTIONS", "MATCHERS", "parse_rules"]

#: What a rule's ``match`` may hold.
MATCHERS = ("prefix", "path", "regex", "methods", "address")
#: A rule's one action.
ACTIONS = ("rewrite", "redirect", "respond", "allow", "deny", "basic_auth", "rate_limit", "headers")
REDIRECT_STATUSES = (301, 302, 307, 308)
#: The longest ``respond`` body: a short answer, not a page store.
MAX_BODY = 4096
#: An HTTP method or header name (RFC 9110 5.6.2 token).
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
#: What a rewrite or redirect target may hold as it is: printable ASCII but space, quote, "<", ">", backslash.
_TARGET = re.compile(r"^[!#-;=?-\[\]-~]+$")
#: Headers that frame the response or the connection: Twisted and the channel own them.
_FRAMING = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
                      "upgrade", "proxy-connection"))
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*r/([sm])\s*$")


def parse_rules(v: "_Validator", path: "Path", value: Any) -> "tuple[Rule, ...]":
    """``rules`` at *path*: a list of rules, each a mapping with an optional ``match`` and one action."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise v.error(path, f"must be a list of rules (each an optional match and one action), not {_kind(v, value)}")
    return tuple(_rule(v, (*path, i), item) for i, item in enumerate(value))


def _kind(v: "_Validator", value: Any) -> str:
    return v.describe(value)


def _rule(v: "_Validator", at: "Path", item: Any) -> Rule:
    if not isinstance(item, dict):
        raise v.error(at, f"must be a mapping with an optional match and one action ({', '.join(ACTIONS)}), not {_kind(v, item)}")
    v.known(item, at, ("match", *ACTIONS))
    actions = [key for key in item if key in ACTIONS]
    if len(actions) != 1:
        found = " and ".join(actions) if actions else "none"
        raise v.error(at, f"must have exactly one action ({', '.join(ACTIONS)}); found {found}: one rule per action")
    match = _match(v, (*at, "match"), item.get("match"))
    name = actions[0]
    parse: Callable[..., Any] = {
        "rewrite": _rewrite, "redirect": _redirect, "respond": _respond, "allow": _allow, "deny": _deny,
        "basic_auth": _basic_auth, "rate_limit": _rate_limit, "headers": _headers,
    }[name]
    return Rule(match, parse(v, (*at, name), item[name], match))


def _match(v: "_Validator", at: "Path", data: Any) -> Match:
    if data is None:
        return Match()
    if not isinstance(data, dict):
        raise v.error(at, f"must be a mapping of matchers ({', '.join(MATCHERS)}), not {_kind(v, data)}")
    v.known(data, at, MATCHERS)
    prefix = exact = None
    if "prefix" in data:
        prefix = v.url_prefix((*at, "prefix"), _text(v, (*at, "prefix"), data["prefix"]))
    if "path" in data:
        exact = v.url_prefix((*at, "path"), _text(v, (*at, "path"), data["path"]))
    regex = None
    if "regex" in data:
        pattern = _text(v, (*at, "regex"), data["regex"])
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise v.error((*at, "regex"), f"not a valid regular expression: {e}") from None

    def method(p: "Path", name: str) -> str:
        if not _TOKEN.match(name):
            raise v.error(p, f"is not an HTTP method: {name!r}")
        return name.upper()

    methods = v.string_list((*at, "methods"), data["methods"], method) if "methods" in data else ()
    addresses = _networks(v, (*at, "address"), data["address"]) if "address" in data else ()
    return Match(prefix, exact, regex, frozenset(m.encode("ascii") for m in methods), addresses)


def _text(v: "_Validator", at: "Path", value: Any) -> str:
    text = v.string(at, value)
    assert text is not None
    return text


def _networks(v: "_Validator", at: "Path", value: Any) -> "tuple[Any, ...]":
    def network(p: "Path", text: str) -> str:
        try:
            ipaddress.ip_network(text.strip(), strict=False)
        except ValueError as e:
            raise v.error(p, f"is not an address or CIDR range: {e}") from None
        return text

    texts = v.string_list(at, value, network)
    if not texts:
        raise v.error(at, "must name at least one address or CIDR range")
    # strict=False: "10.0.0.1/8" means 10.0.0.0/8, as nginx and trusted_proxies read it.
    return tuple(ipaddress.ip_network(t.strip(), strict=False) for t in texts)


def _target(v: "_Validator", at: "Path", value: Any, match: Match, *, url: bool) -> str:
    text = _text(v, at, value)
    if not _TARGET.match(text):
        raise v.error(at, f"must be printable ASCII without spaces, quotes, '<', '>' or '\\' (percent-encode them), not {text!r}")
    if not text.startswith("/") and not (url and re.match(r"^https?://[^/?#]+", text)):
        allowed = "a path starting with '/' or an http(s):// URL" if url else "a path starting with '/'"
        raise v.error(at, f"must be {allowed}, not {text!r}")
    for group in template_groups(text):
        regex = match.regex
        if regex is None:
            raise v.error(at, f"refers to ${group} but the rule's match has no regex")
        if isinstance(group, int) and group > regex.groups or isinstance(group, str) and group not in regex.groupindex:
            raise v.error(at, f"refers to ${group}, which the regex {regex.pattern!r} does not capture")
    return text


def _rewrite(v: "_Validator", at: "Path", value: Any, match: Match) -> Rewrite:
    return Rewrite(_target(v, at, value, match, url=False))


def _redirect(v: "_Validator", at: "Path", value: Any, match: Match) -> Redirect:
    if isinstance(value, str):
        value = {"to": value}
    if not isinstance(value, dict):
        raise v.error(at, f"must be a target, or a mapping with to and status, not {_kind(v, value)}")
    v.known(value, at, ("to", "status"))
    if "to" not in value:
        raise v.error(at, "needs to (a path or an http(s):// URL)")
    status = value.get("status", 302)
    if status not in REDIRECT_STATUSES:
        raise v.error((*at, "status"), f"must be one of {', '.join(map(str, REDIRECT_STATUSES))}, not {_kind(v, status)}")
    return Redirect(_target(v, (*at, "to"), value["to"], match, url=True), status)


def _respond(v: "_Validator", at: "Path", value: Any, match: Match) -> Respond:
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"status": value}
    if not isinstance(value, dict):
        raise v.error(at, f"must be a status, or a mapping with status and body, not {_kind(v, value)}")
    v.known(value, at, ("status", "body"))
    status = v.integer((*at, "status"), value.get("status", 200), minimum=200)
    if status > 599:
        raise v.error((*at, "status"), f"must be at most 599, not {status}")
    body = value.get("body", "")
    if not isinstance(body, str):
        raise v.error((*at, "body"), f"must be a string, not {_kind(v, body)}")
    data = body.encode("utf-8")
    if len(data) > MAX_BODY:
        raise v.error((*at, "body"), f"must be at most {MAX_BODY} bytes, not {len(data)}")
    if data and status in (204, 304):
        raise v.error((*at, "body"), f"a {status} response has no body")
    return Respond(status, data)


def _allow(v: "_Validator", at: "Path", value: Any, match: Match) -> Allow:
    return Allow(_networks(v, at, value))


def _deny(v: "_Validator", at: "Path", value: Any, match: Match) -> Deny:
    if value == "all":
        return Deny(everyone=True)
    return Deny(_networks(v, at, value))


def _basic_auth(v: "_Validator", at: "Path", value: Any, match: Match) -> BasicAuth:
    if not isinstance(value, dict):
        raise v.error(at, f"must be a mapping with realm and users, not {_kind(v, value)}")
    v.known(value, at, ("realm", "users"))
    realm = _text(v, (*at, "realm"), value.get("realm", "Restricted"))
    if '"' in realm or "\\" in realm:
        raise v.error((*at, "realm"), "must not contain '\"' or '\\'")
    users = value.get("users")
    if not isinstance(users, dict) or not users:
        raise v.error((*at, "users"), f"must be a mapping of user names to bcrypt hashes, not {_kind(v, users)}")
    out = []
    for name, hashed in users.items():
        p = (*at, "users", name)
        if not isinstance(name, str) or not name or ":" in name or any(c in name for c in "\r\n\0"):
            raise v.error(p, "a user name must be a non-empty string without ':'")
        if not isinstance(hashed, str) or not is_password_hash(hashed):
            scheme = "argon2 hashes are not supported" if isinstance(hashed, str) and hashed.startswith("$argon2") \
                else "plain-text passwords are refused"
            raise v.error(p, f"{scheme}: give a bcrypt hash ($2b$..., from htpasswd -nbB or caddy hash-password)")
        out.append((name, hashed.encode("ascii")))
    return BasicAuth(realm, tuple(out))


def _rate_limit(v: "_Validator", at: "Path", value: Any, match: Match) -> RateLimit:
    if not isinstance(value, dict):
        raise v.error(at, f"must be a mapping with rate (and burst, max_clients), not {_kind(v, value)}")
    v.known(value, at, ("rate", "burst", "max_clients"))
    if "rate" not in value:
        raise v.error(at, "needs rate (requests a second, or like nginx: 10r/s, 600r/m)")
    rate = _rate(v, (*at, "rate"), value["rate"])
    d = RateLimit(1.0)
    return RateLimit(
        rate,
        v.integer((*at, "burst"), value.get("burst", d.burst), minimum=0),
        v.integer((*at, "max_clients"), value.get("max_clients", d.max_clients), minimum=1),
    )


def _rate(v: "_Validator", at: "Path", value: Any) -> float:
    rate: Optional[float] = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        rate = float(value)
    elif isinstance(value, str):
        found = _RATE.match(value)
        if found:
            rate = float(found[1]) / (60 if found[2] == "m" else 1)
    if rate is None:
        raise v.error(at, f"must be requests a second, or like nginx: 10r/s, 600r/m, not {_kind(v, value)}")
    if not rate > 0 or rate > 1e6:
        raise v.error(at, f"must be more than 0 and at most 1000000 a second, not {rate:g}")
    return rate


def _headers(v: "_Validator", at: "Path", value: Any, match: Match) -> Headers:
    if not isinstance(value, dict):
        raise v.error(at, f"must be a mapping with set, add or remove, not {_kind(v, value)}")
    v.known(value, at, ("remove", "set", "add"))
    if not value:
        raise v.error(at, "needs set, add or remove")

    def name_of(p: "Path", name: Any) -> bytes:
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise v.error(p, f"is not a header name: {name!r}")
        if name.lower() in _FRAMING:
            raise v.error(p, f"{name} frames the response: fephp sets it, a rule cannot")
        return name.encode("ascii")

    edits = []
    if "remove" in value:
        names = v.string_list((*at, "remove"), value["remove"], lambda p, n: n)
        edits += [HeaderEdit("remove", name_of((*at, "remove", i), n)) for i, n in enumerate(names)]
    for op in ("set", "add"):
        if op not in value:
            continue
        pairs = value[op]
        if not isinstance(pairs, dict) or not pairs:
            raise v.error((*at, op), f"must be a mapping of header names to values, not {_kind(v, pairs)}")
        for name, text in pairs.items():
            p = (*at, op, name)
            if isinstance(text, (int, float)) and not isinstance(text, bool):
                text = str(text)
            checked = _text(v, p, text)
            try:
                data = checked.encode("latin-1")
            except UnicodeEncodeError:
                raise v.error(p, "must be Latin-1 text (RFC 9110 5.5)") from None
            edits.append(HeaderEdit(op, name_of(p, name), data))
    return Headers(tuple(edits))
