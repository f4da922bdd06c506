"""POST /v1/requests over real HTTP: created, refused, replayed."""

from __future__ import annotations

import json

from countersign.api.schemas import RequestResource
from tests.api.conftest import EXPORT, Api, running


async def test_create_answers_201_with_location_and_the_resource(api: Api) -> None:
    token = await api.client()
    reply = await api.call("POST", "/v1/requests", token, json=EXPORT)
    assert reply.status == 201
    assert reply.content_type == "application/json"
    body = reply.body
    assert reply.headers["Location"] == f"https://countersign.example.com/v1/requests/{body['id']}"
    RequestResource.model_validate(body)  # the documented shape, no more, no less
    assert body["id"].startswith("req_")
    assert body["status"] == "pending"
    assert body["client"] == "copilot"
    assert body["rule"] == "prod-export"
    assert body["quorum"] == {
        "approvals_required": 2,
        "denials_required": 1,
        "approvals": 0,
        "denials": 0,
    }
    assert body["params"] == EXPORT["params"] and body["context"] == EXPORT["context"]
    assert body["decision"] is None and body["receipt"] is None


async def test_a_rule_that_decides_at_once_gives_a_final_request(api: Api) -> None:
    token = await api.client()
    read = await api.call(
        "POST", "/v1/requests", token, json={"action": "db.read", "resource": "x", "reason": "r"}
    )
    assert read.status == 201 and read.body["status"] == "approved"
    assert read.body["decision"]["by"] == ["policy:safe-reads"]
    drop = await api.call(
        "POST",
        "/v1/requests",
        token,
        json={"action": "db.drop", "resource": "prod/users", "reason": "cleanup"},
    )
    assert drop.status == 201 and drop.body["status"] == "denied"


async def test_every_bad_field_is_named_at_once(api: Api) -> None:
    token = await api.client()
    reply = await api.call(
        "POST",
        "/v1/requests",
        token,
        json={
            "action": "DB Export!",
            "resource": "",
            "requested_by": "not-an-address",
            "params": [1, 2],
            "context": {"ok": 1, "nested": {"no": True}},
            "callback_url": "ftp://agent.example.com/hook",
            "ttl_seconds": 0,
            "colour": "blue",
        },
    )
    problem = reply.problem(422)
    assert problem["type"] == "https://countersign.dev/problems/invalid_request"
    assert reply.fields() == {
        "action",
        "resource",
        "reason",  # missing
        "requested_by",
        "params",
        "context.nested",
        "callback_url",
        "ttl_seconds",
        "colour",  # unknown fields are refused, not ignored
    }
    assert all(e["message"] for e in problem["errors"])


async def test_types_are_not_coerced(api: Api) -> None:
    token = await api.client()
    reply = await api.call(
        "POST", "/v1/requests", token, json={**EXPORT, "ttl_seconds": "60", "resource": 5}
    )
    assert reply.fields() == {"ttl_seconds", "resource"}
    reply = await api.call("POST", "/v1/requests", token, json={**EXPORT, "ttl_seconds": True})
    assert reply.fields() == {"ttl_seconds"}


async def test_limits_match_the_core(api: Api) -> None:
    token = await api.client()
    too_many = {f"k{i}": i for i in range(21)}
    big_params = {"blob": "x" * (32 * 1024)}
    reply = await api.call(
        "POST",
        "/v1/requests",
        token,
        json={
            **EXPORT,
            "params": big_params,
            "context": too_many,
            "reason": "   ",
            "resource": "r" * 513,
        },
    )
    assert reply.fields() == {"params", "context", "reason", "resource"}
    ok = await api.call(
        "POST",
        "/v1/requests",
        token,
        json={**EXPORT, "context": {f"k{i}": i for i in range(20)}, "resource": "r" * 512},
    )
    assert ok.status == 201, ok.body


async def test_a_body_that_is_not_an_object_is_422(api: Api) -> None:
    token = await api.client()
    assert (await api.call("POST", "/v1/requests", token, json=[EXPORT])).fields() == {"body"}
    empty = await api.call("POST", "/v1/requests", token)
    assert empty.fields() == {"action", "resource", "reason"}


