"""Decisions with callbacks, and what the outbox and ledger hold afterwards."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from countersign.core import RequestSpec
from countersign.core.model import ApprovalRequest
from countersign.ports import ApiClient
from countersign.service import ApprovalService
from storage import ledger
from storage.tables import OutboxRow

O = OutboxRow.__table__  # type: ignore[attr-defined]  # noqa: E741


async def read_decided(
    service: ApprovalService, client: ApiClient, url: str, n: int = 0
) -> ApprovalRequest:
    """A ``db.read`` request: the example policy allows it at once, so its callback is queued."""
    spec = RequestSpec(
        action="db.read", resource=f"prod/t{n}", reason="callback test", callback_url=url
    )
    created = await service.create_request(client, spec)
    assert created.request.status.is_final
    return created.request


async def export_approved(service: ApprovalService, client: ApiClient, url: str) -> ApprovalRequest:
    """A big production export, approved by two of its five approvers."""
    spec = RequestSpec(
        action="db.export",
        resource="prod/x",
        reason="Quarterly churn analysis",
        requested_by="dana@example.com",
        params={"rows": 120000},
        callback_url=url,
    )
    request = (await service.create_request(client, spec)).request
    assert not request.status.is_final
    first = await service.cast_vote(request.id, "alice@example.com", "slack", "approve")
    assert not first.decided
    second = await service.cast_vote(request.id, "erin@example.com", "teams", "approve")
    assert second.decided
    return second.request


async def outbox(engine: AsyncEngine) -> list[Any]:
    """Every outbox row, oldest first."""
    async with engine.connect() as conn:
        return list((await conn.execute(select(O).order_by(O.c.id))).all())


async def events(engine: AsyncEngine, *names: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    """Ledger entries (event, request id, data) with one of ``names``, in order."""
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT event, request_id, data FROM ledger ORDER BY seq"))
        return [(r.event, r.request_id, json.loads(r.data)) for r in rows if r.event in names]


async def ledger_ok(engine: AsyncEngine) -> bool:
    """The chain verifies."""
    async with engine.connect() as conn:
        report = await ledger.verify(conn)
    return report.ok


def counter(metric: Any, **labels: str) -> float:
    """The value of a labelled prometheus counter."""
    return float(metric.labels(**labels)._value.get())
