"""Loading a policy file: a `Policy`, or `PolicyInvalid` listing every problem with its line."""

from __future__ import annotations

import os
import re
from types import MappingProxyType

from yaml.nodes import MappingNode, Node, ScalarNode

from countersign.core.errors import PolicyInvalid, PolicyProblem
from countersign.core.identity import is_email, normalize_email
from countersign.core.model import Verdict
from countersign.policy.approvals import ApprovalSettings, Groups, read_approval_settings
from countersign.policy.expression import Condition, ConditionSyntaxError, compile_condition
from countersign.policy.model import Notify, Policy, Rule, glob_pattern
from countersign.policy.yamltree import Entry, Problems, TreeReader

__all__ = ["check_policy_file", "load_policy", "parse_policy"]

_TOP_KEYS = ("groups", "rules")
_APPROVAL_KEYS = (
    "approvers",
    "quorum",
    "deny_quorum",
    "ttl",
    "notify",
    "remind_after",
    "escalate",
    "approve_comment",
)
_RULE_KEYS = ("name", "match", "when", "decision", *_APPROVAL_KEYS)
_DECISIONS = {"allow": Verdict.ALLOW, "deny": Verdict.DENY}

_GROUP_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def parse_policy(text: str, source: str = "policy") -> Policy:
    """The policy in ``text``; PolicyInvalid with every problem found, in file order."""
    problems = Problems(source)
    reader = TreeReader(text, problems)
    root = reader.root()
    policy = None if root is None else _PolicyReader(reader).read(root, source)
    if problems or policy is None:
        raise PolicyInvalid(problems.sorted())
    return policy


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """The policy in the file at ``path``; PolicyInvalid when it is unreadable or has problems."""
    source = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as error:
        reason = error.strerror or str(error)
        raise PolicyInvalid(
            [PolicyProblem(0, f"cannot read policy file: {reason}", source)]
        ) from error
    except UnicodeDecodeError as error:
        message = f"cannot read policy file: not UTF-8 text (byte {error.start})"
        raise PolicyInvalid([PolicyProblem(0, message, source)]) from error
    return parse_policy(text, source)


def check_policy_file(path: str | os.PathLike[str]) -> list[PolicyProblem]:
    """Every problem of the policy file at ``path``; an empty list means it is valid."""
    try:
        load_policy(path)
    except PolicyInvalid as invalid:
        return list(invalid.problems)
    return []


class _PolicyReader:
    """Reads the top level and the groups, then each rule."""

    def __init__(self, reader: TreeReader) -> None:
        self.reader = reader
        self.problems = reader.problems
        self.groups: dict[str, frozenset[str]] = {}
        self.broken_groups: set[str] = set()

    def group_view(self) -> Groups:
        """The groups as the approval settings of a rule see them."""
        return Groups(MappingProxyType(self.groups), frozenset(self.broken_groups))

    def read(self, root: Node, source: str) -> Policy | None:
        top = self.reader.mapping(root, "the policy", _TOP_KEYS)
        if top is None:
            return None
        if "groups" in top:
            self._read_groups(top["groups"])
        if "rules" not in top:
            self.problems.add(root, "the policy has no `rules` (a list; the first match wins)")
            return None
        rules = self._read_rules(top["rules"])
        if rules is None:
            return None
        return Policy(groups=MappingProxyType(dict(self.groups)), rules=rules, source=source)

    def _read_groups(self, entry: Entry) -> None:
        if self.reader.is_null(entry.value):
            return
        groups = self.reader.mapping(entry.value, "groups", None)
        for name, group in (groups or {}).items():
            before = len(self.problems)
            if not _GROUP_NAME.match(name):
                self.problems.add(
                    group.key_node,
                    f"group name {name!r} may only use letters, digits, '_', '.' and '-'",
                )
            members: set[str] = set()
            for item in self.reader.sequence(group.value, f"group {name!r}") or []:
                member = self.reader.text_value(item, f"group {name!r}: each member")
                if member is None:
                    continue
                if is_email(member):
                    members.add(normalize_email(member))
                else:
                    self.problems.add(item, f"group {name!r}: {member!r} is not an e-mail address")
            if not members and len(self.problems) == before:
                self.problems.add(group.key_node, f"group {name!r} has no members")
            self.groups[name] = frozenset(members)
            if len(self.problems) > before:
                self.broken_groups.add(name)

    def _read_rules(self, entry: Entry) -> tuple[Rule, ...] | None:
        items = self.reader.sequence(entry.value, "rules")
        if items is None:
            return None
        if not items:
            self.problems.add(entry.key_node, "rules is empty: add at least one rule")
            return None
        names: dict[str, int] = {}
        rules: list[Rule] = []
        catch_all: tuple[str, int] | None = None
        for index, node in enumerate(items, start=1):
            rule_reader = _RuleReader(self, node, index, names)
            rule = rule_reader.read()
            if catch_all is not None and isinstance(node, MappingNode):
                earlier, line = catch_all
                self.problems.add(
                    node,
                    f"{rule_reader.label} can never match: {earlier} on line {line} "
                    "matches every request before it",
                )
            elif rule_reader.catch_all:
                catch_all = (rule_reader.label, rule_reader.line)
            if rule is not None:
                rules.append(rule)
        return tuple(rules) if len(rules) == len(items) else None


