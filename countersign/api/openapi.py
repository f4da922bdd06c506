"""``GET /openapi.json``: an OpenAPI 3.1 document of the REST API.

Schemas come from the same pydantic models the handlers validate with
(``schemas.py``), so the document cannot drift from what is enforced; the
paths below are written out by hand, one entry per route.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from countersign import __version__
from countersign.api.keys import SETTINGS
from countersign.api.problems import PROBLEM_CONTENT_TYPE
from countersign.api.schemas import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    CancelBody,
    CreateRequestBody,
    HistoryPage,
    HistoryParams,
    Jwks,
    Problem,
    RequestResource,
    WaitParams,
)

__all__ = ["build_openapi", "openapi_handler"]

_MODELS: Sequence[tuple[type[BaseModel], Literal["validation", "serialization"]]] = (
    (CreateRequestBody, "validation"),
    (CancelBody, "validation"),
    (HistoryParams, "validation"),
    (WaitParams, "validation"),
    (RequestResource, "serialization"),
    (HistoryPage, "serialization"),
    (Problem, "serialization"),
    (Jwks, "serialization"),
)

# Named problem answers, referenced by the operations that can give them.
_PROBLEMS = {
    "BadRequest": (400, "The body is not valid JSON."),
    "Unauthorized": (401, "No bearer token, or one that is unknown or revoked."),
    "Forbidden": (403, "The admin token cannot do this (it acts for no client)."),
    "NotFound": (404, "No such request, or it belongs to another client."),
    "Conflict": (409, "Already final, or an Idempotency-Key reused with another body."),
    "PayloadTooLarge": (413, "The body is over 64 KiB."),
    "Unprocessable": (422, "Invalid input; `errors` names every bad field."),
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problems(*names: str) -> dict[str, Any]:
    return {str(_PROBLEMS[n][0]): {"$ref": f"#/components/responses/{n}"} for n in names}


def _query_parameters(schemas: dict[str, Any], model: str) -> list[dict[str, Any]]:
    properties: dict[str, Any] = schemas[model]["properties"]
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {k: v for k, v in prop.items() if k not in ("title", "description")},
            **({"description": prop["description"]} if "description" in prop else {}),
        }
        for name, prop in properties.items()
    ]


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_REQUEST = _json(_ref("RequestResource"), "The request.")


def _paths(schemas: dict[str, Any]) -> dict[str, Any]:
    public: list[dict[str, Any]] = []  # no security requirement
    health = {"type": "object", "properties": {"status": {"type": "string"}}}
    return {
        "/v1/requests": {
            "post": {
                "operationId": "createRequest",
                "summary": "Ask for approval of one action",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "Same key and body: the same request (200); "
                        "same key, other body: 409. Keys are per client.",
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_IDEMPOTENCY_KEY_CHARS,
                        },
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("CreateRequestBody")}},
                },
                "responses": {
                    "201": {
                        **_json(_ref("RequestResource"), "Created (final if the policy decided)."),
                        "headers": {
                            "Location": {
                                "description": "URL of the new request.",
                                "schema": {"type": "string", "format": "uri"},
                            }
                        },
                    },
                    "200": _json(_ref("RequestResource"), "Replay: the request made first."),
                    **_problems(
                        "BadRequest",
                        "Unauthorized",
                        "Forbidden",
                        "Conflict",
                        "PayloadTooLarge",
                        "Unprocessable",
                    ),
                },
            },
            "get": {
                "operationId": "listRequests",
                "summary": "History, newest first (clients see their own requests)",
                "parameters": _query_parameters(schemas, "HistoryParams"),
                "responses": {
                    "200": _json(_ref("HistoryPage"), "One page."),
                    **_problems("Unauthorized", "Unprocessable"),
                },
            },
        },
        "/v1/requests/{id}": {
            "get": {
                "operationId": "getRequest",
                "summary": "Read one request",
                "parameters": [_ID],
                "responses": {"200": _REQUEST, **_problems("Unauthorized", "NotFound")},
            }
        },
        "/v1/requests/{id}/wait": {
            "get": {
                "operationId": "waitForRequest",
                "summary": "Long-poll until the request is final or `timeout` seconds pass",
                "parameters": [_ID, *_query_parameters(schemas, "WaitParams")],
                "responses": {
                    "200": _json(_ref("RequestResource"), "The request, final or still pending."),
                    **_problems("Unauthorized", "NotFound", "Unprocessable"),
                },
            }
        },
        "/v1/requests/{id}/cancel": {
            "post": {
                "operationId": "cancelRequest",
                "summary": "Cancel a pending request (only the client that created it)",
                "parameters": [_ID],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("CancelBody")}},
                },
                "responses": {
                    "200": _json(_ref("RequestResource"), "The cancelled request."),
                    **_problems(
                        "BadRequest",
                        "Unauthorized",
                        "Forbidden",
                        "NotFound",
                        "Conflict",
                        "PayloadTooLarge",
                        "Unprocessable",
                    ),
                },
            }
        },
        "/.well-known/jwks.json": {
            "get": {
                "operationId": "getJwks",
                "summary": "Public keys that verify approval receipts",
                "security": public,
                "responses": {"200": _json(_ref("Jwks"), "The key set.")},
            }
        },
        "/healthz": {
            "get": {
                "operationId": "liveness",
                "summary": "The process answers",
                "security": public,
                "responses": {"200": _json(health, "Alive.")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readiness",
                "summary": "The database answers",
                "security": public,
                "responses": {
                    "200": _json(health, "Ready."),
                    "503": _json(health, "The database does not answer."),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics of this process",
                "security": public,
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": public,
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
            }
        },
    }


@functools.cache
def build_openapi(public_url: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for a server reachable at ``public_url`` (built once; read-only)."""
    _, top = models_json_schema(_MODELS, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = top["$defs"]
    problem = {PROBLEM_CONTENT_TYPE: {"schema": _ref("Problem")}}
    responses: dict[str, Any] = {
        name: {"description": description, "content": problem}
        for name, (_status, description) in _PROBLEMS.items()
    }
    responses["Unauthorized"]["headers"] = {
        "WWW-Authenticate": {"description": "`Bearer` challenge.", "schema": {"type": "string"}}
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Countersign",
            "version": __version__,
            "description": "Human approvals for the privileged actions of AI agents. "
            "Errors are RFC 9457 problem documents.",
        },
        "servers": [{"url": public_url}],
        "security": [{"bearerAuth": []}],
        "paths": _paths(schemas),
        "components": {
            "schemas": schemas,
            "responses": responses,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API client token (`countersign clients add`), "
                    "or the admin token.",
                }
            },
        },
    }


async def openapi_handler(request: web.Request) -> web.Response:
    """The OpenAPI document."""
    return web.json_response(build_openapi(request.app[SETTINGS].public_url))
