"""``SqlStore``: the service's ``Store`` port on SQLAlchemy (SQLite and PostgreSQL).

Data functions never commit: the service opens a transaction with ``write()``
or ``read()`` and everything inside commits or rolls back together.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from countersign.core.model import ApprovalRequest, Choice, RuleSnapshot, Status, Verdict, Vote
from countersign.ports import ApiClient, DuplicateKey, HistoryQuery
from storage import ledger
from storage.engine import BEGIN_MODE, is_sqlite
from storage.tables import ApiClientRow, OutboxRow, RequestRow, VoteRow

__all__ = ["CHANGES_CHANNEL", "SqlStore", "SqlTransaction"]

# PostgreSQL NOTIFY channel carrying the ids of changed requests.
CHANGES_CHANNEL = "countersign_requests"

R = RequestRow.__table__  # type: ignore[attr-defined]
V = VoteRow.__table__  # type: ignore[attr-defined]
C = ApiClientRow.__table__  # type: ignore[attr-defined]
O = OutboxRow.__table__  # type: ignore[attr-defined]  # noqa: E741


# SQLite has one writer at a time. Writers of this process queue on one lock per
# engine instead of in SQLite's busy handler, which sleeps in growing steps (up to
# 100 ms) and turns contention into long tails. Per engine, not per store: every
# store on the engine (the service's, the callback worker's) shares it. Writers
# in other processes still wait on busy_timeout.
_WRITER_QUEUES: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()


def _writer_queue(engine: AsyncEngine) -> asyncio.Lock:
    return _WRITER_QUEUES.setdefault(engine.sync_engine, asyncio.Lock())


class SqlStore:
    """Transactions on one engine; SQLite writers start ``BEGIN IMMEDIATE``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sqlite = is_sqlite(engine)
        self._sqlite_writer = _writer_queue(engine) if self._sqlite else None

    @asynccontextmanager
    async def _tx(self, immediate: bool) -> AsyncIterator[SqlTransaction]:
        if self._sqlite_writer is not None and immediate:
            async with self._sqlite_writer, self._open(immediate) as tx:
                yield tx
        else:
            async with self._open(immediate) as tx:
                yield tx

    @asynccontextmanager
    async def _open(self, immediate: bool) -> AsyncIterator[SqlTransaction]:
        async with self.engine.connect() as conn:
            if self._sqlite and immediate:
                await conn.execution_options(**{BEGIN_MODE: "IMMEDIATE"})
            async with conn.begin():
                tx = SqlTransaction(conn)
                yield tx
                await tx.flush_ledger()  # at the end: the head lock is held only briefly

    def write(self) -> Any:
        """A write transaction; serialised with every other writer on SQLite."""
        return self._tx(immediate=True)

    def read(self) -> Any:
        """A read transaction."""
        return self._tx(immediate=False)

    async def client_by_token(self, token_sha256: str) -> ApiClient | None:
        """The client with this token digest (revoked ones too: the caller checks).

        One autocommit SELECT, no BEGIN/COMMIT: every API call authenticates with it.
        """
        async with self.engine.connect() as conn:
            if self._sqlite:
                await conn.execution_options(**{BEGIN_MODE: "NONE"})
            else:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            row = (await conn.execute(select(C).where(C.c.token_sha256 == token_sha256))).first()
        return None if row is None else _client_from_row(row)


def _vote_from_row(row: Any) -> Vote:
    return Vote(
        voter=row.voter,
        platform=row.platform,
        choice=Choice(row.choice),
        at=row.at,
        comment=row.comment,
        edited_params=row.edited_params,
        params_sha256=row.params_sha256,
    )


def _request_from_row(row: Any, votes: tuple[Vote, ...]) -> ApprovalRequest:
    return ApprovalRequest(
        id=row.id,
        action=row.action,
        resource=row.resource,
        reason=row.reason,
        params=row.params,
        params_sha256=row.params_sha256,
        context=row.context,
        client=row.client,
        client_owner=row.client_owner,
        requested_by=row.requested_by,
        rule=RuleSnapshot(
            name=row.rule_name,
            verdict=Verdict(row.verdict),
            approvers=frozenset(row.approvers),
            quorum=row.quorum,
            deny_quorum=row.deny_quorum,
        ),
        status=Status(row.status),
        created_at=row.created_at,
        expires_at=row.expires_at,
        callback_url=row.callback_url,
        votes=votes,
        decided_at=row.decided_at,
        decided_by=tuple(row.decided_by),
        decision_reason=row.decision_reason,
        approved_params=row.approved_params,
        approved_params_sha256=row.approved_params_sha256,
        receipt=row.receipt,
    )


