"""Reading, cancelling and listing requests; votes cast through the service show up."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from countersign.api.schemas import HistoryPage
from tests.api.conftest import ADMIN_TOKEN, EXPORT, Api


async def test_votes_show_in_quorum_votes_and_decision(api: Api) -> None:
    token = await api.client()
    request_id = await api.create(token)
    await api.service.cast_vote(request_id, "alice@example.com", "slack", "approve", "fine")
    mid = (await api.call("GET", f"/v1/requests/{request_id}", token)).body
    assert mid["status"] == "pending"
    assert mid["quorum"]["approvals"] == 1
    assert [(v["voter"], v["platform"], v["decision"], v["comment"]) for v in mid["votes"]] == [
        ("alice@example.com", "slack", "approve", "fine")
    ]
    await api.service.cast_vote(request_id, "carol@example.com", "teams", "approve")
    done = (await api.call("GET", f"/v1/requests/{request_id}", token)).body
    assert done["status"] == "approved"
    assert done["quorum"]["approvals"] == 2
    assert done["decided_at"] is not None
    assert done["decision"]["outcome"] == "approved"
    assert done["decision"]["by"] == ["alice@example.com", "carol@example.com"]
    assert done["decision"]["params_sha256"] == done["params_sha256"]


async def test_unknown_request_is_404(api: Api) -> None:
    token = await api.client()
    reply = await api.call("GET", "/v1/requests/req_nope", token)
    assert "req_nope" in reply.problem(404)["detail"]


async def test_cancel_own_pending_request_then_409(api: Api) -> None:
    token = await api.client()
    request_id = await api.create(token)
    reply = await api.call(
        "POST", f"/v1/requests/{request_id}/cancel", token, json={"reason": "not needed"}
    )
    assert reply.status == 200
    assert reply.body["status"] == "cancelled"
    assert reply.body["decision"]["reason"] == "not needed"
    again = await api.call("POST", f"/v1/requests/{request_id}/cancel", token)
    assert again.problem(409)["type"].endswith("/already_decided")
    bad = await api.call("POST", f"/v1/requests/{request_id}/cancel", token, json={"why": 1})
    assert bad.fields() == {"why"}
    # A request the policy decided at once is final from the start.
    read = await api.create(token, {"action": "db.read", "resource": "x", "reason": "look"})
    (await api.call("POST", f"/v1/requests/{read}/cancel", token)).problem(409)


async def _history(api: Api, token: str, query: str = "") -> dict[str, Any]:
    reply = await api.call("GET", f"/v1/requests{query}", token)
    assert reply.status == 200, reply.body
    HistoryPage.model_validate(reply.body)
    return dict(reply.body)


async def test_history_filters(api: Api) -> None:
    token = await api.client()
    before = datetime.now(UTC) - timedelta(seconds=1)
    export = await api.create(token)
    read = await api.create(
        token, {"action": "db.read", "resource": "stage/x", "reason": "r", "requested_by": "a@b.co"}
    )
    voted = await api.create(
        token, {"action": "deploy", "resource": "stage/web", "reason": "ship it"}
    )
    await api.service.cast_vote(voted, "bob@example.com", "slack", "deny", "not today")
    after = datetime.now(UTC) + timedelta(seconds=1)

    def ids(page: dict[str, Any]) -> list[str]:
        return [item["id"] for item in page["items"]]

    assert ids(await _history(api, token)) == [voted, read, export]
    assert ids(await _history(api, token, "?status=pending")) == [export]
    assert ids(await _history(api, token, "?status=denied")) == [voted]
    assert ids(await _history(api, token, "?action=db.read")) == [read]
    assert ids(await _history(api, token, "?resource=prod/customers")) == [export]
    assert ids(await _history(api, token, "?requested_by=DANA@example.com")) == [export]
    assert ids(await _history(api, token, "?approver=bob@example.com")) == [voted]
    since = before.isoformat().replace("+00:00", "Z")
    assert len(ids(await _history(api, token, f"?since={since}"))) == 3
    assert ids(await _history(api, token, f"?until={since}")) == []
    until = after.isoformat().replace("+00:00", "Z")
    assert len(ids(await _history(api, token, f"?until={until}&status=pending"))) == 1
    assert ids(await _history(api, token, "?status=approved&action=db.read")) == [read]


async def test_history_pages_with_a_cursor(api: Api) -> None:
    token = await api.client()
    other = await api.client("other-bot")
    created = []
    for n in range(7):
        created.append(await api.create(token, reason=f"export {n}"))
        await api.create(other, reason=f"theirs {n}")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await _history(api, token, query)
        pages += 1
        seen += [item["id"] for item in page["items"]]
        assert all(item["client"] == "copilot" for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3  # 3 + 3 + 1, and no empty trailing page
    assert seen == list(reversed(created))
    everyone = await _history(api, ADMIN_TOKEN, "?limit=200")
    assert len(everyone["items"]) == 14 and everyone["next_cursor"] is None


async def test_history_rejects_bad_queries(api: Api) -> None:
    token = await api.client()
    for query, field in (
        ("?limit=0", "limit"),
        ("?limit=201", "limit"),
        ("?limit=ten", "limit"),
        ("?status=maybe", "status"),
        ("?since=yesterday", "since"),
        ("?until=2026-13-01", "until"),
        ("?colour=blue", "colour"),
        ("?status=pending&status=denied", "status"),
    ):
        reply = await api.call("GET", f"/v1/requests{query}", token)
        assert reply.fields() == {field}, query


async def test_concurrent_creates_with_one_key_make_one_request(api: Api) -> None:
    token = await api.client()
    key = {"Idempotency-Key": "race"}
    replies = await asyncio.gather(
        *(api.call("POST", "/v1/requests", token, json=EXPORT, headers=key) for _ in range(5))
    )
    assert sorted(r.status for r in replies) == [200, 200, 200, 200, 201]
    assert len({r.body["id"] for r in replies}) == 1
