"""The load generator on every interpreter fephp supports: ErrorKind reads as 3.11's StrEnum would."""

from __future__ import annotations

import json

from fephp.bench.report import ErrorKind


def test_error_kinds_read_as_their_values() -> None:
    """An ErrorKind prints, formats, compares and serializes as its plain value, as 3.11's StrEnum would."""
    kind = ErrorKind.CONNECT_REFUSED
    assert (str(kind), f"{kind}", "{}".format(kind)) == ("connect_refused",) * 3
    assert kind == "connect_refused" and {"connect_refused": 1}[kind] == 1
    assert json.dumps({kind: 1}) == '{"connect_refused": 1}'
