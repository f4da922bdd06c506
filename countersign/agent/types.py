"""What the agent-side API returns and raises: typed decisions and approval errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

__all__ = [
    "ApprovalCancelled",
    "ApprovalDenied",
    "ApprovalError",
    "ApprovalExpired",
    "ApprovalTimeout",
    "Decision",
    "ReceiptInvalid",
    "Vote",
]

FINAL = frozenset({"approved", "denied", "expired", "cancelled"})


@dataclass(frozen=True)
class Vote:
    """One person's vote on a request."""

    voter: str
    platform: str
    decision: str
    comment: str | None = None
    edited_params: Mapping[str, Any] | None = None
    at: str | None = None


@dataclass(frozen=True)
class Decision:
    """A request as the server last reported it (pending or final)."""

    id: str
    status: str
    action: str
    resource: str
    reason: str
    params: Mapping[str, Any]
    params_sha256: str
    edited_params: Mapping[str, Any] | None = None
    decided_by: tuple[str, ...] = ()
    decision_reason: str | None = None
    approved_params_sha256: str | None = None
    votes: tuple[Vote, ...] = ()
    receipt: str | None = None
    rule: str | None = None
    created_at: str | None = None
    expires_at: str | None = None
    decided_at: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_resource(cls, body: Mapping[str, Any]) -> Decision:
        """The typed view of a request resource (the JSON of the REST API)."""
        decision = body.get("decision") or {}
        return cls(
            id=str(body["id"]),
            status=str(body["status"]),
            action=str(body.get("action", "")),
            resource=str(body.get("resource", "")),
            reason=str(body.get("reason", "")),
            params=dict(body.get("params") or {}),
            params_sha256=str(body.get("params_sha256", "")),
            edited_params=body.get("edited_params"),
            decided_by=tuple(decision.get("by") or ()),
            decision_reason=decision.get("reason"),
            approved_params_sha256=decision.get("params_sha256"),
            votes=tuple(
                Vote(
                    voter=str(v.get("voter", "")),
                    platform=str(v.get("platform", "")),
                    decision=str(v.get("decision", "")),
                    comment=v.get("comment"),
                    edited_params=v.get("edited_params"),
                    at=v.get("at"),
                )
                for v in body.get("votes") or ()
            ),
            receipt=body.get("receipt"),
            rule=body.get("rule"),
            created_at=body.get("created_at"),
            expires_at=body.get("expires_at"),
            decided_at=body.get("decided_at"),
            raw=dict(body),
        )

    @property
    def final(self) -> bool:
        """Whether nothing will change any more."""
        return self.status in FINAL

    @property
    def approved(self) -> bool:
        """Whether the request was approved."""
        return self.status == "approved"

    @property
    def edited(self) -> bool:
        """Whether the approvers approved other params than the requested ones."""
        return self.edited_params is not None

    @property
    def approved_params(self) -> Mapping[str, Any] | None:
        """The params that may run (the edit, if one won); None unless approved."""
        if not self.approved:
            return None
        return self.edited_params if self.edited_params is not None else self.params

    @property
    def reasons(self) -> tuple[str, ...]:
        """The deciding reasons: the deniers' comments, else the decision's reason."""
        said = tuple(v.comment for v in self.votes if v.decision == "deny" and v.comment)
        if said:
            return said
        return (self.decision_reason,) if self.decision_reason else ()

    def describe(self) -> str:
        """One line: id, status, who decided and why (what the CLI prints)."""
        line = f"{self.id} {self.status}"
        if self.final:
            line += f" by {', '.join(self.decided_by) or '-'}"
            if self.reasons:
                line += ": " + "; ".join(self.reasons)
        return line


class ApprovalError(Exception):
    """The approved action did not run; ``decision`` is the request, when there is one."""

    def __init__(self, message: str, decision: Decision | None = None) -> None:
        super().__init__(message)
        self.decision = decision


class ApprovalDenied(ApprovalError):
    """The approvers (or the policy) said no; ``reasons`` are what they wrote."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.describe(), decision)
        self.reasons: tuple[str, ...] = decision.reasons
        self.denied_by: tuple[str, ...] = decision.decided_by


class ApprovalExpired(ApprovalError):
    """Nobody decided before the request's TTL ran out."""


class ApprovalCancelled(ApprovalError):
    """The request was withdrawn or cancelled before a decision."""


class ApprovalTimeout(ApprovalError):
    """We stopped waiting before anyone decided (the request is cancelled by default)."""


class ReceiptInvalid(ApprovalError, jwt.InvalidTokenError):
    """The approval receipt is missing, forged, expired, or for another action or params."""
