"""fephp.acme's errors: the CA's problem document read as RFC 8555 6.7 writes it, a log line saying what happened."""

from __future__ import annotations

from fephp.acme import CAProblem, ChallengeFailed, PollTimeout, Problem, ProtocolViolation


def test_a_problem_document_with_subproblems_reads_whole() -> None:
    """Type, detail, status and each subproblem's identifier-level problem are kept."""
    problem = Problem.from_json(
        {
            "type": "urn:ietf:params:acme:error:malformed",
            "detail": "Some of the identifiers requested were rejected",
            "subproblems": [
                {"type": "urn:ietf:params:acme:error:rejectedIdentifier", "detail": "Invalid underscore in DNS name",
                 "identifier": {"type": "dns", "value": "_example.org"}},
                "not an object",
            ],
        },
        status=400,
    )
    assert problem == Problem(
        type="urn:ietf:params:acme:error:malformed",
        detail="Some of the identifiers requested were rejected",
        status=400,
        subproblems=(Problem("urn:ietf:params:acme:error:rejectedIdentifier", "Invalid underscore in DNS name"),),
    )
    assert str(problem) == (
        "malformed: Some of the identifiers requested were rejected; rejectedIdentifier: Invalid underscore in DNS name"
    )


def test_a_problem_without_members_reads_as_about_blank_with_the_http_status() -> None:
    """RFC 7807's defaults: type about:blank, the answer's status, no detail; a type outside ACME's stays whole."""
    assert Problem.from_json({"type": 3, "status": "x"}, status=503) == Problem("about:blank", "", 503)
    assert Problem("https://ca.example/rate").acme_type == "https://ca.example/rate"


def test_each_error_says_its_meaning_and_keeps_the_cas_problem() -> None:
    """The log line is meaning, detail and the problem; errors without a problem document say meaning and detail."""
    rate = Problem("urn:ietf:params:acme:error:rateLimited", "too many certificates", 429)
    assert str(CAProblem("POST https://ca/new-order answered 429", rate)) == (
        "the ACME CA refused the request: POST https://ca/new-order answered 429 (rateLimited: too many certificates)"
    )
    assert str(ChallengeFailed("a.test: authorization https://ca/a is invalid")) == (
        "the CA could not validate the name: a.test: authorization https://ca/a is invalid"
    )
    assert str(PollTimeout("x")) == "the ACME CA did not finish in time: x"
    assert str(ProtocolViolation("y")) == "the ACME CA's answer breaks RFC 8555: y"
    assert CAProblem("z", rate).problem is rate
