"""The callback outbox: claim due deliveries, record each attempt's outcome (all its SQL).

A row is written by the transaction that decided its request
(``SqlTransaction.enqueue_callback``). A worker then:

1. ``claim_due`` in a short write transaction: picks due rows (``FOR UPDATE SKIP
   LOCKED`` on PostgreSQL; SQLite write transactions are exclusive), adds one
   to ``attempts`` and pushes ``next_attempt_at`` out by a lease, then commits.
   Another worker skips the row until the lease runs out, so a worker killed
   mid-delivery leaves it to be retried by anyone after the lease.
2. POSTs it, outside any transaction.
3. ``record_delivered`` / ``record_failed`` / ``record_dead`` in a second
   write transaction, which also appends the ``callback.attempt`` ledger entry.

``attempts`` doubles as a fencing token: a failure is only recorded by the
worker holding the latest claim, so a worker that outlived its lease cannot
reschedule a row another worker has claimed since.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage import ledger
from storage.repository import SqlStore
from storage.tables import OutboxRow, RequestRow

__all__ = [
    "ATTEMPT_EVENT",
    "DEAD_EVENT",
    "LEDGER_ACTOR",
    "MAX_ERROR_CHARS",
    "Claim",
    "claim_due",
    "pending_count",
    "record_dead",
    "record_delivered",
    "record_failed",
    "write_transaction",
]

O = OutboxRow.__table__  # type: ignore[attr-defined]  # noqa: E741
R = RequestRow.__table__  # type: ignore[attr-defined]

ATTEMPT_EVENT = "callback.attempt"
DEAD_EVENT = "callback.dead"
LEDGER_ACTOR = "callbacks"
# Receivers choose their error text; keep what we store (and chain forever) short.
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class Claim:
    """One claimed delivery: what to POST where, and which attempt this is (1 = first)."""

    id: int
    delivery_id: str
    request_id: str
    client: str
    event: str
    url: str
    payload: str
    attempt: int


def _bounded(error: str | None) -> str | None:
    if error is None or len(error) <= MAX_ERROR_CHARS:
        return error
    return error[: MAX_ERROR_CHARS - 1] + "…"


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A write transaction for the functions here (``BEGIN IMMEDIATE`` on SQLite)."""
    async with SqlStore(engine).write_connection() as conn:
        yield conn


