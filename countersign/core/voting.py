"""The approval rules as pure functions over a request and a ballot.

Order of checks for a vote (the first that fails is the answer the voter gets):

1. the request is final -> ``AlreadyDecided`` (``Expired`` when time ran out);
   a pending request past ``expires_at`` is ``Expired`` too;
2. the voter is the human behind the request or the owner of its client:
   an approval is ``SelfApproval``; a denial *withdraws* the request (it ends
   ``cancelled``, see below);
3. the voter is not one of the rule's approvers -> ``NotAnApprover``;
4. the voter has voted already -> ``AlreadyVoted`` (one vote per person);
5. edited params that do not fit -> ``InvalidEdit``.

Counting: ``deny_quorum`` distinct denials deny. Approvals are grouped by the
digest of the exact params they approve (the requested params, or one
approver's edit): the request is approved when one group reaches ``quorum``,
and the approval binds to that group's params. Approvals of different params
never add up, so nobody's consent is ever applied to params they did not see.

A denial by the requester or the client's owner is a withdrawal, not a
denial: they are not risk owners, so their "no" means "I no longer want this".
The request ends ``cancelled`` (not ``denied``); it needs no eligibility and
is not counted toward ``deny_quorum``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from countersign.core.digest import canonical_json, params_sha256
from countersign.core.errors import (
    AlreadyDecided,
    AlreadyVoted,
    Expired,
    InvalidEdit,
    NotAnApprover,
    SelfApproval,
)
from countersign.core.identity import normalize_email
from countersign.core.model import (
    ApprovalRequest,
    Choice,
    JsonObject,
    Status,
    Tally,
    Vote,
)
from countersign.core.text import MAX_NESTING, contains_nul, too_deep

__all__ = [
    "MAX_PARAMS_BYTES",
    "Ballot",
    "VoteResult",
    "cancel",
    "cast_vote",
    "ensure_open",
    "expire_if_due",
    "is_due",
    "self_role",
    "tally",
]

MAX_PARAMS_BYTES = 32 * 1024
MAX_COMMENT_CHARS = 2000


@dataclass(frozen=True)
class Ballot:
    """A vote as an adapter hands it in: who, from where, what, and optional edit."""

    voter: str
    platform: str
    choice: Choice
    comment: str | None = None
    edited_params: JsonObject | None = None


@dataclass(frozen=True)
class VoteResult:
    """The request after a ballot, and the vote it recorded (None for a withdrawal)."""

    request: ApprovalRequest
    vote: Vote | None

    @property
    def decided(self) -> bool:
        """True when this ballot made the request final."""
        return self.request.status.is_final


def is_due(request: ApprovalRequest, now: datetime) -> bool:
    """True when a pending request has reached its ``expires_at``."""
    return request.status is Status.PENDING and now >= request.expires_at


def ensure_open(request: ApprovalRequest, now: datetime) -> None:
    """Raise ``Expired`` / ``AlreadyDecided`` unless the request can still change."""
    if request.status is Status.EXPIRED or is_due(request, now):
        raise Expired(request.id)
    if request.status.is_final:
        raise AlreadyDecided(request.id, request.status.value)


def self_role(request: ApprovalRequest, voter: str) -> str | None:
    """``"requester"`` or ``"client owner"`` when ``voter`` stands behind the request."""
    if request.requested_by is not None and voter == request.requested_by:
        return "requester"
    if request.client_owner is not None and voter == request.client_owner:
        return "client owner"
    return None


def tally(votes: tuple[Vote, ...]) -> Tally:
    """Count distinct voters: approvals per params digest, and denials."""
    groups: dict[str, list[str]] = {}
    denials: list[str] = []
    seen: set[str] = set()
    for vote in votes:
        if vote.voter in seen:  # storage forbids it; counting must not depend on that
            continue
        seen.add(vote.voter)
        if vote.choice is Choice.DENY:
            denials.append(vote.voter)
        else:
            assert vote.params_sha256 is not None, "an approval always binds to params"
            groups.setdefault(vote.params_sha256, []).append(vote.voter)
    return Tally(
        approvals_by_params={k: tuple(v) for k, v in groups.items()}, denials=tuple(denials)
    )


def _check_edit(request: ApprovalRequest, ballot: Ballot, voter: str) -> JsonObject | None:
    """The edit to bind to, None when there is none (or it equals the request's params)."""
    edit = ballot.edited_params
    if edit is None:
        return None
    if ballot.choice is not Choice.APPROVE:
        raise InvalidEdit(request.id, voter, "only an approval can carry edited params")
    if not isinstance(edit, dict):
        raise InvalidEdit(request.id, voter, "edited params must be a JSON object")
    if too_deep(edit):
        raise InvalidEdit(request.id, voter, f"edited params nest deeper than {MAX_NESTING}")
    if contains_nul(edit):
        raise InvalidEdit(request.id, voter, "edited params must not contain NUL characters")
    try:
        encoded = canonical_json(edit)
    except (TypeError, ValueError) as exc:
        raise InvalidEdit(request.id, voter, f"edited params are not JSON: {exc}") from exc
    if len(encoded.encode("utf-8")) > MAX_PARAMS_BYTES:
        raise InvalidEdit(request.id, voter, f"edited params exceed {MAX_PARAMS_BYTES} bytes")
    if params_sha256(edit) == request.params_sha256:
        return None
    return edit


def cast_vote(request: ApprovalRequest, ballot: Ballot, now: datetime) -> VoteResult:
    """Apply one ballot; the new state, or the typed error of the first rule it breaks."""
    voter = normalize_email(ballot.voter)
    ensure_open(request, now)
    # NUL cannot be stored (PostgreSQL) and means nothing in a comment: drop it.
    comment = ballot.comment.replace("\x00", "").strip() if ballot.comment else None
    comment = comment or None
    if comment and len(comment) > MAX_COMMENT_CHARS:
        comment = comment[:MAX_COMMENT_CHARS]

    role = self_role(request, voter)
    if role is not None:
        if ballot.choice is Choice.APPROVE:
            raise SelfApproval(request.id, voter, role)
        withdrawn = replace(
            request,
            status=Status.CANCELLED,
            decided_at=now,
            decided_by=(voter,),
            decision_reason=f"withdrawn by the {role}" + (f": {comment}" if comment else ""),
        )
        return VoteResult(withdrawn, None)

    if voter not in request.rule.approvers:
        raise NotAnApprover(request.id, voter, request.rule.name)
    previous = request.vote_of(voter)
    if previous is not None:
        raise AlreadyVoted(request.id, voter, previous.choice.value)

    edit = _check_edit(request, ballot, voter)
    digest = None
    if ballot.choice is Choice.APPROVE:
        digest = request.params_sha256 if edit is None else params_sha256(edit)
    vote = Vote(
        voter=voter,
        platform=ballot.platform,
        choice=ballot.choice,
        at=now,
        comment=comment,
        edited_params=edit,
        params_sha256=digest,
    )
    votes = (*request.votes, vote)
    counted = tally(votes)
    updated = replace(request, votes=votes)

    if len(counted.denials) >= request.rule.deny_quorum:
        updated = replace(
            updated,
            status=Status.DENIED,
            decided_at=now,
            decided_by=counted.denials,
            decision_reason=comment,
        )
    elif digest is not None and len(counted.approvals_by_params[digest]) >= request.rule.quorum:
        approved: JsonObject | None = request.params
        if digest != request.params_sha256:  # the group that won approved an edit
            approved = next(v.edited_params for v in votes if v.params_sha256 == digest)
        updated = replace(
            updated,
            status=Status.APPROVED,
            decided_at=now,
            decided_by=counted.approvals_by_params[digest],
            decision_reason=comment,
            approved_params=approved,
            approved_params_sha256=digest,
        )
    return VoteResult(updated, vote)


def expire_if_due(request: ApprovalRequest, now: datetime) -> ApprovalRequest | None:
    """The request ended ``expired`` if its time has run out, else None (nothing to do)."""
    if not is_due(request, now):
        return None
    return replace(
        request,
        status=Status.EXPIRED,
        decided_at=now,
        decided_by=(),
        decision_reason="no decision before the request expired",
    )


def cancel(
    request: ApprovalRequest, now: datetime, by: str, reason: str | None = None
) -> ApprovalRequest:
    """End a pending request as ``cancelled`` (by its client, or withdrawn by its human)."""
    ensure_open(request, now)
    return replace(
        request,
        status=Status.CANCELLED,
        decided_at=now,
        decided_by=(by,),
        decision_reason=reason or "cancelled",
    )


def escalate(
    request: ApprovalRequest, now: datetime, added: frozenset[str]
) -> ApprovalRequest | None:
    """The request with ``added`` people made eligible; None when pending no more or nothing new.

    Escalation only widens who may vote: the quorum, the votes cast and the
    no-self-approval rule stay as they are (the requester stays ineligible
    even when named, because eligibility is checked at each vote).
    """
    if request.status.is_final or now >= request.expires_at:
        return None
    new = added - request.rule.approvers
    if not new:
        return None
    return replace(request, rule=replace(request.rule, approvers=request.rule.approvers | new))
