"""Receipt keys from the database into a ``Receipts`` issuer: first start, refresh, rotation."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from countersign.ports import Clock, Sealer, SystemClock
from countersign.receipts import RECEIPT_TTL, Receipts, SigningKey, generate_key, open_key
from storage import keys as stored_keys

__all__ = ["load_receipts", "refresh_receipts", "rotate_receipt_key"]

# A retired key stays published this much longer than its last receipt can live.
_PUBLISH_MARGIN = timedelta(minutes=5)


def _generator(sealer: Sealer) -> stored_keys.NewKey:
    kid, public_jwk, sealed = generate_key(sealer)
    return stored_keys.NewKey(kid, public_jwk, sealed)


async def _signing_keys(engine: AsyncEngine, sealer: Sealer, now: datetime) -> list[SigningKey]:
    rows = await stored_keys.ensure_active_key(engine, lambda: _generator(sealer), now)
    return [
        open_key(r.kid, r.public_jwk, r.private_key, sealer, r.retired_at, r.publish_until)
        for r in rows
    ]


async def load_receipts(
    engine: AsyncEngine,
    sealer: Sealer,
    issuer: str,
    ttl: timedelta = RECEIPT_TTL,
    clock: Clock | None = None,
) -> Receipts:
    """A ``Receipts`` issuer with the stored keys (a first key is created if none is active)."""
    clock = clock or SystemClock()
    return Receipts(issuer, await _signing_keys(engine, sealer, clock.now()), ttl, clock)


async def refresh_receipts(receipts: Receipts, engine: AsyncEngine, sealer: Sealer) -> None:
    """Reload the keys (another process may have rotated them)."""
    receipts.replace_keys(await _signing_keys(engine, sealer, receipts.clock.now()))


async def rotate_receipt_key(
    engine: AsyncEngine, sealer: Sealer, now: datetime, ttl: timedelta = RECEIPT_TTL
) -> str:
    """Retire the active key (published until its receipts lapse) and start a new one."""
    await stored_keys.ensure_active_key(engine, lambda: _generator(sealer), now)
    new = await stored_keys.rotate_key(
        engine, lambda: _generator(sealer), now, publish_until=now + ttl + _PUBLISH_MARGIN
    )
    return new.kid
