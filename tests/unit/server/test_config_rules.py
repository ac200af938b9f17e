"""The ``rules`` list of the configuration: every action parsed to its exact rule, and each mistake named with its key, file and line."""

from __future__ import annotations

import io
import ipaddress
import re
from pathlib import Path

import pytest

from fephp.cgi.rules import (
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
)
from fephp.server.check import check_config_main
from fephp.server.config import load_config
from fephp.server.settings import ConfigError, changed_sections
from tests.support.configs import EXTERNAL, write

HASH = "$2b$04$" + "a" * 53


def test_every_action(site: Path) -> None:
    """A rules list with every matcher and action loads to exactly these rules, in order."""
    text = EXTERNAL + f"""rules:
  - headers:
      remove: [X-Powered-By]
      set: {{Strict-Transport-Security: max-age=63072000}}
      add: {{X-Frame-Options: DENY}}
  - match: {{prefix: /admin/, address: [10.0.0.0/8, "2001:db8::/32"]}}
    allow: [10.0.0.1/8]
  - match: {{path: /.git}}
    deny: all
  - match: {{methods: [post, PUT]}}
    deny: [192.0.2.0/24]
  - match: {{regex: '^/blog/(?P<slug>[^/]+)$'}}
    rewrite: /index.php?post=${{slug}}
  - match: {{regex: '^/old/(.*)$'}}
    redirect: {{to: 'https://example.org/$1', status: 301}}
  - match: {{path: /gone}}
    redirect: /new
  - match: {{path: /health}}
    respond: {{status: 200, body: "ok\\n"}}
  - match: {{path: /teapot}}
    respond: 418
  - match: {{prefix: /private/}}
    basic_auth: {{realm: Staff, users: {{alice: "{HASH}"}}}}
  - match: {{prefix: /api/}}
    rate_limit: {{rate: 600r/m, burst: 5, max_clients: 100}}
  - rate_limit: {{rate: 2.5}}
"""
    config = load_config(str(write(site, text)))
    net = ipaddress.ip_network
    assert config.rules == (
        Rule(Match(), Headers((
            HeaderEdit("remove", b"X-Powered-By"),
            HeaderEdit("set", b"Strict-Transport-Security", b"max-age=63072000"),
            HeaderEdit("add", b"X-Frame-Options", b"DENY"),
        ))),
        Rule(Match(prefix="/admin/", addresses=(net("10.0.0.0/8"), net("2001:db8::/32"))), Allow((net("10.0.0.0/8"),))),
        Rule(Match(path="/.git"), Deny(everyone=True)),
        Rule(Match(methods=frozenset({b"POST", b"PUT"})), Deny((net("192.0.2.0/24"),))),
        Rule(Match(regex=re.compile(r"^/blog/(?P<slug>[^/]+)$")), Rewrite("/index.php?post=${slug}")),
        Rule(Match(regex=re.compile(r"^/old/(.*)$")), Redirect("https://example.org/$1", 301)),
        Rule(Match(path="/gone"), Redirect("/new", 302)),
        Rule(Match(path="/health"), Respond(200, b"ok\n")),
        Rule(Match(path="/teapot"), Respond(418, b"")),
        Rule(Match(prefix="/private/"), BasicAuth("Staff", (("alice", HASH.encode()),))),
        Rule(Match(prefix="/api/"), RateLimit(10.0, 5, 100)),
        Rule(Match(), RateLimit(2.5, 0, 10000)),
    )


def test_no_rules(site: Path) -> None:
    """Without rules, or with an empty list, there are none."""
    assert load_config(str(write(site, EXTERNAL))).rules == ()
    assert load_config(str(write(site, EXTERNAL + "rules: []\n"))).rules == ()


def test_a_changed_rule_is_a_changed_section(site: Path) -> None:
    """A reload's log names rules when they changed."""
    old = load_config(str(write(site, EXTERNAL)))
    new = load_config(str(write(site, EXTERNAL + "rules:\n  - deny: all\n")))
    assert changed_sections(old, new) == ["rules"]


