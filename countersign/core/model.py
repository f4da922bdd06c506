"""Value objects of the approval core: a request, its rule, its votes, its outcome."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "ApprovalRequest",
    "Choice",
    "JsonObject",
    "RuleSnapshot",
    "Status",
    "Tally",
    "Verdict",
    "Vote",
]

JsonObject = Mapping[str, Any]


class Status(StrEnum):
    """Lifecycle of a request: ``pending`` then exactly one final state."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """Every state but ``pending`` is final: no vote changes it."""
        return self is not Status.PENDING


class Choice(StrEnum):
    """What a voter chose."""

    APPROVE = "approve"
    DENY = "deny"


class Verdict(StrEnum):
    """What a policy rule decides for a matching request."""

    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"


@dataclass(frozen=True)
class RuleSnapshot:
    """The parts of the matching rule a request keeps for its whole life.

    Approvers are resolved (groups expanded, addresses normalised) when the
    request is created, so a later policy edit never changes who may vote on
    a request that is already open.
    """

    name: str
    verdict: Verdict
    approvers: frozenset[str] = frozenset()
    quorum: int = 1
    deny_quorum: int = 1


@dataclass(frozen=True)
class Vote:
    """One person's vote; an approval binds to the digest of the params it approved."""

    voter: str
    platform: str
    choice: Choice
    at: datetime
    comment: str | None = None
    edited_params: JsonObject | None = None
    params_sha256: str | None = None


@dataclass(frozen=True)
class Tally:
    """Votes counted per the rules: distinct people, approvals grouped by exact params."""

    approvals_by_params: Mapping[str, tuple[str, ...]]
    denials: tuple[str, ...]

    @property
    def leading_params(self) -> str | None:
        """Digest of the params with the most approvals (earliest first on a tie)."""
        best: str | None = None
        for digest, voters in self.approvals_by_params.items():
            if best is None or len(voters) > len(self.approvals_by_params[best]):
                best = digest
        return best

    @property
    def approvals(self) -> int:
        """Approvals behind the leading params: the number that must reach the quorum."""
        lead = self.leading_params
        return 0 if lead is None else len(self.approvals_by_params[lead])


@dataclass(frozen=True)
class ApprovalRequest:
    """A request for approval and everything decided about it so far."""

    id: str
    action: str
    resource: str
    reason: str
    params: JsonObject
    params_sha256: str
    context: JsonObject
    client: str
    client_owner: str | None
    requested_by: str | None
    rule: RuleSnapshot
    status: Status
    created_at: datetime
    expires_at: datetime
    callback_url: str | None = None
    votes: tuple[Vote, ...] = ()
    decided_at: datetime | None = None
    decided_by: tuple[str, ...] = ()
    decision_reason: str | None = None
    approved_params: JsonObject | None = None
    approved_params_sha256: str | None = None
    receipt: str | None = None

    @property
    def edited_params(self) -> JsonObject | None:
        """The params that were approved when they differ from the requested ones."""
        if self.approved_params_sha256 in (None, self.params_sha256):
            return None
        return self.approved_params

    def vote_of(self, voter: str) -> Vote | None:
        """The vote ``voter`` (a normalised address) cast, if any."""
        return next((v for v in self.votes if v.voter == voter), None)
