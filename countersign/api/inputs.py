"""Reading what a caller sent: a JSON body, a query string, the Idempotency-Key header."""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from countersign.api.problems import ApiProblem
from countersign.api.schemas import MAX_IDEMPOTENCY_KEY_CHARS
from countersign.core.errors import FieldError, InvalidRequest

__all__ = ["MAX_JSON_DEPTH", "idempotency_key", "read_json", "read_query"]

M = TypeVar("M", bound=BaseModel)

# Objects and arrays nested deeper than this are refused before anything walks them.
MAX_JSON_DEPTH = 32


class _Unacceptable(ValueError):
    """JSON that Python's parser takes but we do not (said in the 400's detail)."""


def _no_constants(name: str) -> Any:
    # Python's json takes NaN and Infinity; JSON (and PostgreSQL's jsonb) does not.
    raise _Unacceptable(f"{name} is not JSON")


def _finite(text: str) -> float:
    # 1e400 would become inf: not representable in JSON, so not a number we can keep.
    value = float(text)
    if not math.isfinite(value):
        raise _Unacceptable(f"the number {text[:40]} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # {"a": 1, "a": 2} means different things to different parsers: refuse it.
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _Unacceptable(f"the key {key[:40]!r} appears twice in one object")
        found[key] = value
    return found


def _check_tree(value: Any) -> None:
    """Refuse nesting past ``MAX_JSON_DEPTH`` and lone surrogates (``"\\ud800"``), iteratively."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                raise _Unacceptable("a string holds a lone UTF-16 surrogate") from None
        elif isinstance(node, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise _Unacceptable(f"it is nested deeper than {MAX_JSON_DEPTH} levels")
            items = [*node.keys(), *node.values()] if isinstance(node, dict) else node
            stack.extend((item, depth + 1) for item in items)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_json(request: web.Request, *, empty: Any = None) -> Any:
    """The body parsed as JSON, or ``empty`` when there is no body.

    ``413`` past the app's ``client_max_size`` (raised by aiohttp), ``415``
    when a body is not sent as ``application/json``, ``400`` when it is not
    JSON (RFC 8259: UTF-8, finite numbers) or is JSON we refuse: duplicate
    keys, lone surrogates, nesting deeper than ``MAX_JSON_DEPTH``.
    """
    raw = await request.read()
    if not raw.strip():
        return empty
    if not _is_json(request.content_type):
        raise ApiProblem(
            415,
            "unsupported_media_type",
            "Unsupported Media Type",
            "send the body as Content-Type: application/json",
        )
    try:
        parsed = json.loads(
            raw.decode("utf-8"),
            parse_constant=_no_constants,
            parse_float=_finite,
            object_pairs_hook=_unique_keys,
        )
        _check_tree(parsed)
        return parsed
    except json.JSONDecodeError as exc:
        detail = f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except _Unacceptable as exc:
        detail = f"the body is not acceptable JSON: {exc}"
    except (ValueError, RecursionError) as exc:  # bad UTF-8, huge integers, absurd nesting
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
    # Bytes that are not UTF-8 arrive as lone surrogates, which no database can store.
    if any(not c.isprintable() or "\ud800" <= c <= "\udfff" for c in key):
        raise InvalidRequest([FieldError("Idempotency-Key", "must be printable UTF-8 text")])
    return key
