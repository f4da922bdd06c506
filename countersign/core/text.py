"""Checks on untrusted text that every entry point shares."""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_NESTING", "contains_nul", "too_deep"]

# JSON objects and arrays nested deeper than this are refused (as the API does).
MAX_NESTING = 32


def too_deep(value: Any, limit: int = MAX_NESTING) -> bool:
    """True when objects / arrays in ``value`` nest deeper than ``limit`` (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list | tuple):
            if depth >= limit:
                return True
            items = node.values() if isinstance(node, dict) else node
            stack.extend((item, depth + 1) for item in items)
    return False


def contains_nul(value: Any) -> bool:
    """True when a string anywhere in ``value`` (keys included) holds a NUL character.

    PostgreSQL cannot store NUL in text or JSON, and no legitimate request needs it.
    """
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(contains_nul(v) for v in value)
    return False
