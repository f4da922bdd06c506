"""Helpers of the security suite: what the database holds, to prove a refusal wrote nothing."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["TABLES", "snapshot"]

# Every table a request, vote, card, callback, chat identity or client could land in.
TABLES = (
    "requests",
    "votes",
    "ledger",
    "outbox",
    "api_clients",
    "card_refs",
    "chat_identities",
    "chat_jobs",
    "teams_conversations",
)


async def snapshot(engine: AsyncEngine) -> dict[str, int]:
    """Row counts of ``TABLES`` (the ledger's expiry entries aside: the expiry job runs on)."""
    counts: dict[str, int] = {}
    async with engine.connect() as conn:
        for table in TABLES:
            where = " WHERE event <> 'request.expired'" if table == "ledger" else ""
            found = await conn.execute(text(f"SELECT count(*) FROM {table}{where}"))
            counts[table] = int(found.scalar_one())
    return counts
