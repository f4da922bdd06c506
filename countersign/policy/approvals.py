"""Reading the settings of an approval rule: who approves, how many, how long, who is told."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from yaml.nodes import Node

from countersign.core.identity import is_email, normalize_email
from countersign.policy.durations import format_duration, parse_duration
from countersign.policy.model import APPROVERS, DEFAULT_NOTIFY, DEFAULT_TTL, Escalation, Notify
from countersign.policy.yamltree import UNREADABLE, Entry, TreeReader

__all__ = ["MAX_TTL", "ApprovalSettings", "Groups", "read_approval_settings"]

MAX_TTL = timedelta(days=30)
"""The longest a request may wait: beyond that, nobody remembers why it was asked."""

_GROUP_PREFIX = "group:"
# Slack channel names are lower-case; ids start with C (public) or G (private).
_SLACK_CHANNEL_NAME = re.compile(r"^#[a-z0-9][a-z0-9._-]{0,79}$")
_SLACK_CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{6,}$")
# Teams: "Team/Channel" by display name, or a conversation id ("19:...@thread.tacv2").
_TEAMS_CHANNEL = re.compile(r"^[^/\s](?:[^/]*[^/\s])?/[^/\s](?:[^/]*[^/\s])?$")
_TEAMS_CONVERSATION = re.compile(r"^19:\S+$")


@dataclass(frozen=True)
class Groups:
    """The policy's groups as read so far, and which of them had problems."""

    members: Mapping[str, frozenset[str]]
    # Rules naming a broken group are not blamed a second time (e.g. "quorum is
    # more than its approvers" only because one member address was bad).
    broken: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ApprovalSettings:
    """What an approval rule says beyond its match; the defaults of a rule that says nothing."""

    approvers: frozenset[str] = frozenset()
    approver_refs: tuple[str, ...] = ()
    quorum: int = 1
    deny_quorum: int = 1
    ttl: timedelta = DEFAULT_TTL
    notify: Notify = DEFAULT_NOTIFY
    remind_after: timedelta | None = None
    escalate: Escalation | None = None
    approve_comment: bool = False


def read_approval_settings(
    reader: TreeReader,
    label: str,
    rule_node: Node,
    entries: Mapping[str, Entry],
    groups: Groups,
    *,
    approvers_required: bool,
) -> ApprovalSettings:
    """The approval settings of one rule; problems go to ``reader.problems`` under ``label``."""
    return _SettingsReader(reader, label, groups).read(rule_node, entries, approvers_required)


@dataclass
class _Approvers:
    refs: tuple[str, ...] = ()
    resolved: frozenset[str] = frozenset()
    # False when an entry or a group was unusable: the count is then unknown.
    complete: bool = True


