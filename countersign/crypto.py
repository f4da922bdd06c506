"""Secrets at rest: callback secrets and receipt signing keys, sealed with the server key.

The server key is ``COUNTERSIGN_SECRET_KEY`` (any long random string). With
SQLite and no key set, a random key is created once in a file beside the
database (mode 0600), so the two-command start needs no configuration; with
PostgreSQL the key must come from the environment, because replicas share the
database but not a disk.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["SecretBox", "SecretBoxError", "key_file_for", "load_or_create_key"]


class SecretBoxError(Exception):
    """A sealed value could not be opened (wrong server key, or corrupted)."""


class SecretBox:
    """Seal and open short secrets with a key derived from the server key (Fernet)."""

    def __init__(self, server_key: str) -> None:
        if len(server_key) < 16:
            raise ValueError("the server key must be at least 16 characters")
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"countersign secret box v1"
        ).derive(server_key.encode("utf-8"))
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, plaintext: str) -> str:
        """Encrypt and authenticate ``plaintext``."""
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def open(self, sealed: str) -> str:
        """Decrypt a value from ``seal``; ``SecretBoxError`` if the key is wrong."""
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("utf-8")
        except InvalidToken as exc:
            raise SecretBoxError(
                "COUNTERSIGN_SECRET_KEY: not the key the stored secrets were sealed with"
            ) from exc


def key_file_for(sqlite_url: str) -> Path:
    """Where the generated server key of a SQLite database lives: beside it."""
    path = sqlite_url.split(":///", 1)[1] if ":///" in sqlite_url else "countersign.db"
    return Path(path + ".key")


def load_or_create_key(path: Path) -> str:
    """The key in ``path``, created (random, mode 0600) when absent."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    key = secrets.token_urlsafe(48)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    return key
