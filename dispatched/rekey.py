"""Re-encrypting every secret at rest with the current key, after a ``DATA_ENCRYPTION_KEY``
rotation (``flask --app wsgi admin rotate-encryption-key``).

Every column typed ``crypto.EncryptedText`` in the model is covered, whatever its table. The
stored tokens are read raw (no decryption by the column type), re-encrypted with the first key
(``MultiFernet.rotate``) and written back with a compare-and-set on the old token, so a value
changed meanwhile (a secret rotated in the dashboard, already written with the current key by
a process that has the new key list) is never overwritten with a stale one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa

from . import crypto
from .extensions import db

logger = logging.getLogger(__name__)

#: Rows read (and committed) per round trip.
BATCH = 500


@dataclass(frozen=True)
class Rekeyed:
    """What a re-encryption pass did."""

    values: int
    rows: int
    #: Rows changed by someone else between the read and the write (left as they were).
    skipped: int


def encrypted_columns() -> dict[sa.Table, list[str]]:
    """Return every table of the model with its ``EncryptedText`` column names."""
    found: dict[sa.Table, list[str]] = {}
    for table in db.metadata.sorted_tables:
        names = [c.name for c in table.columns if isinstance(c.type, crypto.EncryptedText)]
        if names:
            found[table] = names
    return found


def reencrypt_all() -> Rekeyed:
    """Re-encrypt every encrypted value with the first key of ``DATA_ENCRYPTION_KEY``; commit.

    Raises:
        crypto.UndecryptableSecret: a value no configured key decrypts (nothing of its batch is
            written; batches before it are committed, and running again is safe).
    """
    values = rows = skipped = 0
    for table, names in encrypted_columns().items():
        done = _reencrypt_table(table, names)
        values, rows, skipped = values + done.values, rows + done.rows, skipped + done.skipped
    logger.info("re-encrypted %d secrets in %d rows (%d skipped)", values, rows, skipped)
    return Rekeyed(values, rows, skipped)


def _reencrypt_table(table: sa.Table, names: list[str]) -> Rekeyed:
    (key,) = table.primary_key.columns
    # The same table seen with plain Text columns: reads and writes the stored tokens as they are.
    raw = sa.table(table.name, sa.column(key.name), *(sa.column(n, sa.Text) for n in names))
    values = rows = skipped = 0
    last = None
    while True:
        query = sa.select(raw).order_by(raw.c[key.name]).limit(BATCH)
        if last is not None:
            query = query.where(raw.c[key.name] > last)
        batch = db.session.execute(query).all()
        if not batch:
            break
        try:
            for row in batch:
                old = {n: getattr(row, n) for n in names}
                new = {n: crypto.reencrypt(v) for n, v in old.items() if v is not None}
                if not new:
                    continue
                update = sa.update(raw).where(raw.c[key.name] == getattr(row, key.name))
                for name, value in old.items():
                    column = raw.c[name]
                    update = update.where(column.is_(None) if value is None else column == value)
                if db.session.execute(update.values(**new)).rowcount == 1:
                    values, rows = values + len(new), rows + 1
                else:
                    skipped += 1
            db.session.commit()
        except BaseException:
            db.session.rollback()
            raise
        last = getattr(batch[-1], key.name)
    return Rekeyed(values, rows, skipped)
