"""Per-path rules from the server's side: a request matched, then rewritten, redirected, answered, refused, authenticated, limited or given headers; pure.

A site's ``rules`` are evaluated in order before routing, on a
:class:`RequestView` (method, path, query, the client's address after
``trusted_proxies``, a header getter), so that a request refused here
costs PHP nothing.  A rule is a :class:`Match` (every matcher given must
hold) and one action.  Evaluation stops at the first *terminal* outcome:

* ``redirect`` and ``respond`` always stop it;
* ``deny`` stops it for the addresses it lists, ``allow`` for those it
  does not list (403); the others go on;
* ``basic_auth`` stops it without good credentials (401), goes on with them;
* ``rate_limit`` stops it over the rate (429 with Retry-After), goes on
  under it;
* ``rewrite`` changes the path (and query) that the later rules and the
  router see, and goes on: REQUEST_URI stays the client's, as nginx keeps
  it; SCRIPT_NAME and PATH_INFO come from the new path;
* ``headers`` goes on, and its edits apply to whatever response the
  request gets: PHP's, a static file's, an error page, a later rule's.

Paths are matched decoded and normalized (each ``%XY`` decoded once,
``.`` and ``..`` removed, ``//`` collapsed), as nginx matches locations
and as the router resolves them, so ``/%61dmin/`` and ``/x/../admin/``
are ``/admin/`` here too.  A password hash is checked by a function the
caller gives (bcrypt's, off the reactor thread); a verified one is
remembered in a bounded table, so only the first request of a client
pays for it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional, Pattern, Union
from urllib.parse import quote, unquote_to_bytes

from .._compat import SLOTS
from .routing import path_segments

__all__ = [
    "AUTH_CACHE_SIZE",
    "MAX_PENDING_CHECKS",
    "Allow",
    "Answer",
    "BasicAuth",
    "Deny",
    "HeaderEdit",
    "Headers",
    "Match",
    "Proceed",
    "RateLimit",
    "Redirect",
    "RequestView",
    "Respond",
    "Rewrite",
    "Rule",
    "RuleSet",
    "Verify",
    "edit_header_list",
    "is_password_hash",
    "normalize_path",
    "template_groups",
]

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

#: Verified (user, password, hash) digests remembered per rule set.
AUTH_CACHE_SIZE = 1024
#: Password checks running or queued at once; past it a request is answered 503.
MAX_PENDING_CHECKS = 32
#: bcrypt's modular crypt form: $2a$, $2b$ or $2y$, a two-digit cost, 53 characters of salt and hash.
_BCRYPT = re.compile(rb"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
#: ``$1``..``$9`` and ``${name}`` in a rewrite or redirect target.
_REFERENCE = re.compile(r"\$(?:(\d)|\{(\w+)\})")
#: What a capture may keep as it is in a path (RFC 3986 pchar and "/", minus "%").
_PATH_SAFE = "/!$&'()*+,;=:@-._~"
#: ... and in a query ("&", "=", "+" and "#" are encoded: a capture cannot add a parameter).
_QUERY_SAFE = "/!$'()*,;:@-._~"


def is_password_hash(value: str) -> bool:
    """Whether *value* is a bcrypt hash (``htpasswd -B``, ``caddy hash-password``), not a password."""
    return bool(_BCRYPT.match(value.encode("ascii", "replace")))


def template_groups(template: str) -> "list[Union[int, str]]":
    """The capture groups *template* refers to: numbers for ``$1``, names for ``${name}``."""
    return [int(m[1]) if m[1] is not None else (int(m[2]) if m[2].isdigit() else m[2])
            for m in _REFERENCE.finditer(template)]


def normalize_path(raw: bytes) -> Optional[str]:
    """The path *raw* (as received, percent-encoded) as rules match it; None when no file could have it.

    Decoded once, "." and ".." segments removed and "//" collapsed (RFC
    3986 5.2.4), a trailing slash kept.  None for invalid UTF-8 or a ".."
    above the root: the router refuses those itself (400 or 404).
    """
    # "%" as an int and find() for the pairs: a bytes argument to "in" costs
    # CPython's bytes.__contains__ a formatted TypeError each time (it tries an int first).
    if 37 not in raw and raw.find(b"/.") < 0 and raw.find(b"//") < 0:
        try:
            return raw.decode("utf-8")  # nothing to decode or remove: most paths
        except UnicodeDecodeError:
            return None
    try:
        path = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None
    segments = path_segments(path)
    if segments is None:
        return None
    norm = "/" + "/".join(segments)
    if segments and path.endswith(("/", "/.", "/..")):
        norm += "/"
    return norm


# Made per request: plain (not frozen) dataclasses with slots where the Python
# has them, since a frozen one's __init__ goes through object.__setattr__ for
# each field (a third of an evaluation's time on CPython 3.11).
@dataclass(**SLOTS)
class RequestView:
    """What rules see of a request: ``client`` is the address after ``trusted_proxies`` ("unix:" on a UNIX socket)."""

    method: bytes
    raw_path: bytes  # as received, percent-encoded, no query
    query: bytes  # after "?", b"" when none
    client: str
    header: Callable[[bytes], Optional[bytes]]  # a lower-case name -> its last value, or None


@dataclass(frozen=True)
class Match:
    """When a rule applies: every matcher given must hold; none given matches every request.

    ``prefix`` is a URL prefix as ``server.deny`` takes them ("/admin/"
    also matches "/admin"); ``path`` one exact path; ``regex`` a search in
    the normalized path whose groups a rewrite or redirect may use;
    ``methods`` upper-case names; ``addresses`` CIDR ranges of the client.
    """

    prefix: Optional[str] = None
    path: Optional[str] = None
    regex: Optional[Pattern[str]] = None
    methods: frozenset[bytes] = frozenset()
    addresses: tuple[Network, ...] = ()


@dataclass(frozen=True)
class Rewrite:
    """Go on with the path (and query, when the target has "?") of ``target``, its ``$n`` filled in."""

    target: str


@dataclass(frozen=True)
class Redirect:
    """Answer ``status`` (301, 302, 307, 308) to ``target``, its ``$n`` filled in."""

    target: str
    status: int = 302


@dataclass(frozen=True)
class Respond:
    """Answer ``status`` with ``body`` (text/plain)."""

    status: int
    body: bytes = b""


@dataclass(frozen=True)
class Allow:
    """Only these client ranges go on; every other client gets 403."""

    addresses: tuple[Network, ...]


@dataclass(frozen=True)
class Deny:
    """These client ranges get 403 (``everyone``: every client, a UNIX-socket one too); the others go on."""

    addresses: tuple[Network, ...] = ()
    everyone: bool = False


@dataclass(frozen=True)
class BasicAuth:
    """RFC 7617 Basic authentication against bcrypt ``users`` (name, hash); 401 without a good pair."""

    realm: str
    users: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class RateLimit:
    """``rate`` requests a second per client address, ``burst`` more at once (nginx's limit_req ... burst nodelay); 429 past it.

    ``max_clients`` bounds the table of clients: past it the one seen
    least recently is forgotten (and starts afresh if it comes back).
    """

    rate: float
    burst: int = 0
    max_clients: int = 10000


@dataclass(frozen=True)
class HeaderEdit:
    """One response header edit: ``op`` is "remove", "set" or "add"; ``value`` is b"" for remove."""

    op: str
    name: bytes
    value: bytes = b""


@dataclass(frozen=True)
class Headers:
    """Edits of the response head, applied in order (remove, then set, then add, as given)."""

    edits: tuple[HeaderEdit, ...]


def edit_header_list(edits: "tuple[HeaderEdit, ...]", headers: "list[tuple[bytes, bytes]]") -> None:
    """Apply *edits* in order to *headers*, a response's (lowercase name, value) list, in place.

    For a response head kept as such a list (an Exchange's
    ``response_headers``); fephp.web.site does the same on Twisted's Headers.
    """
    for edit in edits:
        name = edit.name.lower()
        if edit.op != "add":
            headers[:] = [pair for pair in headers if pair[0] != name]
        if edit.op != "remove":
            headers.append((name, edit.value))


Action = Union[Rewrite, Redirect, Respond, Allow, Deny, BasicAuth, RateLimit, Headers]


@dataclass(frozen=True)
class Rule:
    """One entry of ``rules``: when it applies, and what it does."""

    match: Match
    action: Action


# -- outcomes -----------------------------------------------------------------


@dataclass(**SLOTS)
class Proceed:
    """Route ``raw_path`` with ``query`` (the client's unless rewritten), then edit the response head."""

    raw_path: bytes
    query: bytes
    edits: tuple[HeaderEdit, ...] = ()


@dataclass(frozen=True)
class Answer:
    """Answer at once: ``status``, these headers, and ``body`` (None: the status's error page)."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: Optional[bytes] = None
    edits: tuple[HeaderEdit, ...] = ()


class _State:
    """Where an evaluation is: the next rule, the path and query so far, the edits gathered."""

    __slots__ = ("view", "index", "raw_path", "path", "query", "edits", "address", "address_read")

    def __init__(self, view: RequestView) -> None:
        self.view = view
        self.index = 0
        self.raw_path = view.raw_path
        self.path = normalize_path(view.raw_path)
        self.query = view.query
        self.edits: list[HeaderEdit] = []
        self.address: Optional[Address] = None
        self.address_read = False


@dataclass(frozen=True)
class Verify:
    """A password to check against ``hash`` (costly: off the reactor thread), then :meth:`RuleSet.resume`."""

    user: str
    password: bytes
    hash: bytes
    _state: _State = field(repr=False, compare=False)


Outcome = Union[Proceed, Answer, Verify]


class _Limiter:
    """One rate_limit rule's clients, as GCRA: each client's theoretical arrival time, in a bounded LRU table."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float]) -> None:
        self.interval = 1.0 / limit.rate
        self.tolerance = limit.burst * self.interval
        self.size = limit.max_clients
        self.clock = clock
        self.table: OrderedDict[str, float] = OrderedDict()

    def wait(self, key: str) -> float:
        """0 and the request counted when *key* is within its rate, else the seconds until it would be."""
        now = self.clock()
        table = self.table
        tat = table.get(key, now)
        tat = max(tat, now)
        wait = tat - now - self.tolerance
        if wait > 1e-9:  # float noise at exactly burst + 1 requests
            return wait
        table[key] = tat + self.interval
        table.move_to_end(key)
        if len(table) > self.size:
            table.popitem(last=False)
        return 0.0


def _basic_credentials(header: Optional[bytes]) -> Optional[tuple[str, bytes]]:
    """RFC 7617's ``Basic base64(user:password)`` as (user, password), or None."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
        user, colon, password = decoded.partition(b":")
        return (user.decode("utf-8"), password) if colon else None
    except (binascii.Error, ValueError):
        return None


def _expand(template: str, found: Optional[re.Match[str]], query: bytes) -> tuple[bytes, Optional[bytes]]:
    """*template* with its references filled: (path or URL, query or None to keep the client's)."""
    target, mark, new_query = template.partition("?")

    def fill(text: str, safe: str) -> str:
        if found is None:
            return text
        return _REFERENCE.sub(
            lambda m: quote(found.group(int(m[1]) if m[1] else (int(m[2]) if m[2].isdigit() else m[2])) or "", safe=safe),
            text,
        )

    path = fill(target, _PATH_SAFE).encode("ascii")
    if not mark:
        return path, None
    if not new_query:  # "...?" drops the client's query, as nginx does
        return path, b""
    filled = fill(new_query, _QUERY_SAFE).encode("ascii")
    return path, filled + b"&" + query if query else filled


class RuleSet:
    """A site's rules with their state (rate tables, verified passwords), evaluated per request.

    *clock* gives seconds (``reactor.seconds``), *check_password*
    (password, hash) -> bool is the costly hash comparison, called by the
    caller for a :class:`Verify` outcome.
    """

    def __init__(
        self,
        rules: "tuple[Rule, ...]",
        *,
        clock: Callable[[], float],
        check_password: Callable[[bytes, bytes], bool],
        auth_cache_size: int = AUTH_CACHE_SIZE,
        max_pending: int = MAX_PENDING_CHECKS,
    ) -> None:
        self.rules = rules
        self.check_password = check_password
        self._limiters = {i: _Limiter(r.action, clock) for i, r in enumerate(rules) if isinstance(r.action, RateLimit)}
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._cache_size = auth_cache_size
        self._max_pending = max_pending
        #: Verify outcomes handed out and not yet resumed.
        self.pending = 0

    def evaluate(self, view: RequestView) -> Outcome:
        """The outcome of the rules for *view*, from the first rule."""
        return self._run(_State(view))

    def verify(self, check: Verify) -> bool:
        """The costly comparison of *check* (call it off the reactor thread); errors are a mismatch."""
        try:
            return self.check_password(check.password, check.hash)
        except Exception:  # a password bcrypt refuses (over 72 bytes): no match
            return False

    def resume(self, check: Verify, ok: bool) -> Outcome:
        """Go on after *check* was verified (*ok*) or not: from the rule after it, or 401."""
        self.pending -= 1
        state = check._state
        rule = self.rules[state.index]
        assert isinstance(rule.action, BasicAuth)
        if not ok or not check.user:  # an unknown name never passes, whatever it was checked against
            return self._unauthorized(rule.action, state)
        self._remember(self._digest(check.user, check.password, check.hash))
        state.index += 1
        return self._run(state)

    # -- evaluation ---------------------------------------------------------------

    def _run(self, state: _State) -> Outcome:
        rules = self.rules
        count = len(rules)
        matches = self._matches
        while state.index < count:
            rule = rules[state.index]
            found = matches(rule.match, state)
            if found is not None:
                outcome = self._act(rule.action, state, None if found is True else found)  # type: ignore[arg-type]
                if outcome is not None:
                    return outcome
            state.index += 1
        return Proceed(state.raw_path, state.query, tuple(state.edits) if state.edits else ())

    def _matches(self, match: Match, state: _State) -> "Union[re.Match[str], bool, None]":
        """None when *match* does not hold; its regex's match object, or True, when it does."""
        view = state.view
        if match.methods and view.method not in match.methods:
            return None
        if match.addresses:
            address = self._address(state)
            if address is None or not any(address in network for network in match.addresses):
                return None
        path = state.path
        if match.path is not None and path != match.path:
            return None
        if match.prefix is not None:
            if path is None:
                return None
            probe = path if path.endswith("/") else path + "/"
            if not probe.startswith(match.prefix):
                return None
        if match.regex is not None:
            return match.regex.search(path) if path is not None else None
        return True

    def _address(self, state: _State) -> Optional[Address]:
        if not state.address_read:
            state.address_read = True
            try:
                address: Address = ipaddress.ip_address(state.view.client)
            except ValueError:
                return None  # "unix:"
            mapped = getattr(address, "ipv4_mapped", None)  # "::ffff:10.0.0.1" from a dual-stack socket
            state.address = mapped if mapped is not None else address
        return state.address

    def _in(self, addresses: "tuple[Network, ...]", state: _State) -> bool:
        address = self._address(state)
        return address is not None and any(address in network for network in addresses)

    def _act(self, action: Action, state: _State, found: Optional[re.Match[str]]) -> Optional[Outcome]:
        """The outcome that ends the evaluation here, or None to go on to the next rule."""
        kind = type(action)
        if kind is Headers:
            state.edits.extend(action.edits)  # type: ignore[union-attr]
            return None
        if kind is Rewrite:
            path, query = _expand(action.target, found, state.query)  # type: ignore[union-attr]
            state.raw_path = path
            state.path = normalize_path(path)
            if query is not None:
                state.query = query
            return None
        if kind is Redirect:
            location, query = _expand(action.target, found, state.query)  # type: ignore[union-attr]
            if location.startswith(b"//"):
                # "/$1" with a capture "/evil.example" is not a protocol-relative URL.
                location = b"/" + location.lstrip(b"/")
            if query is None:
                query = state.query
            if query:
                location += b"?" + query
            return Answer(action.status, ((b"location", location),), None, tuple(state.edits))  # type: ignore[union-attr]
        if kind is Respond:
            body = action.body  # type: ignore[union-attr]
            return Answer(action.status, ((b"content-type", b"text/plain; charset=utf-8"),),  # type: ignore[union-attr]
                          body, tuple(state.edits))
        if kind is Deny:
            if action.everyone or self._in(action.addresses, state):  # type: ignore[union-attr]
                return Answer(403, (), None, tuple(state.edits))
            return None
        if kind is Allow:
            if self._in(action.addresses, state):  # type: ignore[union-attr]
                return None
            return Answer(403, (), None, tuple(state.edits))
        if kind is RateLimit:
            wait = self._limiters[state.index].wait(state.view.client)
            if wait:
                # RFC 6585 4: 429 may say when to come back (RFC 9110 10.2.3, whole seconds).
                return Answer(429, ((b"retry-after", b"%d" % max(1, math.ceil(wait))),), None, tuple(state.edits))
            return None
        assert isinstance(action, BasicAuth)
        return self._authenticate(action, state)

    def _authenticate(self, auth: BasicAuth, state: _State) -> Optional[Outcome]:
        given = _basic_credentials(state.view.header(b"authorization"))
        if given is None:
            return self._unauthorized(auth, state)
        user, password = given
        hashed = next((h for name, h in auth.users if name == user), None)
        if hashed is None:
            # An unknown name costs a check all the same, so timing does not tell which names exist.
            hashed, user = auth.users[0][1], ""
        elif self._digest(user, password, hashed) in self._verified:
            self._verified.move_to_end(self._digest(user, password, hashed))
            return None
        if self.pending >= self._max_pending:
            return Answer(503, ((b"retry-after", b"1"),), None, tuple(state.edits))
        self.pending += 1
        return Verify(user, password, hashed, state)

    def _unauthorized(self, auth: BasicAuth, state: _State) -> Answer:
        # RFC 7617 2: the realm, and charset="UTF-8" for names and passwords beyond ASCII.
        challenge = b'Basic realm="%s", charset="UTF-8"' % auth.realm.encode("utf-8")
        return Answer(401, ((b"www-authenticate", challenge),), None, tuple(state.edits))

    @staticmethod
    def _digest(user: str, password: bytes, hashed: bytes) -> bytes:
        # The user is empty for an unknown name: such a check never succeeds, so is never remembered.
        return hashlib.sha256(b"\0".join((user.encode("utf-8"), hashed, password))).digest()

    def _remember(self, digest: bytes) -> None:
        verified = self._verified
        verified[digest] = None
        verified.move_to_end(digest)
        if len(verified) > self._cache_size:
            verified.popitem(last=False)
