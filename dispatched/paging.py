"""Keyset pages, newest first: ``(created_at, id)`` cursors shared by every list route."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from .errors import BadRequest
from .extensions import db


def newest_first(
    query: sa.Select[Any],
    model: Any,
    cursor: str | None,
    limit: int,
    valid_id: Callable[[str], bool],
) -> tuple[list[Any], str | None]:
    """Run ``query`` (a select of ``model``, which has ``created_at`` and ``id``) for the page
    after ``cursor``, newest first; return its rows and the cursor of the next page (None at
    the end). A cursor this API did not make (or whose id fails ``valid_id``) is a 400."""
    if cursor:
        created_at, last_id = _decode(cursor, valid_id)
        query = query.where(
            sa.or_(
                model.created_at < created_at,
                sa.and_(model.created_at == created_at, model.id < last_id),
            )
        )
    query = query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    rows = list(db.session.execute(query).scalars())
    next_cursor = _encode(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def _encode(row: Any) -> str:
    raw = f"{row.created_at.timestamp():.6f}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, valid_id: Callable[[str], bool]) -> tuple[datetime, str]:
    """Return the (created_at, id) position a cursor points after, or raise BadRequest."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, row_id = raw.split("|", 1)
        created_at = datetime.fromtimestamp(float(stamp), tz=UTC)
    except (ValueError, binascii.Error, UnicodeError, OverflowError, OSError):
        raise BadRequest(f"cursor {cursor[:80]!r} is not a cursor from this API") from None
    if not valid_id(row_id):
        raise BadRequest(f"cursor {cursor[:80]!r} is not a cursor from this API")
    return created_at, row_id
