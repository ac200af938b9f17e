"""A multipart body for a PHP worker: parsed by fephp into RoadRunner's uploads and a JSON form (fephp.backend.workers)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from fephp.backend.workers import multipart_form, worker_context
from fephp.cgi.multipart import MultipartError, MultipartLimits

BODY = (
    b"--B\r\nContent-Disposition: form-data; name=\"a[]\"\r\n\r\n1\r\n"
    b"--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.txt\"\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
    b"--B--\r\n"
)


def params(content_type: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"REQUEST_METHOD", b"POST"), (b"REQUEST_URI", b"/up"), (b"HTTP_HOST", b"h"), (b"REMOTE_ADDR", b"127.0.0.1"),
            (b"CONTENT_TYPE", content_type), (b"CONTENT_LENGTH", b"%d" % len(BODY))]


def test_a_multipart_body_becomes_uploads_and_a_json_form(tmp_path: Path) -> None:
    """The context says parsed, carries the uploads tree with the temp file, and the payload is the form as JSON."""
    env = params(b"multipart/form-data; boundary=B")
    form = multipart_form(env, io.BytesIO(BODY), str(tmp_path))
    assert form is not None
    (path,) = form.paths
    context, payload = worker_context(env, io.BytesIO(BODY), form)
    decoded = json.loads(context)
    assert (decoded["parsed"], decoded["uploads"]) == (
        True, {"f": {"name": "x.txt", "mime": "text/plain", "size": 2, "error": 0, "tmpName": path}},
    )
    assert payload == b'{"a":["1"]}'
    assert Path(path).read_bytes() == b"hi"


def test_other_bodies_are_passed_as_they_are(tmp_path: Path) -> None:
    """A urlencoded body, or multipart without a boundary, is not parsed: the worker gets the raw bytes."""
    for content_type in (b"application/x-www-form-urlencoded", b"multipart/form-data"):
        env = params(content_type)
        assert multipart_form(env, BODY, str(tmp_path)) is None
        context, payload = worker_context(env, BODY)
        assert (json.loads(context)["parsed"], json.loads(context)["uploads"], payload) == (False, None, BODY)
    assert list(tmp_path.iterdir()) == []


def test_the_form_limits_apply(tmp_path: Path) -> None:
    """A body with more parts than max_parts is a MultipartError, and no file is left behind."""
    env = params(b"multipart/form-data; boundary=B")
    with pytest.raises(MultipartError, match="more parts than max_parts"):
        multipart_form(env, BODY, str(tmp_path), MultipartLimits(max_parts=1))
    assert list(tmp_path.iterdir()) == []
