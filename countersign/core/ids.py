"""Request ids: ``req_`` and a ULID whose time is the request's ``created_at``.

The id's first 48 bits are the millisecond the service's clock gave the request
(the same instant stored as ``created_at``), so ids sort as requests were
created and a time window is also a range of ids: history turns ``since`` /
``until`` into bounds on the primary key (``id_floor``). Within one
millisecond, ids from one process keep increasing (the ULID spec's
monotonic mode), so creation order holds even under a clock that stands still.
"""

from __future__ import annotations

import secrets
import threading
from datetime import datetime, timedelta

from ulid import ULID

__all__ = ["PREFIX", "id_floor", "new_request_id"]

PREFIX = "req_"
_RANDOM_BITS = 80
_lock = threading.Lock()
_last: tuple[int, int] = (-1, 0)


def _millis(at: datetime) -> int:
    return (at - datetime(1970, 1, 1, tzinfo=at.tzinfo)) // timedelta(milliseconds=1)


def new_request_id(at: datetime) -> str:
    """A new id for a request created at ``at`` (timezone-aware)."""
    global _last
    ms = _millis(at)
    with _lock:
        last_ms, last_random = _last
        if ms == last_ms and last_random < (1 << _RANDOM_BITS) - 1:
            random = last_random + 1
        else:
            random = secrets.randbits(_RANDOM_BITS)
        _last = (ms, random)
    raw = ms.to_bytes(6, "big") + random.to_bytes(_RANDOM_BITS // 8, "big")
    return f"{PREFIX}{ULID.from_bytes(raw)}"


def id_floor(at: datetime) -> str:
    """The smallest request id of any request created at or after ``at``'s millisecond."""
    ms = max(_millis(at), 0)
    return f"{PREFIX}{ULID.from_bytes(ms.to_bytes(6, 'big') + bytes(_RANDOM_BITS // 8))}"
