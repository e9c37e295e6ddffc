"""Travellers' documents and contacts, encrypted before they reach the database.

A stored traveller keeps in clear only what the business looks people up by and what reveals
little on its own: passenger category, first and last name (printed on every boarding pass and
airline manifest), gender and nationality (shared by millions; kept even after erasure, for
fare rules and statistics). Everything that lets someone impersonate, find or contact the
traveller is one ciphertext in the traveller's ``sealed`` member:

- passport number and expiry: the document itself;
- date of birth: with a name, the usual proof of identity for airlines and banks;
- email and phone: contacts, which with a booking are what a phishing message needs.

Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``) under ``MultiFernet``: the first
key encrypts, every key decrypts, so a new key goes first and old ones stay until ``travelbot
rekey`` has re-encrypted the rows. A traveller stored before encryption (no ``sealed``) still
reads as it was, and an erased one has ``sealed`` set to null and clear placeholders.

With no key configured, the embedded default (SQLite) keeps a generated key in a file beside
the database (``<database>.key``, mode 0600); Supabase deployments must set
``DATA_ENCRYPTION_KEYS`` so the database never holds the key to its own data.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from services import redact
from services.storage.base import StorageUnavailableError

log = logging.getLogger(__name__)

SEALED: Final = "sealed"  # the member holding the ciphertext
SEALED_FIELDS: Final = (
    "birth_date",
    "passport_number",
    "passport_expiry",
    "email",
    "phone",
)


class UnreadableTravellerError(StorageUnavailableError):
    """A stored traveller is encrypted under a key this process does not have."""


def new_key() -> str:
    """A fresh key, in the form ``DATA_ENCRYPTION_KEYS`` takes."""
    return Fernet.generate_key().decode()


def check_key(key: str) -> None:
    """Raise ``ValueError`` unless ``key`` is a usable key (no key material in the message)."""
    try:
        Fernet(key.strip())
    except (ValueError, TypeError):
        raise ValueError("not a valid key") from None


class Sealer:
    """Seals and opens the personal members of stored travellers (JSON objects)."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._fernets = [Fernet(key.strip()) for key in keys]
        self._all = MultiFernet(self._fernets)

    @classmethod
    def for_sqlite(cls, database: Path | str, keys: Sequence[str] = ()) -> Sealer:
        """The embedded default: ``keys`` if configured, else the key file beside
        ``database`` (made on first use). With keys configured an existing key file still
        decrypts, so moving from the file to a configured key loses nothing."""
        if str(database) == ":memory:":
            return cls(list(keys) or [new_key()])
        path = key_file_for(Path(database))
        if keys:
            return cls([*keys, *([read_key_file(path)] if path.exists() else [])])
        return cls([read_key_file(path) if path.exists() else create_key_file(path)])

    def seal(self, traveller: Mapping[str, Any]) -> dict[str, Any]:
        """The stored form: clear members plus ``sealed``."""
        redact.remember_traveller(traveller)
        secret = {name: traveller[name] for name in SEALED_FIELDS if name in traveller}
        stored = {k: v for k, v in traveller.items() if k not in SEALED_FIELDS and k != SEALED}
        plain = json.dumps(secret, separators=(",", ":"), ensure_ascii=False).encode()
        stored[SEALED] = self._fernets[0].encrypt(plain).decode()
        return stored

    def open(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        """The traveller as written: sealed members decrypted over the clear ones."""
        token = stored.get(SEALED)
        clear = {k: v for k, v in stored.items() if k != SEALED}
        if token is None:  # stored before encryption, or erased
            redact.remember_traveller(clear)
            return clear
        try:
            secret = json.loads(self._all.decrypt(str(token).encode()))
        except (InvalidToken, ValueError, TypeError):
            raise UnreadableTravellerError(
                "a stored traveller is encrypted with a key that DATA_ENCRYPTION_KEYS lacks"
            ) from None
        opened = {**clear, **secret}
        redact.remember_traveller(opened)
        return opened

    def is_current(self, stored: Mapping[str, Any]) -> bool:
        """Whether ``stored`` needs no re-encryption: sealed under the first key, or erased."""
        if SEALED not in stored:
            return False  # written in clear before encryption
        token = stored[SEALED]
        if token is None:
            return True  # erased
        try:
            self._fernets[0].decrypt(str(token).encode())
        except InvalidToken:
            return False
        return True


def key_file_for(database: Path) -> Path:
    return database.with_name(database.name + ".key")


def read_key_file(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("key file %s is readable by other users; chmod 600 it", path)
    key = path.read_text(encoding="ascii").strip()
    try:
        check_key(key)
    except ValueError:
        raise StorageUnavailableError(f"key file {path} does not hold a valid key") from None
    return key


def create_key_file(path: Path) -> str:
    """Write a new key to ``path`` (mode 0600), or read the one another process just wrote.

    The key is written to a private temporary file and linked into place, so a process that
    starts at the same moment sees either no file or the whole key, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(new_key() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
            log.info("generated a data encryption key at %s; back it up with the database", path)
    finally:
        temporary.unlink(missing_ok=True)
    return read_key_file(path)
