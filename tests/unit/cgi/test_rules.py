"""The rules engine (fephp.cgi.rules): every matcher and action, the evaluation order, and the bounds of its tables."""

from __future__ import annotations

import base64
import ipaddress
import re
from typing import Optional

import pytest

from fephp.cgi.rules import (
    Allow,
    Answer,
    BasicAuth,
    Deny,
    HeaderEdit,
    Headers,
    Match,
    Proceed,
    RateLimit,
    Redirect,
    RequestView,
    Respond,
    Rewrite,
    Rule,
    RuleSet,
    Verify,
    edit_header_list,
    is_password_hash,
    normalize_path,
)

HASH = b"$2b$04$" + b"a" * 53  # a well-formed bcrypt hash; the fake check below compares passwords
OTHER_HASH = b"$2b$04$" + b"b" * 53
PASSWORDS = {HASH: b"right", OTHER_HASH: b"other"}


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fake_check(password: bytes, hashed: bytes) -> bool:
    return PASSWORDS.get(hashed) == password


def view(path: bytes = b"/", *, method: bytes = b"GET", query: bytes = b"", client: str = "192.0.2.1",
         authorization: Optional[bytes] = None) -> RequestView:
    headers = {b"authorization": authorization} if authorization is not None else {}
    return RequestView(method, path, query, client, headers.get)


def rules(*items: Rule, clock: Optional[Clock] = None, **kwargs: int) -> RuleSet:
    return RuleSet(items, clock=clock or Clock(), check_password=fake_check, **kwargs)  # type: ignore[arg-type]


def net(*texts: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


FORBIDDEN = Answer(403)


# -- paths and matchers -------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    (b"/", "/"),
    (b"/admin/", "/admin/"),
    (b"/%61dmin/x", "/admin/x"),
    (b"//admin//x", "/admin/x"),
    (b"/x/../admin/", "/admin/"),
    (b"/admin/.", "/admin/"),
    (b"/%2e%2e/x", None),
    (b"/%ff", None),
    (b"/caf%C3%A9", "/café"),
], ids=["root", "slash", "encoded-letter", "double-slashes", "dot-dot", "final-dot", "above-root", "bad-utf8", "utf8"])
def test_normalize_path(raw: bytes, expected: Optional[str]) -> None:
    """Rules see the path decoded once with dot segments and empty segments gone, as the router resolves it."""
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(("match", "request_view", "hit"), [
    (Match(prefix="/admin/"), view(b"/admin/x"), True),
    (Match(prefix="/admin/"), view(b"/admin"), True),
    (Match(prefix="/admin/"), view(b"/administrator"), False),
    (Match(prefix="/admin"), view(b"/administrator"), True),
    (Match(prefix="/admin/"), view(b"/%61dmin/x"), True),
    (Match(prefix="/admin/"), view(b"/public/../admin/x"), True),
    (Match(path="/health"), view(b"/health"), True),
    (Match(path="/health"), view(b"/health/"), False),
    (Match(regex=re.compile(r"\.bak$")), view(b"/a/b.bak"), True),
    (Match(regex=re.compile(r"^/x$")), view(b"/y"), False),
    (Match(methods=frozenset({b"POST"})), view(method=b"POST"), True),
    (Match(methods=frozenset({b"POST"})), view(method=b"GET"), False),
    (Match(addresses=net("10.0.0.0/8")), view(client="10.1.2.3"), True),
    (Match(addresses=net("10.0.0.0/8")), view(client="192.0.2.1"), False),
    (Match(addresses=net("10.0.0.0/8")), view(client="::ffff:10.1.2.3"), True),
    (Match(addresses=net("2001:db8::/32")), view(client="2001:db8::7"), True),
    (Match(addresses=net("10.0.0.0/8")), view(client="unix:"), False),
    (Match(prefix="/a/", methods=frozenset({b"GET"})), view(b"/a/", method=b"POST"), False),
    (Match(), view(b"/anything"), True),
], ids=["prefix", "prefix-without-slash", "prefix-is-a-segment", "string-prefix", "prefix-decoded",
        "prefix-normalized", "exact", "exact-only", "regex", "regex-miss", "method", "method-miss", "cidr",
        "cidr-miss", "cidr-v4-mapped", "cidr-v6", "unix-socket-has-no-address", "all-must-hold", "no-matcher"])
