"""Secrets at rest: the cipher of ``DATA_ENCRYPTION_KEY`` and the ``EncryptedText`` column type.

``DATA_ENCRYPTION_KEY`` is one or more Fernet keys, comma-separated: the first encrypts, every
one decrypts (``MultiFernet``). Rotating the key is therefore: put the new key first (keep the
old one after it) on every process, run ``flask --app wsgi admin rotate-encryption-key`` (it
re-encrypts every stored secret with the first key), then drop the old key.

Columns typed ``EncryptedText`` hold Fernet tokens (AES-128-CBC + HMAC-SHA256, with a random
IV), while the ORM and Core reads and writes see plaintext, so callers stay unchanged. Because
each encryption is randomized, such a column can never be compared in SQL (``WHERE secret =
…``): look rows up by id.
"""

from __future__ import annotations

import binascii
import functools
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import Flask, current_app

EXTENSION = "dispatched.crypto"
GENERATE_HINT = (
    "generate one with: python3 -c "
    "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
)


class UndecryptableSecret(RuntimeError):
    """A stored value that no key of ``DATA_ENCRYPTION_KEY`` decrypts (a key is missing)."""


def generate_key() -> str:
    """Return a new random Fernet key (32 bytes, url-safe base64)."""
    return Fernet.generate_key().decode("ascii")


def parse_keys(value: str) -> list[str]:
    """Split ``DATA_ENCRYPTION_KEY`` into its keys (first = current), checking each one.

    Raises:
        ValueError: no key, or a part that is not a Fernet key (the message gives its position
            and length, never the key itself).
    """
    keys = [part.strip() for part in (value or "").split(",") if part.strip()]
    if not keys:
        raise ValueError(f"DATA_ENCRYPTION_KEY holds no key; {GENERATE_HINT}")
    for number, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except (ValueError, binascii.Error):
            raise ValueError(
                f"DATA_ENCRYPTION_KEY key {number} of {len(keys)} ({len(key)} characters) is not "
                f"a Fernet key (32 url-safe base64-encoded bytes); {GENERATE_HINT}"
            ) from None
    return keys


def cipher(value: str) -> MultiFernet:
    """Return the MultiFernet of a ``DATA_ENCRYPTION_KEY`` value."""
    return MultiFernet([Fernet(key) for key in parse_keys(value)])


def init_app(app: Flask) -> None:
    """Build the app's cipher from ``DATA_ENCRYPTION_KEY`` (already checked by the factory)."""
    app.extensions[EXTENSION] = cipher(app.config["DATA_ENCRYPTION_KEY"])


def _current() -> MultiFernet:
    return current_app.extensions[EXTENSION]


def encrypt(plaintext: str) -> str:
    """Encrypt ``plaintext`` with the current (first) key; return the Fernet token."""
    return _current().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    """Decrypt a token written with any configured key.

    Raises:
        UndecryptableSecret: no configured key decrypts it.
    """
    try:
        return _decrypt(_current(), token)
    except (InvalidToken, UnicodeEncodeError):
        raise UndecryptableSecret(
            "a stored secret cannot be decrypted with any key of DATA_ENCRYPTION_KEY; add the "
            "key it was encrypted with (after the current one) and restart"
        ) from None


@functools.lru_cache(maxsize=1024)
def _decrypt(keys: MultiFernet, token: str) -> str:
    """Decrypt with ``keys``, remembering the last tokens: the delivery engine reads a project's
    webhook secret with every attempt it claims, and a Fernet decryption (HMAC check and AES)
    was 4 % of a worker's CPU at 256 deliveries in flight (bench/README, sixth look). A token
    always decrypts to the same text; a new key set (a restart) is a new cache key."""
    return keys.decrypt(token.encode("ascii")).decode("utf-8")


def reencrypt(token: str) -> str:
    """Return ``token`` re-encrypted with the current key (for a key rotation).

    Raises:
        UndecryptableSecret: no configured key decrypts it.
    """
    try:
        return _current().rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeEncodeError):
        raise UndecryptableSecret(
            "a stored secret cannot be decrypted with any key of DATA_ENCRYPTION_KEY; "
            "keep the old key after the new one until the rotation has finished"
        ) from None


class EncryptedText(sa.types.TypeDecorator):
    """A text column stored encrypted with the app's ``DATA_ENCRYPTION_KEY`` (see the module)."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else encrypt(value)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else decrypt(value)
