"""The worker against a real receiver on 127.0.0.1, on SQLite and PostgreSQL, on a manual clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta

import aiohttp
import pytest

from countersign import __version__
from countersign.callbacks.schedule import DEFAULT_SCHEDULE
from countersign.callbacks.signing import verify_signature
from countersign.callbacks.worker import CallbackWorker
from countersign.metrics import Metrics
from countersign.ports import ApiClient
from countersign.resource import to_resource
from countersign.service import ApprovalService
from storage import SqlStore
from tests.callbacks._receiver import Received, Receiver, eventually
from tests.callbacks._scenario import (
    counter,
    events,
    export_approved,
    ledger_ok,
    outbox,
    read_decided,
)
from tests.conftest import ManualClock

MakeWorker = Callable[..., CallbackWorker]


async def test_delivers_the_request_signed_with_the_clients_secret(
    store: SqlStore,
    service: ApprovalService,
    client: ApiClient,
    clock: ManualClock,
    receiver: Receiver,
    metrics: Metrics,
    make_worker: MakeWorker,
) -> None:
    request = await export_approved(service, client, receiver.url())
    worker = make_worker()
    assert await worker.run_once() == 1

    (seen,) = receiver.received
    (row,) = await outbox(store.engine)
    assert seen.signature_ok
    assert seen.body == row.payload.encode("utf-8")  # the stored bytes, exactly
    assert json.loads(seen.body) == to_resource(request)
    assert json.loads(seen.body)["status"] == "approved"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Countersign-Event"] == "request.decided"
    assert seen.headers["Countersign-Delivery"] == row.delivery_id
    assert seen.headers["User-Agent"] == f"Countersign/{__version__}"
    signature = seen.headers["Countersign-Signature"]
    assert signature.startswith(f"t={int(clock.now().timestamp())},v1=")
    assert not verify_signature("whsec_wrong", signature, seen.body, now=receiver.now())

    assert row.delivered_at == clock.now()
    assert row.attempts == 1
    assert row.last_status == 200
    ((_, request_id, data),) = await events(store.engine, "callback.attempt")
    assert request_id == request.id
    assert data["delivered"] is True
    assert data["attempt"] == 1
    assert data["status"] == 200
    assert signature not in json.dumps(data)
    assert counter(metrics.callback_attempts, result="delivered") == 1
    assert metrics.outbox_depth._value.get() == 0

    clock.advance(hours=5)
    assert await worker.run_once() == 0
    assert len(receiver.received) == 1


async def test_retried_with_the_same_delivery_id_until_the_receiver_recovers(
    store: SqlStore,
    service: ApprovalService,
    client: ApiClient,
    clock: ManualClock,
    receiver: Receiver,
    metrics: Metrics,
    make_worker: MakeWorker,
) -> None:
    await read_decided(service, client, receiver.url())
    receiver.answers.extend([500, 503])
    worker = make_worker()
    start = clock.now()

    assert await worker.run_once() == 1
    (row,) = await outbox(store.engine)
    assert row.next_attempt_at == start + timedelta(seconds=10)
    assert (row.last_status, row.last_error) == (500, "HTTP 500")
    assert await worker.run_once() == 0  # not due yet
    clock.advance(seconds=9.9)
    assert await worker.run_once() == 0
    clock.advance(seconds=0.1)
    assert await worker.run_once() == 1
    (row,) = await outbox(store.engine)
    assert row.next_attempt_at == clock.now() + timedelta(seconds=25)
    clock.advance(seconds=25)
    assert await worker.run_once() == 1
    clock.advance(hours=3)
    assert await worker.run_once() == 0

    assert [r.status for r in receiver.received] == [500, 503, 200]
    assert len({r.delivery_id for r in receiver.received}) == 1
    assert all(r.signature_ok for r in receiver.received)
    assert len(receiver.delivered()) == 1
    (row,) = await outbox(store.engine)
    assert row.attempts == 3
    assert row.delivered_at == start + timedelta(seconds=35)
    attempts = [d for _, _, d in await events(store.engine, "callback.attempt")]
    assert [(d["attempt"], d["status"], d["delivered"]) for d in attempts] == [
        (1, 500, False),
        (2, 503, False),
        (3, 200, True),
    ]
    assert attempts[0]["next_attempt_at"] == "2026-11-21T10:00:10.000000Z"
    assert counter(metrics.callback_attempts, result="failed") == 2
    assert counter(metrics.callback_attempts, result="delivered") == 1


async def test_no_answer_within_the_timeout_is_a_failure(
    store: SqlStore,
    service: ApprovalService,
    client: ApiClient,
    receiver: Receiver,
    metrics: Metrics,
    make_worker: MakeWorker,
) -> None:
    release = asyncio.Event()

    async def hang(_seen: Received) -> int:
        await release.wait()
        return 200

    receiver.respond = hang
    await read_decided(service, client, receiver.url())
    worker = make_worker(timeout=0.3)
    try:
        assert await worker.run_once() == 1
    finally:
        release.set()
    (row,) = await outbox(store.engine)
    assert row.delivered_at is None
    assert row.dead_at is None
    assert row.last_status is None
    assert row.last_error == "no answer within 0.3 s"
    assert counter(metrics.callback_attempts, result="failed") == 1


@pytest.mark.parametrize("status", [302, 307])
async def test_redirects_are_not_followed(
    status: int,
    store: SqlStore,
    service: ApprovalService,
    client: ApiClient,
    receiver: Receiver,
    make_worker: MakeWorker,
) -> None:
    receiver.answers.append(status)
    await read_decided(service, client, receiver.url())
    assert await make_worker().run_once() == 1
    assert receiver.elsewhere == []
    (row,) = await outbox(store.engine)
    assert (row.last_status, row.last_error) == (status, f"HTTP {status}")
    assert row.delivered_at is None


async def test_dead_after_the_last_attempt_of_the_schedule(
    store: SqlStore,
    service: ApprovalService,
    client: ApiClient,
    clock: ManualClock,
    receiver: Receiver,
    metrics: Metrics,
    make_worker: MakeWorker,
) -> None:
    async def fail(_seen: Received) -> int:
        return 500

    receiver.respond = fail
    request = await read_decided(service, client, receiver.url())
    worker = make_worker()
    start = clock.now()
    offsets = []
    for attempt in range(1, DEFAULT_SCHEDULE.attempts + 1):
        offsets.append((clock.now() - start).total_seconds())
        assert await worker.run_once() == 1
        (row,) = await outbox(store.engine)
        if attempt < DEFAULT_SCHEDULE.attempts:
            wait = row.next_attempt_at - clock.now()
            assert wait == timedelta(seconds=DEFAULT_SCHEDULE.nominal_delay(attempt))
            clock.advance(seconds=wait.total_seconds())
    assert offsets == [
        0,
        10,
        35,
        97.5,
        253.75,
        644.375,
        1620.9375,
        4062.34375,
        7662.34375,
        11262.34375,
    ]

    (row,) = await outbox(store.engine)
    assert row.dead_at == clock.now()
    assert row.attempts == DEFAULT_SCHEDULE.attempts
    clock.advance(days=2)
    assert await worker.run_once() == 0
    assert len(receiver.received) == DEFAULT_SCHEDULE.attempts
    assert len({r.delivery_id for r in receiver.received}) == 1

    chained = await events(store.engine, "callback.attempt", "callback.dead")
    assert [e for e, _, _ in chained] == ["callback.attempt"] * 10 + ["callback.dead"]
    assert {rid for _, rid, _ in chained} == {request.id}
    last = chained[-2][2]
    assert (last["attempt"], last["dead"], last["next_attempt_at"]) == (10, True, None)
    assert chained[-1][2]["attempts"] == 10
    assert chained[-1][2]["reason"] == "HTTP 500"
    assert await ledger_ok(store.engine)
    assert counter(metrics.callback_attempts, result="failed") == 9
    assert counter(metrics.callback_attempts, result="dead") == 1
    assert metrics.outbox_depth._value.get() == 0


async def test_loopback_is_refused_unless_private_callbacks_are_allowed(
    store: SqlStore,
    service: ApprovalService,
    client: ApiClient,
    receiver: Receiver,
    metrics: Metrics,
    make_worker: MakeWorker,
) -> None:
    await read_decided(service, client, receiver.url())
    assert await make_worker(allow_private=False).run_once() == 1
    assert receiver.received == []
    (row,) = await outbox(store.engine)
    assert row.dead_at is not None
    assert row.last_error.startswith("destination refused: host '127.0.0.1' resolves to 127.0.0.1")
    ((_, _, dead),) = await events(store.engine, "callback.dead")
    assert dead["reason"] == row.last_error
    assert counter(metrics.callback_attempts, result="refused") == 1
    assert await ledger_ok(store.engine)


async def test_a_client_without_a_callback_secret_gets_nothing_unsigned(
    store: SqlStore,
    service: ApprovalService,
    example_policy: object,
    clock: ManualClock,
    receiver: Receiver,
    metrics: Metrics,
    make_worker: MakeWorker,
) -> None:
    keyless = ApprovalService(store, service.policy, clock)  # no sealer: no secret made
    bare, _token, secret = await keyless.add_client("bare", None)
    assert secret is None
    await read_decided(keyless, bare, receiver.url())
    assert await make_worker().run_once() == 1
    assert receiver.received == []
    (row,) = await outbox(store.engine)
    assert row.dead_at is not None
    assert row.last_error == "client 'bare' has no callback secret"
    assert counter(metrics.callback_attempts, result="refused") == 1


async def test_a_decision_wakes_the_running_worker_and_stop_closes_its_session(
    store: SqlStore,
    service: ApprovalService,
    client: ApiClient,
    receiver: Receiver,
    make_worker: MakeWorker,
) -> None:
    sessions: list[aiohttp.ClientSession] = []

    def session() -> aiohttp.ClientSession:
        sessions.append(aiohttp.ClientSession())
        return sessions[-1]

    worker = make_worker(poll_interval=60, session=session)
    service.listeners.append(worker)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.1)  # idle now, for a minute unless woken
    await export_approved(service, client, receiver.url())
    await eventually(lambda: len(receiver.delivered()) == 1, within=3)
    await worker.stop()
    await asyncio.wait_for(task, 2)
    assert len(sessions) == 1
    assert sessions[0].closed
    (row,) = await outbox(store.engine)
    assert row.delivered_at is not None


async def test_a_given_session_is_left_open(
    service: ApprovalService, client: ApiClient, receiver: Receiver, make_worker: MakeWorker
) -> None:
    async with aiohttp.ClientSession() as session:
        worker = make_worker(session=session)
        await read_decided(service, client, receiver.url())
        assert await worker.run_once() == 1
        await worker.aclose()
        assert not session.closed
    assert len(receiver.delivered()) == 1


async def test_cancelled_mid_delivery_the_row_is_retried_after_its_lease(
    store: SqlStore,
    service: ApprovalService,
    client: ApiClient,
    clock: ManualClock,
    receiver: Receiver,
    make_worker: MakeWorker,
) -> None:
    release = asyncio.Event()

    async def hang(_seen: Received) -> int:
        await release.wait()
        return 200

    receiver.respond = hang
    await read_decided(service, client, receiver.url())
    worker = make_worker(lease=30)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: len(receiver.received) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert worker._session is None  # closed on the way out
    release.set()

    (row,) = await outbox(store.engine)
    assert row.attempts == 1
    assert row.delivered_at is None
    assert row.next_attempt_at == clock.now() + timedelta(seconds=30)
    assert await events(store.engine, "callback.attempt") == []  # the attempt never ended

    receiver.respond = None
    successor = make_worker()
    assert await successor.run_once() == 0  # still leased
    clock.advance(seconds=30)
    assert await successor.run_once() == 1
    assert receiver.received[0].delivery_id == receiver.received[1].delivery_id
    (row,) = await outbox(store.engine)
    assert row.delivered_at is not None
    assert row.attempts == 2


async def test_a_name_that_does_not_resolve_is_retried_not_killed(
    store: SqlStore,
    service: ApprovalService,
    client: ApiClient,
    metrics: Metrics,
    make_worker: MakeWorker,
) -> None:
    # A failed lookup may be a passing DNS outage: the schedule goes on.
    await read_decided(service, client, "https://callback-test.invalid/hook")
    assert await make_worker(allow_private=False).run_once() == 1
    (row,) = await outbox(store.engine)
    assert row.dead_at is None
    assert row.last_error.startswith(
        "destination not checked: host 'callback-test.invalid' does not resolve"
    )
    assert counter(metrics.callback_attempts, result="failed") == 1


async def test_stop_is_final(make_worker: MakeWorker) -> None:
    worker = make_worker()
    await worker.stop()
    await asyncio.wait_for(worker.run(), 1)  # returns at once


def test_lease_must_outlast_an_attempt(make_worker: MakeWorker) -> None:
    with pytest.raises(ValueError, match="lease"):
        make_worker(lease=20, timeout=10)
