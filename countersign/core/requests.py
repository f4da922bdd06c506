"""What a client may ask for, and how a request opens under the rule that matched it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from countersign.core.digest import canonical_json, params_sha256
from countersign.core.errors import FieldError, InvalidRequest
from countersign.core.identity import is_email, normalize_email
from countersign.core.model import ApprovalRequest, JsonObject, RuleSnapshot, Status, Verdict
from countersign.core.text import contains_nul
from countersign.core.voting import MAX_PARAMS_BYTES

__all__ = [
    "ACTION_PATTERN",
    "MAX_CONTEXT_KEYS",
    "MAX_TTL_SECONDS",
    "RequestSpec",
    "contains_nul",
    "open_request",
    "validate_spec",
]

ACTION_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._:-]{0,127}$")
MAX_RESOURCE_CHARS = 512
MAX_REASON_CHARS = 2000
MAX_CONTEXT_KEYS = 20
MAX_CONTEXT_VALUE_CHARS = 1000
MAX_TTL_SECONDS = 30 * 24 * 3600  # the longest a policy rule may allow, too


@dataclass(frozen=True)
class RequestSpec:
    """A client's ask, as received (validated by ``validate_spec``)."""

    action: str
    resource: str
    reason: str
    requested_by: str | None = None
    params: JsonObject = field(default_factory=dict)
    context: JsonObject = field(default_factory=dict)
    callback_url: str | None = None
    ttl_seconds: int | None = None


def _is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


def validate_spec(spec: RequestSpec) -> RequestSpec:
    """The spec with its e-mail normalised; ``InvalidRequest`` naming every bad field."""
    errors: list[FieldError] = [
        FieldError(name, "must not contain NUL characters")
        for name in ("action", "resource", "reason", "requested_by", "params", "context")
        if contains_nul(getattr(spec, name))
    ]
    if not isinstance(spec.action, str) or not ACTION_PATTERN.fullmatch(spec.action):
        errors.append(FieldError("action", f"must match {ACTION_PATTERN.pattern}"))
    if not isinstance(spec.resource, str) or not 1 <= len(spec.resource) <= MAX_RESOURCE_CHARS:
        errors.append(FieldError("resource", f"must be 1 to {MAX_RESOURCE_CHARS} characters"))
    if not isinstance(spec.reason, str) or not 1 <= len(spec.reason.strip()) <= MAX_REASON_CHARS:
        errors.append(FieldError("reason", f"must be 1 to {MAX_REASON_CHARS} characters"))
    if spec.requested_by is not None and not (
        isinstance(spec.requested_by, str) and is_email(spec.requested_by)
    ):
        errors.append(FieldError("requested_by", "must be an e-mail address"))
    if not isinstance(spec.params, dict):
        errors.append(FieldError("params", "must be a JSON object"))
    else:
        try:
            size = len(canonical_json(spec.params).encode("utf-8"))
        except (TypeError, ValueError):
            errors.append(FieldError("params", "must be JSON"))
        else:
            if size > MAX_PARAMS_BYTES:
                errors.append(FieldError("params", f"must be at most {MAX_PARAMS_BYTES} bytes"))
    if not isinstance(spec.context, dict):
        errors.append(FieldError("context", "must be a JSON object of scalars"))
    else:
        if len(spec.context) > MAX_CONTEXT_KEYS:
            errors.append(FieldError("context", f"must have at most {MAX_CONTEXT_KEYS} keys"))
        for key, value in spec.context.items():
            if not _is_scalar(value):
                errors.append(FieldError(f"context.{key}", "must be a string, number or bool"))
            elif isinstance(value, str) and len(value) > MAX_CONTEXT_VALUE_CHARS:
                errors.append(
                    FieldError(f"context.{key}", f"must be at most {MAX_CONTEXT_VALUE_CHARS} chars")
                )
    if spec.callback_url is not None:
        try:
            parts = urlsplit(spec.callback_url) if isinstance(spec.callback_url, str) else None
        except ValueError:  # e.g. "http://[::1" (unbalanced brackets)
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            errors.append(FieldError("callback_url", "must be an http or https URL"))
    if spec.ttl_seconds is not None and (
        isinstance(spec.ttl_seconds, bool)
        or not isinstance(spec.ttl_seconds, int)
        or not 1 <= spec.ttl_seconds <= MAX_TTL_SECONDS
    ):
        errors.append(
            FieldError("ttl_seconds", f"must be a whole number from 1 to {MAX_TTL_SECONDS}")
        )
    if errors:
        raise InvalidRequest(errors)
    requested_by = normalize_email(spec.requested_by) if spec.requested_by else None
    return RequestSpec(
        action=spec.action,
        resource=spec.resource,
        reason=spec.reason.strip(),
        requested_by=requested_by,
        params=spec.params,
        context=spec.context,
        callback_url=spec.callback_url,
        ttl_seconds=spec.ttl_seconds,
    )


def open_request(
    *,
    request_id: str,
    spec: RequestSpec,
    client: str,
    client_owner: str | None,
    rule: RuleSnapshot,
    rule_ttl: timedelta,
    now: datetime,
) -> ApprovalRequest:
    """A new request, already final when the rule decides at once or cannot be satisfied.

    ``spec`` must have passed ``validate_spec``. The TTL is the client's, capped
    by the rule's. A rule whose quorum cannot be met once the requester and the
    client's owner are set aside denies at once, saying so, rather than letting
    the request wait to expire.
    """
    ttl = rule_ttl
    if spec.ttl_seconds is not None:
        ttl = min(ttl, timedelta(seconds=spec.ttl_seconds))
    owner = normalize_email(client_owner) if client_owner else None
    digest = params_sha256(spec.params)
    request = ApprovalRequest(
        id=request_id,
        action=spec.action,
        resource=spec.resource,
        reason=spec.reason,
        params=spec.params,
        params_sha256=digest,
        context=spec.context,
        client=client,
        client_owner=owner,
        requested_by=spec.requested_by,
        rule=rule,
        status=Status.PENDING,
        created_at=now,
        expires_at=now + ttl,
        callback_url=spec.callback_url,
    )
    if rule.verdict is Verdict.ALLOW:
        return _decided(request, Status.APPROVED, f"allowed by rule {rule.name!r}", now)
    if rule.verdict is Verdict.DENY:
        return _decided(request, Status.DENIED, f"denied by rule {rule.name!r}", now)
    eligible = rule.approvers - {spec.requested_by, owner}
    if len(eligible) < rule.quorum:
        reason = (
            f"rule {rule.name!r} needs {rule.quorum} approvals but only {len(eligible)} "
            "of its approvers may approve this request (no self-approval)"
        )
        return _decided(request, Status.DENIED, reason, now)
    return request


def _decided(
    request: ApprovalRequest, status: Status, reason: str, now: datetime
) -> ApprovalRequest:
    approved = status is Status.APPROVED
    return replace(
        request,
        status=status,
        decided_at=now,
        decided_by=(f"policy:{request.rule.name}",),
        decision_reason=reason,
        approved_params=request.params if approved else None,
        approved_params_sha256=request.params_sha256 if approved else None,
    )
