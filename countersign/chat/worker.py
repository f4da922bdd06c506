"""The chat worker: runs chat jobs so every card of every request stays true.

Jobs are armed in the transaction that changed a request (``storage.chat``):

- ``sync``: post the card to each destination that has none yet (the rule's
  ``notify`` entries for the platform; once the request is final, channels
  only), update every posted card whose state
  changed, reply under each card once per new vote, and when the request is
  final, tell the requesting human the outcome once.
- ``remind``: still pending after ``remind_after``: a reply under each channel
  card naming who is awaited, and a direct message to each of them.
- ``escalate``: still pending after ``escalate.after``: the escalation
  approvers become eligible (``ApprovalService.escalate``), get the card
  directly, and each channel card says so.

Everything a job has done is remembered on the card references (which
destinations have a card, which votes were replied to, which state a card
shows), so a job that fails half-way and runs again carries on where it
stopped instead of posting twice. Claims are leases (``SKIP LOCKED`` on
PostgreSQL): several replicas share the work; the jobs of one request run one
at a time, across replicas too (a claimed job marks its request busy until it
is done or its lease ran out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from countersign.chat.ports import Messenger, Unreachable
from countersign.core.errors import NotFound
from countersign.core.model import ApprovalRequest
from countersign.policy import APPROVERS, DEFAULT_NOTIFY, Policy
from countersign.service import ESCALATE_JOB, REMIND_JOB, SYNC_JOB, ApprovalService
from storage import SqlStore
from storage import chat as store

__all__ = ["ChatWorker", "destinations", "fingerprint"]

log = logging.getLogger("countersign.chat")

POLL_SECONDS = 1.0
CLAIM_BATCH = 16
# Sync rounds in one job while the request keeps changing under it (then the
# job of the newer change carries on).
MAX_SYNC_ROUNDS = 5
# A sync job that failed is followed by a forced re-sync this much later, past the
# time a platform might still apply a call our client gave up on.
RESYNC_JOB = "resync"
RESYNC_AFTER_SECONDS = 30.0
# Pauses between attempts to store a posted card's reference (then one last try):
# about 30 s in all, well inside the job's lease. A database that drops its
# connections (a failover, a restart) is usually back within seconds; giving up
# sooner would post the card again on the job's retry and leave this one stale.
REMEMBER_RETRY_PAUSES = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
MAX_BACKOFF_SECONDS = 300.0
# The message id stored for a destination that was tried and found unreachable
# (so it is not tried on every sync); unique per request, like real ids.
UNREACHED = "none:"
# The message id stored, before posting, for a card being posted (on platforms
# that can find a posted card again): if the post's answer is lost (a timeout,
# a replica killed mid-call), the card may still be out, so the next run looks
# for it before posting again.
POSTING = "posting:"


def destinations(request: ApprovalRequest, notify: Iterable[str]) -> list[str]:
    """The rule's ``notify`` entries for one platform as destinations, in order, no repeats."""
    found: list[str] = []
    for entry in notify:
        if entry == APPROVERS:
            found.extend(f"dm:{email}" for email in sorted(request.rule.approvers))
        else:
            found.append(f"channel:{entry}")
    return list(dict.fromkeys(found))


def fingerprint(request: ApprovalRequest) -> str:
    """What a rendered card depends on; a card showing this fingerprint is up to date."""
    return f"{request.status.value}|{len(request.votes)}|{len(request.rule.approvers)}"


def _unreached(ref: store.CardRef) -> bool:
    return ref.message_id.startswith(UNREACHED)


def _posting(ref: store.CardRef) -> bool:
    return ref.message_id.startswith(POSTING)


def _live(ref: store.CardRef) -> bool:
    """A card that is out there (not an unreachable place, not a post in doubt)."""
    return not (_unreached(ref) or _posting(ref))


def _awaited(request: ApprovalRequest) -> list[str]:
    """Approvers who have not voted and may vote (not the requester or the client's owner)."""
    voted = {vote.voter for vote in request.votes}
    barred = {request.requested_by, request.client_owner}
    return sorted(a for a in request.rule.approvers if a not in voted and a not in barred)


