"""Long-polling without busy polling: callers sleep on an event per request id.

Three things wake a waiter:

- this process's service, after commit (``Waiters`` is a ``ChangeListener``;
  the committed request is handed over, so no re-read is needed);
- another process, through the change feed (PostgreSQL ``LISTEN``, see
  ``changefeed.py``), which calls ``wake(request_id)``: the waiter re-reads;
- as a safety net only, a sweep every ``recheck_seconds``: one query for the
  statuses of every watched request, waking the waiters of those now final
  (several processes on one SQLite file have no feed; a feed reconnect can
  miss a notification). One query per sweep, not one read per waiter: 10,000
  long-polls cost a core when each re-read its request every 5 s.

A waiter registers *before* its first read, so a change that lands between
the read and the sleep still sets its event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import Gauge

from countersign.core.model import ApprovalRequest
from countersign.service import ApprovalService

__all__ = ["RECHECK_SECONDS", "Waiters"]

RECHECK_SECONDS = 5.0
SWEEP_CHUNK = 500  # request ids per status query

log = logging.getLogger("countersign.api")


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

    async def sweep(self) -> int:
        """Wake the waiters of every watched request that is final now; how many requests."""
        ids = list(self._watches)
        woken = 0
        for start in range(0, len(ids), SWEEP_CHUNK):
            for request_id in await self._service.final_request_ids(
                ids[start : start + SWEEP_CHUNK]
            ):
                self.wake(request_id)
                woken += 1
        return woken

    async def run_sweeps(self) -> None:
        """Sweep every ``recheck_seconds`` until cancelled (a failed sweep is retried)."""
        while not self._closing:
            await asyncio.sleep(self.recheck_seconds)
            if not self._watches:
                continue
            try:
                await self.sweep()
            except Exception:  # the database blinked: the next sweep tries again
                log.warning("waiters' sweep failed", exc_info=True)

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
                    await asyncio.wait_for(watch.event.wait(), remaining)
                # Clear before reading: a change during the read sets it again.
                watch.event.clear()
                pushed, watch.pushed = watch.pushed, None
                if pushed is not None:
                    request = pushed
                else:
                    request = await self._service.get_request(request_id, client=client)
        return request
