"""Text for people: `policy check` problems and the `policy explain` report."""

from __future__ import annotations

import subprocess
import sys

import pytest

from countersign.core.errors import PolicyProblem
from countersign.policy import (
    EXAMPLE_POLICY_PATH,
    Policy,
    Subject,
    explain,
    load_policy,
    parse_policy,
    render_explanation,
    render_problems,
)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(EXAMPLE_POLICY_PATH)


def test_render_problems_one_line_each() -> None:
    rendered = render_problems(
        [
            PolicyProblem(3, "rule 'a': quorum 3 is more than its 2 approvers", "c.yaml"),
            PolicyProblem(0, "cannot read policy file: No such file or directory", "c.yaml"),
        ]
    )
    assert rendered == (
        "c.yaml:3: rule 'a': quorum 3 is more than its 2 approvers\n"
        "c.yaml:0: cannot read policy file: No such file or directory"
    )
    assert render_problems([]) == ""


def test_explain_small_export_says_why_earlier_rules_did_not_match(policy: Policy) -> None:
    subject = Subject(action="db.export", resource="prod/customers", params={"rows": 10})
    text = render_explanation(explain(policy, subject))
    lines = text.splitlines()
    assert "  safe-reads (line 11): no match: action 'db.export' does not match 'db.read*'" in lines
    assert (
        "  no-prod-drops (line 16): no match: action 'db.export' does not match 'db.drop'" in lines
    )
    assert "  prod-export (line 21): no match: when `params.rows > 10000` is false" in lines
    assert "  default (line 35): MATCH: matches every request" in lines
    assert "matching rule: default (line 35)" in lines
    assert "  approvers: group:sre" in lines
    assert "    which are: alice@example.com, bob@example.com" in lines
    assert "  quorum: 1 distinct approval of 2 approvers" in lines
    assert "  ttl: 1h (then it expires, which denies it)" in lines
    assert '  params: {"rows": 10}' in lines


def test_explain_approval_rule_shows_everything_it_decides(policy: Policy) -> None:
    subject = Subject(
        action="db.export",
        resource="prod/customers",
        params={"rows": 120000},
        requested_by="dana@example.com",
    )
    lines = render_explanation(explain(policy, subject)).splitlines()
    assert "matching rule: prod-export (line 21)" in lines
    assert "  decision: require approval" in lines
    assert "  approvers: group:security, group:sre, frank@example.com" in lines
    assert "  quorum: 2 distinct approvals of 5 approvers" in lines
    assert "  deny quorum: 1 denial ends the request" in lines
    assert "  ttl: 30m (then it expires, which denies it)" in lines
    assert (
        "  notify: Slack: #approvals, each approver directly; "
        "Teams: Ops/Approvals, each approver directly"
    ) in lines
    assert "  reminder: after 10m if still pending" in lines
    assert (
        "  escalation: after 20m also ask group:security (carol@example.com, erin@example.com)"
        in lines
    )
    assert "  requested by: dana@example.com" in lines


def test_explain_error_rule_is_visible(policy: Policy) -> None:
    text = render_explanation(explain(policy, Subject(action="db.export", resource="prod/x")))
    assert (
        "when `params.rows > 10000` could not be evaluated (no such member in mapping: 'rows'); "
        "treated as a match because an error never loosens the policy"
    ) in text
    assert "matching rule: prod-export (line 21)" in text


@pytest.mark.parametrize(
    ("action", "decision"),
    [
        ("db.read", "  decision: allow: the request is approved at once, nobody is asked"),
        ("db.drop", "  decision: deny: the request is denied at once"),
    ],
    ids=["allow", "deny"],
)
def test_explain_allow_and_deny_have_no_approval_details(
    policy: Policy, action: str, decision: str
) -> None:
    lines = render_explanation(explain(policy, Subject(action=action, resource="prod/x")))
    assert decision in lines.splitlines()
    assert "approvers:" not in lines
    assert "quorum" not in lines


def test_explain_no_match() -> None:
    policy = parse_policy(
        "rules:\n  - {name: reads, match: {action: 'db.read*'}, decision: allow}\n"
    )
    text = render_explanation(explain(policy, Subject(action="s3.put", resource="b/k")))
    assert text.splitlines()[-1] == "no rule matches: the request would be denied"
    assert "reads (line 2): no match: action 's3.put' does not match 'db.read*'" in text


def test_policy_package_stays_pure() -> None:
    code = (
        "import sys, countersign.policy\n"
        "bad = {'aiohttp', 'slack_bolt', 'slack_sdk', 'botbuilder', 'sqlalchemy', 'sqlmodel'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
