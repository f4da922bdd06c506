"""Fixtures for the callback tests: a live receiver, a client with a callback secret, workers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from countersign.callbacks.worker import CallbackWorker
from countersign.metrics import Metrics
from countersign.ports import ApiClient
from countersign.service import ApprovalService
from storage import SqlStore
from tests.callbacks._receiver import Receiver
from tests.conftest import ManualClock


@pytest.fixture
async def receiver(clock: ManualClock) -> AsyncIterator[Receiver]:
    """A receiver on 127.0.0.1 that checks signatures against the manual clock."""
    found = Receiver(now=lambda: int(clock.now().timestamp()))
    await found.start()
    yield found
    await found.close()


@pytest.fixture
async def client(service: ApprovalService, receiver: Receiver) -> ApiClient:
    """The API client ``agent``; the receiver knows its callback secret."""
    found, _token, secret = await service.add_client("agent", "owner@example.com")
    assert secret is not None
    receiver.secret = secret
    return found


@pytest.fixture
def metrics() -> Metrics:
    """A fresh metrics registry."""
    return Metrics()


@pytest.fixture
async def make_worker(
    store: SqlStore, service: ApprovalService, metrics: Metrics, clock: ManualClock
) -> AsyncIterator[Callable[..., CallbackWorker]]:
    """Build workers on the test database and the manual clock (closed afterwards)."""
    made: list[CallbackWorker] = []

    def make(**options: Any) -> CallbackWorker:
        options.setdefault("allow_private", True)
        options.setdefault("clock", clock)
        options.setdefault("draw", lambda: 1.0)
        worker = CallbackWorker(store.engine, service, metrics, **options)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.stop()
        await worker.aclose()
