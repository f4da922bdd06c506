"""The callback worker: POSTs decided requests from the outbox, signed, at least once.

Each delivery is claimed for a lease (``storage.outbox.claim_due``), POSTed
outside any transaction, and its outcome recorded with a ``callback.attempt``
ledger entry. Any number of workers, in any number of processes, may share a
database: claims never overlap while a lease holds, and a worker that dies
mid-delivery leaves its rows to be tried again by anyone once the lease runs
out (the receiver then sees the same ``Countersign-Delivery`` twice, which is
why receivers de-duplicate on it). Such an attempt counts towards the schedule
and has no ledger entry: the next attempt's number shows the gap.

An attempt is one of:

- **delivered**: any 2xx.
- **failed**: any other status (a 3xx too: redirects are not followed), no
  answer within the timeout, or a network error. Tried again on the
  ``RetrySchedule``; after the last attempt the delivery is **dead**.
- **refused**: nothing is sent and the delivery is dead at once, because the
  destination is not allowed (``check_callback_url``, re-checked before every
  attempt) or the client has no callback secret. Countersign never sends an
  unsigned callback: a receiver could not tell it from a forgery.

``countersign_callback_attempts_total{result}`` counts each attempt once, as
``delivered``, ``failed`` (will be retried), ``refused`` or ``dead`` (the
last attempt failed).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from countersign import __version__
from countersign.callbacks.guard import check_callback_url
from countersign.callbacks.resolver import PublicOnlyResolver
from countersign.callbacks.schedule import DEFAULT_SCHEDULE, RetrySchedule
from countersign.callbacks.signing import signature_header
from countersign.core.model import ApprovalRequest
from countersign.crypto import SecretBoxError
from countersign.metrics import Metrics
from countersign.ports import Clock, SystemClock
from countersign.service import ApprovalService
from storage.outbox import (
    Claim,
    claim_due,
    pending_count,
    record_dead,
    record_delivered,
    record_failed,
    write_transaction,
)

__all__ = ["USER_AGENT", "CallbackWorker"]

log = logging.getLogger("countersign.callbacks")

USER_AGENT = f"Countersign/{__version__}"

# check_callback_url words a DNS failure this way; a failed lookup may be
# temporary, so it is retried rather than killing the delivery.
_UNRESOLVED = "does not resolve"

# How often, at most, the worker counts the outbox for the gauge.
_DEPTH_INTERVAL_SECONDS = 5.0
# How long an opened callback secret is reused: saves a read per delivery.
_SECRET_TTL_SECONDS = 60.0

SessionFactory = Callable[[], aiohttp.ClientSession]
_Result = Literal["delivered", "failed", "refused", "dead"]


@dataclass(frozen=True)
class _Outcome:
    """What one attempt came to: a status when there was an answer, an error unless 2xx."""

    status: int | None = None
    error: str | None = None
    refused: bool = False  # dead at once, nothing was sent

    @property
    def delivered(self) -> bool:
        return self.error is None


class CallbackWorker:
    """Delivers the outbox until stopped; also a ``ChangeListener`` that wakes it on decisions."""

    def __init__(
        self,
        engine: AsyncEngine,
        service: ApprovalService,
        metrics: Metrics,
        *,
        allow_private: bool,
        clock: Clock | None = None,
        session: aiohttp.ClientSession | SessionFactory | None = None,
        poll_interval: float = 1.0,
        lease: float = 60.0,
        batch_size: int = 20,
        concurrency: int = 10,
        timeout: float = 10.0,
        schedule: RetrySchedule = DEFAULT_SCHEDULE,
        draw: Callable[[], float] = random.random,  # jitter, not a secret
    ) -> None:
        if lease <= 2 * timeout:
            # An attempt (address check, then POST) takes up to twice the timeout; a
            # shorter lease would let another worker send the same delivery meanwhile.
            raise ValueError("lease must be longer than twice the delivery timeout")
        if batch_size < 1 or concurrency < 1 or poll_interval <= 0:
            raise ValueError("batch_size, concurrency and poll_interval must be positive")
        self.engine = engine
        self.service = service
        self.metrics = metrics
        self.allow_private = allow_private
        self.clock: Clock = clock or SystemClock()
        self.poll_interval = poll_interval
        self.lease = timedelta(seconds=lease)
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.timeout = timeout
        self.schedule = schedule
        self._draw = draw
        self._given_session = session if isinstance(session, aiohttp.ClientSession) else None
        self._session_factory = session if callable(session) else None
        self._session: aiohttp.ClientSession | None = self._given_session
        self._wakeup = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopping = False
        self._running = False
        self._poked = False
        self._depth_sampled_at = float("-inf")
        self._secrets: dict[str, tuple[str, float]] = {}

    # -- control ----------------------------------------------------------------------------

    def wake(self) -> None:
        """Look for due deliveries now instead of at the next poll."""
        self._poked = True
        self._wakeup.set()

    def request_changed(self, request: ApprovalRequest) -> None:
        """``ChangeListener``: a request that just became final with a callback URL wakes us."""
        if request.status.is_final and request.callback_url:
            self.wake()

    async def stop(self) -> None:
        """Ask ``run()`` to finish the deliveries in flight and return; wait until it has.

        Final: a ``run()`` that starts after ``stop()`` returns at once.
        """
        self._stopping = True
        self._wakeup.set()
        if self._running:
            await self._stopped.wait()

    async def aclose(self) -> None:
        """Close the HTTP session if the worker opened it (``run()`` does this on its way out)."""
        session, self._session = self._session, self._given_session
        if session is not None and session is not self._given_session:
            await session.close()

    async def __aenter__(self) -> CallbackWorker:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
        await self.aclose()

    # -- loops ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until ``stop()``: claim due rows while there is room, attempt them concurrently.

        ``stop()`` lets the attempts in flight finish (each ends within the
        timeout) and records them. Cancelling the task instead cancels them:
        their rows are tried again once their lease runs out. Either way the
        HTTP session is closed before this returns.
        """
        if self._running:
            raise RuntimeError("this worker is running already")
        self._running = True
        self._stopped.clear()
        in_flight: set[asyncio.Task[None]] = set()
        # Each claim is a write transaction: finished deliveries trigger one only
        # once half the slots are free. A poll tick or a wake() fills any free slot.
        refill = max(1, min(self.batch_size, self.concurrency) // 2)
        any_room = True

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            if self.concurrency - len(in_flight) == refill:
                self._wakeup.set()

        try:
            while not self._stopping:
                # Cleared before claiming, so a wake during the claim is not lost.
                self._wakeup.clear()
                self._poked = False
                room = min(self.concurrency - len(in_flight), self.batch_size)
                if room >= refill or (room > 0 and any_room):
                    claims = await self._claim_or_log(room)
                    for claim in claims:
                        task = asyncio.create_task(
                            self._deliver(claim), name=f"callback-{claim.delivery_id}"
                        )
                        in_flight.add(task)
                        task.add_done_callback(finished)
                    if claims and len(claims) == room:
                        any_room = True
                        continue  # a full batch: more may be due
                await self._sample_depth()
                try:
                    async with asyncio.timeout(self.poll_interval):
                        await self._wakeup.wait()
                    any_room = self._poked
                except TimeoutError:
                    any_room = True
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
        finally:
            for task in in_flight:
                task.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
            await self.aclose()
            self._running = False
            self._stopped.set()

    async def run_once(self) -> int:
        """Claim one batch of due deliveries, attempt them all, record them; how many there were."""
        claims = await self._claim(min(self.batch_size, self.concurrency))
        if claims:
            await asyncio.gather(*(self._deliver(claim) for claim in claims))
        await self._sample_depth(force=True)
        return len(claims)

    # -- one delivery -----------------------------------------------------------------------

    async def _claim(self, limit: int) -> list[Claim]:
        now = self.clock.now()
        async with write_transaction(self.engine) as conn:
            return await claim_due(conn, now, limit, self.lease)

    async def _claim_or_log(self, limit: int) -> list[Claim]:
        try:
            return await self._claim(limit)
        except Exception:  # the database may be away for a moment: the next poll retries
            log.exception("could not claim callbacks")
            return []

    async def _deliver(self, claim: Claim) -> None:
        """Attempt one claimed delivery and record the outcome; never raises (but cancels)."""
        try:
            outcome = await self._attempt(claim)
        except Exception as exc:  # a bug here must not kill the loop; the row is retried
            log.exception("callback %s: attempt failed unexpectedly", claim.delivery_id)
            outcome = _Outcome(error=f"internal error ({type(exc).__name__})")
        try:
            result = await self._record(claim, outcome)
        except Exception:
            log.exception(
                "callback %s: could not record attempt %d; it is retried after its lease",
                claim.delivery_id,
                claim.attempt,
            )
            return
        self.metrics.callback_attempts.labels(result=result).inc()
        host = urlsplit(claim.url).hostname
        if result == "delivered":
            log.info(
                "callback %s (%s) delivered to %s: HTTP %s",
                claim.delivery_id,
                claim.request_id,
                host,
                outcome.status,
            )
        else:
            log.warning(
                "callback %s (%s) to %s, attempt %d: %s (%s)",
                claim.delivery_id,
                claim.request_id,
                host,
                claim.attempt,
                outcome.error,
                result,
            )

    async def _attempt(self, claim: Claim) -> _Outcome:
        try:
            # The system resolver has its own, longer, timeouts.
            async with asyncio.timeout(self.timeout):
                refusal = await check_callback_url(claim.url, allow_private=self.allow_private)
        except TimeoutError:
            return _Outcome(error=f"destination not checked: no DNS answer in {self.timeout:g} s")
        if refusal is not None:
            if _UNRESOLVED in refusal:
                return _Outcome(error=f"destination not checked: {refusal}")
            return _Outcome(error=f"destination refused: {refusal}", refused=True)
        secret = await self._secret(claim.client)
        if isinstance(secret, _Outcome):
            return secret
        body = claim.payload.encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Countersign-Event": claim.event,
            "Countersign-Delivery": claim.delivery_id,
            "Countersign-Signature": signature_header(
                secret, body, int(self.clock.now().timestamp())
            ),
        }
        try:
            async with self._get_session().post(
                claim.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                status = response.status
        except TimeoutError:
            return _Outcome(error=f"no answer within {self.timeout:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return _Outcome(error=f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return _Outcome(status=status)
        return _Outcome(status=status, error=f"HTTP {status}")

    async def _secret(self, client: str) -> str | _Outcome:
        cached = self._secrets.get(client)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        if self.service.sealer is None:
            # The server, not the client, is misconfigured: keep retrying until it is fixed.
            return _Outcome(error="no server key to open callback secrets with")
        try:
            secret = await self.service.callback_secret(client)
        except SecretBoxError:
            return _Outcome(error="the callback secret does not open with this server key")
        if secret is None:
            return _Outcome(error=f"client {client!r} has no callback secret", refused=True)
        self._secrets[client] = (secret, time.monotonic() + _SECRET_TTL_SECONDS)
        return secret

    async def _record(self, claim: Claim, outcome: _Outcome) -> _Result:
        now = self.clock.now()
        result: _Result
        async with write_transaction(self.engine) as conn:
            if outcome.delivered:
                assert outcome.status is not None
                await record_delivered(conn, claim, at=now, status=outcome.status)
                return "delivered"
            error = outcome.error or "failed"
            delay = (
                None
                if outcome.refused
                else self.schedule.delay_after(claim.attempt, self._jitter())
            )
            if delay is None:
                await record_dead(conn, claim, at=now, status=outcome.status, error=error)
                result = "refused" if outcome.refused else "dead"
            else:
                await record_failed(
                    conn,
                    claim,
                    at=now,
                    next_attempt_at=now + delay,
                    status=outcome.status,
                    error=error,
                )
                result = "failed"
        return result

    # -- helpers ----------------------------------------------------------------------------

    def _jitter(self) -> float:
        return min(1.0, max(0.0, self._draw()))

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = (
                self._session_factory()
                if self._session_factory is not None
                else self._new_session()
            )
        return self._session

    def _new_session(self) -> aiohttp.ClientSession:
        resolver = None if self.allow_private else PublicOnlyResolver()
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency, resolver=resolver),
            # Receivers must not be able to set state that travels to the next one.
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            auto_decompress=False,
        )

    async def _sample_depth(self, *, force: bool = False) -> None:
        moment = time.monotonic()
        if not force and moment - self._depth_sampled_at < _DEPTH_INTERVAL_SECONDS:
            return
        self._depth_sampled_at = moment
        try:
            async with self.engine.connect() as conn:
                self.metrics.outbox_depth.set(await pending_count(conn))
        except Exception:
            log.exception("could not count the outbox")
