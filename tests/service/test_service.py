"""The service on real SQLite and real PostgreSQL: state, ledger and outbox move together."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from countersign.core import (
    AlreadyDecided,
    Expired,
    IdempotencyConflict,
    InvalidEdit,
    InvalidRequest,
    NotAnApprover,
    NotFound,
    RequestSpec,
    SelfApproval,
    Status,
    params_sha256,
)
from countersign.policy import parse_policy
from countersign.ports import ApiClient, HistoryQuery
from countersign.service import ApprovalService
from storage import SqlStore
from storage import ledger as chain
from tests.conftest import ManualClock

EXPORT = dict(
    action="db.export",
    resource="prod/customers",
    reason="Quarterly churn analysis (FIN-42)",
    requested_by="dana@example.com",
    params={"table": "customers", "rows": 120000},
    context={"ticket": "FIN-42"},
    callback_url="https://agent.example.com/hook",
)


async def _client(
    service: ApprovalService, name: str = "copilot", owner: str | None = "owen@example.com"
) -> ApiClient:
    client, _token, _secret = await service.add_client(name, owner)
    return client


async def _events(
    store: SqlStore, request_id: str | None = None
) -> list[tuple[str, str | None, dict[str, Any]]]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT event, actor, data, request_id FROM ledger ORDER BY seq")
        )
        return [
            (r.event, r.actor, json.loads(r.data))
            for r in rows
            if request_id in (None, r.request_id)
        ]


async def _verified(store: SqlStore) -> int:
    async with store.engine.connect() as conn:
        report = await chain.verify(conn)
    assert report.ok, report.problem
    return report.checked


async def test_two_approvals_decide_and_everything_is_recorded(
    service: ApprovalService, store: SqlStore, clock: ManualClock
) -> None:
    client = await _client(service)
    created = await service.create_request(client, RequestSpec(**EXPORT))
    request = created.request
    assert created.created and request.status is Status.PENDING
    assert request.rule.name == "prod-export" and request.rule.quorum == 2
    assert "frank@example.com" in request.rule.approvers  # groups and people resolved

    clock.advance(minutes=1)
    first = await service.cast_vote(
        request.id, "Alice@Example.com", "slack", "approve", comment="ok"
    )
    assert not first.decided
    clock.advance(minutes=1)
    second = await service.cast_vote(request.id, "frank@example.com", "teams", "approve")
    assert second.decided and second.request.status is Status.APPROVED

    stored = await service.get_request(request.id)
    assert stored.status is Status.APPROVED
    assert [(v.voter, v.platform, v.comment) for v in stored.votes] == [
        ("alice@example.com", "slack", "ok"),
        ("frank@example.com", "teams", None),
    ]
    assert stored.decided_by == ("alice@example.com", "frank@example.com")
    assert stored.approved_params == EXPORT["params"]
    assert stored.decided_at == clock.now()

    events = await _events(store, request.id)
    assert [e[0] for e in events] == [
        "request.created",
        "policy.decided",
        "vote.cast",
        "vote.cast",
        "request.decided",
    ]
    assert events[0][2]["params"] == EXPORT["params"]
    assert events[-1][2]["status"] == "approved"
    assert await _verified(store) == 6  # client.added + the five above

    async with store.engine.connect() as conn:
        outbox = (await conn.execute(text("SELECT url, event, payload FROM outbox"))).all()
    assert len(outbox) == 1
    payload = json.loads(outbox[0].payload)
    assert outbox[0].url == EXPORT["callback_url"]
    assert payload["status"] == "approved" and payload["quorum"]["approvals"] == 2


REFUSALS = [
    ("requester approves", "dana@example.com", "approve", SelfApproval, "self_approval"),
    ("client owner approves", "OWEN@example.com", "approve", SelfApproval, "self_approval"),
    ("stranger votes", "mallory@example.com", "approve", NotAnApprover, "not_an_approver"),
]


@pytest.mark.parametrize(
    ("voter", "choice", "error", "code"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
async def test_refused_votes_change_nothing_and_are_recorded(
    service: ApprovalService,
    store: SqlStore,
    voter: str,
    choice: str,
    error: type[Exception],
    code: str,
) -> None:
    request = (await service.create_request(await _client(service), RequestSpec(**EXPORT))).request
    with pytest.raises(error):
        await service.cast_vote(request.id, voter, "slack", choice)
    after = await service.get_request(request.id)
    assert after.status is Status.PENDING and after.votes == ()
    refused = [e for e in await _events(store, request.id) if e[0] == "vote.refused"]
    assert len(refused) == 1 and refused[0][2]["rule"] == code and refused[0][1] == voter.lower()
    await _verified(store)


async def test_second_vote_by_same_person_is_refused_and_recorded(
    service: ApprovalService, store: SqlStore
) -> None:
    request = (await service.create_request(await _client(service), RequestSpec(**EXPORT))).request
    await service.cast_vote(request.id, "alice@example.com", "slack", "approve")
    with pytest.raises(Exception) as info:
        await service.cast_vote(request.id, "ALICE@example.com", "teams", "approve")
    assert type(info.value).__name__ == "AlreadyVoted"
    assert (await service.get_request(request.id)).status is Status.PENDING
    assert [e[0] for e in await _events(store, request.id)][-1] == "vote.refused"


async def test_vote_on_unknown_request(service: ApprovalService, store: SqlStore) -> None:
    with pytest.raises(NotFound):
        await service.cast_vote("req_nope", "alice@example.com", "slack", "approve")
    assert (await _events(store, "req_nope"))[0][2]["rule"] == "not_found"


async def test_bad_voter_address_is_invalid(service: ApprovalService) -> None:
    with pytest.raises(InvalidRequest):
        await service.cast_vote("req_x", "not-an-address", "slack", "approve")


async def test_requester_deny_withdraws(service: ApprovalService, store: SqlStore) -> None:
    request = (await service.create_request(await _client(service), RequestSpec(**EXPORT))).request
    result = await service.cast_vote(
        request.id, "dana@example.com", "slack", "deny", comment="wrong table"
    )
    assert result.request.status is Status.CANCELLED and result.vote is None
    stored = await service.get_request(request.id)
    assert stored.status is Status.CANCELLED and stored.votes == ()
    assert stored.decision_reason == "withdrawn by the requester: wrong table"
    assert [e[0] for e in await _events(store, request.id)][-1] == "request.cancelled"


async def test_policy_decides_at_once(service: ApprovalService, store: SqlStore) -> None:
    client = await _client(service)
    allowed = (
        await service.create_request(client, RequestSpec(**{**EXPORT, "action": "db.read.rows"}))
    ).request
    denied = (
        await service.create_request(client, RequestSpec(**{**EXPORT, "action": "db.drop"}))
    ).request
    assert allowed.status is Status.APPROVED and allowed.decided_by == ("policy:safe-reads",)
    assert denied.status is Status.DENIED and denied.rule.name == "no-prod-drops"
    assert [e[0] for e in await _events(store, allowed.id)] == [
        "request.created",
        "policy.decided",
        "request.decided",
    ]
    with pytest.raises(AlreadyDecided):
        await service.cast_vote(denied.id, "alice@example.com", "slack", "approve")


async def test_no_matching_rule_denies(store: SqlStore, clock: ManualClock) -> None:
    policy = parse_policy(
        "rules:\n  - name: only-reads\n    match: {action: 'db.read'}\n    decision: allow\n"
    )
    service = ApprovalService(store, policy, clock)
    request = (await service.create_request(await _client(service), RequestSpec(**EXPORT))).request
    assert request.status is Status.DENIED and request.rule.name == "(no matching rule)"


async def test_expiry(service: ApprovalService, store: SqlStore, clock: ManualClock) -> None:
    client = await _client(service)
    request = (await service.create_request(client, RequestSpec(**EXPORT, ttl_seconds=60))).request
    other = (await service.create_request(client, RequestSpec(**EXPORT))).request
    clock.advance(seconds=59)
    assert await service.expire_due() == []
    clock.advance(seconds=1)
    expired = await service.expire_due()
    assert [r.id for r in expired] == [request.id]
    assert (await service.get_request(request.id)).status is Status.EXPIRED
    assert (await service.get_request(other.id)).status is Status.PENDING
    with pytest.raises(Expired):
        await service.cast_vote(request.id, "alice@example.com", "slack", "approve")
    assert await service.expire_due() == []  # once only
    # A vote that arrives after expires_at but before the job runs expires it, and is refused.
    clock.advance(hours=1)
    with pytest.raises(Expired):
        await service.cast_vote(other.id, "alice@example.com", "slack", "approve")
    assert (await service.get_request(other.id)).status is Status.EXPIRED
    events = [e[0] for e in await _events(store, other.id)]
    assert events[-2:] == ["request.expired", "vote.refused"]
    await _verified(store)


async def test_cancel(service: ApprovalService, store: SqlStore) -> None:
    mine = await _client(service)
    theirs = await _client(service, "other-bot", None)
    request = (await service.create_request(mine, RequestSpec(**EXPORT))).request
    with pytest.raises(NotFound):
        await service.cancel(request.id, by="other-bot", client=theirs.name)
    cancelled = await service.cancel(
        request.id, by=mine.name, reason="not needed", client=mine.name
    )
    assert cancelled.status is Status.CANCELLED
    with pytest.raises(AlreadyDecided):
        await service.cancel(request.id, by=mine.name, client=mine.name)
    with pytest.raises(AlreadyDecided):
        await service.cast_vote(request.id, "alice@example.com", "slack", "approve")


async def test_idempotency(service: ApprovalService, store: SqlStore) -> None:
    client = await _client(service)
    other = await _client(service, "other-bot", None)
    first = await service.create_request(client, RequestSpec(**EXPORT), idempotency_key="k1")
    again = await service.create_request(client, RequestSpec(**EXPORT), idempotency_key="k1")
    assert first.created and not again.created and again.request.id == first.request.id
    with pytest.raises(IdempotencyConflict):
        await service.create_request(
            client, RequestSpec(**{**EXPORT, "reason": "other"}), idempotency_key="k1"
        )
    theirs = await service.create_request(other, RequestSpec(**EXPORT), idempotency_key="k1")
    assert theirs.created and theirs.request.id != first.request.id  # keys are per client
    async with store.engine.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM requests"))).scalar_one()
    assert count == 2


async def test_approve_with_changes_binds_to_the_edit(service: ApprovalService) -> None:
    request = (await service.create_request(await _client(service), RequestSpec(**EXPORT))).request
    smaller = {"table": "customers", "rows": 5000}
    await service.cast_vote(
        request.id, "alice@example.com", "slack", "approve", edited_params=smaller
    )
    mid = await service.get_request(request.id)
    assert mid.status is Status.PENDING and mid.votes[0].edited_params == smaller
    await service.cast_vote(
        request.id, "bob@example.com", "slack", "approve"
    )  # the original: no pooling
    assert (await service.get_request(request.id)).status is Status.PENDING
    await service.cast_vote(
        request.id, "carol@example.com", "teams", "approve", edited_params=smaller
    )
    done = await service.get_request(request.id)
    assert done.status is Status.APPROVED
    assert done.approved_params == smaller and done.edited_params == smaller
    assert done.approved_params_sha256 == params_sha256(smaller)
    assert done.decided_by == ("alice@example.com", "carol@example.com")


async def test_history_filters_and_pages(service: ApprovalService, clock: ManualClock) -> None:
    client = await _client(service)
    ids = []
    for i in range(7):
        clock.advance(seconds=1)
        spec = RequestSpec(
            **{**EXPORT, "resource": f"prod/t{i % 2}", "requested_by": f"u{i % 3}@example.com"}
        )
        ids.append((await service.create_request(client, spec)).request.id)
    await service.cast_vote(ids[0], "alice@example.com", "slack", "deny")

    page1 = await service.history(HistoryQuery(limit=3))
    page2 = await service.history(HistoryQuery(limit=3, cursor=page1[-1].id))
    page3 = await service.history(HistoryQuery(limit=3, cursor=page2[-1].id))
    assert [r.id for r in page1 + page2 + page3] == ids[::-1]
    assert [r.id for r in await service.history(HistoryQuery(status=Status.DENIED))] == [ids[0]]
    assert [r.id for r in await service.history(HistoryQuery(approver="ALICE@example.com"))] == [
        ids[0]
    ]
    assert len(await service.history(HistoryQuery(resource="prod/t1"))) == 3
    assert len(await service.history(HistoryQuery(requested_by="u0@example.com"))) == 3
    assert len(await service.history(HistoryQuery(action="db.read"))) == 0
    assert len(await service.history(HistoryQuery(client="copilot", since=clock.now()))) == 1


async def test_a_time_window_is_exact_at_its_edges(
    service: ApprovalService, clock: ManualClock
) -> None:
    """``since`` / ``until`` also bound the ids; the window stays exact to the microsecond."""
    client = await _client(service)
    made = []
    for step in (0, 86_400 * 30, 0.000_5, 0.000_5, 3_600):
        clock.advance(seconds=step)
        created = (await service.create_request(client, RequestSpec(**EXPORT))).request
        made.append(created)
    start, end = made[2].created_at, made[3].created_at  # half a millisecond apart
    window = await service.history(HistoryQuery(since=start, until=end))
    assert [r.id for r in window] == [made[2].id]
    assert [r.id for r in await service.history(HistoryQuery(until=start))] == [
        made[1].id,
        made[0].id,
    ]
    assert [r.id for r in await service.history(HistoryQuery(since=end))] == [
        made[4].id,
        made[3].id,
    ]
    month_ago = await service.history(HistoryQuery(until=made[0].created_at + timedelta(days=1)))
    assert [r.id for r in month_ago] == [made[0].id]


async def test_clients(service: ApprovalService) -> None:
    client, token, secret = await service.add_client("copilot", "Owen@Example.com")
    assert client.owner == "owen@example.com"
    assert (await service.authenticate(token)) == client
    assert await service.authenticate(token + "x") is None
    with pytest.raises(InvalidRequest):
        await service.add_client("copilot")
    await service.revoke_client("copilot")
    assert await service.authenticate(token) is None
    with pytest.raises(NotFound):
        await service.revoke_client("copilot")
    async with service.store.read() as tx:  # type: ignore[attr-defined]
        listed = await tx.list_clients()
    assert listed[0].revoked_at is not None
    async with service.store.engine.connect() as conn:  # type: ignore[attr-defined]
        stored = (await conn.execute(text("SELECT token_sha256 FROM api_clients"))).scalar_one()
    assert token not in stored and len(stored) == 64
    assert secret is not None and secret.startswith("whsec_")
    assert await service.callback_secret("copilot") == secret
    async with service.store.engine.connect() as conn:  # type: ignore[attr-defined]
        sealed = (await conn.execute(text("SELECT callback_secret FROM api_clients"))).scalar_one()
    assert secret not in sealed  # sealed at rest


async def test_nul_characters_from_chat_never_reach_the_database(
    service: ApprovalService, store: SqlStore
) -> None:
    request = (await service.create_request(await _client(service), RequestSpec(**EXPORT))).request
    with pytest.raises(InvalidEdit):
        await service.cast_vote(
            request.id, "alice@example.com", "slack", "approve", edited_params={"rows": "1\x00"}
        )
    assert [e[2]["rule"] for e in await _events(store, request.id) if e[0] == "vote.refused"] == [
        "invalid_edit"
    ]
    await service.cast_vote(
        request.id, "alice@example.com", "slack", "approve", comment="ok\x00 then"
    )
    stored = await service.get_request(request.id)
    assert stored.votes[0].comment == "ok then"


async def test_a_request_read_alone_is_the_request_read_in_a_transaction(
    service: ApprovalService, store: SqlStore
) -> None:
    """``Store.request_by_id`` (one snapshot job, no lock) reads what a transaction reads."""
    client = await _client(service)
    request_id = (await service.create_request(client, RequestSpec(**EXPORT))).request.id
    await service.cast_vote(request_id, "alice@example.com", "slack", "approve", comment="ok")
    async with store.read() as tx:
        in_transaction = await tx.get_request(request_id)
    alone = await store.request_by_id(request_id)
    assert alone == in_transaction
    assert alone is not None and [v.voter for v in alone.votes] == ["alice@example.com"]
    assert await store.request_by_id("req_none") is None
    # Reads never hold anything: a write goes through while reads run back to back.
    reads = [store.request_by_id(request_id) for _ in range(20)]
    vote = service.cast_vote(request_id, "bob@example.com", "slack", "approve")
    *seen, voted = await asyncio.gather(*reads, vote)
    assert voted.request.status.value == "approved"
    # Each read is one snapshot: before the vote or after it, never a mix of both.
    states = {(r.status.value, len(r.votes)) for r in seen if r is not None}
    assert states <= {("pending", 1), ("approved", 2)}, states
