"""Receipt signing keys in the database: load, create the first one, rotate.

Creating and rotating take a lock (an advisory lock on PostgreSQL; the
IMMEDIATE write transaction on SQLite) so replicas starting together agree on
one active key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.engine import BEGIN_MODE, is_sqlite
from storage.tables import SigningKeyRow

__all__ = ["NewKey", "StoredKey", "ensure_active_key", "load_keys", "rotate_key"]

K = SigningKeyRow.__table__  # type: ignore[attr-defined]
_PG_KEYS_LOCK = 0x4B657973  # "Keys"


@dataclass(frozen=True)
class StoredKey:
    """A signing key as stored; ``private_key`` is sealed."""

    kid: str
    public_jwk: str
    private_key: str
    created_at: datetime
    retired_at: datetime | None
    publish_until: datetime | None


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key to store."""

    kid: str
    public_jwk: str
    private_key: str


async def load_keys(conn: AsyncConnection) -> list[StoredKey]:
    """Every key, oldest first."""
    rows = await conn.execute(select(K).order_by(K.c.created_at, K.c.kid))
    return [
        StoredKey(r.kid, r.public_jwk, r.private_key, r.created_at, r.retired_at, r.publish_until)
        for r in rows
    ]


async def _locked(engine: AsyncEngine) -> AsyncConnection:
    conn = await engine.connect()
    if is_sqlite(engine):
        await conn.execution_options(**{BEGIN_MODE: "IMMEDIATE"})
    await conn.begin()
    if not is_sqlite(engine):
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_KEYS_LOCK})
    return conn


async def ensure_active_key(
    engine: AsyncEngine, generate: Callable[[], NewKey], now: datetime
) -> list[StoredKey]:
    """All keys, after creating one if none is active."""
    conn = await _locked(engine)
    try:
        keys = await load_keys(conn)
        if not any(k.retired_at is None for k in keys):
            new = generate()
            await conn.execute(
                insert(K).values(
                    kid=new.kid,
                    public_jwk=new.public_jwk,
                    private_key=new.private_key,
                    created_at=now,
                )
            )
            keys = await load_keys(conn)
        await conn.commit()
        return keys
    finally:
        await conn.close()


async def rotate_key(
    engine: AsyncEngine, generate: Callable[[], NewKey], now: datetime, publish_until: datetime
) -> StoredKey:
    """Retire the active key(s) (still published until ``publish_until``) and add a new one."""
    conn = await _locked(engine)
    try:
        await conn.execute(
            update(K)
            .where(K.c.retired_at.is_(None))
            .values(retired_at=now, publish_until=publish_until)
        )
        new = generate()
        await conn.execute(
            insert(K).values(
                kid=new.kid, public_jwk=new.public_jwk, private_key=new.private_key, created_at=now
            )
        )
        keys = await load_keys(conn)
        await conn.commit()
        return next(k for k in keys if k.kid == new.kid)
    finally:
        await conn.close()
