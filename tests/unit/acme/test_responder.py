"""fephp.acme's in-memory HTTP-01 responder: tokens answered at /.well-known/acme-challenge/ while they are up."""

from __future__ import annotations

from fephp.acme import CHALLENGE_PATH, ChallengeTokens


def test_a_token_is_answered_between_put_and_remove_only_under_the_challenge_path() -> None:
    """put() makes the key authorization the answer for its path; remove() (twice is fine) takes it down."""
    tokens = ChallengeTokens()
    tokens.put("tok-1", "tok-1.thumb")
    assert CHALLENGE_PATH == b"/.well-known/acme-challenge/"
    assert tokens.answer(b"/.well-known/acme-challenge/tok-1") == b"tok-1.thumb"
    assert tokens.answer(b"/tok-1") is None
    assert tokens.answer(b"/.well-known/acme-challenge/tok-2") is None
    assert tokens.answer(b"/.well-known/acme-challenge/") is None
    tokens.remove("tok-1")
    tokens.remove("tok-1")
    assert (tokens.answer(b"/.well-known/acme-challenge/tok-1"), len(tokens)) == (None, 0)
