"""Chat job claims: one request's jobs never run at two workers at once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy.engine import Connection

from countersign.core import RequestSpec
from countersign.service import ApprovalService
from storage import SqlStore
from storage import chat as chat_store
from tests.conftest import ManualClock
from tests.service.test_service import EXPORT, _client

LEASE = timedelta(seconds=60)


async def _requests(service: ApprovalService, n: int) -> list[str]:
    client = await _client(service)
    ids = []
    for i in range(n):
        spec = RequestSpec(**{**EXPORT, "resource": f"prod/customers-{i}"})
        ids.append((await service.create_request(client, spec)).request.id)
    return ids


async def _enqueue(
    store: SqlStore, clock: ManualClock, request_id: str, kind: str = "sync"
) -> None:
    now = clock.now()
    await store.write_job(lambda conn: chat_store.enqueue_job(conn, request_id, kind, now))


async def _claim(store: SqlStore, clock: ManualClock, limit: int = 16) -> list[chat_store.ChatJob]:
    now = clock.now()
    return await store.write_job(lambda conn: chat_store.claim_jobs(conn, now, limit, LEASE))


async def test_a_busy_request_is_not_claimed_again_until_its_job_is_done(
    service: ApprovalService, store: SqlStore, clock: ManualClock
) -> None:
    x, y = await _requests(service, 2)
    await _enqueue(store, clock, x)
    await _enqueue(store, clock, x)
    await _enqueue(store, clock, y)
    first = await _claim(store, clock)
    assert sorted((j.request_id, len(j.ids)) for j in first) == sorted([(x, 2), (y, 1)])

    # Vote 3 on x lands while x's job runs: another worker does not take it yet.
    await _enqueue(store, clock, x)
    await _enqueue(store, clock, x, "remind")
    assert await _claim(store, clock) == []

    job_x = next(j for j in first if j.request_id == x)
    await store.write_job(lambda conn: chat_store.finish_job(conn, job_x))
    after = await _claim(store, clock)
    assert sorted(j.kind for j in after) == ["remind", "sync"]
    assert {j.request_id for j in after} == {x}


async def test_a_failed_job_frees_its_request_and_a_lost_lease_runs_out(
    service: ApprovalService, store: SqlStore, clock: ManualClock
) -> None:
    (x,) = await _requests(service, 1)
    await _enqueue(store, clock, x)
    (job,) = await _claim(store, clock)
    await _enqueue(store, clock, x)  # a newer change
    at = clock.now() + timedelta(seconds=30)
    await store.write_job(lambda conn: chat_store.retry_job(conn, job, at, "Slack is down"))
    (newer,) = await _claim(store, clock)  # the request is free: the newer change runs
    assert newer.ids != job.ids

    # Its worker dies: nothing of x is claimed until the lease has run out.
    await _enqueue(store, clock, x)
    assert await _claim(store, clock) == []
    clock.advance(seconds=61)
    again = await _claim(store, clock)
    assert {j.request_id for j in again} == {x}
    assert sum(len(j.ids) for j in again) == 3  # the dead claim, the failed job, the new row


@pytest.mark.postgres
async def test_two_claims_at_the_same_moment_never_share_a_request(
    service: ApprovalService, store: SqlStore, clock: ManualClock, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite claims are serialised by its single writer")
    ids = await _requests(service, 3)
    for request_id in ids:
        for _ in range(4):
            await _enqueue(store, clock, request_id)
    now = clock.now()

    def claim(limit: int) -> Callable[[Connection], list[chat_store.ChatJob]]:
        return lambda conn: chat_store.claim_jobs(conn, now, limit, LEASE)

    # Worker A claims one row (of the first request); worker B claims while A's
    # transaction is still open: B skips A's row and must skip its request too.
    async with store.engine.connect() as a, store.engine.connect() as b:
        await a.begin()
        held = await a.run_sync(claim(1))
        await b.begin()
        other = await b.run_sync(claim(16))
        await a.commit()
        await b.commit()
    assert [j.request_id for j in held] == [ids[0]]
    assert sorted(j.request_id for j in other) == sorted(ids[1:])
    assert all(len(j.ids) == 4 for j in other)
