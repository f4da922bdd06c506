"""The retry schedule: a table of waits, the contract's minimum span, and bad settings."""

from __future__ import annotations

from datetime import timedelta

import pytest

from countersign.callbacks.schedule import (
    CONTRACT_MIN_ATTEMPTS,
    CONTRACT_MIN_SPAN,
    DEFAULT_SCHEDULE,
    RetrySchedule,
)

S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("attempt", "draw", "wait"),
    [
        (1, 1.0, 10 * S),
        (1, 0.0, 5 * S),
        (1, 0.5, 7.5 * S),
        (2, 1.0, 25 * S),
        (3, 1.0, 62.5 * S),
        (4, 1.0, 156.25 * S),
        (5, 1.0, 390.625 * S),
        (6, 1.0, 976.5625 * S),
        (7, 1.0, 2441.40625 * S),
        (8, 1.0, 3600 * S),  # 6103.5 s, capped
        (8, 0.0, 1800 * S),
        (9, 1.0, 3600 * S),
        (10, 1.0, None),  # the last attempt failed: dead
        (11, 0.0, None),
    ],
)
def test_default_waits(attempt: int, draw: float, wait: timedelta | None) -> None:
    assert DEFAULT_SCHEDULE.delay_after(attempt, draw) == wait


def test_default_schedule_meets_the_contract_even_with_the_shortest_jitter() -> None:
    assert DEFAULT_SCHEDULE.attempts >= CONTRACT_MIN_ATTEMPTS
    assert DEFAULT_SCHEDULE.min_span() >= CONTRACT_MIN_SPAN
    assert DEFAULT_SCHEDULE.meets_contract()
    # The attempt times, from the first: no jitter at all, then every jitter lowest.
    assert DEFAULT_SCHEDULE.max_span() == timedelta(seconds=11262.34375)
    assert DEFAULT_SCHEDULE.min_span() == timedelta(seconds=5631.171875)


@pytest.mark.parametrize(
    ("schedule", "meets"),
    [
        (RetrySchedule(), True),
        (RetrySchedule(attempts=7, base=600, factor=2), False),  # too few attempts
        (RetrySchedule(attempts=8, base=1, factor=2), False),  # 127 s at most
        (RetrySchedule(attempts=8, base=30, factor=2), False),  # 63.5 min at most, 31.75 at least
        (RetrySchedule(attempts=8, base=30, factor=2, spread=0), True),  # no jitter: 63.5 min
        (RetrySchedule(attempts=8, base=60, factor=2), True),  # 63.5 min at least
        (RetrySchedule(spread=1.0), False),  # full jitter: no floor at all
    ],
)
def test_meets_contract(schedule: RetrySchedule, meets: bool) -> None:
    assert schedule.meets_contract() is meets


def test_every_draw_lies_between_the_floor_and_the_nominal_wait() -> None:
    for attempt in range(1, DEFAULT_SCHEDULE.attempts):
        nominal = DEFAULT_SCHEDULE.nominal_delay(attempt)
        for draw in (0.0, 0.1, 0.37, 0.9, 1.0):
            wait = DEFAULT_SCHEDULE.delay_after(attempt, draw)
            assert wait is not None
            assert nominal / 2 <= wait.total_seconds() <= nominal


def test_huge_attempt_numbers_stay_at_the_cap() -> None:
    schedule = RetrySchedule(attempts=10_000)
    assert schedule.nominal_delay(5000) == 3600.0


@pytest.mark.parametrize(
    "options",
    [
        {"attempts": 0},
        {"base": 0},
        {"base": 10, "cap": 5},
        {"factor": 0.5},
        {"spread": -0.1},
        {"spread": 1.5},
    ],
)
def test_bad_settings_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetrySchedule(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize("draw", [-0.01, 1.01])
def test_draw_outside_unit_interval_is_refused(draw: float) -> None:
    with pytest.raises(ValueError):
        DEFAULT_SCHEDULE.delay_after(1, draw)


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError):
        DEFAULT_SCHEDULE.nominal_delay(0)
