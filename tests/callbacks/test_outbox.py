"""``storage.outbox`` on SQLite and PostgreSQL: claims, leases, fencing, outcomes in the ledger."""

from __future__ import annotations

from datetime import timedelta

from countersign.ports import ApiClient
from countersign.service import ApprovalService
from storage import SqlStore
from storage.outbox import (
    MAX_ERROR_CHARS,
    claim_due,
    pending_count,
    record_dead,
    record_delivered,
    record_failed,
    write_transaction,
)
from tests.callbacks._scenario import events, ledger_ok, outbox, read_decided
from tests.conftest import ManualClock

URL = "https://agent.example.com/hook"
LEASE = timedelta(seconds=60)


async def test_claim_takes_due_rows_oldest_first_and_leases_them(
    store: SqlStore, service: ApprovalService, client: ApiClient, clock: ManualClock
) -> None:
    first = await read_decided(service, client, URL, 1)
    clock.advance(seconds=1)
    second = await read_decided(service, client, URL, 2)
    clock.advance(seconds=1)
    now = clock.now()
    async with write_transaction(store.engine) as conn:
        claims = await claim_due(conn, now, 1, LEASE)
    assert [c.request_id for c in claims] == [first.id]
    claim = claims[0]
    assert claim.attempt == 1
    assert claim.client == "agent"
    assert claim.event == "request.decided"
    assert claim.url == URL
    assert claim.delivery_id.startswith("dlv_")
    rows = await outbox(store.engine)
    assert rows[0].attempts == 1
    assert rows[0].next_attempt_at == now + LEASE
    assert rows[1].attempts == 0

    async with write_transaction(store.engine) as conn:
        again = await claim_due(conn, now, 10, LEASE)
        assert await pending_count(conn) == 2
    assert [c.request_id for c in again] == [second.id]  # the leased row is skipped

    async with write_transaction(store.engine) as conn:
        assert await claim_due(conn, now + LEASE - timedelta(microseconds=1), 10, LEASE) == []
    async with write_transaction(store.engine) as conn:
        # The lease ran out (the worker died, say): anyone may claim it, as attempt 2.
        retaken = await claim_due(conn, now + LEASE, 10, LEASE)
    assert [(c.request_id, c.attempt) for c in retaken] == [(first.id, 2), (second.id, 2)]


async def test_outcomes_are_recorded_with_a_ledger_entry_each(
    store: SqlStore, service: ApprovalService, client: ApiClient, clock: ManualClock
) -> None:
    for n in range(3):
        await read_decided(service, client, URL, n)
    now = clock.now()
    async with write_transaction(store.engine) as conn:
        ok, failing, doomed = await claim_due(conn, now, 10, LEASE)
    later = now + timedelta(seconds=10)
    async with write_transaction(store.engine) as conn:
        assert await record_delivered(conn, ok, at=now, status=204)
        assert await record_failed(
            conn, failing, at=now, next_attempt_at=later, status=500, error="HTTP 500"
        )
        assert await record_dead(conn, doomed, at=now, status=None, error="x" * 1000)
        assert await pending_count(conn) == 1

    rows = {row.delivery_id: row for row in await outbox(store.engine)}
    assert rows[ok.delivery_id].delivered_at == now
    assert rows[ok.delivery_id].last_status == 204
    assert rows[failing.delivery_id].next_attempt_at == later
    assert rows[failing.delivery_id].delivered_at is None
    assert rows[failing.delivery_id].last_error == "HTTP 500"
    assert rows[doomed.delivery_id].dead_at == now
    assert len(rows[doomed.delivery_id].last_error) == MAX_ERROR_CHARS

    chained = await events(store.engine, "callback.attempt", "callback.dead")
    assert [(e, d["delivery_id"]) for e, _, d in chained] == [
        ("callback.attempt", ok.delivery_id),
        ("callback.attempt", failing.delivery_id),
        ("callback.attempt", doomed.delivery_id),
        ("callback.dead", doomed.delivery_id),
    ]
    delivered, failed, dead, obituary = (d for _, _, d in chained)
    assert delivered == {
        "delivery_id": ok.delivery_id,
        "attempt": 1,
        "url": URL,
        "status": 204,
        "error": None,
        "delivered": True,
        "next_attempt_at": None,
        "dead": False,
    }
    assert failed["status"] == 500
    assert failed["delivered"] is False
    assert failed["dead"] is False
    assert failed["next_attempt_at"] == "2026-11-21T10:00:10.000000Z"
    assert dead["dead"] is True
    assert len(dead["error"]) == MAX_ERROR_CHARS
    assert obituary["attempts"] == 1
    assert await ledger_ok(store.engine)

    async with write_transaction(store.engine) as conn:
        # Delivered and dead rows are never claimed again.
        claims = await claim_due(conn, later + timedelta(days=1), 10, LEASE)
    assert [c.delivery_id for c in claims] == [failing.delivery_id]


async def test_a_worker_that_outlived_its_lease_cannot_reschedule_the_row(
    store: SqlStore, service: ApprovalService, client: ApiClient, clock: ManualClock
) -> None:
    await read_decided(service, client, URL)
    now = clock.now()
    async with write_transaction(store.engine) as conn:
        (stale,) = await claim_due(conn, now, 10, LEASE)
    async with write_transaction(store.engine) as conn:
        (current,) = await claim_due(conn, now + LEASE, 10, LEASE)
    assert current.attempt == 2
    async with write_transaction(store.engine) as conn:
        applied = await record_failed(
            conn, stale, at=now, next_attempt_at=now, status=500, error="HTTP 500"
        )
        assert not applied
        assert not await record_dead(conn, stale, at=now, status=500, error="HTTP 500")
    (row,) = await outbox(store.engine)
    assert row.next_attempt_at == now + 2 * LEASE  # the current claim's lease stands
    assert row.dead_at is None
    # A success is a success, whoever holds the lease; the late one is only chained.
    async with write_transaction(store.engine) as conn:
        assert await record_delivered(conn, stale, at=now, status=200)
        assert not await record_delivered(conn, current, at=now, status=200)
    stale_entries = [d for _, _, d in await events(store.engine, "callback.attempt")]
    assert [d.get("superseded", False) for d in stale_entries] == [True, True, False, True]
    assert await ledger_ok(store.engine)
