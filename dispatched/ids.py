"""Random identifiers and tokens (base62, from the OS CSPRNG)."""

from __future__ import annotations

import secrets
import string

ALPHABET = string.ascii_letters + string.digits


def random_base62(length: int) -> str:
    """Return ``length`` random base62 characters (uniform: bytes from 248 up are dropped,
    248 being 4 x 62; one ``token_bytes`` call instead of one ``choice`` per character)."""
    chars: list[str] = []
    while len(chars) < length:
        chars.extend(ALPHABET[b % 62] for b in secrets.token_bytes(length + 8) if b < 248)
    return "".join(chars[:length])


def new_id(prefix: str, length: int = 22) -> str:
    """Return a prefixed random id such as ``job_3fZ...`` (22 chars ≈ 131 bits)."""
    return f"{prefix}_{random_base62(length)}"


def looks_like(value: str, prefix: str) -> bool:
    """Whether ``value`` could be an id made by ``new_id(prefix)`` (cheap check before a
    lookup: odd input is a 404 or a 400, never a query)."""
    return (
        value.startswith(prefix + "_")
        and len(value) <= 40
        and value[len(prefix) + 1 :].isalnum()
        and value.isascii()
    )