async def claim_due(
    conn: AsyncConnection, now: datetime, limit: int, lease: timedelta
) -> list[Claim]:
    """Claim up to ``limit`` due deliveries, oldest due first, until ``now + lease``.

    Run it in a write transaction of its own and commit at once: the claim is
    the lease, and the locks it takes should not outlive it.
    """
    pick = (
        select(O.c.id)
        .where(O.c.delivered_at.is_(None), O.c.dead_at.is_(None), O.c.next_attempt_at <= now)
        .order_by(O.c.next_attempt_at, O.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        # Two workers claiming at once get disjoint rows instead of waiting.
        pick = pick.with_for_update(skip_locked=True)
    ids = list((await conn.execute(pick)).scalars())
    if not ids:
        return []
    await conn.execute(
        update(O)
        .where(O.c.id.in_(ids))
        .values(attempts=O.c.attempts + 1, next_attempt_at=now + lease)
    )
    rows = await conn.execute(
        select(
            O.c.id,
            O.c.delivery_id,
            O.c.request_id,
            R.c.client,
            O.c.event,
            O.c.url,
            O.c.payload,
            O.c.attempts,
        )
        .join(R, R.c.id == O.c.request_id)
        .where(O.c.id.in_(ids))
        .order_by(O.c.next_attempt_at, O.c.id)
    )
    return [
        Claim(
            id=row.id,
            delivery_id=row.delivery_id,
            request_id=row.request_id,
            client=row.client,
            event=row.event,
            url=row.url,
            payload=row.payload,
            attempt=row.attempts,
        )
        for row in rows
    ]


async def _append_attempt(
    conn: AsyncConnection,
    claim: Claim,
    *,
    at: datetime,
    status: int | None,
    error: str | None,
    delivered: bool,
    next_attempt_at: datetime | None,
    dead: bool,
    superseded: bool = False,
) -> None:
    data: dict[str, Any] = {
        "delivery_id": claim.delivery_id,
        "attempt": claim.attempt,
        "url": claim.url,
        "status": status,
        "error": _bounded(error),
        "delivered": delivered,
        "next_attempt_at": ledger.format_at(next_attempt_at) if next_attempt_at else None,
        "dead": dead,
    }
    if superseded:
        data["superseded"] = True
    await ledger.append(
        conn,
        event=ATTEMPT_EVENT,
        at=at,
        request_id=claim.request_id,
        actor=LEDGER_ACTOR,
        data=data,
    )


async def record_delivered(
    conn: AsyncConnection, claim: Claim, *, at: datetime, status: int
) -> bool:
    """Mark a delivery done (a 2xx came back) and chain the attempt; False if it was already."""
    result = await conn.execute(
        update(O)
        .where(O.c.id == claim.id, O.c.delivered_at.is_(None), O.c.dead_at.is_(None))
        .values(delivered_at=at, last_status=status, last_error=None)
    )
    applied = bool(result.rowcount)
    # The receiver got it either way: the attempt belongs in the ledger.
    await _append_attempt(
        conn,
        claim,
        at=at,
        status=status,
        error=None,
        delivered=True,
        next_attempt_at=None,
        dead=False,
        superseded=not applied,
    )
    return applied


async def _update_if_still_claimed(conn: AsyncConnection, claim: Claim, **values: Any) -> bool:
    """Update the row only if this claim is still the latest and the row is still open."""
    result = await conn.execute(
        update(O)
        .where(
            O.c.id == claim.id,
            O.c.attempts == claim.attempt,
            O.c.delivered_at.is_(None),
            O.c.dead_at.is_(None),
        )
        .values(**values)
    )
    return bool(result.rowcount)


async def record_failed(
    conn: AsyncConnection,
    claim: Claim,
    *,
    at: datetime,
    next_attempt_at: datetime,
    status: int | None,
    error: str,
) -> bool:
    """Schedule the next attempt after a failure and chain this one.

    False (and nothing rescheduled) when another worker has claimed the row
    since: its claim is the one that counts.
    """
    applied = await _update_if_still_claimed(
        conn, claim, next_attempt_at=next_attempt_at, last_status=status, last_error=_bounded(error)
    )
    await _append_attempt(
        conn,
        claim,
        at=at,
        status=status,
        error=error,
        delivered=False,
        next_attempt_at=next_attempt_at if applied else None,
        dead=False,
        superseded=not applied,
    )
    return applied


async def record_dead(
    conn: AsyncConnection, claim: Claim, *, at: datetime, status: int | None, error: str
) -> bool:
    """Give up on a delivery: ``dead_at`` set, the attempt and ``callback.dead`` chained.

    False (nothing changed, only the attempt chained) when another worker has
    claimed the row since.
    """
    applied = await _update_if_still_claimed(
        conn, claim, dead_at=at, last_status=status, last_error=_bounded(error)
    )
    await _append_attempt(
        conn,
        claim,
        at=at,
        status=status,
        error=error,
        delivered=False,
        next_attempt_at=None,
        dead=applied,
        superseded=not applied,
    )
    if applied:
        await ledger.append(
            conn,
            event=DEAD_EVENT,
            at=at,
            request_id=claim.request_id,
            actor=LEDGER_ACTOR,
            data={
                "delivery_id": claim.delivery_id,
                "attempts": claim.attempt,
                "url": claim.url,
                "reason": _bounded(error),
            },
        )
    return applied


async def pending_count(conn: AsyncConnection) -> int:
    """Deliveries neither delivered nor dead (due now or later, or in flight)."""
    count = await conn.scalar(
        select(func.count()).select_from(O).where(O.c.delivered_at.is_(None), O.c.dead_at.is_(None))
    )
    return int(count or 0)
