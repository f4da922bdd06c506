"""``/v1/requests``: create, read, wait for, cancel and list approval requests.

Each handler parses, calls the service once, and renders the request resource
(``countersign.resource.to_resource``). Errors are raised, never rendered here:
``problems.py`` turns them into problem+json.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from countersign.api.auth import authenticate, require_client
from countersign.api.inputs import idempotency_key, read_json, read_query
from countersign.api.keys import METRICS, SERVICE, SETTINGS, WAITERS
from countersign.api.schemas import (
    CancelBody,
    CreateRequestBody,
    HistoryParams,
    WaitParams,
    field_errors,
)
from countersign.callbacks.guard import check_callback_url
from countersign.core.errors import FieldError, InvalidRequest
from countersign.core.model import ApprovalRequest
from countersign.core.requests import RequestSpec
from countersign.ports import HistoryQuery
from countersign.resource import to_resource

__all__ = ["routes"]

routes = web.RouteTableDef()


def _render(request: ApprovalRequest) -> dict[str, Any]:
    return to_resource(request)


async def _callback_problem(url: str, *, allow_private: bool) -> str | None:
    try:
        return await check_callback_url(url, allow_private=allow_private)
    except ValueError as exc:  # e.g. a port out of range
        return f"is not a usable URL ({exc})"


async def _create_spec(request: web.Request, body: Any) -> RequestSpec:
    """The spec in ``body``; ``InvalidRequest`` naming every bad field at once.

    The callback guard (which resolves the host) runs even when other fields
    are bad, so one answer names them all.
    """
    errors: list[FieldError] = []
    model: CreateRequestBody | None = None
    try:
        model = CreateRequestBody.model_validate(body)
    except ValidationError as exc:
        errors = field_errors(exc)
    url = body.get("callback_url") if isinstance(body, dict) else None
    if isinstance(url, str) and not any(e.field == "callback_url" for e in errors):
        allow_private = request.app[SETTINGS].allow_private_callbacks
        reason = await _callback_problem(url, allow_private=allow_private)
        if reason is not None:
            errors.append(FieldError("callback_url", reason))
    if errors or model is None:
        raise InvalidRequest(errors)
    return model.to_spec()


@routes.post("/v1/requests")
async def create_request(request: web.Request) -> web.Response:
    """Create a request: ``201`` (``200`` for an idempotent replay)."""
    client = require_client(await authenticate(request), "create requests")
    key = idempotency_key(request)
    spec = await _create_spec(request, await read_json(request, empty={}))
    created = await request.app[SERVICE].create_request(client, spec, idempotency_key=key)
    approval = created.request
    if created.created:
        request.app[METRICS].requests_created.labels(approval.status.value).inc()
    location = f"{request.app[SETTINGS].public_url}/v1/requests/{approval.id}"
    return web.json_response(
        _render(approval), status=201 if created.created else 200, headers={"Location": location}
    )


@routes.get("/v1/requests/{id}")
async def get_request(request: web.Request) -> web.Response:
    """One request (another client's is ``404``)."""
    principal = await authenticate(request)
    found = await request.app[SERVICE].get_request(request.match_info["id"], client=principal.scope)
    return web.json_response(_render(found))


@routes.get("/v1/requests/{id}/wait")
async def wait_for_request(request: web.Request) -> web.Response:
    """The request once decided, or as it is after ``timeout`` seconds."""
    principal = await authenticate(request)
    params = read_query(request, WaitParams)
    found = await request.app[WAITERS].wait(
        request.match_info["id"], params.timeout, client=principal.scope
    )
    return web.json_response(_render(found))


@routes.post("/v1/requests/{id}/cancel")
async def cancel_request(request: web.Request) -> web.Response:
    """Cancel a pending request of the calling client (``409`` when already final)."""
    client = require_client(await authenticate(request), "cancel requests")
    body = CancelBody.model_validate(await read_json(request, empty={}))
    cancelled = await request.app[SERVICE].cancel(
        request.match_info["id"], by=client.name, reason=body.reason, client=client.name
    )
    return web.json_response(_render(cancelled))


@routes.get("/v1/requests")
async def list_requests(request: web.Request) -> web.Response:
    """History, newest first; ``next_cursor`` pages on (null on the last page)."""
    principal = await authenticate(request)
    params = read_query(request, HistoryParams)
    found = await request.app[SERVICE].history(
        HistoryQuery(
            status=params.status,
            action=params.action,
            resource=params.resource,
            requested_by=params.requested_by,
            approver=params.approver,
            client=principal.scope,
            since=params.since,
            until=params.until,
            # One more than asked: whether it comes back says if there is a next page.
            limit=params.limit + 1,
            cursor=params.cursor,
        )
    )
    page = found[: params.limit]
    next_cursor = page[-1].id if len(found) > params.limit else None
    return web.json_response(
        {"items": [_render(item) for item in page], "next_cursor": next_cursor}
    )
