"""The service the adapters call: every operation in one transaction, ledger included.

REST, Slack, Teams and the CLI parse their input, call one method here, and
render what comes back (a request) or the typed error it raises. The rules
themselves are in ``countersign.core``; the SQL is in ``storage``; this module
sequences them: lock, decide, write, append to the ledger, queue callbacks.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from ulid import ULID

from countersign.core.digest import canonical_json
from countersign.core.errors import (
    AlreadyVoted,
    CountersignError,
    Expired,
    FieldError,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
)
from countersign.core.identity import normalize_email
from countersign.core.ids import new_request_id
from countersign.core.model import ApprovalRequest, Choice, RuleSnapshot, Status, Verdict
from countersign.core.requests import RequestSpec, open_request, validate_spec
from countersign.core.voting import (
    Ballot,
    VoteResult,
    cancel,
    cast_vote,
    escalate,
    expire_if_due,
)
from countersign.policy import Escalation, Policy, Subject, evaluate
from countersign.ports import (
    ApiClient,
    ChangeListener,
    Clock,
    DuplicateKey,
    HistoryQuery,
    ReceiptIssuer,
    Sealer,
    Store,
    SystemClock,
    Transaction,
)
from countersign.resource import iso, to_resource

__all__ = [
    "ESCALATE_JOB",
    "NO_RULE",
    "REMIND_JOB",
    "SYNC_JOB",
    "ApprovalService",
    "Created",
    "new_request_id",
    "token_sha256",
]

# Chat job kinds (see ``storage.chat``): bring cards up to date, remind, escalate.
SYNC_JOB = "sync"
REMIND_JOB = "remind"
ESCALATE_JOB = "escalate"

# What applies when no rule matches: deny, and say so.
NO_RULE = RuleSnapshot(name="(no matching rule)", verdict=Verdict.DENY)
_NO_RULE_TTL_SECONDS = 60

_FINAL_EVENTS = {
    Status.APPROVED: "request.decided",
    Status.DENIED: "request.decided",
    Status.EXPIRED: "request.expired",
    Status.CANCELLED: "request.cancelled",
}


def token_sha256(token: str) -> str:
    """How bearer tokens are stored: their SHA-256 (they are 256-bit random, so no salt)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Created:
    """A request from ``create_request``; ``created`` is False for an idempotent replay."""

    request: ApprovalRequest
    created: bool


