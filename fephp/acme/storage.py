"""The ACME state folder, from the owner's side: the account key and, per name set, the key, the chain and metadata.

Layout (the folder 0700, every file 0600, each written to a temporary file
in the same folder, flushed and renamed over the old one, so that a crash
leaves the old file or the new one, never half of one)::

    account.key                      the account's private key, PEM
    certificates/<first-name>-<hash>/key.pem, chain.pem, meta.json

The hash is of the sorted names, so one name set always lands in one
folder; a set whose key and chain do not belong together (a crash between
two renames) loads as absent and is ordered again.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cryptography import x509

from .errors import StorageError
from .keys import KeyType, PrivateKey, key_from_pem, key_to_pem, new_key, public_der

__all__ = ["FILE_MODE", "FOLDER_MODE", "Stored", "Storage", "write_atomically"]

#: Keys are secrets; chains and metadata are kept as private as them, for one rule.
FILE_MODE = 0o600
FOLDER_MODE = 0o700


def write_atomically(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace *path* with *data*: a temporary file made with *mode*, written, fsynced, renamed; the folder fsynced."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)  # O_CREAT's mode passes through the umask, and a leftover temporary keeps its own
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)


@dataclass(frozen=True)
class Stored:
    """A certificate in the state folder: its names, key and chain (PEM) and the leaf's validity."""

    names: tuple[str, ...]
    key_pem: bytes
    chain_pem: bytes
    not_before: datetime.datetime
    not_after: datetime.datetime
    folder: Path

    @property
    def key_path(self) -> Path:
        return self.folder / "key.pem"

    @property
    def chain_path(self) -> Path:
        return self.folder / "chain.pem"


class Storage:
    """A state folder (created 0700 when missing)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _ensure(self, folder: Path) -> Path:
        folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        return folder

    def account_key(self, kind: KeyType = KeyType.ECDSA_P256) -> PrivateKey:
        """The account key: the stored one, or a new one of *kind* stored now (created once, then reused)."""
        path = self._ensure(self.folder) / "account.key"
        if path.exists():
            return key_from_pem(path.read_bytes())
        key = new_key(kind)
        write_atomically(path, key_to_pem(key))
        return key

    def folder_for(self, names: Sequence[str]) -> Path:
        """The folder of the name set *names* (order and repeats do not matter)."""
        unique = sorted(set(names))
        digest = hashlib.sha256("\n".join(unique).encode()).hexdigest()[:12]
        return self.folder / "certificates" / f"{unique[0].replace('*', '_')}-{digest}"

    def save(self, names: Sequence[str], key_pem: bytes, chain_pem: bytes) -> Stored:
        """Store a certificate for *names* (key, chain, then metadata, each atomically); what load() will give."""
        folder = self._ensure(self.folder_for(names))
        stored = self._parse(names, key_pem, chain_pem, folder)
        write_atomically(folder / "key.pem", key_pem)
        write_atomically(folder / "chain.pem", chain_pem)
        meta = {
            "names": sorted(set(names)),
            "not_before": stored.not_before.isoformat(),
            "not_after": stored.not_after.isoformat(),
        }
        write_atomically(folder / "meta.json", json.dumps(meta, indent=1).encode() + b"\n")
        return stored

    def load(self, names: Sequence[str]) -> Stored | None:
        """The stored certificate for *names*, or None when there is none whole (missing file, key and chain apart)."""
        folder = self.folder_for(names)
        try:
            key_pem = (folder / "key.pem").read_bytes()
            chain_pem = (folder / "chain.pem").read_bytes()
            meta = json.loads((folder / "meta.json").read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("names") != sorted(set(names)):
            return None
        try:
            return self._parse(names, key_pem, chain_pem, folder)
        except StorageError:
            return None

    @staticmethod
    def _parse(names: Sequence[str], key_pem: bytes, chain_pem: bytes, folder: Path) -> Stored:
        """A Stored for a key and chain that belong together, or StorageError."""
        try:
            leaf = x509.load_pem_x509_certificates(chain_pem)[0]
        except ValueError as e:
            raise StorageError(f"not a PEM certificate chain: {e}") from None
        if public_der(leaf.public_key()) != public_der(key_from_pem(key_pem)):
            raise StorageError(f"the chain for {sorted(set(names))} is for another key")
        return Stored(
            names=tuple(sorted(set(names))),
            key_pem=key_pem,
            chain_pem=chain_pem,
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
            folder=folder,
        )
