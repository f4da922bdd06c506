"""Matching: globs, `when` over the request, first match wins, and errors never loosen."""

from __future__ import annotations

from typing import Any

import pytest

from countersign.core.model import Verdict
from countersign.policy import Rule, Subject, evaluate, explain, parse_policy


def one_rule(match: str, when: str | None = None, decision: str = "deny") -> str:
    lines = ["rules:", "  - name: r", f"    match: {match}", f"    decision: {decision}"]
    if when is not None:
        lines.append(f"    when: {when!r}")
    return "\n".join(lines) + "\n"


GLOBS = [
    # (glob on action, action, matches?)
    ("db.read*", "db.read", True),
    ("db.read*", "db.read_rows", True),
    ("db.read*", "db.reader.x", True),
    ("db.read*", "db.Read", False),  # case-sensitive
    ("db.read*", "xdb.read", False),  # anchored at the start
    ("db.read", "db.read.all", False),  # anchored at the end
    ("db.?rop", "db.drop", True),
    ("db.?rop", "db.dddrop", False),
    ("db.[de]*", "db.export", True),
    ("db.[!de]*", "db.export", False),
    ("db.re+d", "db.reed", False),  # regex characters are literal
    ("db.re+d", "db.re+d", True),
]


@pytest.mark.parametrize(
    ("glob", "action", "matches"), GLOBS, ids=[f"{g}~{a}" for g, a, _ in GLOBS]
)
def test_action_globs(glob: str, action: str, matches: bool) -> None:
    policy = parse_policy(one_rule(f"{{action: {glob!r}}}"))
    assert (evaluate(policy, Subject(action=action, resource="r")) is not None) is matches


@pytest.mark.parametrize(
    ("resource", "matches"),
    [
        ("prod/customers", True),
        ("prod/eu/customers", True),  # `*` crosses `/`
        ("prod/", True),
        ("prod", False),
        ("PROD/customers", False),
        ("staging/prod/x", False),
    ],
    ids=lambda value: str(value),
)
def test_resource_glob_star_crosses_slashes(resource: str, matches: bool) -> None:
    policy = parse_policy(one_rule("{resource: 'prod/*'}"))
    assert (evaluate(policy, Subject(action="a", resource=resource)) is not None) is matches


def test_first_match_wins_and_later_rules_are_not_tried() -> None:
    policy = parse_policy(
        "rules:\n"
        "  - {name: first, match: {action: 'db.*'}, decision: allow}\n"
        "  - {name: second, match: {action: 'db.read'}, decision: deny}\n"
        "  - {name: third, decision: deny}\n"
    )
    explanation = explain(policy, Subject(action="db.read", resource="x"))
    assert [trace.rule.name for trace in explanation.traces] == ["first"]
    assert explanation.rule is not None
    assert explanation.rule.name == "first"


def test_no_rule_matches_means_none_and_deny() -> None:
    policy = parse_policy(one_rule("{action: 'db.*'}", decision="allow"))
    subject = Subject(action="s3.get", resource="bucket/key")
    assert evaluate(policy, subject) is None
    explanation = explain(policy, subject)
    assert explanation.rule is None
    assert explanation.verdict is Verdict.DENY
    (trace,) = explanation.traces
    assert not trace.matched
    assert trace.reason == "action 's3.get' does not match 'db.*'"


def test_resource_mismatch_reason() -> None:
    policy = parse_policy(one_rule("{action: 'db.*', resource: 'prod/*'}"))
    (trace,) = explain(policy, Subject(action="db.drop", resource="dev/x")).traces
    assert trace.reason == "resource 'dev/x' does not match 'prod/*'"


