"""The policy file: which requests are allowed, denied, or need whose approval.

Load it with `load_policy` (or `parse_policy`), then ask `evaluate` which rule
decides a `Subject`, or `explain` why. Part of the pure core: no web, chat or
database imports.
"""

from __future__ import annotations

from pathlib import Path

from countersign.policy.approvals import MAX_TTL
from countersign.policy.durations import format_duration, parse_duration
from countersign.policy.expression import VARIABLES, ConditionError, ConditionSyntaxError
from countersign.policy.loader import check_policy_file, load_policy, parse_policy
from countersign.policy.match import Explanation, RuleTrace, Subject, evaluate, explain
from countersign.policy.model import (
    APPROVERS,
    DEFAULT_NOTIFY,
    DEFAULT_TTL,
    Escalation,
    Notify,
    Policy,
    Rule,
)
from countersign.policy.render import render_explanation, render_problems

__all__ = [
    "APPROVERS",
    "DEFAULT_NOTIFY",
    "DEFAULT_TTL",
    "EXAMPLE_POLICY_PATH",
    "MAX_TTL",
    "VARIABLES",
    "ConditionError",
    "ConditionSyntaxError",
    "Escalation",
    "Explanation",
    "Notify",
    "Policy",
    "Rule",
    "RuleTrace",
    "Subject",
    "check_policy_file",
    "evaluate",
    "explain",
    "format_duration",
    "load_policy",
    "parse_duration",
    "parse_policy",
    "render_explanation",
    "render_problems",
]

EXAMPLE_POLICY_PATH = Path(__file__).parent / "example.yaml"
"""The bundled example policy (used when no policy file is configured)."""
