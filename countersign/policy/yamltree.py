"""Reading a YAML node tree so that every problem can name the line it is on."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from countersign.core.errors import PolicyProblem

__all__ = ["UNREADABLE", "Entry", "Problems", "TreeReader", "line_of"]

_NULL_TAG = "tag:yaml.org,2002:null"
# Marks a scalar that could not be constructed (its problem is already recorded).
UNREADABLE = object()


def line_of(node: Node) -> int:
    """The 1-based line a node starts on."""
    return int(node.start_mark.line) + 1


class Problems:
    """Collects every problem of one file, so a check reports all of them at once."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._items: list[PolicyProblem] = []

    def add(self, where: Node | int, message: str) -> None:
        """Record ``message`` at a node's line, or at an explicit line (0 = whole file)."""
        line = where if isinstance(where, int) else line_of(where)
        self._items.append(PolicyProblem(line, message, self.source))

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def sorted(self) -> list[PolicyProblem]:
        """The problems in file order (stable: same-line problems keep their order)."""
        return sorted(self._items, key=lambda problem: problem.line)


@dataclass(frozen=True)
class Entry:
    """One ``key: value`` pair of a mapping, with the line of its key."""

    key: str
    key_node: Node
    value: Node

    @property
    def line(self) -> int:
        """The line of the key (where a person looks for the setting)."""
        return line_of(self.key_node)


class TreeReader:
    """Composes a YAML text into nodes and reads typed values from them, reporting problems."""

    def __init__(self, text: str, problems: Problems) -> None:
        self.problems = problems
        self.text = text
        # One loader both composes the tree and constructs scalars with the
        # same safe tag resolution PyYAML would have used for the whole file.
        self._loader: yaml.SafeLoader | None = None

    def root(self) -> Node | None:
        """The document's top node; None (with a problem) on a syntax error or empty file."""
        try:
            self._loader = yaml.SafeLoader(self.text)
            node = self._loader.get_single_node()
        except yaml.MarkedYAMLError as error:
            self.problems.add(*_syntax_problem(error))
            return None
        except yaml.YAMLError as error:
            # ReaderError (e.g. a control character) only knows an offset.
            position = getattr(error, "position", None)
            line = self.text.count("\n", 0, position) + 1 if isinstance(position, int) else 0
            reason = getattr(error, "reason", None) or str(error).splitlines()[0]
            character = getattr(error, "character", None)
            if isinstance(character, int):
                reason = f"character #x{character:04x}: {reason}"
            self.problems.add(line, f"YAML syntax error: {reason}")
            return None
        finally:
            if self._loader is not None:
                self._loader.dispose()
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL_TAG):
            self.problems.add(0, "the policy is empty: it needs a list of `rules`")
            return None
        self._report_duplicate_keys(node)
        return node

    def _report_duplicate_keys(self, root: Node) -> None:
        # PyYAML keeps the last of two equal keys without a word; in a policy
        # that silently drops a setting (or a whole group), so it is a problem.
        seen_nodes: set[int] = set()
        for mapping in _mappings(root, seen_nodes):
            first_lines: dict[str, int] = {}
            for key_node, _ in mapping.value:
                if not isinstance(key_node, ScalarNode):
                    continue
                key = str(key_node.value)
                if key in first_lines:
                    self.problems.add(
                        key_node, f"duplicate key {key!r} (first on line {first_lines[key]})"
                    )
                else:
                    first_lines[key] = line_of(key_node)

    def is_null(self, node: Node) -> bool:
        """True for an empty value (``key:`` or ``key: null``)."""
        return isinstance(node, ScalarNode) and node.tag == _NULL_TAG

    def scalar(self, node: Node, what: str) -> object:
        """A scalar's Python value; None or UNREADABLE (with a problem recorded) when unusable."""
        if not isinstance(node, ScalarNode):
            self.problems.add(node, f"{what} must be a single value, not a {_kind(node)}")
            return UNREADABLE
        return self._construct(node, what)

    def text_value(self, node: Node, what: str) -> str | None:
        """A string value; None with a problem for anything else."""
        if not isinstance(node, ScalarNode):
            self.problems.add(node, f"{what} must be text, not a {_kind(node)}")
            return None
        value = self._construct(node, what)
        if isinstance(value, str):
            return value
        if value is not UNREADABLE:
            self.problems.add(node, f"{what} must be text, not {_describe(self, node)}")
        return None

    def _construct(self, node: ScalarNode, what: str) -> object:
        assert self._loader is not None, "root() composes the tree first"
        try:
            return self._loader.construct_object(node)
        except yaml.MarkedYAMLError as error:
            # An explicit tag the safe loader refuses (e.g. !!python/object).
            self.problems.add(node, f"{what}: cannot read value ({error.problem})")
            return UNREADABLE
        except (ValueError, OverflowError) as error:
            # A value YAML resolves by its shape but cannot build (`2024-13-45`).
            self.problems.add(node, f"{what}: cannot read value {node.value!r} ({error})")
            return UNREADABLE

    def sequence(self, node: Node, what: str) -> list[Node] | None:
        """A list's items; None with a problem when the node is not a list."""
        if isinstance(node, SequenceNode):
            return list(node.value)
        self.problems.add(node, f"{what} must be a list, not {_describe(self, node)}")
        return None

    def mapping(
        self, node: Node, what: str, allowed: Iterable[str] | None
    ) -> dict[str, Entry] | None:
        """A mapping's entries by key; None when not a mapping. Keys not ``allowed`` are problems.

        ``allowed=None`` accepts any key (e.g. group names).
        """
        if not isinstance(node, MappingNode):
            self.problems.add(node, f"{what} must be a mapping, not {_describe(self, node)}")
            return None
        known = None if allowed is None else tuple(allowed)
        entries: dict[str, Entry] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problems.add(key_node, f"{what}: keys must be plain names")
                continue
            # Keys are compared as written: `on:` is the word "on", not YAML 1.1's true.
            key = str(key_node.value)
            if known is not None and key not in known:
                self.problems.add(key_node, f"{what}: unknown key {key!r}{_suggest(key, known)}")
                continue
            entries[key] = Entry(key, key_node, value_node)
        return entries


