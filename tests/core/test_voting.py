"""Every approval rule, and every pair of rules that meet, as a table of cases."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from countersign.core import (
    AlreadyDecided,
    AlreadyVoted,
    ApprovalRequest,
    Ballot,
    Choice,
    Expired,
    InvalidEdit,
    NotAnApprover,
    RuleSnapshot,
    SelfApproval,
    Status,
    Verdict,
    Vote,
    cancel,
    cast_vote,
    expire_if_due,
    params_sha256,
    tally,
)

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
PARAMS = {"table": "customers", "rows": 120000}
EDIT_A = {"table": "customers", "rows": 1000}
EDIT_B = {"table": "customers", "rows": 5}
APPROVERS = frozenset(
    {
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
        "dana@example.com",
        "owen@example.com",
    }
)


def _nested(depth: int) -> dict[str, object]:
    """{"x": {"x": ... }} ``depth`` levels deep, built without recursion."""
    value: dict[str, object] = {}
    for _ in range(depth):
        value = {"x": value}
    return value


def make(
    *,
    quorum: int = 2,
    deny_quorum: int = 1,
    status: Status = Status.PENDING,
    approvers: frozenset[str] = APPROVERS,
    votes: tuple[tuple[str, str, dict[str, Any] | None], ...] = (),
) -> ApprovalRequest:
    """A request by dana@ through owen@'s client, replaying ``votes`` through the rules."""
    request = ApprovalRequest(
        id="req_1",
        action="db.export",
        resource="prod/customers",
        reason="churn analysis",
        params=PARAMS,
        params_sha256=params_sha256(PARAMS),
        context={},
        client="copilot",
        client_owner="owen@example.com",
        requested_by="dana@example.com",
        rule=RuleSnapshot("prod-export", Verdict.REQUIRE_APPROVAL, approvers, quorum, deny_quorum),
        status=Status.PENDING,
        created_at=T0,
        expires_at=T0 + timedelta(minutes=30),
    )
    for i, (voter, choice, edit) in enumerate(votes):
        request = cast_vote(
            request,
            Ballot(voter, "slack", Choice(choice), edited_params=edit),
            T0 + timedelta(seconds=i),
        ).request
    if status is not Status.PENDING:
        request = replace(request, status=status, decided_at=T0)
    return request


