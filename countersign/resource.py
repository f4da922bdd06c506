"""The request resource: the JSON shape of CONTRACT.md, for the API, callbacks and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from countersign.core.model import ApprovalRequest, Status
from countersign.core.voting import tally

__all__ = ["iso", "to_resource"]


def iso(moment: datetime | None) -> str | None:
    """RFC 3339 UTC with a ``Z``, seconds precision plus milliseconds when present."""
    if moment is None:
        return None
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def to_resource(request: ApprovalRequest) -> dict[str, Any]:
    """The request as clients see it.

    ``quorum.approvals`` counts the approvals behind the leading params (the
    ones that can reach the quorum); each vote names the ``params_sha256`` it
    approved. ``decision`` is null while pending, else who ended it and why.
    """
    counted = tally(request.votes)
    decision = None
    if request.status is not Status.PENDING:
        decision = {
            "outcome": request.status.value,
            "by": list(request.decided_by),
            "reason": request.decision_reason,
            "params_sha256": request.approved_params_sha256,
        }
    return {
        "id": request.id,
        "status": request.status.value,
        "action": request.action,
        "resource": request.resource,
        "reason": request.reason,
        "params": dict(request.params),
        "params_sha256": request.params_sha256,
        "context": dict(request.context),
        "client": request.client,
        "requested_by": request.requested_by,
        "rule": request.rule.name,
        "quorum": {
            "approvals_required": request.rule.quorum,
            "denials_required": request.rule.deny_quorum,
            "approvals": counted.approvals,
            "denials": len(counted.denials),
        },
        "votes": [
            {
                "voter": v.voter,
                "platform": v.platform,
                "decision": v.choice.value,
                "comment": v.comment,
                "edited_params": dict(v.edited_params) if v.edited_params is not None else None,
                "params_sha256": v.params_sha256,
                "at": iso(v.at),
            }
            for v in request.votes
        ],
        "edited_params": (
            dict(request.edited_params) if request.edited_params is not None else None
        ),
        "created_at": iso(request.created_at),
        "expires_at": iso(request.expires_at),
        "decided_at": iso(request.decided_at),
        "decision": decision,
        "receipt": request.receipt,
    }
