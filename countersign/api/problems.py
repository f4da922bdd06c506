"""The one place errors become HTTP answers: RFC 9457 ``application/problem+json``.

Every problem has ``type``, ``title``, ``status`` and ``detail``; validation
problems add ``errors``, one ``{field, message}`` per bad field. ``type`` is
``https://countersign.dev/problems/<code>``, where ``<code>`` is the stable
``code`` of the error tree (``not_found``, ``invalid_request``,
``idempotency_conflict``, ``already_decided``, ``expired``, ...) or one of the
HTTP-level codes below (``unauthorized``, ``forbidden``, ``malformed_json``,
``payload_too_large``, ``method_not_allowed``, ``internal_error``). Clients
branch on ``type``; it never changes meaning. The URIs identify; they need
not resolve.

=============================  ======
error                          status
=============================  ======
malformed JSON                 400
no/bad/revoked bearer token    401 (with ``WWW-Authenticate: Bearer``)
allowed in, not allowed to     403
``NotFound``, unknown route    404
wrong method                   405
``IdempotencyConflict``        409
``AlreadyDecided``/``Expired`` 409
body over 64 KiB               413
``InvalidRequest``, pydantic   422
anything unexpected            500 (logged; nothing internal is shown)
=============================  ======
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from countersign.api.schemas import field_errors
from countersign.core.errors import (
    AlreadyDecided,
    CountersignError,
    Expired,
    FieldError,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    VoteRefused,
)

__all__ = [
    "PROBLEM_BASE",
    "PROBLEM_CONTENT_TYPE",
    "ApiProblem",
    "problem_middleware",
    "problem_response",
]

log = logging.getLogger("countersign.api")

PROBLEM_BASE = "https://countersign.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"

# Looked up along the error's MRO, so the most specific entry wins (Expired first).
_DOMAIN: Mapping[type[CountersignError], tuple[int, str]] = {
    NotFound: (404, "Not found"),
    InvalidRequest: (422, "Invalid request"),
    IdempotencyConflict: (409, "Idempotency-Key reused with another body"),
    Expired: (409, "Request expired"),
    AlreadyDecided: (409, "Request already decided"),
    VoteRefused: (409, "Vote refused"),
}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ApiProblem(Exception):
    """An HTTP-level refusal raised by a handler (auth, malformed input, bad query)."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        *,
        errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.errors = tuple(errors)
        self.headers = dict(headers or {})


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    errors: Sequence[FieldError] = (),
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A problem+json response (``errors`` only when there are field errors)."""
    body: dict[str, object] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    return web.json_response(
        body, status=status, headers=headers, content_type=PROBLEM_CONTENT_TYPE
    )


def _domain_problem(exc: CountersignError) -> web.Response:
    status, title = 400, "Refused"
    for cls in type(exc).__mro__:
        if cls in _DOMAIN:
            status, title = _DOMAIN[cls]
            break
    errors = exc.errors if isinstance(exc, InvalidRequest) else ()
    return problem_response(status, exc.code, title, str(exc), errors=errors)


def _http_problem(request: web.Request, exc: web.HTTPException) -> web.Response:
    status = exc.status
    headers = {k: v for k, v in exc.headers.items() if k.lower() != "content-type"}
    if status == 404:
        detail = f"no route for {request.method} {request.path}"
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.path}"
    else:
        detail = exc.text or exc.reason
    code = _HTTP_CODES.get(status, f"http_{status}")
    return problem_response(status, code, exc.reason, detail, headers=headers)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error raised under it into a problem+json answer."""
    try:
        return await handler(request)
    except ApiProblem as exc:
        return problem_response(
            exc.status, exc.code, exc.title, exc.detail, errors=exc.errors, headers=exc.headers
        )
    except CountersignError as exc:
        return _domain_problem(exc)
    except ValidationError as exc:
        return _domain_problem(InvalidRequest(field_errors(exc)))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are answers, not problems
        return _http_problem(request, exc)
    except Exception:
        # Logged with its traceback for operators; the client learns nothing internal.
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return problem_response(
            500, "internal_error", "Internal server error", "the server could not answer"
        )