class ApprovalService:
    """Create, vote on, cancel, expire and list requests; manage API clients."""

    def __init__(
        self,
        store: Store,
        policy: Policy,
        clock: Clock | None = None,
        *,
        receipts: ReceiptIssuer | None = None,
        sealer: Sealer | None = None,
        listeners: Sequence[ChangeListener] = (),
        chat: bool = False,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock: Clock = clock or SystemClock()
        self.receipts = receipts
        self.sealer = sealer
        self.listeners: list[ChangeListener] = list(listeners)
        # With a chat platform on, every change arms the request's card sync job.
        self.chat = chat

    def _changed(self, *requests: ApprovalRequest) -> None:
        """Tell this process's listeners, after commit, what changed."""
        for request in requests:
            for listener in self.listeners:
                listener.request_changed(request)

    # -- requests -------------------------------------------------------------------------

    async def create_request(
        self, client: ApiClient, spec: RequestSpec, *, idempotency_key: str | None = None
    ) -> Created:
        """Validate, apply the policy, store the request and its ledger events.

        The same ``idempotency_key`` and body returns the first request
        (``created=False``); the same key with another body raises
        ``IdempotencyConflict``.
        """
        spec = validate_spec(spec)
        body = canonical_json(asdict(spec))
        body_digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
        if idempotency_key is not None:
            replay = await self._replay(client, idempotency_key, body_digest)
            if replay is not None:
                return replay

        rule = evaluate(
            self.policy,
            Subject(
                action=spec.action,
                resource=spec.resource,
                reason=spec.reason,
                params=spec.params,
                context=spec.context,
                requested_by=spec.requested_by,
                client=client.name,
            ),
        )
        now = self.clock.now()
        request = open_request(
            request_id=new_request_id(now),
            spec=spec,
            client=client.name,
            client_owner=client.owner,
            rule=rule.snapshot() if rule is not None else NO_RULE,
            rule_ttl=rule.ttl if rule is not None else timedelta(seconds=_NO_RULE_TTL_SECONDS),
            now=now,
        )
        try:
            async with self.store.write() as tx:
                await tx.insert_request(
                    request, idempotency_key=idempotency_key, body_sha256=body_digest
                )
                await tx.append_ledger(
                    "request.created",
                    at=now,
                    request_id=request.id,
                    actor=client.name,
                    data={
                        "action": request.action,
                        "resource": request.resource,
                        "reason": request.reason,
                        "params": dict(request.params),
                        "params_sha256": request.params_sha256,
                        "context": dict(request.context),
                        "requested_by": request.requested_by,
                        "client_owner": request.client_owner,
                        "callback_url": request.callback_url,
                    },
                )
                await tx.append_ledger(
                    "policy.decided",
                    at=now,
                    request_id=request.id,
                    actor="policy",
                    data={
                        "rule": request.rule.name,
                        "verdict": request.rule.verdict.value,
                        "approvers": sorted(request.rule.approvers),
                        "quorum": request.rule.quorum,
                        "deny_quorum": request.rule.deny_quorum,
                        "expires_at": iso(request.expires_at),
                    },
                )
                if request.status.is_final:
                    request = await self._finalize(tx, request, now, actor="policy")
                else:
                    await self._touch(tx, request.id, now)
                    if self.chat and rule is not None:
                        await self._followups(tx, request, rule.remind_after, rule.escalate)
        except DuplicateKey:
            # Another writer created it under the same key between our check and insert.
            if idempotency_key is None:
                raise
            replay = await self._replay(client, idempotency_key, body_digest)
            if replay is None:
                raise
            return replay
        self._changed(request)
        return Created(request, True)

    async def _replay(self, client: ApiClient, key: str, body_digest: str) -> Created | None:
        async with self.store.read() as tx:
            found = await tx.find_idempotent(client.name, key)
        if found is None:
            return None
        request, digest = found
        if digest != body_digest:
            raise IdempotencyConflict(key, request.id)
        return Created(request, False)

    async def get_request(self, request_id: str, *, client: str | None = None) -> ApprovalRequest:
        """One request; ``NotFound`` if absent or (with ``client``) not that client's."""
        request = await self.store.request_by_id(request_id)
        if request is None or (client is not None and request.client != client):
            raise NotFound(request_id)
        return request

    async def cast_vote(
        self,
        request_id: str,
        voter_email: str,
        platform: str,
        decision: Choice | str,
        comment: str | None = None,
        edited_params: Mapping[str, Any] | None = None,
    ) -> VoteResult:
        """Record one person's vote under the request's lock; refusals are recorded too.

        Returns the request after the vote (``.decided`` tells whether it just
        became final), or raises the typed error naming the broken rule. The
        refused attempt is in the ledger either way.
        """
        try:
            voter = normalize_email(voter_email)
            choice = Choice(decision)
        except ValueError as exc:
            raise InvalidRequest([FieldError("vote", str(exc))]) from exc
        ballot = Ballot(voter, platform, choice, comment, edited_params)
        refused: CountersignError | None = None
        changed: ApprovalRequest | None = None
        async with self.store.write() as tx:
            now = self.clock.now()
            request = await tx.get_request(request_id, lock=True)
            try:
                if request is None:
                    raise NotFound(request_id)
                expired = expire_if_due(request, now)
                if expired is not None:
                    request = changed = await self._finalize(tx, expired, now, actor="clock")
                result = cast_vote(request, ballot, now)
                if result.vote is not None:
                    try:
                        await tx.insert_vote(request.id, result.vote)
                    except DuplicateKey as exc:  # the lock makes this unreachable; be sure
                        raise AlreadyVoted(request.id, voter, "already") from exc
                    await tx.append_ledger(
                        "vote.cast",
                        at=now,
                        request_id=request.id,
                        actor=voter,
                        data={
                            "platform": platform,
                            "decision": choice.value,
                            "comment": result.vote.comment,
                            "params_sha256": result.vote.params_sha256,
                            "edited_params": (
                                dict(result.vote.edited_params)
                                if result.vote.edited_params is not None
                                else None
                            ),
                        },
                    )
                if result.decided:
                    final = await self._finalize(tx, result.request, now, actor=voter)
                    result = replace(result, request=final)
                else:
                    await self._touch(tx, request.id, now)
                changed = result.request
            except CountersignError as err:
                refused = err
                await tx.append_ledger(
                    "vote.refused",
                    at=now,
                    request_id=request_id,
                    actor=voter,
                    data={
                        "platform": platform,
                        "decision": choice.value,
                        "rule": err.code,
                        "message": str(err),
                    },
                )
        if changed is not None:
            self._changed(changed)
        if refused is not None:
            raise refused
        return result

    async def cancel(
        self, request_id: str, *, by: str, reason: str | None = None, client: str | None = None
    ) -> ApprovalRequest:
        """Cancel a pending request (``client`` restricts it to the client that created it)."""
        refused: CountersignError | None = None
        async with self.store.write() as tx:
            now = self.clock.now()
            request = await tx.get_request(request_id, lock=True)
            if request is None or (client is not None and request.client != client):
                raise NotFound(request_id)
            expired = expire_if_due(request, now)
            if expired is not None:
                # Record the expiry that was due, then refuse: commit first, raise after.
                request = await self._finalize(tx, expired, now, actor="clock")
                refused = Expired(request_id)
            else:
                request = await self._finalize(tx, cancel(request, now, by, reason), now, actor=by)
        self._changed(request)
        if refused is not None:
            raise refused
        return request

    async def expire_due(
        self, now: datetime | None = None, limit: int = 100
    ) -> list[ApprovalRequest]:
        """Expire pending requests whose time has run out; each under its own lock.

        Safe with several replicas: each request is re-read under its lock and
        only a still-pending one is expired, so exactly one replica does it.
        """
        now = now or self.clock.now()
        async with self.store.read() as tx:
            due = await tx.due_request_ids(now, limit)
        done: list[ApprovalRequest] = []
        for request_id in due:
            async with self.store.write() as tx:
                request = await tx.get_request(request_id, lock=True)
                expired = expire_if_due(request, now) if request is not None else None
                if expired is not None:
                    done.append(await self._finalize(tx, expired, now, actor="clock"))
        self._changed(*done)
        return done

    async def final_request_ids(self, request_ids: Sequence[str]) -> set[str]:
        """Those of ``request_ids`` that are final now (any client's; for the waiters)."""
        async with self.store.read() as tx:
            return await tx.final_request_ids(request_ids)

    async def history(self, query: HistoryQuery) -> list[ApprovalRequest]:
        """Requests matching ``query``, newest first."""
        async with self.store.read() as tx:
            return await tx.history(query)

    async def _finalize(
        self, tx: Transaction, request: ApprovalRequest, now: datetime, *, actor: str
    ) -> ApprovalRequest:
        """Store a final state with its receipt, ledger event and callback, in ``tx``."""
        if request.status is Status.APPROVED and self.receipts is not None:
            request = replace(request, receipt=self.receipts.issue(request))
        await tx.save_outcome(request)
        await tx.append_ledger(
            _FINAL_EVENTS[request.status],
            at=now,
            request_id=request.id,
            actor=actor,
            data={
                "status": request.status.value,
                "decided_by": list(request.decided_by),
                "reason": request.decision_reason,
                "approved_params_sha256": request.approved_params_sha256,
            },
        )
        if request.callback_url:
            await tx.enqueue_callback(
                delivery_id=f"dlv_{ULID()}",
                request_id=request.id,
                event="request.decided",
                url=request.callback_url,
                payload=canonical_json(to_resource(request)),
                at=now,
            )
        await self._touch(tx, request.id, now)
        return request

    async def _touch(self, tx: Transaction, request_id: str, now: datetime) -> None:
        """After any change: wake waiters on commit, and bring the request's cards up to date."""
        await tx.notify_change(request_id)
        if self.chat:
            await tx.enqueue_chat(request_id, SYNC_JOB, now)

    async def _followups(
        self,
        tx: Transaction,
        request: ApprovalRequest,
        remind_after: timedelta | None,
        escalation: Escalation | None,
    ) -> None:
        """Arm the rule's reminder and escalation jobs when they fall before expiry."""
        if remind_after is not None and request.created_at + remind_after < request.expires_at:
            await tx.enqueue_chat(request.id, REMIND_JOB, request.created_at + remind_after)
        if escalation is not None and request.created_at + escalation.after < request.expires_at:
            await tx.enqueue_chat(request.id, ESCALATE_JOB, request.created_at + escalation.after)

    async def escalate(self, request_id: str, added: frozenset[str]) -> ApprovalRequest | None:
        """Make ``added`` people eligible on a pending request; None when nothing changed."""
        async with self.store.write() as tx:
            now = self.clock.now()
            request = await tx.get_request(request_id, lock=True)
            wider = escalate(request, now, added) if request is not None else None
            if request is None or wider is None:
                return None
            await tx.save_approvers(request_id, wider.rule.approvers)
            await tx.append_ledger(
                "request.escalated",
                at=now,
                request_id=request_id,
                actor="policy",
                data={
                    "added": sorted(wider.rule.approvers - request.rule.approvers),
                    "approvers": sorted(wider.rule.approvers),
                },
            )
            await self._touch(tx, request_id, now)
        self._changed(wider)
        return wider

    # -- API clients ----------------------------------------------------------------------

    async def add_client(
        self, name: str, owner: str | None = None
    ) -> tuple[ApiClient, str, str | None]:
        """A new client, its bearer token and its callback secret (both shown once).

        Only the token's SHA-256 is kept. The callback secret (used to sign
        callbacks) is sealed with the server key; without a sealer there is none.
        """
        errors = []
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
            errors.append(FieldError("name", "1 to 64 letters, digits, '-' or '_'"))
        try:
            owner = normalize_email(owner) if owner else None
        except ValueError:
            errors.append(FieldError("owner", "must be an e-mail address"))
        if errors:
            raise InvalidRequest(errors)
        token = "cs_" + secrets.token_urlsafe(32)
        callback_secret = "whsec_" + secrets.token_urlsafe(32) if self.sealer else None
        sealed = self.sealer.seal(callback_secret) if self.sealer and callback_secret else None
        now = self.clock.now()
        client = ApiClient(name=name, owner=owner, created_at=now)
        try:
            async with self.store.write() as tx:
                await tx.add_client(client, token_sha256(token), sealed)
                await tx.append_ledger(
                    "client.added", at=now, actor=owner, data={"client": name, "owner": owner}
                )
        except DuplicateKey as exc:
            raise InvalidRequest([FieldError("name", f"client {name!r} exists already")]) from exc
        return client, token, callback_secret

    async def callback_secret(self, name: str) -> str | None:
        """The plaintext callback secret of client ``name``, for signing its callbacks."""
        async with self.store.read() as tx:
            sealed = await tx.sealed_callback_secret(name)
        if sealed is None or self.sealer is None:
            return None
        return self.sealer.open(sealed)

    async def authenticate(self, token: str) -> ApiClient | None:
        """The active client holding ``token``, or None."""
        client = await self.store.client_by_token(token_sha256(token))
        return client if client is not None and client.revoked_at is None else None

    async def list_clients(self) -> list[ApiClient]:
        """Every API client."""
        async with self.store.read() as tx:
            return await tx.list_clients()

    async def revoke_client(self, name: str) -> None:
        """Revoke a client: its token stops working at once. ``NotFound`` if no such client."""
        now = self.clock.now()
        async with self.store.write() as tx:
            if not await tx.revoke_client(name, now):
                raise NotFound(name)
            await tx.append_ledger("client.revoked", at=now, data={"client": name})
