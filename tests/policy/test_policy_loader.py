"""Loading a policy: every problem is found, each with its exact line."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from countersign.core.errors import PolicyInvalid, PolicyProblem
from countersign.core.model import Verdict
from countersign.policy import (
    Notify,
    Policy,
    check_policy_file,
    load_policy,
    parse_policy,
)


def problems(text: str) -> list[tuple[int, str]]:
    """(line, message) of each problem of ``text``; fails when the text is valid."""
    with pytest.raises(PolicyInvalid) as caught:
        parse_policy(text, source="t.yaml")
    assert all(problem.source == "t.yaml" for problem in caught.value.problems)
    return [(problem.line, problem.message) for problem in caught.value.problems]


# Each case: a small policy, then (line, fragment of the message) for EVERY problem
# expected, in file order. A missing or an extra problem fails the case.
INVALID: dict[str, tuple[str, list[tuple[int, str]]]] = {
    "unknown-top-level-key": (
        "rules:\n  - {name: a, decision: allow}\nrule: []\n",
        [(3, "the policy: unknown key 'rule' (did you mean 'rules'?)")],
    ),
    "no-rules": ("groups: {}\n", [(1, "the policy has no `rules`")]),
    "rules-empty": ("groups: {}\nrules: []\n", [(2, "rules is empty")]),
    "rules-not-a-list": ("rules: {name: a}\n", [(1, "rules must be a list, not a mapping")]),
    "top-level-not-a-mapping": ("- a\n", [(1, "the policy must be a mapping, not a list")]),
    "empty-file": ("", [(0, "the policy is empty")]),
    "group-name": (
        "groups:\n  'bad name': [a@example.com]\nrules:\n  - {name: a, decision: allow}\n",
        [(2, "group name 'bad name' may only use letters, digits")],
    ),
    "group-member-not-email": (
        "groups:\n  sre:\n    - a@example.com\n    - bob\nrules:\n  - {name: a, decision: allow}\n",
        [(4, "group 'sre': 'bob' is not an e-mail address")],
    ),
    "group-empty": (
        "groups:\n  sre: []\nrules:\n  - {name: a, decision: allow}\n",
        [(2, "group 'sre' has no members")],
    ),
    "rule-not-a-mapping": (
        "rules:\n  - {name: a, decision: allow}\n  - just text\n",
        [(3, "rule #2 must be a mapping, not text ('just text')")],
    ),
    "rule-unknown-key-suggests": (
        "rules:\n  - name: a\n    approver: [a@example.com]\n    approvers: [a@example.com]\n",
        [(3, "rule 'a': unknown key 'approver' (did you mean 'approvers'?)")],
    ),
    "name-missing": (
        "rules:\n  - decision: allow\n    match: {action: x}\n",
        [(2, "rule #1 has no `name`")],
    ),
    "name-invalid": (
        "rules:\n  - name: 'has space'\n    decision: allow\n",
        [(2, "rule #1: name 'has space' must start with a letter or digit")],
    ),
    "name-too-long": (
        f"rules:\n  - name: {'a' * 65}\n    decision: allow\n",
        [(2, "at most 64")],
    ),
    "name-not-text": ("rules:\n  - name: [a]\n    decision: allow\n", [(2, "name must be text")]),
    "name-duplicate": (
        "rules:\n  - name: a\n    match: {action: x}\n    decision: allow\n"
        "  - name: a\n    decision: deny\n",
        [(5, "rule 'a': name 'a' is already used by the rule on line 2")],
    ),
    "match-unknown-key": (
        "rules:\n  - name: a\n    match:\n      action: x\n      verb: y\n    decision: allow\n",
        [(5, "rule 'a': match: unknown key 'verb' (expected action, resource)")],
    ),
    "match-not-a-mapping": (
        "rules:\n  - name: a\n    match: db.*\n    decision: allow\n",
        [(3, "rule 'a': match must be a mapping, not text ('db.*')")],
    ),
    "match-glob-not-text": (
        "rules:\n  - name: a\n    match: {action: 5}\n    decision: allow\n",
        [(3, "rule 'a': match.action must be text, not a number ('5')")],
    ),
    "decision-unknown": (
        "rules:\n  - name: a\n    decision: approve\n",
        [(3, "rule 'a': decision must be allow or deny, not 'approve'")],
    ),
    "allow-with-approval-settings": (
        "rules:\n  - name: a\n    decision: allow\n    approvers: [a@example.com]\n"
        "    quorum: 1\n    ttl: 1h\n",
        [
            (4, "rule 'a': approvers has no effect with decision: allow"),
            (5, "rule 'a': quorum has no effect with decision: allow"),
            (6, "rule 'a': ttl has no effect with decision: allow"),
        ],
    ),
    "deny-with-notify": (
        "rules:\n  - name: a\n    decision: deny\n    notify: {slack: ['#x']}\n",
        [(4, "rule 'a': notify has no effect with decision: deny")],
    ),
    "approvers-missing": (
        "rules:\n  - name: a\n    quorum: 1\n",
        [(2, "rule 'a' needs `approvers`")],
    ),
    "approvers-empty": ("rules:\n  - name: a\n    approvers: []\n", [(3, "approvers is empty")]),
    "approver-unknown-group": (
        "groups:\n  sre: [a@example.com]\nrules:\n  - name: a\n    approvers:\n"
        "      - group:sre\n      - group:ops\n",
        [(7, "rule 'a': approvers: unknown group 'ops' (defined groups: sre)")],
    ),
    "approver-not-email": (
        "rules:\n  - name: a\n    approvers: [bob]\n",
        [(3, "rule 'a': approvers: 'bob' is not an e-mail address or group:<name>")],
    ),
    "quorum-more-than-approvers": (
        "rules:\n  - name: prod-export\n    approvers: [a@example.com, B@example.com]\n"
        "    quorum: 3\n",
        [(4, "rule 'prod-export': quorum 3 is more than its 2 approvers")],
    ),
    "quorum-counts-distinct-people": (
        "groups:\n  sre: [a@example.com]\nrules:\n  - name: a\n"
        "    approvers: [group:sre, A@Example.com]\n    quorum: 2\n",
        [(6, "rule 'a': quorum 2 is more than its 1 approver")],
    ),
    "quorum-bool": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    quorum: true\n",
        [(4, "rule 'a': quorum must be a whole number of at least 1, not True")],
    ),
    "quorum-zero": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    quorum: 0\n",
        [(4, "quorum must be a whole number of at least 1, not 0")],
    ),
    "quorum-text": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    quorum: two\n",
        [(4, "quorum must be a whole number of at least 1, not 'two'")],
    ),
    "deny-quorum-more-than-approvers": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    deny_quorum: 2\n",
        [(4, "rule 'a': deny_quorum 2 is more than its 1 approver")],
    ),
    "ttl-not-a-duration": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    ttl: 5x\n",
        [(4, "rule 'a': ttl '5x' is not a duration")],
    ),
    "ttl-over-30-days": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    ttl: 31d\n",
        [(4, "rule 'a': ttl 31d is more than the maximum of 30d")],
    ),
    "ttl-zero": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    ttl: 0\n",
        [(4, "ttl 0 is not a positive duration")],
    ),
    "remind-after-not-before-ttl": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    ttl: 30m\n"
        "    remind_after: 30m\n",
        [(5, "rule 'a': remind_after 30m is not less than the ttl 30m")],
    ),
    "remind-after-against-default-ttl": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    remind_after: 2h\n",
        [(4, "remind_after 2h is not less than the ttl 1h")],
    ),
    "approve-comment-not-a-flag": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    approve_comment: maybe\n",
        [(4, "rule 'a': approve_comment must be true or false")],
    ),
    "escalate-after-not-before-ttl": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    ttl: 20m\n"
        "    escalate: {after: 1h, to: [b@example.com]}\n",
        [(5, "rule 'a': escalate.after 1h is not less than the ttl 20m")],
    ),
    "escalate-missing-to": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    escalate:\n      after: 10m\n",
        [(4, "rule 'a': escalate needs `to`")],
    ),
    "escalate-unknown-key-and-group": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    escalate:\n"
        "      after: 10m\n      to: [group:sec]\n      when: x\n",
        [
            (6, "escalate.to: unknown group 'sec' (defined groups: none)"),
            (7, "rule 'a': escalate: unknown key 'when' (expected after, to)"),
        ],
    ),
    "notify-unknown-platform": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    notify:\n"
        "      slack: ['#ok']\n      email: [x]\n",
        [(6, "rule 'a': notify: unknown key 'email' (expected slack, teams)")],
    ),
    "notify-bad-slack-target": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    notify:\n      slack:\n"
        "        - '#approvals'\n        - '#Approvals'\n        - approvals\n",
        [
            (7, "notify.slack: '#Approvals' is not a channel"),
            (8, "notify.slack: 'approvals' is not a channel"),
        ],
    ),
    "notify-bad-teams-target": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    notify:\n      teams:\n"
        "        - Ops/\n        - Ops/Approvals/More\n",
        [
            (6, "notify.teams: 'Ops/' is not 'Team/Channel', a conversation id"),
            (7, "notify.teams: 'Ops/Approvals/More' is not 'Team/Channel'"),
        ],
    ),
    "notify-names-nowhere": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    notify: {slack: []}\n",
        [(4, "rule 'a': notify names nowhere")],
    ),
    "notify-targets-not-a-list": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    notify: {slack: '#x'}\n",
        [(4, "notify.slack must be a list")],
    ),
    "when-compile-error": (
        "rules:\n  - name: a\n    match: {action: x}\n    when: 'params.rows >'\n"
        "    decision: deny\n",
        [(4, "rule 'a': when `params.rows >` is not valid CEL: unexpected end of expression")],
    ),
    "when-unknown-name": (
        "rules:\n  - name: a\n    when: param.rows > 1\n    decision: deny\n",
        [(3, "rule 'a': when `param.rows > 1` uses unknown name 'param'")],
    ),
    "when-not-text": (
        "rules:\n  - name: a\n    when: true\n    decision: deny\n",
        [(3, "rule 'a': when must be text, not true/false")],
    ),
    "when-empty": (
        "rules:\n  - name: a\n    when: ' '\n    decision: deny\n",
        [(3, "when is empty")],
    ),
    "unreachable-after-catch-all": (
        "rules:\n  - name: everything\n    match: {}\n    decision: deny\n"
        "  - name: later\n    match: {action: x}\n    decision: allow\n"
        "  - name: even-later\n    decision: allow\n",
        [
            (5, "rule 'later' can never match: rule 'everything' on line 2 matches every"),
            (8, "rule 'even-later' can never match: rule 'everything' on line 2"),
        ],
    ),
    "star-globs-are-catch-all": (
        "rules:\n  - name: stars\n    match: {action: '*', resource: '**'}\n    decision: deny\n"
        "  - name: later\n    decision: allow\n",
        [(5, "rule 'later' can never match: rule 'stars' on line 2")],
    ),
    "yaml-syntax-error": (
        "rules:\n  - name: a\n    match: {action: x\n    decision: allow\n",
        [(4, "YAML syntax error: ")],
    ),
    "yaml-tab-indent": ("rules:\n\t- name: a\n", [(2, "YAML syntax error: found character '\\t'")]),
    "yaml-two-documents": (
        "rules: []\n---\nrules: []\n",
        [(2, "YAML syntax error: expected a single document")],
    ),
    "yaml-unsafe-tag": (
        "rules:\n  - name: !!python/object:os.system x\n    decision: allow\n",
        [(2, "cannot read value")],
    ),
    "duplicate-rule-key": (
        "rules:\n  - name: a\n    approvers: [a@example.com]\n    approvers: [b@example.com]\n",
        [(4, "duplicate key 'approvers' (first on line 3)")],
    ),
    "duplicate-group": (
        "groups:\n  sre: [a@example.com]\n  sre: [b@example.com]\n"
        "rules:\n  - {name: a, decision: allow}\n",
        [(3, "duplicate key 'sre' (first on line 2)")],
    ),
    "duplicate-top-level-key": (
        "rules:\n  - {name: a, decision: allow}\nrules:\n  - {name: b, decision: deny}\n",
        [(3, "duplicate key 'rules' (first on line 1)")],
    ),
    "duplicate-key-in-flow-mapping": (
        "rules:\n  - name: a\n    match: {action: x, action: y}\n    decision: allow\n",
        [(3, "duplicate key 'action' (first on line 3)")],
    ),
}


@pytest.mark.parametrize(("text", "expected"), INVALID.values(), ids=INVALID.keys())
def test_each_problem_is_reported_at_its_line(text: str, expected: list[tuple[int, str]]) -> None:
    found = problems(text)
    assert len(found) == len(expected), found
    for (line, message), (expected_line, fragment) in zip(found, expected, strict=True):
        assert fragment in message, found
        assert line == expected_line, found


def test_exact_message_and_rendering() -> None:
    text = "rules:\n  - name: prod-export\n    approvers: [a@example.com, b@example.com]\n"
    text += "    quorum: 3\n"
    with pytest.raises(PolicyInvalid) as caught:
        parse_policy(text, source="countersign.yaml")
    assert caught.value.problems == (
        PolicyProblem(
            4, "rule 'prod-export': quorum 3 is more than its 2 approvers", "countersign.yaml"
        ),
    )
    assert str(caught.value) == (
        "countersign.yaml:4: rule 'prod-export': quorum 3 is more than its 2 approvers"
    )


MANY_PROBLEMS = """\
groups:
  sre: [alice@example.com, bob]
