"""The HTTP-01 responder interface, from the ACME client's side: what it puts up for the CA to fetch, and takes down.

The client calls ``put(token, key_authorization)`` before it tells the CA
to validate and ``remove(token)`` once the authorization is settled; the
server's plain listener answers ``GET /.well-known/acme-challenge/<token>``
from a responder (RFC 8555 8.3).  :class:`ChallengeTokens` is the
in-memory one that listener will read.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["CHALLENGE_PATH", "ChallengeTokens", "Http01Responder"]

#: Where the CA fetches a token (RFC 8555 8.3), on port 80 of each name.
CHALLENGE_PATH = b"/.well-known/acme-challenge/"


class Http01Responder(Protocol):
    """Somewhere HTTP-01 key authorizations are served from."""

    def put(self, token: str, key_authorization: str) -> None:
        """Answer *key_authorization* for *token* from now on."""

    def remove(self, token: str) -> None:
        """Stop answering for *token* (no error when it is not there)."""


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
