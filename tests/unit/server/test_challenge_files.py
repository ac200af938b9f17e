"""ChallengeFiles: HTTP-01 answers handed from the parent of server.workers to its workers through files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fephp.server.acme import ChallengeFiles

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"


def test_a_put_answer_is_read_by_another_instance_until_removed(tmp_path: Path) -> None:
    """The parent's put writes a 0600 file in a 0700 folder that a worker's own instance answers from; remove ends it."""
    parent, worker = ChallengeFiles(tmp_path / "http-01"), ChallengeFiles(tmp_path / "http-01")
    path = f"/.well-known/acme-challenge/{TOKEN}".encode()
    assert worker.answer(path) is None
    parent.put(TOKEN, f"{TOKEN}.thumbprint")
    assert worker.answer(path) == f"{TOKEN}.thumbprint".encode()
    assert stat.S_IMODE((tmp_path / "http-01" / TOKEN).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "http-01").stat().st_mode) == 0o700
    assert worker.answer(b"/elsewhere/" + TOKEN.encode()) is None
    parent.remove(TOKEN)
    assert (worker.answer(path), list((tmp_path / "http-01").iterdir())) == (None, [])


def test_only_tokens_name_files(tmp_path: Path) -> None:
    """A path segment that is not base64url (.., a slash, empty, too long) reads no file; a put of one is refused."""
    folder = tmp_path / "http-01"
    files = ChallengeFiles(folder)
    folder.mkdir()
    (tmp_path / "secret").write_text("key")
    (folder / ("a" * 65)).write_text("long")
    for segment in (b"../secret", b"..%2Fsecret", b"", b"a" * 65, b"a/b"):
        assert files.answer(b"/.well-known/acme-challenge/" + segment) is None
    with pytest.raises(ValueError) as raised:
        files.put("../secret", "x")
    assert str(raised.value) == "not an ACME token: '../secret'"
