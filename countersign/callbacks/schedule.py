"""When a failed callback is tried again: exponential back-off with bounded jitter.

After failed attempt ``n`` (1 = the first), the next one waits
``min(cap, base * factor ** (n - 1))`` scaled by a random factor in
``[1 - spread, 1]``. That is "equal jitter" (half fixed, half random, with the
default ``spread=0.5``) rather than full or decorrelated jitter: both of those
can draw delays near zero (full) or near ``base`` (decorrelated), so they could
not promise the contract's "over at least 1 hour". With a floor, the shortest
possible schedule is known, and ``meets_contract`` checks it.

The default: 10 attempts; waits of 10 s, 25 s, 62.5 s, 2.6 min, 6.5 min,
16.3 min, 40.7 min, then 1 h twice (the cap), at most. The 10th attempt comes
1.56 h (all jitter lowest) to 3.13 h (none) after the first; if it fails too,
the delivery is dead.

Pure functions: the random draw is passed in, so every case is a table row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

__all__ = ["CONTRACT_MIN_ATTEMPTS", "CONTRACT_MIN_SPAN", "DEFAULT_SCHEDULE", "RetrySchedule"]

# CONTRACT.md, Callbacks: "at least 8 attempts over at least 1 hour".
CONTRACT_MIN_ATTEMPTS = 8
CONTRACT_MIN_SPAN = timedelta(hours=1)


@dataclass(frozen=True)
class RetrySchedule:
    """How many attempts a delivery gets and how long to wait between them."""

    attempts: int = 10
    base: float = 10.0  # seconds, the wait after the first failure (before jitter)
    factor: float = 2.5
    cap: float = 3600.0  # seconds, the longest wait
    spread: float = 0.5  # jitter: a wait is its nominal value times [1 - spread, 1]

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base <= 0 or self.cap < self.base:
            raise ValueError("need 0 < base <= cap")
        if self.factor < 1:
            raise ValueError("factor must be at least 1")
        if not 0 <= self.spread <= 1:
            raise ValueError("spread must be between 0 and 1")

    def nominal_delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based), before jitter."""
        if attempt < 1:
            raise ValueError("attempts count from 1")
        try:
            return min(self.cap, self.base * self.factor ** (attempt - 1))
        except OverflowError:  # a float power that large is past any cap
            return self.cap

    def delay_after(self, attempt: int, draw: float) -> timedelta | None:
        """The wait after failed attempt ``attempt``, or None when it was the last (dead).

        ``draw`` is a uniform random number in [0, 1]: 0 gives the shortest
        wait, 1 the nominal one.
        """
        if not 0 <= draw <= 1:
            raise ValueError("draw must be between 0 and 1")
        if attempt >= self.attempts:
            return None
        scale = 1 - self.spread + self.spread * draw
        return timedelta(seconds=self.nominal_delay(attempt) * scale)

    def span(self, draw: float) -> timedelta:
        """From the first attempt to the last, when every draw is ``draw``."""
        total = timedelta()
        for attempt in range(1, self.attempts):
            delay = self.delay_after(attempt, draw)
            assert delay is not None
            total += delay
        return total

    def min_span(self) -> timedelta:
        """The shortest time from the first attempt to the last (every jitter at its lowest)."""
        return self.span(0.0)

    def max_span(self) -> timedelta:
        """The longest time from the first attempt to the last (no jitter)."""
        return self.span(1.0)

    def meets_contract(self) -> bool:
        """At least 8 attempts over at least 1 hour, whatever the jitter draws."""
        return self.attempts >= CONTRACT_MIN_ATTEMPTS and self.min_span() >= CONTRACT_MIN_SPAN


DEFAULT_SCHEDULE = RetrySchedule()
