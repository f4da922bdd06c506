"""Request ids carry their creation time, so a time window is a range of ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ulid import ULID

from countersign.core.ids import PREFIX, id_floor, new_request_id

AT = datetime(2026, 11, 21, 10, 0, 0, 123456, tzinfo=UTC)


def _time(request_id: str) -> datetime:
    return ULID.from_str(request_id.removeprefix(PREFIX)).datetime


def test_an_id_carries_the_millisecond_it_was_made_for() -> None:
    request_id = new_request_id(AT)
    assert request_id.startswith(PREFIX)
    assert _time(request_id) == AT.replace(microsecond=123000)
    assert id_floor(AT) <= request_id < id_floor(AT + timedelta(milliseconds=1))


def test_ids_of_one_millisecond_keep_increasing() -> None:
    """A clock that stands still (a test's, or a fast burst) still gives ordered ids."""
    made = [new_request_id(AT) for _ in range(1000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_ids_follow_the_clock_not_the_last_id() -> None:
    """An earlier instant gets an earlier id (no carrying over from another clock)."""
    later = new_request_id(AT + timedelta(days=3))
    earlier = new_request_id(AT)
    assert earlier < later
    assert _time(earlier) == AT.replace(microsecond=123000)


def test_the_floor_orders_like_time() -> None:
    floors = [id_floor(AT + timedelta(hours=h)) for h in range(-48, 48, 7)]
    assert floors == sorted(floors)
    assert id_floor(datetime(1960, 1, 1, tzinfo=UTC)) == PREFIX + "0" * 26