class _RuleReader:
    """Reads one rule, reporting each of its problems under the rule's name."""

    def __init__(
        self, policy: _PolicyReader, node: Node, index: int, names: dict[str, int]
    ) -> None:
        self.policy = policy
        self.reader = policy.reader
        self.problems = policy.problems
        self.node = node
        self.line = int(node.start_mark.line) + 1
        self.names = names
        self.label = _label(node, index)
        # Only a rule whose match and `when` were read and are empty counts.
        self.catch_all = False

    def read(self) -> Rule | None:
        entries = self.reader.mapping(self.node, self.label, _RULE_KEYS)
        if entries is None:
            return None
        before = len(self.problems)
        name = self._name(entries.get("name"))
        globs = self._match(entries.get("match"))
        when, condition = self._when(entries.get("when"))
        verdict = self._decision(entries.get("decision"))
        if globs is not None and "when" not in entries:
            self.catch_all = all(glob_pattern(glob) is None for glob in globs)
        settings = ApprovalSettings(notify=Notify())
        if verdict in (Verdict.ALLOW, Verdict.DENY):
            for key in _APPROVAL_KEYS:
                if key in entries:
                    self.problems.add(
                        entries[key].key_node,
                        f"{self.label}: {key} has no effect with decision: {verdict.value}",
                    )
        else:
            # With an unreadable decision, still check what is there, but do not
            # demand approvers: the author may have meant allow or deny.
            settings = read_approval_settings(
                self.reader,
                self.label,
                self.node,
                entries,
                self.policy.group_view(),
                approvers_required=verdict is not None,
            )
        if len(self.problems) > before or name is None or globs is None or verdict is None:
            return None
        return Rule(
            name=name,
            line=self.line,
            action_glob=globs[0],
            resource_glob=globs[1],
            when=when,
            verdict=verdict,
            condition=condition,
            approvers=settings.approvers,
            approver_refs=settings.approver_refs,
            quorum=settings.quorum,
            deny_quorum=settings.deny_quorum,
            ttl=settings.ttl,
            notify=settings.notify,
            remind_after=settings.remind_after,
            escalate=settings.escalate,
            approve_comment=settings.approve_comment,
        )

    def _name(self, entry: Entry | None) -> str | None:
        if entry is None:
            self.problems.add(self.node, f"{self.label} has no `name`")
            return None
        name = self.reader.text_value(entry.value, f"{self.label}: name")
        if name is None:
            return None
        if not _RULE_NAME.match(name):
            self.problems.add(
                entry.value,
                f"{self.label}: name {name!r} must start with a letter or digit and use only "
                "letters, digits, '_', '.' and '-' (at most 64)",
            )
            return None
        if name in self.names:
            self.problems.add(
                entry.value,
                f"{self.label}: name {name!r} is already used by the rule on line "
                f"{self.names[name]}",
            )
            return None
        self.names[name] = self.line
        return name

    def _match(self, entry: Entry | None) -> tuple[str | None, str | None] | None:
        """(action glob, resource glob); None where unusable. Absent or empty = match all."""
        if entry is None or self.reader.is_null(entry.value):
            return (None, None)
        match = self.reader.mapping(entry.value, f"{self.label}: match", ("action", "resource"))
        if match is None:
            return None
        globs: list[str | None] = []
        for key in ("action", "resource"):
            found = match.get(key)
            if found is None or self.reader.is_null(found.value):
                globs.append(None)
                continue
            glob = self.reader.text_value(found.value, f"{self.label}: match.{key}")
            if glob is None:
                return None
            globs.append(glob or None)
        return (globs[0], globs[1])

    def _when(self, entry: Entry | None) -> tuple[str | None, Condition | None]:
        if entry is None:
            return (None, None)
        text = self.reader.text_value(entry.value, f"{self.label}: when")
        if text is None:
            return (None, None)
        if not text.strip():
            self.problems.add(entry.key_node, f"{self.label}: when is empty")
            return (None, None)
        try:
            return (text, compile_condition(text))
        except ConditionSyntaxError as error:
            self.problems.add(entry.key_node, f"{self.label}: when {error}")
            return (None, None)

    def _decision(self, entry: Entry | None) -> Verdict | None:
        if entry is None:
            return Verdict.REQUIRE_APPROVAL
        text = self.reader.text_value(entry.value, f"{self.label}: decision")
        if text is None:
            return None
        if text not in _DECISIONS:
            self.problems.add(
                entry.value,
                f"{self.label}: decision must be allow or deny, not {text!r} "
                "(leave it out to require approval)",
            )
            return None
        return _DECISIONS[text]


def _label(node: Node, index: int) -> str:
    """How messages name a rule: by its name when it has a usable one, else by position."""
    if not isinstance(node, MappingNode):
        return f"rule #{index}"
    for key_node, value_node in node.value:
        if (
            isinstance(key_node, ScalarNode)
            and key_node.value == "name"
            and isinstance(value_node, ScalarNode)
            and value_node.tag.endswith(":str")
            and _RULE_NAME.match(value_node.value)
        ):
            return f"rule {value_node.value!r}"
    return f"rule #{index}"