class ChatWorker:
    """Claims due chat jobs and runs them against every messenger that is on."""

    def __init__(
        self,
        engine: AsyncEngine,
        service: ApprovalService,
        policy: Policy,
        messengers: Sequence[Messenger],
        *,
        lease: float = 60.0,
        concurrency: int = 8,
    ) -> None:
        self.store = SqlStore(engine)
        self.service = service
        self.policy = policy
        self.messengers = list(messengers)
        self.lease = timedelta(seconds=lease)
        self._slots = asyncio.Semaphore(concurrency)
        # One lock per request with jobs running here; gone when no job holds it.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._wake = asyncio.Event()
        self._claiming = asyncio.Lock()
        self._stopping = False
        self._running: set[asyncio.Task[None]] = set()

    # -- ChangeListener: a local change wakes the worker at once --------------------------

    def request_changed(self, request: ApprovalRequest) -> None:
        """Wake up: the change's job is due now (jobs armed elsewhere are found by polling)."""
        self._wake.set()

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and run due jobs until ``stop``."""
        while not self._stopping:
            try:
                claimed = await self.run_due()
            except Exception:  # the database blinked: keep the worker alive, retry soon
                log.exception("chat job claim failed")
                claimed = 0
            if claimed >= CLAIM_BATCH:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)

    async def stop(self) -> None:
        """Stop claiming and let running jobs finish."""
        self._stopping = True
        self._wake.set()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def run_due(self) -> int:
        """Claim one batch of due jobs and start them; how many were claimed."""
        # One claim at a time per process, so ``drain`` never misses a claim in flight.
        async with self._claiming:
            now = self.service.clock.now()
            lease = self.lease
            jobs = await self.store.write_job(
                lambda conn: store.claim_jobs(conn, now, CLAIM_BATCH, lease)
            )
        for job in jobs:
            task = asyncio.create_task(self._run(job), name=f"chat-{job.kind}-{job.request_id}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return len(jobs)

    async def drain(self) -> None:
        """Run due jobs until none is left (tests and shutdown use it).

        A job of a request whose other job is running (here or in the background
        loop) cannot be claimed until that one ends: claim again after every wait.
        """
        while True:
            claimed = await self.run_due()
            if self._running:
                await asyncio.gather(*list(self._running), return_exceptions=True)
            elif not claimed:
                return

    async def _run(self, job: store.ChatJob) -> None:
        async with self._slots:
            try:
                await self.run_job(job.request_id, job.kind, retry=job.attempt > 1)
            except Exception as exc:
                delay = min(MAX_BACKOFF_SECONDS, 2.0 ** min(job.attempt, 10))
                delay *= random.uniform(0.8, 1.2)  # noqa: S311 (jitter, not a secret)
                log.warning(
                    "chat %s job for %s failed (attempt %d, retry in %.0fs): %s",
                    job.kind,
                    job.request_id,
                    job.attempt,
                    delay,
                    f"{type(exc).__name__}: {exc}",
                )
                now = self.service.clock.now()
                at = now + timedelta(seconds=delay)
                error = f"{type(exc).__name__}: {exc}"
                await self._settle(job, lambda conn: store.retry_job(conn, job, at, error))
                if job.kind in (SYNC_JOB, RESYNC_JOB):
                    # A call that failed (a timeout, say) may still be applied by the
                    # platform later, over newer state: rewrite every card once more
                    # after that could have happened, whatever the retry finds.
                    late = now + timedelta(seconds=RESYNC_AFTER_SECONDS)
                    await self._settle(
                        job, lambda conn: store.enqueue_job(conn, job.request_id, RESYNC_JOB, late)
                    )
            else:
                await self._settle(job, lambda conn: store.finish_job(conn, job))
            # The request is free again: a job of it that waited may be claimed now.
            self._wake.set()

    async def _settle(self, job: store.ChatJob, write: Callable[[Connection], None]) -> None:
        """Record a job's outcome; if the database is away, its lease runs out and it reruns."""
        try:
            await self.store.write_job(write)
        except Exception:
            log.exception("could not record the %s job of %s", job.kind, job.request_id)

    async def run_job(self, request_id: str, kind: str, *, retry: bool = False) -> None:
        """Do one job's work now, after any other job of the request here (raises on failure).

        ``retry``: an earlier run failed, perhaps with an update that the platform
        applied anyway later; every card is then rewritten, whatever it is recorded
        to show.
        """
        lock = self._locks.get(request_id)
        if lock is None:
            lock = self._locks[request_id] = asyncio.Lock()
        async with lock:
            await self._work(request_id, kind, retry)

    async def _work(self, request_id: str, kind: str, retry: bool = False) -> None:
        try:
            request = await self.service.get_request(request_id)
        except NotFound:
            return
        if kind in (SYNC_JOB, RESYNC_JOB):
            # Another replica may run a job of this request at the same time with a
            # newer state, and our (older) update may land after its one, and after
            # it recorded the newer state. So read the request again after our
            # updates: if it moved on, rewrite every card (not trusting what they are
            # recorded to show). The last job to finish renders the latest state.
            force = retry or kind == RESYNC_JOB
            for _ in range(MAX_SYNC_ROUNDS):
                await self.sync(request, force=force)
                latest = await self.service.get_request(request_id)
                if fingerprint(latest) == fingerprint(request):
                    break
                request, force = latest, True
        elif kind == REMIND_JOB:
            await self.remind(request)
        elif kind == ESCALATE_JOB:
            await self.escalate(request)
        else:
            log.error("unknown chat job kind %r for %s", kind, request_id)

    # -- the jobs ------------------------------------------------------------------------

    def _notify(self, request: ApprovalRequest, platform: str) -> tuple[str, ...]:
        rule = self.policy.rule(request.rule.name)
        notify = rule.notify if rule is not None else DEFAULT_NOTIFY
        return tuple(getattr(notify, platform, ()))

    async def sync(self, request: ApprovalRequest, *, force: bool = False) -> None:
        """Bring every card of the request up to date on every platform.

        One platform failing (Slack down, say) does not hold the others back; the
        job is retried afterwards, and what already went out is not sent again.
        """
        failed: list[Exception] = []
        for messenger in self.messengers:
            try:
                await self._sync_platform(messenger, request, force)
            except Exception as exc:
                failed.append(exc)
        if failed:
            raise failed[0]

    async def _sync_platform(
        self, messenger: Messenger, request: ApprovalRequest, force: bool = False
    ) -> None:
        refs = await self._refs(request.id, messenger.platform)
        have = {ref.destination: ref for ref in refs}
        current = {ref.id: ref for ref in refs}  # a settled intent keeps its row id
        for destination in destinations(request, self._notify(request, messenger.platform)):
            # A request decided before its card reached a channel (the platform was
            # down, or the others were quicker) still gets its card there, final, so
            # every channel keeps the record; a direct message would only be noise.
            wanted = not request.status.is_final or destination.startswith("channel:")
            ref = have.get(destination)
            if (ref is None and wanted) or (ref is not None and _posting(ref)):
                ref = await self._post(messenger, destination, request, ref, wanted=wanted)
                current[ref.id] = ref
        refreshed: set[str] = set()
        for ref in current.values():
            if ref.destination.startswith("outcome:") or not _live(ref):
                continue
            if ref.message_id in refreshed:
                continue  # stored twice (found again while its post was being stored)
            refreshed.add(ref.message_id)
            await self._refresh(messenger, ref, request, force)
        if request.status.is_final and request.requested_by:
            key = f"outcome:{request.requested_by}"
            if key not in have:
                try:
                    message_id = await messenger.tell(request.requested_by, request, "outcome")
                except Unreachable:
                    message_id = UNREACHED + request.id
                await self._remember(request.id, messenger.platform, key, message_id, {})

    async def _post(
        self,
        messenger: Messenger,
        destination: str,
        request: ApprovalRequest,
        intent: store.CardRef | None = None,
        *,
        wanted: bool = True,
    ) -> store.CardRef:
        """Post the card to ``destination`` once; its reference.

        On a platform that can find a posted card again, the intent is stored
        first, and a post left in doubt (``intent``: its answer never came) is
        looked for before posting again: chat APIs take no idempotency key, and
        a second card would leave the first one stale for good.
        """
        # The new card shows every vote so far: none of them needs a reply.
        extra = {"state": fingerprint(request), "replied": [v.voter for v in request.votes]}
        if intent is not None:
            try:
                found = await messenger.find(destination, request)
            except Unreachable:
                found = None
            if found is not None:
                log.info("%s: found the card of %s in %s", messenger.platform, request.id, found)
                # It shows the request as it was when posted: the refresh rewrites it.
                return await self._settle_ref(intent, found, dict(intent.extra))
            if not wanted:  # final, and no card came out here: none is needed now
                return await self._settle_ref(intent, UNREACHED + request.id, extra)
        elif messenger.finds_cards:
            intent = await self._remember(
                request.id, messenger.platform, destination, POSTING + request.id, extra
            )
        try:
            message_id = await messenger.post(destination, request)
        except Unreachable as exc:
            log.warning(
                "%s: cannot reach %s for %s: %s", messenger.platform, destination, request.id, exc
            )
            message_id = UNREACHED + request.id
        if intent is not None:
            return await self._settle_ref(intent, message_id, extra)
        return await self._remember(request.id, messenger.platform, destination, message_id, extra)

    async def _refresh(
        self,
        messenger: Messenger,
        ref: store.CardRef,
        request: ApprovalRequest,
        force: bool = False,
    ) -> None:
        extra: dict[str, Any] = dict(ref.extra)
        replied = list(extra.get("replied", []))
        state = fingerprint(request)
        if force:
            extra.pop("state", None)
        elif extra.get("state") == state and all(v.voter in replied for v in request.votes):
            return
        try:
            for vote in request.votes:
                if extra.get("quiet"):  # a card found again: its replies went elsewhere
                    break
                if vote.voter not in replied:
                    await messenger.reply(ref.message_id, request, vote=vote)
                    replied.append(vote.voter)
            if extra.get("state") != state:
                await messenger.update(ref.message_id, request)
                extra["state"] = state
        finally:
            # One write for the whole refresh, also after a failure half-way, so a
            # retry neither repeats the replies that went out nor skips the rest.
            extra["replied"] = replied
            if extra != ref.extra:
                await self._save_extra(ref.id, extra)

    async def remind(self, request: ApprovalRequest) -> None:
        """Remind the approvers who have not voted on a request that is still pending."""
        awaited = _awaited(request)
        if request.status.is_final or not awaited:
            return
        for messenger in self.messengers:
            for ref in await self._refs(request.id, messenger.platform):
                if ref.destination.startswith("channel:") and _live(ref):
                    await messenger.reply(ref.message_id, request, reminder=awaited)
            for email in awaited:
                with contextlib.suppress(Unreachable):
                    await messenger.tell(email, request, "reminder", people=awaited)

    async def escalate(self, request: ApprovalRequest) -> None:
        """Widen a still-pending request to the rule's escalation approvers and tell them."""
        rule = self.policy.rule(request.rule.name)
        if request.status.is_final or rule is None or rule.escalate is None:
            return
        wider = await self.service.escalate(request.id, rule.escalate.approvers)
        # On a retry the request was widened already (``wider`` is None): the people
        # still get their card, once (the card references say who has one).
        current = wider or await self.service.get_request(request.id)
        if current.status.is_final:
            return
        targets = sorted(rule.escalate.approvers & current.rule.approvers)
        added = sorted(wider.rule.approvers - request.rule.approvers) if wider else []
        for messenger in self.messengers:
            refs = await self._refs(request.id, messenger.platform)
            have = {ref.destination: ref for ref in refs}
            for email in targets:
                ref = have.get(f"dm:{email}")
                if ref is None or _posting(ref):
                    await self._post(messenger, f"dm:{email}", current, ref)
            for ref in refs if added else ():
                if ref.destination.startswith("channel:") and _live(ref):
                    await messenger.reply(ref.message_id, current, escalated=added)

    # -- card references -----------------------------------------------------------------

    async def _refs(self, request_id: str, platform: str) -> list[store.CardRef]:
        return await self.store.read_job(lambda conn: store.card_refs(conn, request_id, platform))

    async def _remember(
        self,
        request_id: str,
        platform: str,
        destination: str,
        message_id: str,
        extra: Mapping[str, Any],
    ) -> store.CardRef:
        now = self.service.clock.now()
        return await self._persist(
            request_id,
            lambda conn: store.add_card_ref(
                conn,
                request_id=request_id,
                platform=platform,
                destination=destination,
                message_id=message_id,
                extra=extra,
                now=now,
            ),
        )

    async def _settle_ref(
        self, intent: store.CardRef, message_id: str, extra: Mapping[str, Any]
    ) -> store.CardRef:
        """Turn a stored intent into the posted card's reference."""
        return await self._persist(
            intent.request_id,
            lambda conn: store.set_card_message(conn, intent, message_id, extra),
        )

    async def _persist(
        self, request_id: str, write: Callable[[Connection], store.CardRef]
    ) -> store.CardRef:
        # The card is out: losing its reference to a dropped connection would post it
        # again on the retry and leave this one stale. Try a few times before that.
        for pause in REMEMBER_RETRY_PAUSES:
            try:
                return await self.store.write_job(write)
            except Exception:
                log.warning("could not store the card reference of %s; retrying", request_id)
                await asyncio.sleep(pause)
        return await self.store.write_job(write)

    async def _save_extra(self, ref_id: int, extra: Mapping[str, Any]) -> None:
        await self.store.write_job(lambda conn: store.set_card_extra(conn, ref_id, extra))
