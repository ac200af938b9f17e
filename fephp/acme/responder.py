"""The challenge solver interface, from the ACME client's side: what it puts up for the CA to check, and takes down.

A solver answers one challenge type: the client picks, for each
authorization, the first of its solvers whose type the CA offers, calls
``put(name, token, key_authorization)`` before it tells the CA to validate
and ``remove(name, token)`` once the authorization is settled.  HTTP-01's
solver is :class:`Http01` over an :class:`Http01Responder`: the server's
plain listener answers ``GET /.well-known/acme-challenge/<token>`` from a
responder (RFC 8555 8.3), and :class:`ChallengeTokens` is the in-memory one
that listener reads.  TLS-ALPN-01's is ``tlsalpn.TlsAlpnResponder``.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["CHALLENGE_PATH", "ChallengeSolver", "ChallengeTokens", "Http01", "Http01Responder"]

#: Where the CA fetches a token (RFC 8555 8.3), on port 80 of each name.
CHALLENGE_PATH = b"/.well-known/acme-challenge/"


class ChallengeSolver(Protocol):
    """Something that proves control of names by one challenge type (RFC 8555 section 8)."""

    @property
    def challenge_type(self) -> str:
        """The challenge type solved, as the CA names it (``http-01``, ``tls-alpn-01``)."""

    def put(self, name: str, token: str, key_authorization: str) -> None:
        """Show *key_authorization* for *name*'s challenge *token* from now on."""

    def remove(self, name: str, token: str) -> None:
        """Stop showing it (no error when it is not there)."""


class Http01Responder(Protocol):
    """Somewhere HTTP-01 key authorizations are served from."""

    def put(self, token: str, key_authorization: str) -> None:
        """Answer *key_authorization* for *token* from now on."""

    def remove(self, token: str) -> None:
        """Stop answering for *token* (no error when it is not there)."""


class Http01:
    """The HTTP-01 solver: the key authorization put on *responder* under the token (the name plays no part)."""

    challenge_type = "http-01"

    def __init__(self, responder: Http01Responder) -> None:
        self.responder = responder

    def put(self, name: str, token: str, key_authorization: str) -> None:
        self.responder.put(token, key_authorization)

    def remove(self, name: str, token: str) -> None:
        self.responder.remove(token)


class ChallengeTokens:
    """An in-memory responder: tokens and their key authorizations, looked up by request path."""

    def __init__(self) -> None:
        self._answers: dict[bytes, bytes] = {}

    def put(self, token: str, key_authorization: str) -> None:
        """Answer *key_authorization* for *token* from now on."""
        self._answers[token.encode()] = key_authorization.encode()

    def remove(self, token: str) -> None:
        """Stop answering for *token*."""
        self._answers.pop(token.encode(), None)

    def answer(self, path: bytes) -> bytes | None:
        """The body for a GET of *path* (the key authorization, sent as ``application/octet-stream``), or None."""
        if not path.startswith(CHALLENGE_PATH):
            return None
        return self._answers.get(path[len(CHALLENGE_PATH):])

    def __len__(self) -> int:
        return len(self._answers)