def test_matchers(match: Match, request_view: RequestView, hit: bool) -> None:
    """A respond rule answers exactly when every matcher it has holds."""
    outcome = rules(Rule(match, Respond(204))).evaluate(request_view)
    assert outcome == (Answer(204, ((b"content-type", b"text/plain; charset=utf-8"),), b"") if hit
                       else Proceed(request_view.raw_path, b""))


# -- actions ----------------------------------------------------------------------


def test_rewrite_with_captures_keeps_the_query_and_goes_on() -> None:
    """A rewrite fills $1 and ${name}, percent-encodes them, and later rules see the new path."""
    ruleset = rules(
        Rule(Match(regex=re.compile(r"^/blog/(?P<year>\d+)/(.+)$")), Rewrite("/index.php/${year}/$2")),
        Rule(Match(prefix="/index.php/"), Headers((HeaderEdit("set", b"X-Seen", b"1"),))),
    )
    assert ruleset.evaluate(view(b"/blog/2024/a%20b", query=b"x=1")) == Proceed(
        b"/index.php/2024/a%20b", b"x=1", (HeaderEdit("set", b"X-Seen", b"1"),))


def test_rewrite_query() -> None:
    """A target with "?" sets the query, the client's appended; a target ending in "?" drops it; captures cannot add parameters."""
    regex = re.compile(r"^/p/(.+)$")
    assert rules(Rule(Match(regex=regex), Rewrite("/index.php?page=$1"))).evaluate(
        view(b"/p/a&b=c", query=b"x=1")) == Proceed(b"/index.php", b"page=a%26b%3Dc&x=1")
    assert rules(Rule(Match(regex=regex), Rewrite("/index.php?"))).evaluate(
        view(b"/p/a", query=b"x=1")) == Proceed(b"/index.php", b"")


def test_redirect() -> None:
    """A redirect answers its status with the filled target, the client's query kept, never protocol-relative."""
    regex = re.compile(r"^/old(/.*)$")
    assert rules(Rule(Match(regex=regex), Redirect("/new$1", 301))).evaluate(view(b"/old/x", query=b"q=1")) == \
        Answer(301, ((b"location", b"/new/x?q=1"),))
    assert rules(Rule(Match(regex=regex), Redirect("https://example.org$1", 308))).evaluate(view(b"/old/y")) == \
        Answer(308, ((b"location", b"https://example.org/y"),))
    assert rules(Rule(Match(regex=re.compile(r"^/go(.*)$")), Redirect("/$1"))).evaluate(view(b"/go/evil.example/")) == \
        Answer(302, ((b"location", b"/evil.example/"),))


def test_respond_body() -> None:
    """A respond rule answers its status and body as plain text."""
    assert rules(Rule(Match(path="/ping"), Respond(200, b"pong\n"))).evaluate(view(b"/ping")) == \
        Answer(200, ((b"content-type", b"text/plain; charset=utf-8"),), b"pong\n")


def test_allow_and_deny() -> None:
    """allow refuses every client it does not list; deny refuses those it lists, or everyone with all."""
    allow = rules(Rule(Match(prefix="/admin/"), Allow(net("10.0.0.0/8"))))
    assert allow.evaluate(view(b"/admin/", client="10.0.0.5")) == Proceed(b"/admin/", b"")
    assert allow.evaluate(view(b"/admin/", client="192.0.2.1")) == FORBIDDEN
    assert allow.evaluate(view(b"/admin/", client="unix:")) == FORBIDDEN
    deny = rules(Rule(Match(), Deny(net("192.0.2.0/24"))))
    assert deny.evaluate(view(client="192.0.2.9")) == FORBIDDEN
    assert deny.evaluate(view(client="198.51.100.1")) == Proceed(b"/", b"")
    assert rules(Rule(Match(), Deny(everyone=True))).evaluate(view(client="unix:")) == FORBIDDEN


def test_headers_gather_in_order_and_reach_an_answer() -> None:
    """Every matched headers rule's edits go with the outcome, a terminal answer's included; rules after it do not count."""
    first = HeaderEdit("set", b"Strict-Transport-Security", b"max-age=60")
    second = HeaderEdit("remove", b"X-Powered-By")
    ruleset = rules(
        Rule(Match(), Headers((first,))),
        Rule(Match(prefix="/x/"), Headers((second,))),
        Rule(Match(prefix="/x/"), Deny(everyone=True)),
        Rule(Match(), Headers((HeaderEdit("add", b"X-Never", b"1"),))),
    )
    assert ruleset.evaluate(view(b"/x/")) == Answer(403, (), None, (first, second))
    assert ruleset.evaluate(view(b"/y")) == Proceed(b"/y", b"", (first, HeaderEdit("add", b"X-Never", b"1")))


