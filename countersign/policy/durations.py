"""Durations in a policy file: ``90s``, ``30m``, ``2h``, ``1d``, ``1h30m``, or bare seconds."""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["format_duration", "parse_duration"]

# Units in descending order, each at most once: "1h30m" reads one way only,
# so "30m1h" or "1h1h" are far more likely typos than intent.
_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")
_UNIT_SECONDS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))

_FORMAT_HINT = "use e.g. 90s, 30m, 2h, 1d, 1h30m, or a number of seconds"


def parse_duration(value: object) -> timedelta:
    """A positive duration from a policy value; ValueError saying why when it is not one."""
    # bool is an int in Python, but `ttl: true` is never meant as one second.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{value!r} is not a duration ({_FORMAT_HINT})")
    if isinstance(value, int):
        seconds = value
    elif value.isascii() and value.isdigit():
        # A quoted number ("90") is as clear as a bare one.
        seconds = int(value)
    else:
        found = _DURATION.match(value)
        if not value or found is None:
            raise ValueError(f"{value!r} is not a duration ({_FORMAT_HINT})")
        seconds = sum(int(found[unit] or 0) * size for unit, size in _UNIT_SECONDS)
    if seconds <= 0:
        raise ValueError(f"{value!r} is not a positive duration")
    return timedelta(seconds=seconds)


def format_duration(duration: timedelta) -> str:
    """The policy spelling of a duration, e.g. ``1h30m``; the inverse of `parse_duration`."""
    remaining = int(duration.total_seconds())
    if remaining <= 0:
        return "0s"
    parts: list[str] = []
    for unit, size in _UNIT_SECONDS:
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