LATER = timedelta(minutes=1)
# name, request, ballot (voter, choice, edit), time offset, expected error or (status, approvals, denials)
CASES: list[tuple[str, ApprovalRequest, tuple[str, str, Any], timedelta, Any]] = [
    # the plain path
    (
        "first approval is counted",
        make(),
        ("alice@example.com", "approve", None),
        LATER,
        (Status.PENDING, 1, 0),
    ),
    (
        "quorum of distinct people approves",
        make(votes=(("alice@example.com", "approve", None),)),
        ("bob@example.com", "approve", None),
        LATER,
        (Status.APPROVED, 2, 0),
    ),
    (
        "quorum 1 approves at once",
        make(quorum=1),
        ("bob@example.com", "approve", None),
        LATER,
        (Status.APPROVED, 1, 0),
    ),
    (
        "one denial vetoes by default",
        make(votes=(("alice@example.com", "approve", None),)),
        ("bob@example.com", "deny", None),
        LATER,
        (Status.DENIED, 1, 1),
    ),
    (
        "deny quorum 2: one denial waits",
        make(deny_quorum=2),
        ("bob@example.com", "deny", None),
        LATER,
        (Status.PENDING, 0, 1),
    ),
    (
        "deny quorum 2: two denials deny",
        make(deny_quorum=2, votes=(("carol@example.com", "deny", None),)),
        ("bob@example.com", "deny", None),
        LATER,
        (Status.DENIED, 0, 2),
    ),
    # one vote per person, identity is the case-insensitive address
    (
        "second click changes nothing",
        make(votes=(("alice@example.com", "approve", None),)),
        ("alice@example.com", "approve", None),
        LATER,
        AlreadyVoted,
    ),
    (
        "changing one's mind is refused",
        make(votes=(("alice@example.com", "approve", None),)),
        ("alice@example.com", "deny", None),
        LATER,
        AlreadyVoted,
    ),
    (
        "same person in other case is the same person",
        make(votes=(("alice@example.com", "approve", None),)),
        ("  Alice@EXAMPLE.com ", "approve", None),
        LATER,
        AlreadyVoted,
    ),
    # eligibility
    (
        "stranger may not vote",
        make(),
        ("mallory@example.com", "approve", None),
        LATER,
        NotAnApprover,
    ),
    (
        "stranger may not deny either",
        make(),
        ("mallory@example.com", "deny", None),
        LATER,
        NotAnApprover,
    ),
    # self-approval (both are listed approvers on purpose: self-approval wins)
    (
        "requester cannot approve",
        make(),
        ("dana@example.com", "approve", None),
        LATER,
        SelfApproval,
    ),
    (
        "requester in other case cannot approve",
        make(),
        ("DANA@example.com", "approve", None),
        LATER,
        SelfApproval,
    ),
    (
        "client owner cannot approve",
        make(),
        ("owen@example.com", "approve", None),
        LATER,
        SelfApproval,
    ),
    (
        "requester's deny withdraws",
        make(),
        ("dana@example.com", "deny", None),
        LATER,
        (Status.CANCELLED, 0, 0),
    ),
    (
        "owner's deny withdraws",
        make(votes=(("alice@example.com", "approve", None),)),
        ("owen@example.com", "deny", None),
        LATER,
        (Status.CANCELLED, 1, 0),
    ),
    (
        "requester who is no approver may still withdraw",
        make(approvers=frozenset({"alice@example.com", "bob@example.com"})),
        ("dana@example.com", "deny", None),
        LATER,
        (Status.CANCELLED, 0, 0),
    ),
    (
        "requester who is no approver: approval is self-approval",
        make(approvers=frozenset({"alice@example.com", "bob@example.com"})),
        ("dana@example.com", "approve", None),
        LATER,
        SelfApproval,
    ),
    # decided is final, whoever clicks and however
    (
        "approved is final",
        make(status=Status.APPROVED),
        ("carol@example.com", "deny", None),
        LATER,
        AlreadyDecided,
    ),
    (
        "denied is final",
        make(status=Status.DENIED),
        ("carol@example.com", "approve", None),
        LATER,
        AlreadyDecided,
    ),
    (
        "cancelled is final",
        make(status=Status.CANCELLED),
        ("carol@example.com", "approve", None),
        LATER,
        AlreadyDecided,
    ),
    (
        "expired is final",
        make(status=Status.EXPIRED),
        ("carol@example.com", "approve", None),
        LATER,
        Expired,
    ),
    (
        "decided beats self-approval",
        make(status=Status.APPROVED),
        ("dana@example.com", "approve", None),
        LATER,
        AlreadyDecided,
    ),
    (
        "decided beats withdrawal",
        make(status=Status.DENIED),
        ("dana@example.com", "deny", None),
        LATER,
        AlreadyDecided,
    ),
    (
        "decided beats eligibility",
        make(status=Status.APPROVED),
        ("mallory@example.com", "approve", None),
        LATER,
        AlreadyDecided,
    ),
    (
        "decided beats already-voted",
        make(quorum=1, votes=(("alice@example.com", "approve", None),)),
        ("alice@example.com", "approve", None),
        LATER,
        AlreadyDecided,
    ),
    # expiry
    (
        "a vote at expires_at is too late",
        make(),
        ("alice@example.com", "approve", None),
        timedelta(minutes=30),
        Expired,
    ),
    (
        "a vote just before expires_at counts",
        make(),
        ("alice@example.com", "approve", None),
        timedelta(minutes=30, microseconds=-1),
        (Status.PENDING, 1, 0),
    ),
    (
        "expiry beats self-approval",
        make(),
        ("dana@example.com", "approve", None),
        timedelta(hours=1),
        Expired,
    ),
    (
        "expiry beats withdrawal",
        make(),
        ("dana@example.com", "deny", None),
        timedelta(hours=1),
        Expired,
    ),
    (
        "expiry beats eligibility",
        make(),
        ("mallory@example.com", "approve", None),
        timedelta(hours=1),
        Expired,
    ),
    ("expiry beats denial", make(), ("bob@example.com", "deny", None), timedelta(hours=1), Expired),
    # approve with changes
    (
        "an edit is an approval of the edit",
        make(),
        ("alice@example.com", "approve", EDIT_A),
        LATER,
        (Status.PENDING, 1, 0),
    ),
    (
        "two approvals of one edit approve it",
        make(votes=(("alice@example.com", "approve", EDIT_A),)),
        ("bob@example.com", "approve", EDIT_A),
        LATER,
        (Status.APPROVED, 2, 0),
    ),
    (
        "original + edit do not add up",
        make(votes=(("alice@example.com", "approve", None),)),
        ("bob@example.com", "approve", EDIT_A),
        LATER,
        (Status.PENDING, 1, 0),
    ),
    (
        "two different edits do not add up",
        make(votes=(("alice@example.com", "approve", EDIT_A),)),
        ("bob@example.com", "approve", EDIT_B),
        LATER,
        (Status.PENDING, 1, 0),
    ),
    (
        "an edit equal to the params is a plain approval",
        make(votes=(("alice@example.com", "approve", None),)),
        ("bob@example.com", "approve", dict(PARAMS)),
        LATER,
        (Status.APPROVED, 2, 0),
    ),
    (
        "a denial cannot carry an edit",
        make(),
        ("bob@example.com", "deny", EDIT_A),
        LATER,
        InvalidEdit,
    ),
    (
        "an edit must be an object",
        make(),
        ("bob@example.com", "approve", ["rows", 1]),
        LATER,
        InvalidEdit,
    ),
    (
        "an edit must be JSON",
        make(),
        ("bob@example.com", "approve", {"x": object()}),
        LATER,
        InvalidEdit,
    ),
    (
        "an edit must not contain NUL",
        make(),
        ("bob@example.com", "approve", {"x": ["a\x00b"]}),
        LATER,
        InvalidEdit,
    ),
    (
        "an edit must not nest deeper than 32 levels (10,000 here: no recursion anywhere)",
        make(),
        ("bob@example.com", "approve", _nested(10_000)),
        LATER,
        InvalidEdit,
    ),
    (
        "an edit must fit 32 KiB",
        make(),
        ("bob@example.com", "approve", {"x": "a" * 40000}),
        LATER,
        InvalidEdit,
    ),
    (
        "eligibility beats a bad edit",
        make(),
        ("mallory@example.com", "deny", EDIT_A),
        LATER,
        NotAnApprover,
    ),
    (
        "self-approval beats an edit",
        make(),
        ("dana@example.com", "approve", EDIT_A),
        LATER,
        SelfApproval,
    ),
    (
        "already-voted beats a bad edit",
        make(votes=(("alice@example.com", "approve", None),)),
        ("alice@example.com", "approve", ["bad"]),
        LATER,
        AlreadyVoted,
    ),
    (
        "an edit's denial still vetoes",
        make(votes=(("alice@example.com", "approve", EDIT_A),)),
        ("bob@example.com", "deny", None),
        LATER,
        (Status.DENIED, 1, 1),
    ),
]