# -- basic auth ---------------------------------------------------------------------


AUTH = Rule(Match(prefix="/private/"), BasicAuth("Staff", (("alice", HASH), ("bob", OTHER_HASH))))
CHALLENGE = Answer(401, ((b"www-authenticate", b'Basic realm="Staff", charset="UTF-8"'),))


@pytest.mark.parametrize("authorization", [
    None, b"Bearer x", b"Basic !!!", b"Basic " + base64.b64encode(b"no-colon"),
], ids=["none", "other-scheme", "not-base64", "no-colon"])
def test_basic_auth_without_credentials(authorization: Optional[bytes]) -> None:
    """No usable Basic credentials: 401 with the realm's challenge, and no check is asked for."""
    ruleset = rules(AUTH)
    assert ruleset.evaluate(view(b"/private/", authorization=authorization)) == CHALLENGE
    assert ruleset.pending == 0


def test_basic_auth_checks_once_then_remembers() -> None:
    """A right password is checked once (Verify), then the same credentials pass without a check."""
    ruleset = rules(AUTH, Rule(Match(), Headers((HeaderEdit("set", b"X-After", b"1"),))))
    outcome = ruleset.evaluate(view(b"/private/", authorization=basic("alice", "right")))
    assert isinstance(outcome, Verify)
    assert (outcome.user, outcome.password, outcome.hash, ruleset.pending) == ("alice", b"right", HASH, 1)
    assert ruleset.verify(outcome) is True
    after = Proceed(b"/private/", b"", (HeaderEdit("set", b"X-After", b"1"),))
    assert ruleset.resume(outcome, True) == after
    assert ruleset.pending == 0
    assert ruleset.evaluate(view(b"/private/", authorization=basic("alice", "right"))) == after


def test_basic_auth_wrong_password_and_unknown_user() -> None:
    """A wrong password is 401 and never remembered; an unknown name is checked (for timing) but never passes."""
    ruleset = rules(AUTH)
    wrong = ruleset.evaluate(view(b"/private/", authorization=basic("alice", "wrong")))
    assert isinstance(wrong, Verify)
    assert ruleset.resume(wrong, ruleset.verify(wrong)) == CHALLENGE
    assert isinstance(ruleset.evaluate(view(b"/private/", authorization=basic("alice", "wrong"))), Verify)
    unknown = ruleset.evaluate(view(b"/private/", authorization=basic("mallory", "right")))
    assert isinstance(unknown, Verify)
    assert (unknown.user, unknown.hash) == ("", HASH)
    assert ruleset.resume(unknown, ruleset.verify(unknown)) == CHALLENGE


def test_basic_auth_cache_is_bounded() -> None:
    """Past auth_cache_size verified pairs, the least recently used is checked again."""
    ruleset = rules(AUTH, auth_cache_size=1)
    for user, password in (("alice", "right"), ("bob", "other")):
        check = ruleset.evaluate(view(b"/private/", authorization=basic(user, password)))
        assert isinstance(check, Verify)
        ruleset.resume(check, True)
    assert ruleset.evaluate(view(b"/private/", authorization=basic("bob", "other"))) == Proceed(b"/private/", b"")
    assert isinstance(ruleset.evaluate(view(b"/private/", authorization=basic("alice", "right"))), Verify)


def test_basic_auth_pending_checks_are_bounded() -> None:
    """Past max_pending checks in flight, a request is answered 503 with Retry-After instead of queueing another."""
    ruleset = rules(AUTH, max_pending=2)
    checks = [ruleset.evaluate(view(b"/private/", authorization=basic("alice", f"guess{i}"))) for i in range(2)]
    assert all(isinstance(c, Verify) for c in checks)
    assert ruleset.evaluate(view(b"/private/", authorization=basic("alice", "x"))) == \
        Answer(503, ((b"retry-after", b"1"),))
    ruleset.resume(checks[0], False)  # type: ignore[arg-type]
    assert isinstance(ruleset.evaluate(view(b"/private/", authorization=basic("alice", "x"))), Verify)


def test_password_check_errors_are_a_mismatch() -> None:
    """A check that raises (bcrypt refuses passwords over 72 bytes) is a failed check, not a crash."""
    def raising(password: bytes, hashed: bytes) -> bool:
        raise ValueError("password too long")

    ruleset = RuleSet((AUTH,), clock=Clock(), check_password=raising)
    check = ruleset.evaluate(view(b"/private/", authorization=basic("alice", "x" * 100)))
    assert isinstance(check, Verify)
    assert ruleset.verify(check) is False