class _SettingsReader:
    def __init__(self, reader: TreeReader, label: str, groups: Groups) -> None:
        self.reader = reader
        self.problems = reader.problems
        self.label = label
        self.groups = groups

    def read(
        self, rule_node: Node, entries: Mapping[str, Entry], approvers_required: bool
    ) -> ApprovalSettings:
        approvers = _Approvers(complete=False)
        if "approvers" in entries:
            approvers = self._approvers(entries["approvers"], "approvers")
        elif approvers_required:
            self.problems.add(
                rule_node, f"{self.label} needs `approvers` (or decision: allow / deny)"
            )
        quorum = self._count(entries.get("quorum"), approvers)
        deny_quorum = self._count(entries.get("deny_quorum"), approvers)
        ttl = self._ttl(entries.get("ttl"))
        remind_after = self._before_ttl(entries.get("remind_after"), "remind_after", ttl)
        return ApprovalSettings(
            approvers=approvers.resolved,
            approver_refs=approvers.refs,
            quorum=quorum,
            deny_quorum=deny_quorum,
            ttl=ttl or DEFAULT_TTL,
            notify=self._notify(entries.get("notify")),
            remind_after=remind_after,
            escalate=self._escalate(entries.get("escalate"), ttl),
            approve_comment=self._flag(entries.get("approve_comment"), "approve_comment"),
        )

    def _flag(self, entry: Entry | None, what: str) -> bool:
        """A true / false setting (absent: false)."""
        if entry is None:
            return False
        value = self.reader.scalar(entry.value, f"{self.label}: {what}")
        if isinstance(value, bool):
            return value
        if value is not UNREADABLE:
            self.problems.add(entry.value, f"{self.label}: {what} must be true or false")
        return False

    def _approvers(self, entry: Entry, what: str) -> _Approvers:
        """Resolve a list of e-mails and ``group:<name>`` into normalised addresses."""
        items = self.reader.sequence(entry.value, f"{self.label}: {what}")
        if items is None:
            return _Approvers(complete=False)
        if not items:
            self.problems.add(entry.key_node, f"{self.label}: {what} is empty")
            return _Approvers(complete=False)
        refs: list[str] = []
        resolved: set[str] = set()
        complete = True
        for item in items:
            ref = self.reader.text_value(item, f"{self.label}: each of {what}")
            if ref is None:
                complete = False
                continue
            refs.append(ref)
            if ref.startswith(_GROUP_PREFIX):
                group = ref.removeprefix(_GROUP_PREFIX)
                if group in self.groups.members:
                    resolved |= self.groups.members[group]
                    complete = complete and group not in self.groups.broken
                else:
                    self.problems.add(item, f"{self.label}: {what}: {self._unknown_group(group)}")
                    complete = False
            elif is_email(ref):
                resolved.add(normalize_email(ref))
            else:
                self.problems.add(
                    item, f"{self.label}: {what}: {ref!r} is not an e-mail address or group:<name>"
                )
                complete = False
        return _Approvers(tuple(refs), frozenset(resolved), complete)

    def _unknown_group(self, group: str) -> str:
        defined = ", ".join(sorted(self.groups.members)) or "none"
        return f"unknown group {group!r} (defined groups: {defined})"

    def _count(self, entry: Entry | None, approvers: _Approvers) -> int:
        """A quorum: a whole number from 1 to the number of distinct approvers."""
        if entry is None:
            return 1
        value = self.reader.scalar(entry.value, f"{self.label}: {entry.key}")
        if value is UNREADABLE:
            return 1
        # bool is an int in Python; `quorum: true` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.problems.add(
                entry.value,
                f"{self.label}: {entry.key} must be a whole number of at least 1, not {value!r}",
            )
            return 1
        count = len(approvers.resolved)
        if approvers.complete and value > count:
            noun = "approver" if count == 1 else "approvers"
            self.problems.add(
                entry.value, f"{self.label}: {entry.key} {value} is more than its {count} {noun}"
            )
        return value

    def _duration(self, entry: Entry) -> timedelta | None:
        value = self.reader.scalar(entry.value, f"{self.label}: {entry.key}")
        if value is UNREADABLE:
            return None
        try:
            return parse_duration(value)
        except ValueError as error:
            self.problems.add(entry.value, f"{self.label}: {entry.key} {error}")
            return None

    def _ttl(self, entry: Entry | None) -> timedelta | None:
        """The rule's ttl; None when it was given but unusable (later checks skip it)."""
        if entry is None:
            return DEFAULT_TTL
        ttl = self._duration(entry)
        if ttl is not None and ttl > MAX_TTL:
            self.problems.add(
                entry.value,
                f"{self.label}: ttl {format_duration(ttl)} is more than the maximum of "
                f"{format_duration(MAX_TTL)}",
            )
        return ttl

    def _before_ttl(
        self, entry: Entry | None, what: str, ttl: timedelta | None
    ) -> timedelta | None:
        """A duration that only means something while the request is still open."""
        if entry is None:
            return None
        duration = self._duration(entry)
        if duration is not None and ttl is not None and duration >= ttl:
            self.problems.add(
                entry.value,
                f"{self.label}: {what} {format_duration(duration)} is not less than the "
                f"ttl {format_duration(ttl)} (the request would have expired)",
            )
        return duration

    def _notify(self, entry: Entry | None) -> Notify:
        if entry is None:
            return DEFAULT_NOTIFY
        where = f"{self.label}: notify"
        if self.reader.is_null(entry.value):
            self.problems.add(
                entry.key_node, f"{where} is empty (leave it out to message each approver)"
            )
            return DEFAULT_NOTIFY
        before = len(self.problems)
        targets = self.reader.mapping(entry.value, where, ("slack", "teams"))
        if targets is None:
            return DEFAULT_NOTIFY
        slack = self._targets(targets.get("slack"), _is_slack_target, _SLACK_HINT)
        teams = self._targets(targets.get("teams"), _is_teams_target, _TEAMS_HINT)
        if not slack and not teams and len(self.problems) == before:
            self.problems.add(
                entry.key_node, f"{where} names nowhere (leave it out to message each approver)"
            )
        return Notify(slack=slack, teams=teams)

    def _targets(
        self, entry: Entry | None, valid: Callable[[str], bool], hint: str
    ) -> tuple[str, ...]:
        if entry is None or self.reader.is_null(entry.value):
            return ()
        what = f"{self.label}: notify.{entry.key}"
        targets: list[str] = []
        for item in self.reader.sequence(entry.value, what) or []:
            target = self.reader.text_value(item, what)
            if target is None:
                continue
            if not valid(target):
                self.problems.add(item, f"{what}: {target!r} is not {hint}")
            elif target not in targets:
                targets.append(target)
        return tuple(targets)

    def _escalate(self, entry: Entry | None, ttl: timedelta | None) -> Escalation | None:
        if entry is None:
            return None
        where = f"{self.label}: escalate"
        settings = self.reader.mapping(entry.value, where, ("after", "to"))
        if settings is None:
            return None
        after = self._before_ttl(settings.get("after"), "escalate.after", ttl)
        if "after" not in settings:
            self.problems.add(entry.key_node, f"{where} needs `after` (a duration)")
        if "to" not in settings:
            self.problems.add(entry.key_node, f"{where} needs `to` (approvers to add)")
            return None
        to = self._approvers(settings["to"], "escalate.to")
        if after is None or not to.resolved:
            return None
        return Escalation(after=after, approvers=to.resolved, approver_refs=to.refs)


_SLACK_HINT = "a channel ('#name' or an id like C0123ABCD) or 'approvers'"
_TEAMS_HINT = "'Team/Channel', a conversation id (19:...) or 'approvers'"


def _is_slack_target(target: str) -> bool:
    return target == APPROVERS or bool(
        _SLACK_CHANNEL_NAME.match(target) or _SLACK_CHANNEL_ID.match(target)
    )


def _is_teams_target(target: str) -> bool:
    return target == APPROVERS or bool(
        _TEAMS_CHANNEL.match(target) or _TEAMS_CONVERSATION.match(target)
    )
