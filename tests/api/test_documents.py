"""The documents a server publishes (OpenAPI, metrics, JWKS) and its problem answers."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from countersign.api.schemas import CreateRequestBody, RequestResource
from countersign.receipts import verify_receipt
from tests.api.conftest import EXPORT, Api, running

REST_ROUTES = {
    "/v1/requests": {"post", "get"},
    "/v1/requests/{id}": {"get"},
    "/v1/requests/{id}/wait": {"get"},
    "/v1/requests/{id}/cancel": {"post"},
    "/.well-known/jwks.json": {"get"},
    "/healthz": {"get"},
    "/readyz": {"get"},
    "/metrics": {"get"},
    "/openapi.json": {"get"},
}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


async def test_openapi_describes_every_route_from_the_models(api: Api) -> None:
    reply = await api.call("GET", "/openapi.json")
    assert reply.status == 200
    doc = reply.body
    assert doc["openapi"] == "3.1.0"
    assert doc["servers"] == [{"url": "https://countersign.example.com"}]
    assert {path: set(ops) for path, ops in doc["paths"].items()} == REST_ROUTES
    schemas = doc["components"]["schemas"]
    assert {"CreateRequestBody", "RequestResource", "HistoryPage", "Problem", "Jwks"} <= set(
        schemas
    )
    # The very schemas the handlers validate with, not a hand-written copy.
    create = CreateRequestBody.model_json_schema(ref_template="#/components/schemas/{model}")
    assert schemas["CreateRequestBody"]["properties"] == create["properties"]
    assert schemas["CreateRequestBody"]["additionalProperties"] is False
    assert set(schemas["RequestResource"]["properties"]) == set(RequestResource.model_fields)
    for ref in _refs(doc):
        _resolve(doc, ref)  # every $ref points somewhere
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    create_op = doc["paths"]["/v1/requests"]["post"]
    assert {"201", "200", "400", "401", "403", "409", "413", "422"} <= set(create_op["responses"])
    problem = doc["components"]["responses"]["Unprocessable"]["content"]
    assert problem == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    listing = doc["paths"]["/v1/requests"]["get"]["parameters"]
    assert {p["name"] for p in listing} == {
        "status",
        "action",
        "resource",
        "requested_by",
        "approver",
        "since",
        "until",
        "limit",
        "cursor",
    }
    assert doc["paths"]["/healthz"]["get"]["security"] == []


async def test_metrics_count_requests_decisions_and_waiters(api: Api) -> None:
    token = await api.client()
    request_id = await api.create(token, {"action": "deploy", "resource": "web", "reason": "go"})
    await api.create(token, {"action": "db.read", "resource": "x", "reason": "look"})
    await api.call("GET", f"/v1/requests/{request_id}", token)
    await api.call("GET", "/v1/requests/req_missing", token)
    await api.service.cast_vote(request_id, "alice@example.com", "slack", "approve")
    reply = await api.call("GET", "/metrics")
    assert reply.status == 200
    assert reply.content_type == "text/plain"
    text = reply.body
    for line in (
        'countersign_http_requests_total{method="POST",route="/v1/requests",status="201"} 2.0',
        'countersign_http_requests_total{method="GET",route="/v1/requests/{id}",status="200"} 1.0',
        'countersign_http_requests_total{method="GET",route="/v1/requests/{id}",status="404"} 1.0',
        'countersign_requests_created_total{status="pending"} 1.0',
        'countersign_requests_created_total{status="approved"} 1.0',
        'countersign_decisions_total{outcome="approved"} 2.0',
        "countersign_time_to_decision_seconds_count 1.0",
        "countersign_waiters 0.0",
    ):
        assert line in text, line


async def test_approved_request_carries_a_receipt_verifiable_with_the_jwks(api: Api) -> None:
    token = await api.client()
    request_id = await api.create(token)
    await api.service.cast_vote(request_id, "alice@example.com", "slack", "approve")
    await api.service.cast_vote(request_id, "carol@example.com", "teams", "approve")
    body = (await api.call("GET", f"/v1/requests/{request_id}", token)).body
    assert body["status"] == "approved"
    jwks = await api.call("GET", "/.well-known/jwks.json")  # public: no token
    assert jwks.status == 200
    assert [k["kty"] for k in jwks.body["keys"]] == ["OKP"]
    claims = verify_receipt(
        body["receipt"],
        jwks.body,
        issuer="https://countersign.example.com",
        action=EXPORT["action"],
        resource=EXPORT["resource"],
        params=EXPORT["params"],
    )
    assert claims["sub"] == request_id
    assert claims["approvers"] == ["alice@example.com", "carol@example.com"]


async def test_health_routes_still_answer(api: Api) -> None:
    assert (await api.call("GET", "/healthz")).body == {"status": "ok"}
    assert (await api.call("GET", "/readyz")).body == {"status": "ok"}


async def test_unknown_routes_and_methods_are_problems(api: Api) -> None:
    token = await api.client()
    (await api.call("GET", "/v2/requests", token)).problem(404)
    wrong = await api.call("DELETE", "/v1/requests", token)
    assert wrong.problem(405)["type"].endswith("/method_not_allowed")
    assert set(wrong.headers["Allow"].split(",")) >= {"GET", "POST"}
    (await api.call("PUT", "/v1/requests/req_x/cancel", token)).problem(405)


async def test_unexpected_errors_are_500_without_internals(database_url: str, caplog: Any) -> None:
    async def explode(_request: web.Request) -> web.Response:
        raise RuntimeError("connection string postgres://user:hunter2@db")

    def add(app: web.Application) -> None:
        app.router.add_get("/explode", explode)

    async with running(database_url, extra_routes=add) as api:
        token = await api.client()
        reply = await api.call("GET", "/explode", token)
        problem = reply.problem(500)
        assert "hunter2" not in str(problem) and "RuntimeError" not in str(problem)
        assert problem["type"].endswith("/internal_error")
        # ...but it is logged for the operator, without the caller's token.
        assert "hunter2" in caplog.text
        assert token not in caplog.text
        # And the server keeps serving.
        assert (await api.call("POST", "/v1/requests", token, json=EXPORT)).status == 201
