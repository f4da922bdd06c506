"""Several workers on one database: every callback once; a killed worker's callbacks still arrive.

These run on the wall clock (workers in other processes cannot share a manual one).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from countersign.callbacks.worker import CallbackWorker
from countersign.crypto import SecretBox
from countersign.metrics import Metrics
from countersign.policy import Policy
from countersign.ports import ApiClient
from countersign.service import ApprovalService
from storage import SqlStore, create_engine
from storage.outbox import pending_count
from tests.callbacks._receiver import Received, Receiver, eventually
from tests.callbacks._scenario import counter, events, ledger_ok, outbox, read_decided
from tests.callbacks._worker_process import SERVER_KEY

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Wall:
    """A service on the wall clock, its client ``agent`` and a receiver that knows its secret."""

    engine: AsyncEngine
    service: ApprovalService
    client: ApiClient
    receiver: Receiver

    async def pending(self) -> int:
        async with self.engine.connect() as conn:
            return await pending_count(conn)


@pytest.fixture
async def wall(database_url: str, example_policy: Policy) -> AsyncIterator[Wall]:
    """The test database on the wall clock, with a client and a live receiver."""
    engine = create_engine(database_url)
    service = ApprovalService(SqlStore(engine), example_policy, sealer=SecretBox(SERVER_KEY))
    client, _token, secret = await service.add_client("agent", "owner@example.com")
    receiver = Receiver(secret=secret)
    await receiver.start()
    yield Wall(engine, service, client, receiver)
    await receiver.close()
    await engine.dispose()


async def test_two_workers_deliver_each_of_100_decisions_exactly_once(
    database_url: str, example_policy: Policy, wall: Wall
) -> None:
    service, client, receiver = wall.service, wall.client, wall.receiver

    async def brief_work(_seen: Received) -> int:
        await asyncio.sleep(0.002)
        return 200

    receiver.respond = brief_work
    for n in range(100):
        await read_decided(service, client, receiver.url(), n)

    engines = [create_engine(database_url) for _ in range(2)]
    metrics = [Metrics() for _ in engines]
    workers = [
        CallbackWorker(
            engine,
            ApprovalService(SqlStore(engine), example_policy, sealer=SecretBox(SERVER_KEY)),
            figures,
            allow_private=True,
            poll_interval=0.05,
            concurrency=10,
            batch_size=10,
        )
        for engine, figures in zip(engines, metrics, strict=True)
    ]
    started = time.monotonic()
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        await eventually(lambda: len(receiver.delivered()) >= 100, within=30)
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.3)  # time for a duplicate to show up, if there were one
    finally:
        for worker in workers:
            await worker.stop()
        await asyncio.gather(*tasks)
        for engine in engines:
            await engine.dispose()
    print(
        f"\n{database_url.split(':')[0]}: 100 callbacks in {elapsed:.2f} s, "
        f"{100 / elapsed:.0f}/s; split {[counter(m.callback_attempts, result='delivered') for m in metrics]}"
    )

    ids = [r.delivery_id for r in receiver.received]
    assert len(ids) == 100
    assert len(set(ids)) == 100
    assert all(r.signature_ok for r in receiver.received)
    rows = await outbox(wall.engine)
    assert {row.delivery_id for row in rows} == set(ids)
    assert all(row.delivered_at is not None and row.attempts == 1 for row in rows)
    split = [counter(m.callback_attempts, result="delivered") for m in metrics]
    assert sum(split) == 100
    assert all(share > 0 for share in split), split
    assert len(await events(wall.engine, "callback.attempt")) == 100
    assert await ledger_ok(wall.engine)
    assert await wall.pending() == 0


async def _spawn(url: str, lease: float, concurrency: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.callbacks._worker_process",
        url,
        str(lease),
        str(concurrency),
        cwd=ROOT,
    )


async def test_a_worker_killed_mid_delivery_loses_nothing(database_url: str, wall: Wall) -> None:
    service, client, receiver, engine = wall.service, wall.client, wall.receiver, wall.engine
    healthy = asyncio.Event()
    answered = 0

    async def five_then_hang(_seen: Received) -> int:
        # The first five get through; the rest hang until the receiver "recovers".
        nonlocal answered
        answered += 1
        if answered > 5:
            await healthy.wait()
        return 200

    receiver.respond = five_then_hang
    for n in range(20):
        await read_decided(service, client, receiver.url(), n)

    async def delivered() -> int:
        return sum(row.delivered_at is not None for row in await outbox(engine))

    first = await _spawn(database_url, 3.0, 4)
    second: asyncio.subprocess.Process | None = None
    try:
        # Five answered and recorded, the next ones hanging (the worker gives up after 1 s).
        await eventually(lambda: len(receiver.received) > 5, within=15)
        deadline = time.monotonic() + 5
        while await delivered() < 5:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # let the worker fill its four slots
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        in_flight = {r.delivery_id for r in receiver.received if r.status is None}
        assert 1 <= len(in_flight) <= 4
        healthy.set()
        second = await _spawn(database_url, 3.0, 4)
        deadline = time.monotonic() + 20
        while await delivered() < 20:
            assert time.monotonic() < deadline, "not every callback arrived"
            assert second.returncode is None
            await asyncio.sleep(0.05)
    finally:
        for process in (first, second):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()

    seen = Counter(r.delivery_id for r in receiver.received)
    rows = await outbox(engine)
    assert set(seen) == {row.delivery_id for row in rows}
    # At least once: only those in flight when the worker died arrived twice.
    assert {i for i, times in seen.items() if times > 1} == in_flight
    assert max(seen.values()) == 2
    assert all(r.signature_ok for r in receiver.received)
    assert all(row.attempts == 2 for row in rows if row.delivery_id in in_flight)
    # The killed attempts left no ledger entry; every delivery has one.
    attempts = [d for _, _, d in await events(engine, "callback.attempt")]
    assert len(attempts) == 20
    assert all(d["delivered"] for d in attempts)
    assert {d["delivery_id"] for d in attempts if d["attempt"] == 2} >= in_flight
    assert await ledger_ok(engine)
    assert await wall.pending() == 0
