"""Reading what a caller sent: a JSON body, a query string, the Idempotency-Key header."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from countersign.api.problems import ApiProblem
from countersign.api.schemas import MAX_IDEMPOTENCY_KEY_CHARS
from countersign.core.errors import FieldError, InvalidRequest

__all__ = ["idempotency_key", "read_json", "read_query"]

M = TypeVar("M", bound=BaseModel)


def _no_constants(name: str) -> Any:
    # Python's json takes NaN and Infinity; JSON (and PostgreSQL's jsonb) does not.
    raise ValueError(f"{name} is not JSON")


async def read_json(request: web.Request, *, empty: Any = None) -> Any:
    """The body parsed as JSON, or ``empty`` when there is no body.

    ``413`` past the app's ``client_max_size`` (raised by aiohttp), ``400``
    when it is not JSON.
    """
    raw = await request.read()
    if not raw.strip():
        return empty
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        detail = f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except (ValueError, RecursionError) as exc:  # bad UTF-8, NaN, or absurd nesting
        detail = f"the body is not valid JSON: {type(exc).__name__}"
    raise ApiProblem(400, "malformed_json", "Malformed JSON", detail)


def read_query(request: web.Request, model: type[M]) -> M:
    """The query string validated by ``model`` (``ValidationError`` names each bad field)."""
    repeated = sorted({key for key in request.query if len(request.query.getall(key)) > 1})
    if repeated:
        raise InvalidRequest([FieldError(key, "must be given once") for key in repeated])
    return model.model_validate(dict(request.query))


def idempotency_key(request: web.Request) -> str | None:
    """The ``Idempotency-Key`` header, if any (1 to 255 characters)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidRequest(
            [FieldError("Idempotency-Key", f"must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters")]
        )
    return key
