"""Requests for card tests, built through the real voting rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from countersign.core import (
    ApprovalRequest,
    Ballot,
    Choice,
    RuleSnapshot,
    Status,
    Verdict,
    cancel,
    cast_vote,
    expire_if_due,
    params_sha256,
)

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
PARAMS: dict[str, Any] = {"table": "customers", "columns": ["id", "plan"], "rows": 120000}
APPROVERS = frozenset({"alice@example.com", "bob@example.com", "carol@example.com"})
PEOPLE = {"alice@example.com": "U0ALICE", "dana@example.com": "U0DANA"}


def make(
    *,
    quorum: int = 2,
    deny_quorum: int = 1,
    params: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    reason: str = "Quarterly churn analysis for finance (FIN-42)",
    action: str = "db.export",
    resource: str = "prod/customers",
    client: str = "analytics-copilot",
    requested_by: str | None = "dana@example.com",
    request_id: str = "req_01JD0000000000000000000000",
) -> ApprovalRequest:
    """A pending request by dana@ through the analytics copilot."""
    p = PARAMS if params is None else params
    return ApprovalRequest(
        id=request_id,
        action=action,
        resource=resource,
        reason=reason,
        params=p,
        params_sha256=params_sha256(p),
        context={"ticket": "FIN-42", "agent": "analytics-copilot"} if context is None else context,
        client=client,
        client_owner="owen@example.com",
        requested_by=requested_by,
        rule=RuleSnapshot("prod-export", Verdict.REQUIRE_APPROVAL, APPROVERS, quorum, deny_quorum),
        status=Status.PENDING,
        created_at=T0,
        expires_at=T0 + timedelta(minutes=30),
    )


def vote(
    request: ApprovalRequest,
    voter: str,
    choice: str,
    *,
    comment: str | None = None,
    edit: dict[str, Any] | None = None,
    minutes: int = 1,
) -> ApprovalRequest:
    """``request`` after one ballot, cast ``minutes`` after creation."""
    ballot = Ballot(voter, "slack", Choice(choice), comment=comment, edited_params=edit)
    return cast_vote(request, ballot, T0 + timedelta(minutes=minutes)).request


def expired(request: ApprovalRequest) -> ApprovalRequest:
    """``request`` run out of time."""
    result = expire_if_due(request, request.expires_at)
    assert result is not None
    return result


def cancelled(request: ApprovalRequest, reason: str | None = None) -> ApprovalRequest:
    """``request`` cancelled by its client."""
    return cancel(request, T0 + timedelta(minutes=3), "analytics-copilot", reason)


def decided(request: ApprovalRequest, status: Status) -> ApprovalRequest:
    """``request`` forced into a final state (for shapes the rules cannot reach)."""
    return replace(request, status=status, decided_at=T0 + timedelta(minutes=5))