def _syntax_problem(error: yaml.MarkedYAMLError) -> tuple[int, str]:
    """The line and message of a YAML syntax error, with PyYAML's context when it has one."""
    mark = error.problem_mark or error.context_mark
    line = int(mark.line) + 1 if mark is not None else 0
    problem = error.problem or "unreadable YAML"
    if error.context and error.context_mark is not None:
        where = f"line {int(error.context_mark.line) + 1}"
        if problem.startswith("but "):
            # PyYAML splits one sentence in two: "expected a single document", "but found ...".
            return line, f"YAML syntax error: {error.context} ({where}), {problem}"
        return line, f"YAML syntax error: {problem} ({error.context} on {where})"
    return line, f"YAML syntax error: {problem}"


def _mappings(node: Node, seen: set[int]) -> Iterator[MappingNode]:
    """Every mapping node under ``node``, each once even when anchors share it."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, MappingNode):
        yield node
        for key_node, value_node in node.value:
            yield from _mappings(key_node, seen)
            yield from _mappings(value_node, seen)
    elif isinstance(node, SequenceNode):
        for item in node.value:
            yield from _mappings(item, seen)


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "mapping"
    return "list" if isinstance(node, SequenceNode) else "value"


def _describe(reader: TreeReader, node: Node) -> str:
    """How a wrong value reads in a message: ``a list``, ``the number 3``, ``nothing``."""
    if not isinstance(node, ScalarNode):
        return f"a {_kind(node)}"
    if reader.is_null(node):
        return "nothing"
    kind = node.tag.rsplit(":", 1)[-1]
    names = {"bool": "true/false", "int": "a number", "float": "a number", "str": "text"}
    return f"{names.get(kind, kind)} ({node.value!r})"


def _suggest(key: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (expected {', '.join(known)})"
