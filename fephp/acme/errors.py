"""What can go wrong when fephp asks an ACME CA for a certificate, from the client's side, each with its meaning.

A CA that refuses answers with a problem document (RFC 8555 section 6.7,
RFC 7807): its ``type`` (``urn:ietf:params:acme:error:...``) and ``detail``
are kept in the error, for the log and for a decision to retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

__all__ = [
    "ACME_ERROR",
    "AcmeError",
    "CAProblem",
    "ChallengeFailed",
    "OrderFailed",
    "PollTimeout",
    "Problem",
    "ProtocolViolation",
    "StorageError",
]

#: The prefix of the problem types RFC 8555 section 6.7 defines.
ACME_ERROR = "urn:ietf:params:acme:error:"


@dataclass(frozen=True)
class Problem:
    """A problem document: the CA's own words about what it refused, and for which identifiers (subproblems)."""

    type: str
    detail: str = ""
    status: int | None = None
    subproblems: tuple[Problem, ...] = ()

    @classmethod
    def from_json(cls, document: Mapping[str, Any], status: int | None = None) -> Problem:
        """The Problem in *document*; a member missing or of the wrong kind reads as RFC 7807's default."""
        kind = document.get("type")
        detail = document.get("detail")
        code = document.get("status", status)
        subs = document.get("subproblems")
        return cls(
            type=kind if isinstance(kind, str) else "about:blank",
            detail=detail if isinstance(detail, str) else "",
            status=code if isinstance(code, int) else status,
            subproblems=tuple(cls.from_json(s) for s in subs if isinstance(s, dict)) if isinstance(subs, list) else (),
        )

    @property
    def acme_type(self) -> str:
        """The type without RFC 8555's prefix (``badNonce``), or the whole type when it is not one of RFC 8555's."""
        return self.type[len(ACME_ERROR):] if self.type.startswith(ACME_ERROR) else self.type

    def __str__(self) -> str:
        text = f"{self.acme_type}: {self.detail}" if self.detail else self.acme_type
        return text + "".join(f"; {sub}" for sub in self.subproblems)


class AcmeError(Exception):
    """Obtaining a certificate failed; ``meaning`` says what happened in a sentence fit for a log line."""

    meaning = "the ACME exchange failed"

    def __init__(self, detail: str, problem: Problem | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        #: The CA's problem document when it sent one.
        self.problem = problem

    def __str__(self) -> str:
        text = f"{self.meaning}: {self.detail}"
        return f"{text} ({self.problem})" if self.problem is not None else text


class CAProblem(AcmeError):
    """The CA refused a request with a problem document (a 4xx or 5xx answer)."""

    meaning = "the ACME CA refused the request"


class ChallengeFailed(AcmeError):
    """The CA could not validate a name: its authorization became invalid (the challenge's error says why)."""

    meaning = "the CA could not validate the name"


class OrderFailed(AcmeError):
    """The order became invalid, or the finalized order has no certificate."""

    meaning = "the ACME order failed"


class PollTimeout(AcmeError):
    """An authorization or order stayed pending or processing for longer than the client waits."""

    meaning = "the ACME CA did not finish in time"


class ProtocolViolation(AcmeError):
    """The CA's answer is not what RFC 8555 says it is (no Location, no nonce, a body that is not the object)."""

    meaning = "the ACME CA's answer breaks RFC 8555"


class StorageError(AcmeError):
    """The state folder holds something that cannot be used (a key that is not a key, a chain for another key)."""

    meaning = "the ACME state folder cannot be used"
