"""Which rule decides a request: the first whose globs and `when` match (errors never loosen)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from countersign.core.model import Verdict
from countersign.policy.expression import ConditionError
from countersign.policy.model import Policy, Rule

__all__ = ["Explanation", "RuleTrace", "Subject", "evaluate", "explain"]

_ERROR_RULE = "an error never loosens the policy"


@dataclass(frozen=True)
class Subject:
    """What a policy is asked about: one request, before any rule is applied."""

    action: str
    resource: str
    reason: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    requested_by: str | None = None
    client: str = ""

    def variables(self) -> dict[str, Any]:
        """The names a `when` expression sees (``requested_by`` is "" for pure automation)."""
        return {
            "action": self.action,
            "resource": self.resource,
            "reason": self.reason,
            "params": dict(self.params),
            "context": dict(self.context),
            "requested_by": self.requested_by or "",
            "client": self.client,
        }


@dataclass(frozen=True)
class RuleTrace:
    """One rule the matcher tried: did it match, and why (or why not)."""

    rule: Rule
    matched: bool
    reason: str
    # Set when the `when` expression failed; the match then follows the error rule.
    error: str | None = None


@dataclass(frozen=True)
class Explanation:
    """Every rule tried for a subject, in order, up to and including the one that matched."""

    subject: Subject
    traces: tuple[RuleTrace, ...]
    source: str = "policy"

    @property
    def rule(self) -> Rule | None:
        """The matching rule; None when no rule matches (the request is denied)."""
        last = self.traces[-1] if self.traces else None
        return last.rule if last is not None and last.matched else None

    @property
    def verdict(self) -> Verdict:
        """What happens to the request: the rule's verdict, or DENY when nothing matches."""
        rule = self.rule
        return Verdict.DENY if rule is None else rule.verdict


def evaluate(policy: Policy, subject: Subject) -> Rule | None:
    """The first rule that matches ``subject``; None means no rule does (callers deny)."""
    return explain(policy, subject).rule


def explain(policy: Policy, subject: Subject) -> Explanation:
    """Why the policy decides as it does: a trace of each rule tried until the first match."""
    traces: list[RuleTrace] = []
    variables: dict[str, Any] | None = None
    for rule in policy.rules:
        failed = _glob_mismatch(rule, subject)
        if failed is not None:
            traces.append(RuleTrace(rule, matched=False, reason=failed))
            continue
        if rule.condition is None:
            traces.append(RuleTrace(rule, matched=True, reason=_matched(rule, subject)))
            break
        if variables is None:
            # Built once per request, and only when some rule needs them.
            variables = subject.variables()
        trace = _check_condition(rule, subject, variables)
        traces.append(trace)
        if trace.matched:
            break
    return Explanation(subject=subject, traces=tuple(traces), source=policy.source)


def _glob_mismatch(rule: Rule, subject: Subject) -> str | None:
    """Why the globs turn the subject away, or None when they let it through."""
    if rule.action_pattern is not None and not rule.action_pattern.match(subject.action):
        return f"action {subject.action!r} does not match {rule.action_glob!r}"
    if rule.resource_pattern is not None and not rule.resource_pattern.match(subject.resource):
        return f"resource {subject.resource!r} does not match {rule.resource_glob!r}"
    return None


def _matched(rule: Rule, subject: Subject, when: str | None = None) -> str:
    parts: list[str] = []
    if rule.action_glob is not None:
        parts.append(f"action {subject.action!r} matches {rule.action_glob!r}")
    if rule.resource_glob is not None:
        parts.append(f"resource {subject.resource!r} matches {rule.resource_glob!r}")
    if when is not None:
        parts.append(when)
    return ", ".join(parts) if parts else "matches every request"


def _check_condition(rule: Rule, subject: Subject, variables: Mapping[str, Any]) -> RuleTrace:
    assert rule.condition is not None
    shown = f"when `{rule.when}`"
    try:
        holds = rule.condition.evaluate(variables)
    except ConditionError as error:
        # A failed condition must never make a request easier to pass: it does
        # not let an allow rule through, and it does not let a request slip past
        # a deny or approval rule to a laxer rule further down.
        matched = rule.verdict is not Verdict.ALLOW
        outcome = "a match" if matched else "no match"
        reason = (
            f"{shown} could not be evaluated ({error}); treated as {outcome} because {_ERROR_RULE}"
        )
        if matched:
            reason = _matched(rule, subject, reason)
        return RuleTrace(rule, matched=matched, reason=reason, error=str(error))
    if holds:
        return RuleTrace(rule, matched=True, reason=_matched(rule, subject, f"{shown} is true"))
    return RuleTrace(rule, matched=False, reason=f"{shown} is false")
