"""The REST API's bodies as pydantic models: what it accepts, and what it answers.

``CreateRequestBody`` enforces the same limits as ``countersign.core.requests``
(the service validates again; a test checks that both agree). The response
models describe ``countersign.resource.to_resource`` and the problem documents;
``/openapi.json`` is built from all of them.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from countersign.callbacks.guard import has_unsafe_characters
from countersign.core.digest import canonical_json
from countersign.core.errors import FieldError
from countersign.core.identity import is_email
from countersign.core.model import Status
from countersign.core.requests import (
    ACTION_PATTERN,
    MAX_CONTEXT_KEYS,
    MAX_CONTEXT_VALUE_CHARS,
    MAX_REASON_CHARS,
    MAX_RESOURCE_CHARS,
    MAX_TTL_SECONDS,
    RequestSpec,
    contains_nul,
)
from countersign.core.voting import MAX_PARAMS_BYTES

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HISTORY_LIMIT",
    "MAX_IDEMPOTENCY_KEY_CHARS",
    "MAX_WAIT_SECONDS",
    "CancelBody",
    "CreateRequestBody",
    "Decision",
    "FieldProblem",
    "HistoryPage",
    "HistoryParams",
    "Jwks",
    "Problem",
    "Quorum",
    "RequestResource",
    "VoteResource",
    "WaitParams",
    "field_errors",
]

MAX_BODY_BYTES = 64 * 1024
MAX_IDEMPOTENCY_KEY_CHARS = 255
MAX_WAIT_SECONDS = 60
DEFAULT_WAIT_SECONDS = 30
MAX_HISTORY_LIMIT = 200
DEFAULT_HISTORY_LIMIT = 50


def field_errors(exc: ValidationError) -> list[FieldError]:
    """Every error of ``exc`` as a ``FieldError`` named by its dotted location."""
    found = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "body"
        found.append(FieldError(where, str(error["msg"]).removeprefix("Value error, ")))
    return found


# -- the create body ---------------------------------------------------------------------


def _reason(value: str) -> str:
    # Core counts the stripped text; so do we (and leave stripping to the service).
    if not 1 <= len(value.strip()) <= MAX_REASON_CHARS:
        raise ValueError(f"must be 1 to {MAX_REASON_CHARS} characters")
    return value


def _email(value: str) -> str:
    if not is_email(value):
        raise ValueError("must be an e-mail address")
    return value


def _params(value: dict[str, Any]) -> dict[str, Any]:
    if len(canonical_json(value).encode("utf-8")) > MAX_PARAMS_BYTES:
        raise ValueError(f"must be at most {MAX_PARAMS_BYTES} bytes")
    return value


def _scalar(value: Any) -> Any:
    ok = (
        math.isfinite(value)
        if isinstance(value, float)
        else value is None or isinstance(value, str | int | bool)
    )
    if not ok:
        raise ValueError("must be a string, number or bool")
    if isinstance(value, str) and len(value) > MAX_CONTEXT_VALUE_CHARS:
        raise ValueError(f"must be at most {MAX_CONTEXT_VALUE_CHARS} chars")
    return value


def _callback_url(value: str) -> str:
    if has_unsafe_characters(value):
        raise ValueError("must not contain whitespace or control characters")
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        host = None
    if not host or parts.scheme not in ("http", "https"):
        raise ValueError("must be an http or https URL")
    return value


Scalar = Annotated[
    Any,
    AfterValidator(_scalar),
    WithJsonSchema(
        {"type": ["string", "number", "boolean", "null"], "maxLength": MAX_CONTEXT_VALUE_CHARS}
    ),
]


class CreateRequestBody(BaseModel):
    """The body of ``POST /v1/requests``: what an agent asks to do, and why."""

    # Strict: "5" is not a ttl and 1.0 is not an int, exactly as core sees them.
    model_config = ConfigDict(extra="forbid", strict=True)

    action: Annotated[str, Field(pattern=ACTION_PATTERN.pattern, examples=["db.export"])]
    resource: Annotated[
        str, Field(min_length=1, max_length=MAX_RESOURCE_CHARS, examples=["prod/customers"])
    ]
    reason: Annotated[
        str,
        AfterValidator(_reason),
        Field(
            description=f"1 to {MAX_REASON_CHARS} characters once trimmed.",
            json_schema_extra={"minLength": 1},
        ),
    ]
    requested_by: Annotated[
        str | None,
        Field(
            description="E-mail of the human behind the request (optional for automation).",
            json_schema_extra={"format": "email"},
        ),
    ] = None
    params: Annotated[
        dict[str, Any],
        AfterValidator(_params),
        Field(description=f"At most {MAX_PARAMS_BYTES} bytes as JSON."),
    ] = Field(default_factory=dict)
    context: Annotated[
        dict[str, Scalar],
        Field(max_length=MAX_CONTEXT_KEYS, description="Scalars only (shown to approvers)."),
    ] = Field(default_factory=dict)
    callback_url: Annotated[
        str | None,
        Field(
            description="http(s) URL that receives the decided request (signed POST).",
            json_schema_extra={"format": "uri"},
        ),
    ] = None
    ttl_seconds: Annotated[
        int | None,
        Field(ge=1, le=MAX_TTL_SECONDS, description="Capped by the matching rule's ttl."),
    ] = None

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if contains_nul(value):
            raise ValueError("must not contain NUL characters")
        return value

    @field_validator("requested_by")
    @classmethod
    def _check_email(cls, value: str | None) -> str | None:
        return None if value is None else _email(value)

    @field_validator("callback_url")
    @classmethod
    def _check_callback(cls, value: str | None) -> str | None:
        return None if value is None else _callback_url(value)

    def to_spec(self) -> RequestSpec:
        """The service's ``RequestSpec`` for this body (as received; the service normalises)."""
        return RequestSpec(
            action=self.action,
            resource=self.resource,
            reason=self.reason,
            requested_by=self.requested_by,
            params=self.params,
            context=self.context,
            callback_url=self.callback_url,
            ttl_seconds=self.ttl_seconds,
        )


