"""Checks on untrusted text that every entry point shares."""

from __future__ import annotations

from typing import Any

__all__ = ["contains_nul"]


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
