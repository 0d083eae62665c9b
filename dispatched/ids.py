"""Random identifiers and tokens (base62, from the OS CSPRNG)."""

from __future__ import annotations

import secrets
import string

ALPHABET = string.ascii_letters + string.digits


def random_base62(length: int) -> str:
    """Return ``length`` random base62 characters."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def new_id(prefix: str, length: int = 22) -> str:
    """Return a prefixed random id such as ``job_3fZ...`` (22 chars ≈ 131 bits)."""
    return f"{prefix}_{random_base62(length)}"