def _outcome_values(request: ApprovalRequest) -> dict[str, Any]:
    return {
        "status": request.status.value,
        "decided_at": request.decided_at,
        "decided_by": list(request.decided_by),
        "decision_reason": request.decision_reason,
        "approved_params": (
            dict(request.approved_params) if request.approved_params is not None else None
        ),
        "approved_params_sha256": request.approved_params_sha256,
        "receipt": request.receipt,
    }


def _client_from_row(row: Any) -> ApiClient:
    return ApiClient(
        name=row.name, owner=row.owner, created_at=row.created_at, revoked_at=row.revoked_at
    )


class SqlTransaction:
    """The ``Transaction`` port over one open SQLAlchemy connection and transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self._ledger: list[ledger.NewEntry] = []

    async def flush_ledger(self) -> None:
        """Write the ledger entries of this transaction (done by ``SqlStore`` before commit)."""
        entries, self._ledger = self._ledger, []
        await ledger.append_many(self.conn, entries)

    async def _votes(self, request_ids: list[str]) -> dict[str, list[Vote]]:
        found: dict[str, list[Vote]] = {rid: [] for rid in request_ids}
        if not request_ids:
            return found
        rows = await self.conn.execute(
            select(V).where(V.c.request_id.in_(request_ids)).order_by(V.c.id)
        )
        for row in rows:
            found[row.request_id].append(_vote_from_row(row))
        return found

    async def get_request(self, request_id: str, *, lock: bool = False) -> ApprovalRequest | None:
        """A request with its votes; ``lock`` takes the row lock (PostgreSQL) until commit."""
        query = select(R).where(R.c.id == request_id)
        if lock and self.conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = (await self.conn.execute(query)).first()
        if row is None:
            return None
        votes = await self._votes([request_id])
        return _request_from_row(row, tuple(votes[request_id]))

    async def find_idempotent(
        self, client: str, key: str
    ) -> tuple[ApprovalRequest, str | None] | None:
        """The request created by ``client`` under ``key``, with its body digest."""
        row = (
            await self.conn.execute(
                select(R.c.id, R.c.body_sha256).where(
                    R.c.client == client, R.c.idempotency_key == key
                )
            )
        ).first()
        if row is None:
            return None
        request = await self.get_request(row.id)
        assert request is not None
        return request, row.body_sha256

    async def insert_request(
        self,
        request: ApprovalRequest,
        *,
        idempotency_key: str | None = None,
        body_sha256: str | None = None,
    ) -> None:
        """Insert a new request; ``DuplicateKey`` when its idempotency key is taken."""
        values = {
            "id": request.id,
            "client": request.client,
            "client_owner": request.client_owner,
            "requested_by": request.requested_by,
            "action": request.action,
            "resource": request.resource,
            "reason": request.reason,
            "params": dict(request.params),
            "params_sha256": request.params_sha256,
            "context": dict(request.context),
            "rule_name": request.rule.name,
            "verdict": request.rule.verdict.value,
            "approvers": sorted(request.rule.approvers),
            "quorum": request.rule.quorum,
            "deny_quorum": request.rule.deny_quorum,
            "created_at": request.created_at,
            "expires_at": request.expires_at,
            "callback_url": request.callback_url,
            "idempotency_key": idempotency_key,
            "body_sha256": body_sha256,
            **_outcome_values(request),
        }
        # No savepoint: on a duplicate the service abandons the whole transaction.
        try:
            await self.conn.execute(insert(R).values(**values))
        except IntegrityError as exc:
            raise DuplicateKey(str(exc.orig)) from exc

    async def save_outcome(self, request: ApprovalRequest) -> None:
        """Write a request's status and decision fields."""
        await self.conn.execute(
            update(R).where(R.c.id == request.id).values(**_outcome_values(request))
        )

    async def insert_vote(self, request_id: str, vote: Vote) -> None:
        """Insert one vote; ``DuplicateKey`` when this voter has one on this request."""
        # A savepoint, because the service records the refusal in this same transaction.
        try:
            async with self.conn.begin_nested():
                await self.conn.execute(
                    insert(V).values(
                        request_id=request_id,
                        voter=vote.voter,
                        platform=vote.platform,
                        choice=vote.choice.value,
                        comment=vote.comment,
                        edited_params=(
                            dict(vote.edited_params) if vote.edited_params is not None else None
                        ),
                        params_sha256=vote.params_sha256,
                        at=vote.at,
                    )
                )
        except IntegrityError as exc:
            raise DuplicateKey(str(exc.orig)) from exc

    async def append_ledger(
        self,
        event: str,
        *,
        at: datetime,
        request_id: str | None = None,
        actor: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue an entry for the hash-chained ledger; written in order before commit."""
        self._ledger.append(ledger.NewEntry(event, at, request_id, actor, data))

    async def enqueue_callback(
        self, *, delivery_id: str, request_id: str, event: str, url: str, payload: str, at: datetime
    ) -> None:
        """Put a callback delivery in the outbox, due now."""
        await self.conn.execute(
            insert(O).values(
                delivery_id=delivery_id,
                request_id=request_id,
                event=event,
                url=url,
                payload=payload,
                attempts=0,
                next_attempt_at=at,
                created_at=at,
            )
        )

    async def due_request_ids(self, now: datetime, limit: int) -> list[str]:
        """Pending requests past their expiry (uses the status/expires_at index)."""
        rows = await self.conn.execute(
            select(R.c.id)
            .where(R.c.status == Status.PENDING.value, R.c.expires_at <= now)
            .order_by(R.c.expires_at)
            .limit(limit)
        )
        return [row.id for row in rows]

    async def history(self, query: HistoryQuery) -> list[ApprovalRequest]:
        """Requests matching the filters, newest first (ids are time-ordered ULIDs)."""
        stmt = select(R)
        if query.status is not None:
            stmt = stmt.where(R.c.status == query.status.value)
        if query.action is not None:
            stmt = stmt.where(R.c.action == query.action)
        if query.resource is not None:
            stmt = stmt.where(R.c.resource == query.resource)
        if query.requested_by is not None:
            stmt = stmt.where(func.lower(R.c.requested_by) == query.requested_by.lower())
        if query.client is not None:
            stmt = stmt.where(R.c.client == query.client)
        if query.approver is not None:
            stmt = stmt.where(
                exists().where(V.c.request_id == R.c.id, V.c.voter == query.approver.lower())
            )
        if query.since is not None:
            stmt = stmt.where(R.c.created_at >= query.since)
        if query.until is not None:
            stmt = stmt.where(R.c.created_at < query.until)
        if query.cursor is not None:
            stmt = stmt.where(R.c.id < query.cursor)
        stmt = stmt.order_by(R.c.id.desc()).limit(query.limit)
        rows = (await self.conn.execute(stmt)).all()
        votes = await self._votes([row.id for row in rows])
        return [_request_from_row(row, tuple(votes[row.id])) for row in rows]

    async def add_client(
        self, client: ApiClient, token_sha256: str, sealed_callback_secret: str | None
    ) -> None:
        """Insert an API client; ``DuplicateKey`` when the name is taken."""
        try:
            async with self.conn.begin_nested():
                await self.conn.execute(
                    insert(C).values(
                        name=client.name,
                        owner=client.owner,
                        token_sha256=token_sha256,
                        callback_secret=sealed_callback_secret,
                        created_at=client.created_at,
                    )
                )
        except IntegrityError as exc:
            raise DuplicateKey(str(exc.orig)) from exc

    async def sealed_callback_secret(self, name: str) -> str | None:
        """The sealed callback secret of a client."""
        row = (await self.conn.execute(select(C.c.callback_secret).where(C.c.name == name))).first()
        return None if row is None else row.callback_secret

    async def notify_change(self, request_id: str) -> None:
        """PostgreSQL: ``pg_notify`` on commit, so waiters on other replicas wake."""
        if self.conn.dialect.name == "postgresql":
            await self.conn.execute(
                text("SELECT pg_notify(:channel, :id)"),
                {"channel": CHANGES_CHANNEL, "id": request_id},
            )

    async def list_clients(self) -> list[ApiClient]:
        """All clients by name."""
        rows = await self.conn.execute(select(C).order_by(C.c.name))
        return [_client_from_row(row) for row in rows]

    async def revoke_client(self, name: str, at: datetime) -> bool:
        """Revoke an active client by name."""
        result = await self.conn.execute(
            update(C).where(C.c.name == name, C.c.revoked_at.is_(None)).values(revoked_at=at)
        )
        return bool(result.rowcount)
