"""Text for people: policy problems for `policy check`, and the report of `policy explain`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from countersign.core.errors import PolicyProblem
from countersign.core.model import Verdict
from countersign.policy.durations import format_duration
from countersign.policy.match import Explanation, Subject
from countersign.policy.model import APPROVERS, Notify, Rule

__all__ = ["render_explanation", "render_problems"]

_VERDICT_TEXT = {
    Verdict.ALLOW: "allow: the request is approved at once, nobody is asked",
    Verdict.DENY: "deny: the request is denied at once",
    Verdict.REQUIRE_APPROVAL: "require approval",
}


def render_problems(problems: Iterable[PolicyProblem]) -> str:
    """One ``source:line: message`` line per problem, as compilers print them."""
    return "\n".join(str(problem) for problem in problems)


def render_explanation(explanation: Explanation) -> str:
    """A multi-line report: the request, each rule tried and why, and what the match decides."""
    lines = [f"policy: {explanation.source}", *_subject_lines(explanation.subject), ""]
    if explanation.traces:
        lines.append("rules tried (the first match wins):")
    for trace in explanation.traces:
        status = "MATCH" if trace.matched else "no match"
        lines.append(f"  {trace.rule.name} (line {trace.rule.line}): {status}: {trace.reason}")
    if explanation.traces:
        lines.append("")
    rule = explanation.rule
    if rule is None:
        lines.append("no rule matches: the request would be denied")
    else:
        lines.extend(_rule_lines(rule))
    return "\n".join(lines)


def _subject_lines(subject: Subject) -> list[str]:
    lines = [f"request: action {subject.action!r} on resource {subject.resource!r}"]
    if subject.requested_by:
        lines.append(f"  requested by: {subject.requested_by}")
    if subject.client:
        lines.append(f"  client: {subject.client}")
    if subject.reason:
        lines.append(f"  reason: {subject.reason}")
    for name, values in (("params", subject.params), ("context", subject.context)):
        if values:
            lines.append(f"  {name}: {_json(values)}")
    return lines


def _rule_lines(rule: Rule) -> list[str]:
    lines = [
        f"matching rule: {rule.name} (line {rule.line})",
        f"  decision: {_VERDICT_TEXT[rule.verdict]}",
    ]
    if rule.verdict is not Verdict.REQUIRE_APPROVAL:
        return lines
    count = len(rule.approvers)
    lines += [
        f"  approvers: {', '.join(rule.approver_refs)}",
        f"    which are: {', '.join(sorted(rule.approvers))}",
        f"  quorum: {rule.quorum} distinct approval{'s' if rule.quorum != 1 else ''}"
        f" of {count} approver{'s' if count != 1 else ''}",
        f"  deny quorum: {rule.deny_quorum} "
        + ("denial ends" if rule.deny_quorum == 1 else "denials end")
        + " the request",
        f"  ttl: {format_duration(rule.ttl)} (then it expires, which denies it)",
        f"  notify: {_notify(rule.notify)}",
    ]
    if rule.approve_comment:
        lines.append("  approvers are asked for a comment when they approve")
    if rule.remind_after is not None:
        lines.append(f"  reminder: after {format_duration(rule.remind_after)} if still pending")
    if rule.escalate is not None:
        escalate = rule.escalate
        lines.append(
            f"  escalation: after {format_duration(escalate.after)} also ask "
            f"{', '.join(escalate.approver_refs)} ({', '.join(sorted(escalate.approvers))})"
        )
    return lines


def _notify(notify: Notify) -> str:
    parts = [
        f"{platform}: {', '.join(_target(target) for target in targets)}"
        for platform, targets in (("Slack", notify.slack), ("Teams", notify.teams))
        if targets
    ]
    return "; ".join(parts) if parts else "nobody"


def _target(target: str) -> str:
    return "each approver directly" if target == APPROVERS else target


def _json(values: Mapping[str, Any]) -> str:
    # default=str: explain shows what it was given even if it is not JSON.
    return json.dumps(dict(values), sort_keys=True, default=str)