async def test_malformed_json_is_400(api: Api) -> None:
    token = await api.client()
    headers = {"Content-Type": "application/json"}
    for raw in (b'{"action": ', b'{"params": {"x": NaN}}', b"\xff\xfe{}", b"[" * 5000):
        reply = await api.call("POST", "/v1/requests", token, data=raw, headers=headers)
        problem = reply.problem(400)
        assert problem["type"].endswith("/malformed_json")


async def test_bodies_over_64_kib_are_413(api: Api) -> None:
    token = await api.client()
    body = json.dumps({**EXPORT, "reason": "x" * (64 * 1024)}).encode()
    reply = await api.call(
        "POST", "/v1/requests", token, data=body, headers={"Content-Type": "application/json"}
    )
    assert reply.problem(413)["type"].endswith("/payload_too_large")
    # Just under the limit is read (and then refused for its reason's length, not its size).
    under = json.dumps({**EXPORT, "reason": "x" * (60 * 1024)}).encode()
    assert len(under) <= 64 * 1024
    reply = await api.call(
        "POST", "/v1/requests", token, data=under, headers={"Content-Type": "application/json"}
    )
    assert reply.fields() == {"reason"}


async def test_idempotency_key_replays_and_conflicts_per_client(api: Api) -> None:
    token = await api.client("copilot")
    other = await api.client("other-bot")
    key = {"Idempotency-Key": "deploy-42"}
    first = await api.call("POST", "/v1/requests", token, json=EXPORT, headers=key)
    assert first.status == 201
    again = await api.call("POST", "/v1/requests", token, json=EXPORT, headers=key)
    assert again.status == 200
    assert again.body == first.body
    changed = await api.call(
        "POST", "/v1/requests", token, json={**EXPORT, "reason": "another"}, headers=key
    )
    problem = changed.problem(409)
    assert problem["type"].endswith("/idempotency_conflict")
    assert first.body["id"] in problem["detail"]
    # Keys belong to a client: another client's same key is a new request.
    theirs = await api.call("POST", "/v1/requests", other, json=EXPORT, headers=key)
    assert theirs.status == 201 and theirs.body["id"] != first.body["id"]
    long_key = await api.call(
        "POST", "/v1/requests", token, json=EXPORT, headers={"Idempotency-Key": "k" * 256}
    )
    assert long_key.fields() == {"Idempotency-Key"}


async def test_private_callback_urls_are_refused(api: Api) -> None:
    token = await api.client()
    reply = await api.call(
        "POST",
        "/v1/requests",
        token,
        json={**EXPORT, "callback_url": "http://127.0.0.1:9/hook", "action": "BAD"},
    )
    assert reply.fields() == {"callback_url", "action"}
    messages = {e["field"]: e["message"] for e in reply.body["errors"]}
    assert "127.0.0.1" in messages["callback_url"]
    port = await api.call(
        "POST", "/v1/requests", token, json={**EXPORT, "callback_url": "http://h.example:99999/"}
    )
    assert port.fields() == {"callback_url"}


async def test_private_callback_urls_are_allowed_when_configured(database_url: str) -> None:
    async with running(database_url, allow_private_callbacks=True) as api:
        token = await api.client()
        reply = await api.call(
            "POST", "/v1/requests", token, json={**EXPORT, "callback_url": "http://127.0.0.1:9/"}
        )
        assert reply.status == 201, reply.body


async def test_edge_cases_the_api_refuses_before_the_core_sees_them(api: Api) -> None:
    token = await api.client()
    for extra, field in (
        ({"callback_url": "http://[::1"}, "callback_url"),  # urlsplit raises on this
        ({"action": "deploy\n"}, "action"),  # re's "$" would let the newline through
    ):
        reply = await api.call("POST", "/v1/requests", token, json={**EXPORT, **extra})
        assert reply.fields() == {field}, extra
