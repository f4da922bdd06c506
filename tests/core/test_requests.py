"""Opening a request: validation, TTL, policy verdicts and unsatisfiable quorums."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from countersign.core import (
    InvalidRequest,
    RequestSpec,
    RuleSnapshot,
    Status,
    Verdict,
    open_request,
    params_sha256,
    validate_spec,
)

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
GOOD: dict[str, Any] = {
    "action": "db.export",
    "resource": "prod/customers",
    "reason": "Quarterly churn analysis (FIN-42)",
    "requested_by": "Dana@Example.com",
    "params": {"rows": 120000},
    "context": {"ticket": "FIN-42", "agent": "copilot", "n": 1, "ok": True, "none": None},
    "callback_url": "https://agent.example.com/hook",
    "ttl_seconds": 600,
}

INVALID = [
    ("action", {"action": "DB.Export"}),
    ("action", {"action": ".db"}),
    ("action", {"action": "a" * 129}),
    ("resource", {"resource": ""}),
    ("resource", {"resource": "r" * 513}),
    ("reason", {"reason": "   "}),
    ("reason", {"reason": "x" * 2001}),
    ("requested_by", {"requested_by": "dana"}),
    ("params", {"params": ["not", "an", "object"]}),
    ("params", {"params": {"blob": "x" * 33000}}),
    ("context", {"context": {f"k{i}": i for i in range(21)}}),
    ("context.nested", {"context": {"nested": {"a": 1}}}),
    ("context.list", {"context": {"list": [1]}}),
    ("callback_url", {"callback_url": "ftp://example.com/x"}),
    ("callback_url", {"callback_url": "not a url"}),
    ("ttl_seconds", {"ttl_seconds": 0}),
    ("ttl_seconds", {"ttl_seconds": True}),
    ("ttl_seconds", {"ttl_seconds": 10**15}),
    ("action", {"action": "deploy\n"}),
    ("callback_url", {"callback_url": "http://[::1"}),
    ("reason", {"reason": "nul\x00byte"}),
    ("params", {"params": {"k": ["a\x00"]}}),
    ("params", {"params": {"k\x00": 1}}),
    ("context", {"context": {"k": "\x00"}}),
]


@pytest.mark.parametrize(
    ("field", "change"), INVALID, ids=[f"{f}-{i}" for i, (f, _) in enumerate(INVALID)]
)
def test_invalid_field_is_named(field: str, change: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate_spec(RequestSpec(**{**GOOD, **change}))
    assert [e.field for e in info.value.errors] == [field]


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(InvalidRequest) as info:
        validate_spec(RequestSpec(action="X", resource="", reason="", requested_by="nope"))
    assert {e.field for e in info.value.errors} == {"action", "resource", "reason", "requested_by"}


def test_valid_spec_is_normalised() -> None:
    spec = validate_spec(RequestSpec(**{**GOOD, "reason": "  why  "}))
    assert spec.requested_by == "dana@example.com"
    assert spec.reason == "why"


RULE = RuleSnapshot(
    "prod-export",
    Verdict.REQUIRE_APPROVAL,
    frozenset({"alice@example.com", "bob@example.com", "dana@example.com"}),
    quorum=2,
)

OPEN_CASES = [
    ("allow decides at once", RuleSnapshot("safe", Verdict.ALLOW), None, Status.APPROVED),
    ("deny decides at once", RuleSnapshot("never", Verdict.DENY), None, Status.DENIED),
    ("approval rule stays pending", RULE, None, Status.PENDING),
    ("requester is set aside but quorum still reachable", RULE, "owen@example.com", Status.PENDING),
    ("owner and requester set aside: quorum unreachable", RULE, "alice@example.com", Status.DENIED),
    (
        "quorum above approvers can never pass",
        RuleSnapshot("big", Verdict.REQUIRE_APPROVAL, frozenset({"a@x.io"}), 2),
        None,
        Status.DENIED,
    ),
]


@pytest.mark.parametrize(
    ("rule", "owner", "status"), [c[1:] for c in OPEN_CASES], ids=[c[0] for c in OPEN_CASES]
)
def test_open_request(rule: RuleSnapshot, owner: str | None, status: Status) -> None:
    spec = validate_spec(RequestSpec(**GOOD))
    request = open_request(
        request_id="req_1",
        spec=spec,
        client="copilot",
        client_owner=owner,
        rule=rule,
        rule_ttl=timedelta(minutes=30),
        now=T0,
    )
    assert request.status is status
    assert request.params_sha256 == params_sha256(GOOD["params"])
    if status is Status.PENDING:
        assert request.decided_at is None and request.decided_by == ()
    else:
        assert request.decided_at == T0
        assert request.decided_by == (f"policy:{rule.name}",)
        assert request.decision_reason
    if status is Status.APPROVED:
        assert request.approved_params == GOOD["params"]
    else:
        assert request.approved_params is None
    if rule is RULE and status is Status.DENIED:
        assert "no self-approval" in (request.decision_reason or "")


@pytest.mark.parametrize(
    ("ttl_seconds", "rule_ttl", "expected"),
    [
        (600, timedelta(minutes=30), timedelta(minutes=10)),
        (7200, timedelta(minutes=30), timedelta(minutes=30)),
        (None, timedelta(hours=2), timedelta(hours=2)),
    ],
    ids=["client shorter wins", "rule caps client", "rule default"],
)
def test_ttl_is_capped_by_rule(
    ttl_seconds: int | None, rule_ttl: timedelta, expected: timedelta
) -> None:
    spec = validate_spec(RequestSpec(**{**GOOD, "ttl_seconds": ttl_seconds}))
    request = open_request(
        request_id="r",
        spec=spec,
        client="c",
        client_owner=None,
        rule=RULE,
        rule_ttl=rule_ttl,
        now=T0,
    )
    assert request.expires_at - request.created_at == expected
