"""Long-polling without busy polling: callers sleep on an event per request id.

Three things wake a waiter:

- this process's service, after commit (``Waiters`` is a ``ChangeListener``;
  the committed request is handed over, so no re-read is needed);
- another process, through the change feed (PostgreSQL ``LISTEN``, see
  ``changefeed.py``), which calls ``wake(request_id)``: the waiter re-reads;
- as a safety net only, a re-read every ``recheck_seconds`` (several processes
  on one SQLite file have no feed; a feed reconnect can miss a notification).

A waiter registers *before* its first read, so a change that lands between
the read and the sleep still sets its event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import Gauge

from countersign.core.model import ApprovalRequest
from countersign.service import ApprovalService

__all__ = ["RECHECK_SECONDS", "Waiters"]

RECHECK_SECONDS = 5.0


@dataclass(eq=False)
class _Watch:
    """One waiting caller: its wake-up event and the newest request pushed to it."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    pushed: ApprovalRequest | None = None


class Waiters:
    """The long-polls of this process, by request id; a ``ChangeListener``."""

    def __init__(
        self,
        service: ApprovalService,
        *,
        gauge: Gauge | None = None,
        recheck_seconds: float = RECHECK_SECONDS,
    ) -> None:
        self._service = service
        self._gauge = gauge
        self.recheck_seconds = recheck_seconds
        self._watches: dict[str, set[_Watch]] = {}
        self._closing = False

    def __len__(self) -> int:
        return sum(len(watches) for watches in self._watches.values())

    def request_changed(self, request: ApprovalRequest) -> None:
        """A change committed in this process: hand the request to its waiters."""
        for watch in self._watches.get(request.id, ()):
            # Never let a late pending copy overwrite a final one: final is final.
            if watch.pushed is None or not watch.pushed.status.is_final:
                watch.pushed = request
            watch.event.set()

    def wake(self, request_id: str) -> None:
        """A change committed elsewhere: the waiters of ``request_id`` re-read it."""
        for watch in self._watches.get(request_id, ()):
            watch.event.set()

    def wake_all(self) -> None:
        """Every waiter re-reads (after a feed gap, when notifications may be lost)."""
        for watches in self._watches.values():
            for watch in watches:
                watch.event.set()

    def close(self) -> None:
        """Shutting down: every waiter answers now with what it has; new ones do not wait."""
        self._closing = True
        self.wake_all()

    @contextlib.contextmanager
    def _watch(self, request_id: str) -> Iterator[_Watch]:
        watch = _Watch()
        self._watches.setdefault(request_id, set()).add(watch)
        if self._gauge is not None:
            self._gauge.inc()
        try:
            yield watch
        finally:
            watches = self._watches.get(request_id)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[request_id]
            if self._gauge is not None:
                self._gauge.dec()

    async def wait(
        self, request_id: str, seconds: float, *, client: str | None = None
    ) -> ApprovalRequest:
        """The request once final, or as it is after ``seconds``.

        ``client`` limits it to that client's requests (``NotFound`` otherwise),
        as ``ApprovalService.get_request`` does.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        with self._watch(request_id) as watch:
            request = await self._service.get_request(request_id, client=client)
            while not request.status.is_final and not self._closing:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watch.event.wait(), min(remaining, self.recheck_seconds))
                # Clear before reading: a change during the read sets it again.
                watch.event.clear()
                pushed, watch.pushed = watch.pushed, None
                if pushed is not None:
                    request = pushed
                else:
                    request = await self._service.get_request(request_id, client=client)
        return request