rules:
  - name: reads
    match: {action: "db.read*"}
    decision: allow
    quorum: 2
  - name: reads
    match: {action: "db.write"}
    approvers: [group:nope]
  - name: export
    when: "params.rows >"
    approvers: [alice@example.com]
    ttl: forever
    notify: {slack: ["#ok", "Not A Channel"]}
"""


def test_several_problems_are_all_reported_in_file_order() -> None:
    assert problems(MANY_PROBLEMS) == [
        (2, "group 'sre': 'bob' is not an e-mail address"),
        (7, "rule 'reads': quorum has no effect with decision: allow"),
        (8, "rule 'reads': name 'reads' is already used by the rule on line 4"),
        (10, "rule 'reads': approvers: unknown group 'nope' (defined groups: sre)"),
        (
            12,
            "rule 'export': when `params.rows >` is not valid CEL: unexpected end of expression "
            "at column 13",
        ),
        (
            14,
            "rule 'export': ttl 'forever' is not a duration (use e.g. 90s, 30m, 2h, 1d, 1h30m, "
            "or a number of seconds)",
        ),
        (
            15,
            "rule 'export': notify.slack: 'Not A Channel' is not a channel ('#name' or an id "
            "like C0123ABCD) or 'approvers'",
        ),
    ]


def test_a_broken_group_does_not_blame_the_quorum_too() -> None:
    text = "groups:\n  sre: [a@example.com, bob]\nrules:\n  - name: a\n"
    text += "    approvers: [group:sre]\n    quorum: 2\n"
    assert problems(text) == [(2, "group 'sre': 'bob' is not an e-mail address")]


VALID = """\
groups:
  Ops.Team-1: [Alice@Example.COM, bob@example.com]
