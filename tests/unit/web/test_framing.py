"""framing_refusal, alone: each framing rule of RFC 9112 section 6 as a named case."""

from __future__ import annotations

from typing import Optional

import pytest

from fephp.web.framing import Refusal, framing_refusal, transfer_codings

V11, V10 = b"HTTP/1.1", b"HTTP/1.0"

CASES = [
    # (id, version, Transfer-Encoding values, Content-Length values, status or None)
    ("no-body", V11, [], [], None),
    ("content-length", V11, [], [b"12"], None),
    ("content-length-zero", V11, [], [b"0"], None),
    ("content-length-leading-zeros", V11, [], [b"007"], None),
    ("content-length-huge-is-framed-the-limit-decides", V11, [], [b"1" + b"0" * 40], None),
    ("chunked", V11, [b"chunked"], [], None),
    ("chunked-any-case", V11, [b"Chunked"], [], None),
    ("chunked-with-empty-list-elements", V11, [b", chunked ,"], [], None),
    ("content-length-on-http-1.0", V10, [], [b"3"], None),
    ("two-content-lengths", V11, [], [b"3", b"3"], 400),
    ("content-length-list", V11, [], [b"3, 3"], 400),
    ("content-length-negative", V11, [], [b"-1"], 400),
    ("content-length-plus", V11, [], [b"+3"], 400),
    ("content-length-hex", V11, [], [b"0x10"], 400),
    ("content-length-empty", V11, [], [b""], 400),
    ("content-length-unicode-digit", V11, [], ["３".encode()], 400),
    ("identity-with-content-length", V11, [b"identity"], [b"5"], 400),
    ("identity-alone", V11, [b"identity"], [], 400),
    ("chunked-with-content-length", V11, [b"chunked"], [b"5"], 400),
    ("chunked-not-final", V11, [b"chunked, gzip"], [], 400),
    ("chunked-not-final-over-two-lines", V11, [b"chunked", b"gzip"], [], 400),
    ("chunked-twice", V11, [b"chunked, chunked"], [], 400),
    ("chunked-twice-over-two-lines", V11, [b"chunked", b"chunked"], [], 400),
    ("empty-transfer-encoding", V11, [b""], [], 400),
    ("unknown-coding-then-chunked", V11, [b"gzip, chunked"], [], 501),
    ("unknown-coding-on-another-line", V11, [b"x-custom", b"chunked"], [], 501),
    ("chunked-lookalike", V11, [b"xchunked"], [], 400),
    ("transfer-encoding-on-http-1.0", V10, [b"chunked"], [], 400),
    ("transfer-encoding-on-http-1.0-with-length", V10, [b"chunked"], [b"3"], 400),
    ("nul-in-transfer-encoding", V11, [b"chunked\x00"], [], 400),
    ("lf-in-content-length", V11, [], [b"3\n"], 400),
]


@pytest.mark.parametrize(("version", "te", "cl", "status"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_framing_refusal(version: bytes, te: list[bytes], cl: list[bytes], status: Optional[int]) -> None:
    """Each head is framed one way only (None), or refused with the status its RFC 9112 rule names."""
    refusal = framing_refusal(version, te, cl)
    assert (refusal.status if refusal is not None else None) == status
    if refusal is not None:
        assert "RFC 91" in refusal.reason


def test_refusal_names_its_rule() -> None:
    """The reason says which rule, for the log."""
    assert framing_refusal(V11, [b"identity"], [b"5"]) == Refusal(
        400, "both Transfer-Encoding and Content-Length (RFC 9112 6.1)"
    )


def test_transfer_codings_are_one_list_over_lines() -> None:
    """Several lines are one list; parameters, case and empty elements do not count."""
    assert transfer_codings([b"GZIP;q=1 , ", b"chunked"]) == [b"gzip", b"chunked"]