@pytest.mark.parametrize(("rules", "line", "message"), [
    ("  - match: {prefix: /x/}\n", 4, "rules[0]: must have exactly one action (rewrite, redirect, respond, allow, "
     "deny, basic_auth, rate_limit, headers); found none: one rule per action"),
    ("  - deny: all\n    respond: 200\n", 4, "rules[0]: must have exactly one action (rewrite, redirect, respond, "
     "allow, deny, basic_auth, rate_limit, headers); found deny and respond: one rule per action"),
    ("  - forbid: all\n", 4, "rules[0].forbid: unknown key; expected one of: match, rewrite, redirect, respond, "
     "allow, deny, basic_auth, rate_limit, headers"),
    ("  - deny: all\n  - match: {regex: '^/(a'}\n    deny: all\n", 5,
     "rules[1].match.regex: not a valid regular expression: missing ), unterminated subpattern at position 2"),
    ("  - match: {address: [10.0.0.300/8]}\n    deny: all\n", 4,
     "rules[0].match.address[0]: is not an address or CIDR range: '10.0.0.300/8' does not appear to be an IPv4 or "
     "IPv6 network"),
    ("  - match: {prefix: admin}\n    deny: all\n", 4, "rules[0].match.prefix: must start with '/', not 'admin'"),
    ("  - match: {methods: ['GE T']}\n    deny: all\n", 4, "rules[0].match.methods[0]: is not an HTTP method: 'GE T'"),
    ("  - basic_auth:\n      users:\n        alice: secret\n", 6, "rules[0].basic_auth.users.alice: plain-text "
     "passwords are refused: give a bcrypt hash ($2b$..., from htpasswd -nbB or caddy hash-password)"),
    ("  - basic_auth:\n      users: {alice: '$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA'}\n", 5,
     "rules[0].basic_auth.users.alice: argon2 hashes are not supported: give a bcrypt hash ($2b$..., from "
     "htpasswd -nbB or caddy hash-password)"),
    ("  - rewrite: /index.php?p=$1\n", 4, "rules[0].rewrite: refers to $1 but the rule's match has no regex"),
    ("  - match: {regex: '^/(a)$'}\n    rewrite: /x/$2\n", 5,
     "rules[0].rewrite: refers to $2, which the regex '^/(a)$' does not capture"),
    ("  - rewrite: index.php\n", 4, "rules[0].rewrite: must be a path starting with '/', not 'index.php'"),
    ("  - redirect: {to: /x, status: 303}\n", 4, "rules[0].redirect.status: must be one of 301, 302, 307, 308, "
     "not the number 303"),
    ("  - redirect: 'javascript:alert(1)'\n", 4, "rules[0].redirect.to: must be a path starting with '/' or an "
     "http(s):// URL, not 'javascript:alert(1)'"),
    ("  - respond: {status: 204, body: x}\n", 4, "rules[0].respond.body: a 204 response has no body"),
    ("  - respond: 99\n", 4, "rules[0].respond.status: must be at least 200, not 99"),
    ("  - rate_limit: {rate: 0}\n", 4, "rules[0].rate_limit.rate: must be more than 0 and at most 1000000 a second, "
     "not 0"),
    ("  - rate_limit: {rate: fast}\n", 4, "rules[0].rate_limit.rate: must be requests a second, or like nginx: "
     "10r/s, 600r/m, not the string 'fast'"),
    ("  - rate_limit: {rate: 1, max_clients: 0}\n", 4, "rules[0].rate_limit.max_clients: must be at least 1, not 0"),
    ("  - headers: {set: {Content-Length: '5'}}\n", 4, "rules[0].headers.set.Content-Length: Content-Length frames "
     "the response: fephp sets it, a rule cannot"),
    ("  - headers: {remove: ['Bad Name']}\n", 4, "rules[0].headers.remove[0]: is not a header name: 'Bad Name'"),
    ("  deny: all\n", 3, "rules: must be a list of rules (each an optional match and one action), not a mapping"),
], ids=["no-action", "two-actions", "unknown-action", "bad-regex", "bad-cidr", "relative-prefix", "bad-method",
        "plain-text-password", "argon2", "capture-without-regex", "missing-group", "relative-rewrite",
        "redirect-status", "redirect-scheme", "body-on-204", "status-too-low", "zero-rate", "rate-word",
        "no-clients", "framing-header", "bad-header-name", "not-a-list"])
def test_errors(site: Path, rules: str, line: int, message: str) -> None:
    """Each mistake is one ConfigError naming the file, its line and the dotted key."""
    path = write(site, EXTERNAL + "rules:\n" + rules)
    with pytest.raises(ConfigError) as raised:
        load_config(str(path))
    assert str(raised.value) == f"{path}, line {line}: {message}"


def test_check_config_counts_the_rules(site: Path) -> None:
    """fephp check-config's summary says how many rules of each kind the file has."""
    path = write(site, EXTERNAL + "rules:\n  - deny: all\n  - headers: {remove: [Server]}\n  - deny: [10.0.0.0/8]\n")
    out = io.StringIO()
    assert check_config_main(str(path), out=out, err=io.StringIO()) == 0
    assert "\n  rules: 3 (2 Deny, 1 Headers)\n" in out.getvalue()
