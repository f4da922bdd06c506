"""What a loaded policy is: groups, and rules tried in order (first match wins)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from countersign.core.model import RuleSnapshot, Verdict
from countersign.policy.expression import Condition, compile_condition

__all__ = [
    "APPROVERS",
    "DEFAULT_NOTIFY",
    "DEFAULT_TTL",
    "Escalation",
    "Notify",
    "Policy",
    "Rule",
    "glob_pattern",
]

DEFAULT_TTL = timedelta(hours=1)
"""How long an approval rule waits for a decision when it names no ``ttl``."""

APPROVERS = "approvers"
"""The `notify` target meaning "a direct message to each approver"."""


@dataclass(frozen=True)
class Notify:
    """Where a rule's requests are announced, per platform (channels, or ``approvers`` = DMs)."""

    slack: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()


DEFAULT_NOTIFY = Notify(slack=(APPROVERS,), teams=(APPROVERS,))
"""A rule without `notify` messages each approver directly on every platform that is on."""


@dataclass(frozen=True)
class Escalation:
    """Who else is asked when a request is still pending ``after`` its creation."""

    after: timedelta
    approvers: frozenset[str]
    approver_refs: tuple[str, ...]


@dataclass(frozen=True)
class Rule:
    """One policy rule: which requests it matches and what it decides for them."""

    name: str
    line: int
    action_glob: str | None
    resource_glob: str | None
    when: str | None
    verdict: Verdict
    approvers: frozenset[str] = frozenset()
    approver_refs: tuple[str, ...] = ()
    quorum: int = 1
    deny_quorum: int = 1
    ttl: timedelta = DEFAULT_TTL
    notify: Notify = DEFAULT_NOTIFY
    remind_after: timedelta | None = None
    escalate: Escalation | None = None
    # Approvers are offered a comment box when they approve (chat: a modal first).
    approve_comment: bool = False
    # The compiled `when`: built once (by the loader, or here when a rule is made
    # by hand) and never part of a rule's identity.
    condition: Condition | None = field(default=None, compare=False, repr=False, hash=False)
    action_pattern: re.Pattern[str] | None = field(
        init=False, compare=False, repr=False, hash=False
    )
    resource_pattern: re.Pattern[str] | None = field(
        init=False, compare=False, repr=False, hash=False
    )

    def __post_init__(self) -> None:
        # Frozen dataclass: derived fields are set once, here, through object.
        if self.when is not None and self.condition is None:
            object.__setattr__(self, "condition", compile_condition(self.when))
        object.__setattr__(self, "action_pattern", glob_pattern(self.action_glob))
        object.__setattr__(self, "resource_pattern", glob_pattern(self.resource_glob))

    @property
    def matches_everything(self) -> bool:
        """True when no glob and no `when` can turn a request away: later rules are unreachable."""
        return self.action_pattern is None and self.resource_pattern is None and self.when is None

    def snapshot(self) -> RuleSnapshot:
        """The parts a request keeps for its whole life, whatever later happens to the policy."""
        return RuleSnapshot(
            name=self.name,
            verdict=self.verdict,
            approvers=self.approvers,
            quorum=self.quorum,
            deny_quorum=self.deny_quorum,
        )


@dataclass(frozen=True)
class Policy:
    """A loaded policy: named groups of approvers and the ordered rules."""

    groups: Mapping[str, frozenset[str]]
    rules: tuple[Rule, ...]
    source: str = "policy"

    def rule(self, name: str) -> Rule | None:
        """The rule called ``name``, if the policy has one."""
        return next((rule for rule in self.rules if rule.name == name), None)


def glob_pattern(glob: str | None) -> re.Pattern[str] | None:
    """The compiled form of a match glob; None when it matches every string."""
    # fnmatchcase semantics: case-sensitive, and `*` crosses `/` and `.`, so
    # "prod/*" covers "prod/eu/customers". A glob of stars only matches all.
    if glob is None or not glob.strip("*"):
        return None
    return re.compile(fnmatch.translate(glob))
