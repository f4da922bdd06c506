"""The waiters' safety net: one status query per sweep wakes those whose request is final."""

from __future__ import annotations

import asyncio

import pytest

from countersign.api import waiters as waiters_module
from countersign.api.waiters import SWEEP_CHUNK, Waiters
from countersign.core import RequestSpec, Status
from countersign.crypto import SecretBox
from countersign.service import ApprovalService
from storage import SqlStore
from tests.conftest import ManualClock
from tests.service.test_service import EXPORT, _client


@pytest.mark.parametrize("chunk", [SWEEP_CHUNK, 2])
async def test_a_sweep_wakes_only_the_waiters_of_requests_decided_elsewhere(
    service: ApprovalService,
    store: SqlStore,
    clock: ManualClock,
    chunk: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(waiters_module, "SWEEP_CHUNK", chunk)
    client = await _client(service)
    ids = [
        (
            await service.create_request(client, RequestSpec(**{**EXPORT, "resource": f"r{i}"}))
        ).request.id
        for i in range(3)
    ]
    waiters = Waiters(service, recheck_seconds=3600)  # no sweeps of its own: we sweep
    waits = {i: asyncio.create_task(waiters.wait(i, 60)) for i in ids}
    await asyncio.sleep(0.05)
    assert len(waiters) == 3

    # Another process (its own service, so these waiters hear nothing) cancels one.
    elsewhere = ApprovalService(service.store, service.policy, clock, sealer=SecretBox("k" * 32))
    await elsewhere.cancel(ids[1], by="owen@example.com")
    await asyncio.sleep(0.05)
    assert not waits[ids[1]].done()

    queries: list[int] = []
    real = service.final_request_ids

    async def counted(request_ids: list[str]) -> set[str]:
        queries.append(len(request_ids))
        return await real(request_ids)

    service.final_request_ids = counted  # type: ignore[method-assign]
    assert await waiters.sweep() == 1
    assert (await asyncio.wait_for(waits[ids[1]], 5)).status is Status.CANCELLED
    # One query for all the waiters (in chunks of SWEEP_CHUNK ids), not one read each.
    assert queries == ([3] if chunk >= 3 else [2, 1])
    assert not waits[ids[0]].done() and not waits[ids[2]].done()
    waiters.close()
    for request_id in (ids[0], ids[2]):
        assert (await asyncio.wait_for(waits[request_id], 5)).status is Status.PENDING
