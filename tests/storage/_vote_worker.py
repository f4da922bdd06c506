"""A voter process for the concurrency tests: casts its ballots all at once when told to."""

from __future__ import annotations

import asyncio
from multiprocessing.synchronize import Event
from typing import Any

from sqlalchemy import text

from countersign.core import CountersignError
from countersign.policy import parse_policy
from countersign.service import ApprovalService
from storage import SqlStore, create_engine


def run(
    url: str, policy_text: str, ballots: list[tuple[str, str, str]], start: Event, out: Any
) -> None:
    """Cast ``ballots`` (request id, voter, choice) concurrently; put one outcome each on ``out``."""
    out.put(asyncio.run(_cast_all(url, policy_text, ballots, start)))


async def _cast_all(
    url: str, policy_text: str, ballots: list[tuple[str, str, str]], start: Event
) -> list[tuple[str, str, str]]:
    engine = create_engine(url, pool_size=10, max_overflow=10)
    service = ApprovalService(SqlStore(engine), parse_policy(policy_text))
    async with engine.connect() as conn:  # connect before the start signal
        await conn.execute(text("SELECT 1"))
    await asyncio.to_thread(start.wait)

    async def one(request_id: str, voter: str, choice: str) -> tuple[str, str, str]:
        try:
            result = await service.cast_vote(request_id, voter, "slack", choice)
        except CountersignError as err:
            return (request_id, voter, err.code)
        return (request_id, voter, "decided" if result.decided else "counted")

    try:
        return list(await asyncio.gather(*(one(*b) for b in ballots)))
    finally:
        await engine.dispose()
