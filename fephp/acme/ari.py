"""ACME Renewal Information (RFC 9773), from the subscriber's side: the certificate's ID and the CA's renewal window.

A CA that offers ARI lists ``renewalInfo`` in its directory; a GET of
``<renewalInfo>/<certID>`` answers the window in which it suggests the
certificate be renewed (earlier than usual when it is about to revoke it),
and ``Retry-After`` says when to ask again.  The client renews at a
uniformly random moment inside the window (section 4.2), and names the
certificate it replaces in the new order (section 5).  Pure: parsing and
arithmetic only; :meth:`AcmeClient.renewal_info` does the GET.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

from cryptography import x509

from .errors import ProtocolViolation
from .jws import b64url

__all__ = [
    "RETRY_AFTER_DEFAULT",
    "RETRY_AFTER_MAX",
    "RETRY_AFTER_MIN",
    "RenewalWindow",
    "cert_id",
    "parse_renewal_info",
]

#: Seconds until the window is asked for again when the CA sends no Retry-After (section 4.3 suggests six hours).
RETRY_AFTER_DEFAULT = 6 * 3600.0
#: The bounds a CA's Retry-After is held to: not more often than a minute, not less often than a day.
RETRY_AFTER_MIN = 60.0
RETRY_AFTER_MAX = 24 * 3600.0


def cert_id(certificate: x509.Certificate) -> str:
    """The certificate's ARI identifier (section 4.1): base64url of the Authority Key Identifier's keyIdentifier,
    a dot, base64url of the serial number's DER INTEGER content octets (a leading zero byte when the top bit is set).

    A ProtocolViolation when the certificate has no keyIdentifier: an ACME CA always puts one (RFC 5280 4.2.1.1).
    """
    try:
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        aki = None
    if aki is None or aki.key_identifier is None:
        raise ProtocolViolation("the certificate has no Authority Key Identifier to name it by for ARI")
    serial = certificate.serial_number
    # DER's minimal two's complement of a positive integer: one more byte when the top bit would be set.
    octets = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
    return f"{b64url(aki.key_identifier)}.{b64url(octets)}"


@dataclass(frozen=True)
class RenewalWindow:
    """The CA's suggested window (``start`` < ``end``), its explanation URL if any, and when to ask again."""

    start: datetime.datetime
    end: datetime.datetime
    explanation_url: str | None
    ask_again_at: datetime.datetime

    def pick(self, jitter: float) -> datetime.datetime:
        """The moment in the window for a *jitter* in [0, 1): uniform when the jitter is (section 4.2)."""
        return self.start + (self.end - self.start) * jitter


def _instant(value: object, what: str) -> datetime.datetime:
    if not isinstance(value, str):
        raise ProtocolViolation(f"renewalInfo's {what} is {value!r}, not an RFC 3339 timestamp")
    try:
        # fromisoformat reads RFC 3339 from Python 3.11; "Z" is spelled out for 3.9 (PyPy).
        moment = datetime.datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
    except ValueError:
        moment = _fractional(value)
    if moment.tzinfo is None:
        raise ProtocolViolation(f"renewalInfo's {what} {value!r} has no time zone")
    return moment


def _fractional(value: str) -> datetime.datetime:
    """RFC 3339 with fractions of a second longer than Python 3.9's six digits (Go writes nine): cut to six."""
    head, dot, rest = value.partition(".")
    digits = len(rest) - len(rest.lstrip("0123456789"))
    if not dot or digits == 0:
        raise ProtocolViolation(f"renewalInfo has {value!r}, not an RFC 3339 timestamp")
    zone = rest[digits:]
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        return datetime.datetime.fromisoformat(f"{head}.{rest[:min(digits, 6)].ljust(6, '0')}{zone}")
    except ValueError:
        raise ProtocolViolation(f"renewalInfo has {value!r}, not an RFC 3339 timestamp") from None


def parse_renewal_info(body: bytes, now: datetime.datetime, retry_after: float | None) -> RenewalWindow:
    """The window in a renewalInfo answer fetched at *now* with *retry_after* seconds (None: none sent), or a
    ProtocolViolation for a body that is not one (section 4.2: a window whose end is not after its start is
    invalid)."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    window = document.get("suggestedWindow") if isinstance(document, dict) else None
    if not isinstance(window, dict):
        raise ProtocolViolation(f"renewalInfo answered {body[:80]!r}, without a suggestedWindow")
    start, end = _instant(window.get("start"), "start"), _instant(window.get("end"), "end")
    if end <= start:
        raise ProtocolViolation(f"renewalInfo's window ends ({end.isoformat()}) before it starts ({start.isoformat()})")
    explanation = document.get("explanationURL") if isinstance(document, dict) else None
    delay = RETRY_AFTER_DEFAULT if retry_after is None else min(max(retry_after, RETRY_AFTER_MIN), RETRY_AFTER_MAX)
    return RenewalWindow(
        start=start,
        end=end,
        explanation_url=explanation if isinstance(explanation, str) else None,
        ask_again_at=now + datetime.timedelta(seconds=delay),
    )
