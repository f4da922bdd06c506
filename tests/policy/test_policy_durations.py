"""Durations in a policy: units, bare seconds, and what is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest

from countersign.policy import format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("90m", timedelta(minutes=90)),
        (90, timedelta(seconds=90)),
        ("3600", timedelta(hours=1)),
    ],
    ids=lambda value: repr(value),
)
def test_parse_duration(value: object, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "not a duration"),
        ("5x", "not a duration"),
        ("30 m", "not a duration"),
        ("30M", "not a duration"),
        ("30m1h", "not a duration"),
        ("1h1h", "not a duration"),
        ("1.5h", "not a duration"),
        ("-5m", "not a duration"),
        ("h", "not a duration"),
        (1.5, "not a duration"),
        (True, "not a duration"),
        (None, "not a duration"),
        (0, "not a positive duration"),
        ("0s", "not a positive duration"),
        (-30, "not a positive duration"),
    ],
    ids=lambda value: repr(value),
)
def test_parse_duration_refuses(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_duration(value)


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(seconds=90), "1m30s"),
        (timedelta(minutes=30), "30m"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=30), "30d"),
        (timedelta(0), "0s"),
    ],
    ids=["90s", "30m", "1h30m", "30d", "zero"],
)
def test_format_duration(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text
    if duration:
        assert parse_duration(text) == duration