@pytest.mark.parametrize(
    ("request_", "ballot", "offset", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_vote_rules(
    request_: ApprovalRequest, ballot: tuple[str, str, Any], offset: timedelta, expected: Any
) -> None:
    voter, choice, edit = ballot
    b = Ballot(voter, "teams", Choice(choice), comment="because", edited_params=edit)
    if isinstance(expected, type):
        with pytest.raises(expected) as info:
            cast_vote(request_, b, T0 + offset)
        assert info.type is expected  # not a subclass: the exact rule is named
        return
    status, _approvals, _denials = expected
    result = cast_vote(request_, b, T0 + offset)
    counted = tally(result.request.votes)
    assert (result.request.status, counted.approvals, len(counted.denials)) == expected
    assert result.decided == status.is_final
    if status is Status.CANCELLED:
        assert result.vote is None  # a withdrawal is not a vote
        assert result.request.decided_by == (voter.strip().lower(),)
        assert "withdrawn" in (result.request.decision_reason or "")
    else:
        assert result.vote is not None and result.vote.voter == voter.strip().lower()


def test_approval_binds_to_the_edit_that_reached_quorum() -> None:
    request = make(
        quorum=2,
        votes=(
            ("alice@example.com", "approve", EDIT_A),
            ("bob@example.com", "approve", EDIT_B),
            ("carol@example.com", "approve", None),
        ),
    )
    assert request.status is Status.PENDING  # 1 + 1 + 1 approvals on three different params
    done = cast_vote(
        replace(
            request,
            rule=replace(request.rule, approvers=request.rule.approvers | {"frank@example.com"}),
        ),
        Ballot("frank@example.com", "slack", Choice.APPROVE, edited_params=EDIT_B),
        T0,
    ).request
    assert done.status is Status.APPROVED
    assert done.approved_params == EDIT_B
    assert done.approved_params_sha256 == params_sha256(EDIT_B)
    assert done.edited_params == EDIT_B
    assert done.decided_by == ("bob@example.com", "frank@example.com")


def test_plain_approval_binds_to_requested_params() -> None:
    done = make(
        votes=(
            ("alice@example.com", "approve", EDIT_A),
            ("bob@example.com", "approve", None),
            ("carol@example.com", "approve", None),
        )
    )
    assert done.status is Status.APPROVED
    assert done.approved_params == PARAMS
    assert done.approved_params_sha256 == done.params_sha256
    assert done.edited_params is None
    assert done.decided_by == ("bob@example.com", "carol@example.com")


def test_tally_counts_distinct_people_only() -> None:
    digest = params_sha256(PARAMS)
    votes = (
        *tuple(
            Vote("alice@example.com", p, Choice.APPROVE, T0, params_sha256=digest)
            for p in ("slack", "teams", "slack")
        ),
        Vote("bob@example.com", "teams", Choice.DENY, T0),
        Vote("bob@example.com", "slack", Choice.DENY, T0),
    )
    counted = tally(votes)
    assert counted.approvals == 1
    assert counted.denials == ("bob@example.com",)


EXPIRY_CASES = [
    ("before expiry nothing happens", Status.PENDING, timedelta(minutes=29), None),
    ("at expiry it expires", Status.PENDING, timedelta(minutes=30), Status.EXPIRED),
    ("after expiry it expires", Status.PENDING, timedelta(days=3), Status.EXPIRED),
    ("approved never expires", Status.APPROVED, timedelta(days=3), None),
    ("cancelled never expires", Status.CANCELLED, timedelta(days=3), None),
]


@pytest.mark.parametrize(
    ("status", "offset", "expected"),
    [c[1:] for c in EXPIRY_CASES],
    ids=[c[0] for c in EXPIRY_CASES],
)
def test_expire_if_due(status: Status, offset: timedelta, expected: Status | None) -> None:
    result = expire_if_due(make(status=status), T0 + offset)
    assert (result.status if result else None) == expected
    if result is not None:
        assert result.decided_at == T0 + offset
        assert result.approved_params is None  # expiry denies by default


CANCEL_CASES = [
    ("pending is cancelled", Status.PENDING, LATER, Status.CANCELLED),
    ("approved cannot be cancelled", Status.APPROVED, LATER, AlreadyDecided),
    ("cancelled cannot be cancelled again", Status.CANCELLED, LATER, AlreadyDecided),
    ("due cannot be cancelled", Status.PENDING, timedelta(hours=2), Expired),
]


@pytest.mark.parametrize(
    ("status", "offset", "expected"),
    [c[1:] for c in CANCEL_CASES],
    ids=[c[0] for c in CANCEL_CASES],
)
def test_cancel(status: Status, offset: timedelta, expected: Any) -> None:
    request = make(status=status)
    if isinstance(expected, type):
        with pytest.raises(expected):
            cancel(request, T0 + offset, "copilot")
        return
    done = cancel(request, T0 + offset, "copilot", "no longer needed")
    assert done.status is expected
    assert done.decided_by == ("copilot",)
    assert done.decision_reason == "no longer needed"