rules:
  - name: ro
    match: {action: "db.read*", resource: ""}
    decision: allow
  - name: gated
    match: {action: db.write}
    when: >-
      params.rows > 10 &&
      context.ticket != ""
    approvers: [group:Ops.Team-1, carol@example.com]
    quorum: 2
    deny_quorum: 2
    ttl: 1h30m
    remind_after: 900
    notify:
      slack: [C0123ABCD, "#ops-approvals", approvers, "#ops-approvals"]
      teams: ["19:abc@thread.tacv2", "Data Ops/Approvals"]
    escalate:
      after: 1h
      to: [dave@example.com]
  - name: writes
    match: {action: db.write}
    decision: deny
"""


def test_valid_policy_is_read_in_full() -> None:
    policy = parse_policy(VALID, source="v.yaml")
    assert policy.source == "v.yaml"
    assert dict(policy.groups) == {
        "Ops.Team-1": frozenset({"alice@example.com", "bob@example.com"})
    }
    ro, gated, writes = policy.rules
    assert (ro.line, gated.line, writes.line) == (4, 7, 23)
    # An empty glob matches everything, like an absent one.
    assert (ro.action_glob, ro.resource_glob) == ("db.read*", None)
    assert ro.verdict is Verdict.ALLOW
    assert writes.verdict is Verdict.DENY
    assert ro.notify == Notify()
    assert ro.approvers == frozenset()
    assert gated.verdict is Verdict.REQUIRE_APPROVAL
    # A folded block scalar (>-) joins the lines with a space.
    assert gated.when == 'params.rows > 10 && context.ticket != ""'
    assert gated.approvers == {"alice@example.com", "bob@example.com", "carol@example.com"}
    assert gated.approver_refs == ("group:Ops.Team-1", "carol@example.com")
    assert (gated.quorum, gated.deny_quorum) == (2, 2)
    assert gated.ttl == timedelta(hours=1, minutes=30)
    assert gated.remind_after == timedelta(minutes=15)
    # Repeated targets are kept once, in the order written.
    assert gated.notify == Notify(
        slack=("C0123ABCD", "#ops-approvals", "approvers"),
        teams=("19:abc@thread.tacv2", "Data Ops/Approvals"),
    )
    assert gated.escalate is not None
    assert gated.escalate.approvers == {"dave@example.com"}
    assert gated.condition is not None


def test_rules_compare_by_value_not_by_compiled_program() -> None:
    first = parse_policy(VALID).rules[1]
    second = parse_policy(VALID).rules[1]
    assert first == second
    assert hash(first) == hash(second)
    assert "condition" not in repr(first)


def test_load_policy_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "countersign.yaml"
    path.write_text(VALID, encoding="utf-8")
    policy = load_policy(path)
    assert isinstance(policy, Policy)
    assert policy.source == str(path)
    assert check_policy_file(path) == []


def test_unreadable_file_is_one_problem_at_line_zero(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyInvalid) as caught:
        load_policy(missing)
    (problem,) = caught.value.problems
    assert problem.line == 0
    assert problem.source == str(missing)
    assert problem.message.startswith("cannot read policy file: No such file")


def test_non_utf8_file_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("rules:\n  - name: caf\xe9\n".encode("latin-1"))
    (problem,) = check_policy_file(path)
    assert (problem.line, problem.message) == (
        0,
        "cannot read policy file: not UTF-8 text (byte 20)",
    )


def test_check_policy_file_lists_problems_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("rules:\n  - name: a\n    decision: maybe\n", encoding="utf-8")
    found = check_policy_file(path)
    assert [(p.source, p.line) for p in found] == [(str(path), 3)]


def test_approve_comment_is_off_unless_the_rule_turns_it_on() -> None:
    policy = parse_policy(
        "rules:\n"
        "  - name: a\n    match: {action: x}\n    approvers: [a@example.com]\n"
        "    approve_comment: true\n"
        "  - name: b\n    approvers: [a@example.com]\n"
    )
    assert [rule.approve_comment for rule in policy.rules] == [True, False]