class CancelBody(BaseModel):
    """The optional body of ``POST /v1/requests/{id}/cancel``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    reason: Annotated[str | None, Field(max_length=MAX_REASON_CHARS)] = None


# -- query strings -----------------------------------------------------------------------


def _utc(value: datetime | None) -> datetime | None:
    # A time without an offset is taken as UTC rather than refused.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class HistoryParams(BaseModel):
    """The query of ``GET /v1/requests``; every filter is optional and they combine."""

    # Query values are text: lax mode turns "50" into 50 and ISO 8601 into datetimes.
    model_config = ConfigDict(extra="forbid")

    status: Status | None = None
    action: str | None = None
    resource: str | None = None
    requested_by: Annotated[str | None, Field(description="E-mail, case-insensitive.")] = None
    approver: Annotated[
        str | None, Field(description="E-mail of someone who voted on the request.")
    ] = None
    since: Annotated[
        datetime | None, AfterValidator(_utc), Field(description="ISO 8601, inclusive.")
    ] = None
    until: Annotated[
        datetime | None, AfterValidator(_utc), Field(description="ISO 8601, exclusive.")
    ] = None
    limit: Annotated[int, Field(ge=1, le=MAX_HISTORY_LIMIT)] = DEFAULT_HISTORY_LIMIT
    cursor: Annotated[str | None, Field(description="`next_cursor` of the previous page.")] = None


class WaitParams(BaseModel):
    """The query of ``GET /v1/requests/{id}/wait``."""

    model_config = ConfigDict(extra="forbid")

    timeout: Annotated[
        float,
        Field(ge=0, le=MAX_WAIT_SECONDS, allow_inf_nan=False, description="Seconds to wait."),
    ] = DEFAULT_WAIT_SECONDS


# -- responses ---------------------------------------------------------------------------


class Quorum(BaseModel):
    """Approvals and denials needed, and counted so far."""

    approvals_required: int
    denials_required: int
    approvals: int = Field(description="Approvals behind the leading params.")
    denials: int


class VoteResource(BaseModel):
    """One person's vote."""

    voter: str
    platform: str
    decision: Literal["approve", "deny"]
    comment: str | None
    edited_params: dict[str, Any] | None
    params_sha256: str | None = Field(description="Digest of the params this vote approved.")
    at: datetime


class Decision(BaseModel):
    """How a final request ended, who ended it, and why."""

    outcome: Literal["approved", "denied", "expired", "cancelled"]
    by: list[str]
    reason: str | None
    params_sha256: str | None = Field(description="Digest of the approved params.")


class RequestResource(BaseModel):
    """An approval request as clients see it (the callback payload too)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(examples=["req_01JD8X2V6Q4T9N3K7M5P1R0S2W"])
    status: Status
    action: str
    resource: str
    reason: str
    params: dict[str, Any]
    params_sha256: str
    context: dict[str, Any]
    client: str
    requested_by: str | None
    rule: str
    quorum: Quorum
    votes: list[VoteResource]
    edited_params: dict[str, Any] | None = Field(
        description="The approved params when an approver changed them."
    )
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decision: Decision | None
    receipt: str | None = Field(description="EdDSA JWT when approved; verify with the JWKS.")


class HistoryPage(BaseModel):
    """One page of history, newest first."""

    items: list[RequestResource]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end.")


class FieldProblem(BaseModel):
    """One invalid field: its dotted name and what is wrong with it."""

    field: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    type: str = Field(examples=["https://countersign.dev/problems/invalid_request"])
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] | None = Field(
        default=None, description="Present on validation problems: every bad field."
    )


class Jwks(BaseModel):
    """A JSON Web Key Set (RFC 7517): the public keys of approval receipts."""

    keys: list[dict[str, Any]]
