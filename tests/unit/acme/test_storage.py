"""fephp.acme's state folder: 0600 files in a 0700 folder, atomic replacement, reuse across restarts."""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path
from typing import Iterator

import pytest

from fephp.acme import Storage, StorageError
from fephp.acme.keys import key_from_pem, key_to_pem
from fephp.acme.storage import write_atomically
from tests.support.acme_fakes import JAN_1, issued

NAMES = ["example.test", "www.example.test"]


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away, so that the modes seen are the ones fephp asked for, not the umask's."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_account_key_is_made_once_0600_and_reused(tmp_path: Path, open_umask: None) -> None:
    """The first call creates account.key (0600, its folder 0700); a later Storage of the folder gives the same key."""
    first = Storage(tmp_path / "state").account_key()
    again = Storage(tmp_path / "state").account_key()
    assert key_to_pem(again) == key_to_pem(first)
    assert (mode(tmp_path / "state"), mode(tmp_path / "state" / "account.key")) == (0o700, 0o600)
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["account.key"]


def test_a_saved_certificate_loads_back_with_its_validity_and_every_file_0600(tmp_path: Path, open_umask: None) -> None:
    """save() writes key, chain and metadata 0600; load() (names in any order, repeated) gives them back, dated."""
    storage = Storage(tmp_path)
    cert = issued(NAMES)
    saved = storage.save(NAMES, cert.key_pem, cert.chain_pem)
    loaded = Storage(tmp_path).load(["www.example.test", "example.test", "www.example.test"])
    assert loaded == saved
    assert loaded is not None
    assert (loaded.names, loaded.key_pem, loaded.chain_pem) == (tuple(NAMES), cert.key_pem, cert.chain_pem)
    assert (loaded.not_before, loaded.not_after) == (JAN_1, JAN_1 + datetime.timedelta(days=90))
    assert loaded.key_path.read_bytes() == cert.key_pem
    assert loaded.folder.name.startswith("example.test-")
    modes = {p.name: mode(p) for p in loaded.folder.iterdir()}
    assert modes == {"key.pem": 0o600, "chain.pem": 0o600, "meta.json": 0o600}


def test_another_name_set_has_its_own_folder_and_loads_as_absent(tmp_path: Path) -> None:
    """A name set never stored (a subset of a stored one included) loads as None."""
    storage = Storage(tmp_path)
    cert = issued(NAMES)
    storage.save(NAMES, cert.key_pem, cert.chain_pem)
    assert storage.load(["example.test"]) is None
    assert storage.folder_for(["example.test"]) != storage.folder_for(NAMES)


def test_a_key_and_chain_that_do_not_belong_together_load_as_absent(tmp_path: Path) -> None:
    """A crash between the renames of a new key and its chain leaves a set that load() refuses, to be ordered again."""
    storage = Storage(tmp_path)
    old, new = issued(NAMES), issued(NAMES)
    saved = storage.save(NAMES, old.key_pem, old.chain_pem)
    write_atomically(saved.key_path, new.key_pem)
    assert storage.load(NAMES) is None


def test_save_refuses_a_chain_for_another_key(tmp_path: Path) -> None:
    """save() checks the pair first and writes nothing for a chain whose leaf has another key."""
    storage = Storage(tmp_path)
    with pytest.raises(StorageError) as caught:
        storage.save(NAMES, issued(NAMES).key_pem, issued(NAMES).chain_pem)
    assert str(caught.value) == (
        "the ACME state folder cannot be used: the chain for ['example.test', 'www.example.test'] is for another key"
    )
    assert not storage.folder_for(NAMES).exists() or list(storage.folder_for(NAMES).iterdir()) == []


def test_an_atomic_write_replaces_a_looser_file_with_a_0600_one(tmp_path: Path, open_umask: None) -> None:
    """A file that was 0644 is replaced by a 0600 one holding exactly the new bytes, and no temporary file remains."""
    path = tmp_path / "key.pem"
    path.write_bytes(b"old")
    path.chmod(0o644)
    write_atomically(path, b"new")
    assert (path.read_bytes(), mode(path)) == (b"new", 0o600)
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]


def test_a_write_that_fails_before_the_rename_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When flushing the new content fails, the old file keeps its bytes and the temporary file is removed."""
    path = tmp_path / "chain.pem"
    path.write_bytes(b"old chain")

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError) as caught:
        write_atomically(path, b"new chain")
    assert caught.value.errno == 28
    assert path.read_bytes() == b"old chain"
    assert [p.name for p in tmp_path.iterdir()] == ["chain.pem"]


def test_a_stored_account_key_that_is_not_a_key_is_an_error_that_says_so(tmp_path: Path) -> None:
    """A damaged account.key is a StorageError (never silently replaced: the account would be lost)."""
    (tmp_path / "account.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(StorageError) as caught:
        Storage(tmp_path).account_key()
    assert str(caught.value).startswith("the ACME state folder cannot be used: not a private key in PEM: ")