WHEN_CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("params.rows > 10000", {"params": {"rows": 20000}}, True),
    ("params.rows > 10000", {"params": {"rows": 10}}, False),
    ("params.rows > 10000", {"params": {"rows": 20000.5}}, True),
    ("context.ticket.startsWith('FIN-')", {"context": {"ticket": "FIN-42"}}, True),
    ("context.ticket.startsWith('FIN-')", {"context": {"ticket": "OPS-1"}}, False),
    ("requested_by.endsWith('@example.com')", {"requested_by": "dana@example.com"}, True),
    ("requested_by.endsWith('@example.com')", {"requested_by": "eve@evil.test"}, False),
    # Pure automation: requested_by is "" so the expression still evaluates.
    ("requested_by == ''", {}, True),
    ("client == 'analytics-copilot'", {"client": "analytics-copilot"}, True),
    ("reason.contains('FIN-42')", {"reason": "Quarterly churn (FIN-42)"}, True),
    ("action == 'db.export' && resource.matches('^prod/')", {}, True),
    ("'ssn' in params.columns", {"params": {"columns": ["id", "ssn"]}}, True),
    ("params.columns.exists(c, c == 'ssn')", {"params": {"columns": ["id"]}}, False),
    ("has(params.rows) && params.rows > 5", {"params": {}}, False),
]


@pytest.mark.parametrize(
    ("when", "fields", "matches"), WHEN_CASES, ids=[f"{w}|{f}" for w, f, _ in WHEN_CASES]
)
def test_when_sees_the_request(when: str, fields: dict[str, Any], matches: bool) -> None:
    policy = parse_policy(one_rule("{}", when=when))
    subject = Subject(action="db.export", resource="prod/customers", **fields)
    explanation = explain(policy, subject)
    (trace,) = explanation.traces
    assert trace.matched is matches
    assert trace.error is None
    assert trace.reason.endswith(f"when `{when}` is {'true' if matches else 'false'}")


ERRORS = [
    ("params.missing > 10000", "no such member in mapping: 'missing'"),  # field missing
    ("params.rows > 10000 || params.force", "no such member"),
    ("params.name > 10000", "no matching overload"),  # wrong type: string vs int
    ("params.rows", "gave 5 (int), not true or false"),  # not a bool
    ("1 / (params.rows - 5) > 0", "divide by zero"),
]


@pytest.mark.parametrize(("when", "error"), ERRORS, ids=[w for w, _ in ERRORS])
@pytest.mark.parametrize(
    ("decision", "matched"),
    [("allow", False), ("deny", True), ("approvers: [a@example.com]", True)],
    ids=["allow-does-not-match", "deny-matches", "approval-matches"],
)
def test_an_error_never_loosens_the_policy(
    when: str, error: str, decision: str, matched: bool
) -> None:
    setting = decision if decision.startswith("approvers") else f"decision: {decision}"
    text = (
        "rules:\n  - name: guarded\n    match: {action: db.export}\n"
        f"    when: {when!r}\n    {setting}\n"
        "  - name: fallback\n    decision: allow\n"
    )
    policy = parse_policy(text)
    subject = Subject(action="db.export", resource="prod/x", params={"rows": 5, "name": "x"})
    explanation = explain(policy, subject)
    first = explanation.traces[0]
    assert first.rule.name == "guarded"
    assert first.matched is matched
    assert first.error is not None
    assert error in first.error
    outcome = "a match" if matched else "no match"
    assert (
        f"when `{when}` could not be evaluated ({first.error}); treated as {outcome} "
        "because an error never loosens the policy"
    ) in first.reason
    # An erroring allow rule falls through to the next rule; the others stop here.
    expected = "guarded" if matched else "fallback"
    rule = evaluate(policy, subject)
    assert rule is not None
    assert rule.name == expected


def test_values_cel_cannot_take_are_errors_too() -> None:
    policy = parse_policy(one_rule("{}", when="params.size() > 0", decision="allow"))
    subject = Subject(action="a", resource="r", params={"when": object()})
    (trace,) = explain(policy, subject).traces
    assert not trace.matched
    assert trace.error is not None


def test_rule_built_by_hand_compiles_its_when() -> None:
    rule = Rule(
        name="r",
        line=1,
        action_glob="db.*",
        resource_glob=None,
        when="params.rows > 1",
        verdict=Verdict.DENY,
    )
    assert rule.condition is not None
    assert rule.condition.evaluate({"params": {"rows": 2}}) is True
    assert not rule.matches_everything