def test_is_password_hash() -> None:
    """Only bcrypt's modular crypt form is a hash; plain text and other schemes are not."""
    assert is_password_hash("$2b$12$" + "C" * 53) is True
    assert is_password_hash("$2y$10$" + "x" * 53) is True
    assert is_password_hash("secret") is False
    assert is_password_hash("$2b$12$short") is False
    assert is_password_hash("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA") is False


# -- rate limits --------------------------------------------------------------------


def test_rate_limit_burst_then_rate() -> None:
    """burst + 1 requests pass at once, the next is 429 with Retry-After, and one more passes per 1/rate seconds."""
    clock = Clock()
    ruleset = rules(Rule(Match(), RateLimit(2.0, burst=3)), clock=clock)
    assert [type(ruleset.evaluate(view())) for _ in range(4)] == [Proceed] * 4
    assert ruleset.evaluate(view()) == Answer(429, ((b"retry-after", b"1"),))
    clock.now += 0.5
    assert ruleset.evaluate(view()) == Proceed(b"/", b"")
    assert ruleset.evaluate(view()) == Answer(429, ((b"retry-after", b"1"),))
    clock.now += 10
    assert [type(ruleset.evaluate(view())) for _ in range(5)] == [Proceed] * 4 + [Answer]


def test_rate_limit_retry_after_rounds_up() -> None:
    """Retry-After is the whole seconds until a request would pass, rounded up."""
    clock = Clock()
    ruleset = rules(Rule(Match(), RateLimit(0.25)), clock=clock)
    assert ruleset.evaluate(view()) == Proceed(b"/", b"")
    clock.now += 0.5
    assert ruleset.evaluate(view()) == Answer(429, ((b"retry-after", b"4"),))


def test_rate_limit_is_per_client_and_refusals_do_not_count() -> None:
    """Each address has its own allowance, and a refused request does not push its own client further back."""
    clock = Clock()
    ruleset = rules(Rule(Match(), RateLimit(1.0)), clock=clock)
    assert type(ruleset.evaluate(view(client="192.0.2.1"))) is Proceed
    assert type(ruleset.evaluate(view(client="192.0.2.2"))) is Proceed
    for _ in range(10):
        assert type(ruleset.evaluate(view(client="192.0.2.1"))) is Answer
    clock.now += 1.0
    assert type(ruleset.evaluate(view(client="192.0.2.1"))) is Proceed


def test_rate_limit_table_is_bounded() -> None:
    """Past max_clients, the client seen least recently is forgotten and starts afresh; the table never grows past it."""
    clock = Clock()
    ruleset = rules(Rule(Match(), RateLimit(1.0, max_clients=2)), clock=clock)
    for client in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        assert type(ruleset.evaluate(view(client=client))) is Proceed
    table = ruleset._limiters[0].table
    assert list(table) == ["192.0.2.2", "192.0.2.3"]
    assert type(ruleset.evaluate(view(client="192.0.2.1"))) is Proceed  # forgotten: afresh
    assert type(ruleset.evaluate(view(client="192.0.2.3"))) is Answer
    assert len(table) == 2


def test_rate_limit_only_counts_matching_requests() -> None:
    """A request the rule's match does not hold for is not counted against its client."""
    ruleset = rules(Rule(Match(prefix="/api/"), RateLimit(1.0)))
    for _ in range(5):
        assert type(ruleset.evaluate(view(b"/static/x"))) is Proceed
    assert type(ruleset.evaluate(view(b"/api/x"))) is Proceed
    assert type(ruleset.evaluate(view(b"/api/x"))) is Answer


def test_edit_header_list() -> None:
    """Edits apply in order to a lowercase header list: remove drops every value, set replaces them with one, add appends."""
    headers = [(b"x-powered-by", b"PHP/8.2"), (b"set-cookie", b"a=1"), (b"content-type", b"text/html"),
               (b"set-cookie", b"b=2")]
    edit_header_list((
        HeaderEdit("remove", b"X-Powered-By"),
        HeaderEdit("set", b"Content-Type", b"text/plain"),
        HeaderEdit("add", b"Set-Cookie", b"c=3"),
        HeaderEdit("set", b"Strict-Transport-Security", b"max-age=60"),
    ), headers)
    assert headers == [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"), (b"content-type", b"text/plain"),
                       (b"set-cookie", b"c=3"), (b"strict-transport-security", b"max-age=60")]
