"""``SqlStore``: the service's ``Store`` port on SQLAlchemy (SQLite and PostgreSQL).

Data functions never commit: the service opens a transaction with ``write()``
or ``read()`` and everything inside commits or rolls back together.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import exists, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from countersign.core.ids import id_floor
from countersign.core.model import ApprovalRequest, Status, Vote
from countersign.ports import ApiClient, DuplicateKey, HistoryQuery
from storage import ledger, sqlite_writer
from storage.chat import J
from storage.engine import BEGIN_MODE, is_sqlite
from storage.postgres_writer import PostgresWrite, append_at_commit
from storage.rows import (
    CLIENT_BY_TOKEN,
    GET_REQUEST,
    GET_REQUEST_LOCKED,
    VOTES_OF,
    C,
    O,
    R,
    V,
    client_from_row,
    outcome_values,
    request_from_row,
    vote_from_row,
)
from storage.statements import Direct, Statements

__all__ = ["CHANGES_CHANNEL", "SqlStore", "SqlTransaction", "history_statement"]

T = TypeVar("T")

# A request id's time is its ``created_at`` (``countersign.core.ids``), so a time
# window is also a range of ids. Ids made before that held (wall clock, taken just
# after ``created_at``) are covered by this margin on both bounds.
ID_WINDOW_MARGIN = timedelta(seconds=60)

# PostgreSQL NOTIFY channel carrying the ids of changed requests.
CHANGES_CHANNEL = "countersign_requests"


def history_statement(query: HistoryQuery) -> Any:
    """The SELECT of one history page: filters, the cursor, newest first.

    The client, status, action and requested-by filters each have an index ending
    in ``id`` (migration 0006), so such a page is a range of one index read
    backwards, never a sort of every matching row; the others walk the primary key.
    ``since`` / ``until`` also bound the ids (ids are time-ordered), so a window in
    the past starts where it is instead of walking every newer request.
    """
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
        stmt = stmt.where(
            R.c.created_at >= query.since, R.c.id >= id_floor(query.since - ID_WINDOW_MARGIN)
        )
    if query.until is not None:
        stmt = stmt.where(
            R.c.created_at < query.until, R.c.id < id_floor(query.until + ID_WINDOW_MARGIN)
        )
    if query.cursor is not None:
        stmt = stmt.where(R.c.id < query.cursor)
    return stmt.order_by(R.c.id.desc()).limit(query.limit)


class SqlStore:
    """Transactions on one engine; SQLite writers start ``BEGIN IMMEDIATE``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sqlite = is_sqlite(engine)

    @asynccontextmanager
    async def _sqlite_write(self) -> AsyncIterator[SqlTransaction]:
        statements = sqlite_writer.WriteStatements(sqlite_writer.writer(self.engine))
        tx = SqlTransaction(statements)
        try:
            yield tx
        except BaseException:
            await statements.rollback()
            raise
        await statements.commit(tx.take_ledger())

    @asynccontextmanager
    async def _open(self, immediate: bool) -> AsyncIterator[SqlTransaction]:
        async with self.engine.connect() as conn:
            if self._sqlite and immediate:
                await conn.execution_options(**{BEGIN_MODE: "IMMEDIATE"})
            async with conn.begin():
                tx = SqlTransaction(Direct(conn))
                yield tx
                await tx.flush_ledger()  # at the end: the head lock is held only briefly

    @asynccontextmanager
    async def _postgres_write(self) -> AsyncIterator[SqlTransaction]:
        statements = PostgresWrite(self.engine)
        tx = SqlTransaction(statements)
        try:
            yield tx
            await statements.commit(tx.take_ledger(), (CHANGES_CHANNEL, tx.take_notify()))
        finally:
            await statements.close()

    def write(self) -> Any:
        """A write transaction; serialised with every other writer on SQLite."""
        return self._sqlite_write() if self._sqlite else self._postgres_write()

    def read(self) -> Any:
        """A read transaction."""
        return self._open(immediate=False)

    @asynccontextmanager
    async def write_connection(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction as a bare connection, for SQL outside the ``Transaction`` port."""
        if not self._sqlite:
            async with self._open(immediate=True) as tx:
                yield tx.conn
            return
        thread = sqlite_writer.writer(self.engine)
        async with thread.lock:
            # Queued jobs first: their COMMITs must not wait behind our BEGIN IMMEDIATE.
            await thread.submit(lambda _conn: None)
            async with self._open(immediate=True) as tx:
                yield tx.conn

    async def write_job(self, job: Callable[[Connection], T]) -> T:
        """Run ``job`` (blocking SQL on a sync connection) as one write transaction.

        SQLite: one job on the writer thread (one hand-off; this process's writer
        lock is held only while it is queued). PostgreSQL: ``run_sync`` in a
        transaction. For SQL outside the ``Transaction`` port (chat state).
        """
        if not self._sqlite:
            async with self.engine.begin() as conn:
                return await conn.run_sync(job)
        thread = sqlite_writer.writer(self.engine)

        def run(conn: Connection) -> T:
            conn.begin()
            try:
                result = job(conn)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            return result

        async with thread.lock:
            # Queued behind any COMMIT already queued; ours runs as one whole job.
            done = thread.submit(run)
        return await done

    async def read_job(self, job: Callable[[Connection], T]) -> T:
        """Run ``job`` (blocking SQL on a sync connection) as one read-only snapshot.

        SQLite: one job on a reader thread (BEGIN, the job, ROLLBACK): a read
        transaction through aiosqlite takes a dozen hand-offs and ~5x the CPU.
        PostgreSQL: ``run_sync`` in a transaction that is rolled back.
        """
        if not self._sqlite:
            async with self.engine.connect() as conn:
                try:
                    return await conn.run_sync(job)
                finally:
                    await conn.rollback()

        def run(conn: Connection) -> T:
            conn.exec_driver_sql("BEGIN")  # one snapshot for the whole job (WAL: never waits)
            try:
                return job(conn)
            finally:
                conn.rollback()

        return await sqlite_writer.reader(self.engine).submit(run)

    async def request_by_id(self, request_id: str) -> ApprovalRequest | None:
        """One request with its votes, read in one snapshot (no lock): one ``read_job``.

        The chat worker, Teams refreshes and Slack clicks read requests all the time.
        """
        key = {"id": request_id}

        def read(conn: Connection) -> ApprovalRequest | None:
            row = conn.execute(GET_REQUEST, key).first()
            if row is None:
                return None
            votes = conn.execute(VOTES_OF, key)
            return request_from_row(row, tuple(vote_from_row(v) for v in votes))

        return await self.read_job(read)

    async def client_by_token(self, token_sha256: str) -> ApiClient | None:
        """The client with this token digest (revoked ones too: the caller checks).

        One autocommit SELECT, no BEGIN/COMMIT: every API call authenticates with it.
        On SQLite it is one job on a reader thread (aiosqlite would take five hand-offs).
        """
        params = {"token": token_sha256}
        if self._sqlite:

            def read(conn: Any) -> Any:
                try:
                    return conn.execute(CLIENT_BY_TOKEN, params).first()
                finally:
                    conn.rollback()  # no BEGIN was sent: this only ends SQLAlchemy's transaction

            row = await sqlite_writer.reader(self.engine).submit(read)
            return None if row is None else client_from_row(row)
        async with self.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            row = (await conn.execute(CLIENT_BY_TOKEN, params)).first()
        return None if row is None else client_from_row(row)


class SqlTransaction:
    """The ``Transaction`` port over one open transaction (see ``Statements``)."""

    def __init__(self, statements: Statements) -> None:
        self._db = statements
        self._ledger: list[ledger.NewEntry] = []
        self._notify: list[str] = []  # PostgreSQL: sent with the ledger entries

    @property
    def conn(self) -> AsyncConnection:
        """The connection underneath (not on SQLite writes: use ``SqlStore.write_connection``)."""
        if not isinstance(self._db, Direct):
            raise TypeError("this transaction runs on the SQLite writer thread")
        return self._db.conn

    def take_notify(self) -> list[str]:
        """The request ids to notify about, handed over to be sent."""
        ids, self._notify = self._notify, []
        return ids

    def take_ledger(self) -> list[ledger.NewEntry]:
        """The ledger entries queued so far, handed over to be written."""
        entries, self._ledger = self._ledger, []
        return entries

    async def flush_ledger(self) -> None:
        """Write the ledger entries of this transaction (done by ``SqlStore`` before commit)."""
        entries = self.take_ledger()
        if self._db.dialect == "postgresql":
            notify = (CHANGES_CHANNEL, self.take_notify())
            await append_at_commit(self.conn, entries, notify)
        else:
            await ledger.append_many(self.conn, entries)

    async def _votes(self, request_ids: list[str]) -> dict[str, list[Vote]]:
        found: dict[str, list[Vote]] = {rid: [] for rid in request_ids}
        if not request_ids:
            return found
        rows = await self._db.run(select(V).where(V.c.request_id.in_(request_ids)).order_by(V.c.id))
        for row in rows:
            found[row.request_id].append(vote_from_row(row))
        return found

    async def get_request(self, request_id: str, *, lock: bool = False) -> ApprovalRequest | None:
        """A request with its votes; ``lock`` takes the row lock (PostgreSQL) until commit."""
        key = {"id": request_id}
        if lock and self._db.dialect == "postgresql":
            # Two round trips: the votes must be read after the row lock is granted (a
            # statement's snapshot is taken before it waits for a lock).
            row = (await self._db.run(GET_REQUEST_LOCKED, key)).first()
            if row is None:
                return None
            votes = await self._db.run(VOTES_OF, key)
        else:
            # SQLite writers hold the database lock from BEGIN IMMEDIATE, before this:
            # both statements go as one writer-thread job.
            found, votes = await self._db.run_each([(GET_REQUEST, key), (VOTES_OF, key)])
            row = found.first()
            if row is None:
                return None
        return request_from_row(row, tuple(vote_from_row(v) for v in votes))

    async def find_idempotent(
        self, client: str, key: str
    ) -> tuple[ApprovalRequest, str | None] | None:
        """The request created by ``client`` under ``key``, with its body digest."""
        row = (
            await self._db.run(
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
            **outcome_values(request),
        }
        # No savepoint: on a duplicate the service abandons the whole transaction.
        # Deferred on SQLite: the clash then surfaces at commit, also as DuplicateKey.
        try:
            await self._db.insert(R, values)
        except IntegrityError as exc:
            raise DuplicateKey(str(exc.orig)) from exc

    async def save_outcome(self, request: ApprovalRequest) -> None:
        """Write a request's status and decision fields."""
        await self._db.update(R, request.id, outcome_values(request))

    async def insert_vote(self, request_id: str, vote: Vote) -> None:
        """Insert one vote, with the next statement or at commit.

        The request's lock (``FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE``) was taken
        when it was read, and the service refuses a second vote from the same
        person under it, so the unique key cannot clash here; if it ever did,
        the commit fails with ``DuplicateKey`` and nothing is written.
        """
        await self._db.insert(
            V,
            {
                "request_id": request_id,
                "voter": vote.voter,
                "platform": vote.platform,
                "choice": vote.choice.value,
                "comment": vote.comment,
                "edited_params": (
                    dict(vote.edited_params) if vote.edited_params is not None else None
                ),
                "params_sha256": vote.params_sha256,
                "at": vote.at,
            },
        )

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
        await self._db.insert(
            O,
            {
                "delivery_id": delivery_id,
                "request_id": request_id,
                "event": event,
                "url": url,
                "payload": payload,
                "attempts": 0,
                "next_attempt_at": at,
                "created_at": at,
            },
        )

    async def enqueue_chat(self, request_id: str, kind: str, due_at: datetime) -> None:
        """Queue a ``kind`` chat job for the request (a plain INSERT: see ``storage.chat``)."""
        await self._db.insert(
            J, {"request_id": request_id, "kind": kind, "attempts": 0, "due_at": due_at}
        )

    async def save_approvers(self, request_id: str, approvers: frozenset[str]) -> None:
        """Replace the request's eligible approvers (escalation adds people)."""
        await self._db.update(R, request_id, {"approvers": sorted(approvers)})

    async def due_request_ids(self, now: datetime, limit: int) -> list[str]:
        """Pending requests past their expiry (uses the status/expires_at index)."""
        rows = await self._db.run(
            select(R.c.id)
            .where(R.c.status == Status.PENDING.value, R.c.expires_at <= now)
            .order_by(R.c.expires_at)
            .limit(limit)
        )
        return [row.id for row in rows]

    async def final_request_ids(self, request_ids: Sequence[str]) -> set[str]:
        """Those of ``request_ids`` that are no longer pending (one query, by primary key)."""
        if not request_ids:
            return set()
        rows = await self._db.run(
            select(R.c.id).where(R.c.id.in_(list(request_ids)), R.c.status != Status.PENDING.value)
        )
        return {row.id for row in rows}

    async def history(self, query: HistoryQuery) -> list[ApprovalRequest]:
        """Requests matching the filters, newest first (ids are time-ordered ULIDs)."""
        stmt = history_statement(query)
        rows = (await self._db.run(stmt)).all()
        votes = await self._votes([row.id for row in rows])
        return [request_from_row(row, tuple(votes[row.id])) for row in rows]

    async def add_client(
        self, client: ApiClient, token_sha256: str, sealed_callback_secret: str | None
    ) -> None:
        """Insert an API client; ``DuplicateKey`` when the name is taken."""
        try:
            await self._db.savepoint(
                insert(C),
                {
                    "name": client.name,
                    "owner": client.owner,
                    "token_sha256": token_sha256,
                    "callback_secret": sealed_callback_secret,
                    "created_at": client.created_at,
                },
            )
        except IntegrityError as exc:
            raise DuplicateKey(str(exc.orig)) from exc

    async def sealed_callback_secret(self, name: str) -> str | None:
        """The sealed callback secret of a client."""
        row = (await self._db.run(select(C.c.callback_secret).where(C.c.name == name))).first()
        return None if row is None else row.callback_secret

    async def notify_change(self, request_id: str) -> None:
        """PostgreSQL: ``pg_notify`` on commit, so waiters on other replicas wake."""
        if self._db.dialect == "postgresql" and request_id not in self._notify:
            self._notify.append(request_id)

    async def list_clients(self) -> list[ApiClient]:
        """All clients by name."""
        rows = await self._db.run(select(C).order_by(C.c.name))
        return [client_from_row(row) for row in rows]

    async def revoke_client(self, name: str, at: datetime) -> bool:
        """Revoke an active client by name."""
        result = await self._db.run(
            update(C)
            .where(C.c.name == name, C.c.revoked_at.is_(None))
            .values(revoked_at=at)
            .returning(C.c.id)
        )
        return result.first() is not None
