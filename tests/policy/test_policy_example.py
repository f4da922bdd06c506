"""The bundled example policy loads, and decides the requests it was written for."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from countersign.core.model import RuleSnapshot, Verdict
from countersign.policy import (
    EXAMPLE_POLICY_PATH,
    Escalation,
    Notify,
    Policy,
    Subject,
    check_policy_file,
    evaluate,
    explain,
    load_policy,
)

SECURITY = frozenset({"carol@example.com", "erin@example.com"})
SRE = frozenset({"alice@example.com", "bob@example.com"})


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(EXAMPLE_POLICY_PATH)


def test_example_is_valid() -> None:
    assert check_policy_file(EXAMPLE_POLICY_PATH) == []


def test_example_groups_and_rule_order(policy: Policy) -> None:
    assert dict(policy.groups) == {"security": SECURITY, "sre": SRE}
    assert [rule.name for rule in policy.rules] == [
        "safe-reads",
        "no-prod-drops",
        "prod-export",
        "default",
    ]
    assert policy.source == str(EXAMPLE_POLICY_PATH)


def test_example_prod_export_rule_is_fully_read(policy: Policy) -> None:
    rule = policy.rule("prod-export")
    assert rule is not None
    assert rule.verdict is Verdict.REQUIRE_APPROVAL
    assert rule.approver_refs == ("group:security", "group:sre", "frank@example.com")
    assert rule.approvers == SECURITY | SRE | {"frank@example.com"}
    assert (rule.quorum, rule.deny_quorum) == (2, 1)
    assert rule.ttl == timedelta(minutes=30)
    assert rule.remind_after == timedelta(minutes=10)
    assert rule.notify == Notify(
        slack=("#approvals", "approvers"), teams=("Ops/Approvals", "approvers")
    )
    assert rule.escalate == Escalation(
        after=timedelta(minutes=20), approvers=SECURITY, approver_refs=("group:security",)
    )
    assert rule.when == "params.rows > 10000"
    assert rule.snapshot() == RuleSnapshot(
        name="prod-export",
        verdict=Verdict.REQUIRE_APPROVAL,
        approvers=SECURITY | SRE | {"frank@example.com"},
        quorum=2,
        deny_quorum=1,
    )


def test_example_default_rule_uses_defaults(policy: Policy) -> None:
    rule = policy.rule("default")
    assert rule is not None
    assert rule.approvers == SRE
    assert rule.ttl == timedelta(hours=1)
    assert rule.notify == Notify(slack=("approvers",), teams=("approvers",))
    assert rule.matches_everything


CASES: list[tuple[str, str, dict[str, Any], str | None, Verdict]] = [
    ("db.read", "prod/customers", {}, "safe-reads", Verdict.ALLOW),
    ("db.read_rows", "anything", {}, "safe-reads", Verdict.ALLOW),
    ("db.drop", "prod/x", {}, "no-prod-drops", Verdict.DENY),
    ("db.drop", "staging/x", {}, "default", Verdict.REQUIRE_APPROVAL),
    ("db.export", "prod/customers", {"rows": 120000}, "prod-export", Verdict.REQUIRE_APPROVAL),
    ("db.export", "prod/customers", {"rows": 10}, "default", Verdict.REQUIRE_APPROVAL),
    ("db.export", "prod/customers", {}, "prod-export", Verdict.REQUIRE_APPROVAL),
    ("db.export", "prod/customers", {"rows": "many"}, "prod-export", Verdict.REQUIRE_APPROVAL),
    ("db.export", "dev/customers", {"rows": 120000}, "default", Verdict.REQUIRE_APPROVAL),
]


@pytest.mark.parametrize(
    ("action", "resource", "params", "expected", "verdict"),
    CASES,
    ids=[
        "read-allowed",
        "read-prefix-allowed",
        "prod-drop-denied",
        "staging-drop-default",
        "big-export",
        "small-export-default",
        "missing-rows-errs-to-prod-export",
        "wrong-type-rows-errs-to-prod-export",
        "dev-export-default",
    ],
)
def test_example_matches(
    policy: Policy,
    action: str,
    resource: str,
    params: dict[str, Any],
    expected: str,
    verdict: Verdict,
) -> None:
    subject = Subject(action=action, resource=resource, params=params)
    rule = evaluate(policy, subject)
    assert rule is not None
    assert rule.name == expected
    assert rule.verdict is verdict
    assert explain(policy, subject).verdict is verdict
