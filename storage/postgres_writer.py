"""PostgreSQL write transactions in as few round trips as possible.

A create was five round trips (BEGIN, INSERT, the ledger, NOTIFY, COMMIT), each
a send, a wake-up and a pass through SQLAlchemy and asyncpg. Here a write
transaction's row writes are kept, and sent with its ledger entries and
notifications as one ``countersign_write`` call (migration 0003): alone, in
autocommit, when the transaction read nothing first (then that statement is the
whole transaction; its COMMIT chains the ledger entries), or just before COMMIT
otherwise. A read or a savepoint first sends the writes kept so far, so every
statement sees the transaction's earlier writes.

Group commit: every ledger append locks the one head row until its COMMIT has
been flushed to disk, so appending transactions commit one flush at a time and
PostgreSQL's own group commit cannot help them. The write-only transactions of
this process that arrive while one flush is under way are therefore sent
together as one statement, one transaction and one flush: each still commits
all of its rows, entries and notifications, with others', or nothing. When a
batch fails on a statement error (a clashing idempotency key, say) each
transaction of it is retried alone, so one cannot fail another.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.engine import Result
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from countersign.core.digest import canonical_json
from countersign.ports import DuplicateKey
from storage import ledger

__all__ = ["WRITE", "PostgresWrite", "append_at_commit", "encode_rows", "pending_entries"]

WRITE = text(
    "SELECT countersign_write(CAST(:ops AS JSONB), CAST(:entries AS JSONB), :channel, "
    "CAST(:ids AS TEXT[]))"
)


def pending_entries(entries: Sequence[ledger.NewEntry]) -> str:
    """``entries`` as the JSON ``countersign_write`` chains at COMMIT (PostgreSQL, 0003)."""
    rows = [
        {
            "at": ledger.format_at(e.at),
            "event": e.event,
            "request_id": e.request_id,
            "actor": e.actor,
            "data": canonical_json(dict(e.data or {})),
        }
        for e in entries
    ]
    return json.dumps(rows, ensure_ascii=False)


_AT_COMMIT = text(
    "SELECT countersign_write('[]', CAST(:entries AS JSONB), :channel, CAST(:ids AS TEXT[]))"
)


async def append_at_commit(
    conn: AsyncConnection,
    entries: Sequence[ledger.NewEntry],
    notify: tuple[str, Sequence[str]] = ("", ()),
) -> None:
    """PostgreSQL: queue ``entries`` (and ``notify``: channel, payloads) in one statement.

    The COMMIT chains the entries (migration 0003). No head lock is taken here:
    the trigger takes it inside COMMIT, so writers wait on each other for the
    chaining and the commit's flush only, never for a round trip to a client.
    """
    channel, ids = notify
    if not entries and not ids:
        return
    params = {"entries": pending_entries(entries), "channel": channel, "ids": list(ids)}
    await conn.execute(_AT_COMMIT, params)


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        # As UTCDateTime binds it: aware only, stored in UTC.
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"cannot store {type(value).__name__} through countersign_write")


def encode_rows(ops: Sequence[dict[str, Any]]) -> str:
    """The JSON ``countersign_write`` reads its row writes from."""
    return json.dumps(list(ops), default=_json_default, ensure_ascii=False)


class PostgresWrite:
    """``Statements`` for a PostgreSQL write transaction (see the module docstring)."""

    dialect = "postgresql"

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._ops: list[dict[str, Any]] = []

    async def _open(self) -> AsyncConnection:
        if self._conn is None:
            conn = await self._engine.connect()
            try:
                await conn.begin()
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        if self._ops:
            await self._send(self._conn, [])
        return self._conn

    async def _send(
        self,
        conn: AsyncConnection,
        entries: Sequence[ledger.NewEntry],
        notify: tuple[str, Sequence[str]] = ("", ()),
    ) -> None:
        channel, ids = notify
        ops, self._ops = self._ops, []
        if not ops and not entries and not ids:
            return
        params = {
            "ops": encode_rows(ops),
            "entries": pending_entries(entries),
            "channel": channel,
            "ids": list(ids),
        }
        try:
            await conn.execute(WRITE, params)
        except IntegrityError as exc:  # the only unique key a write can clash on here
            raise DuplicateKey(str(exc.orig)) from exc

    async def run(self, statement: Any, params: Any = None) -> Result[Any]:
        """Execute now, after the writes kept so far."""
        conn = await self._open()
        result: Result[Any] = await conn.execute(statement, params)
        return result

    async def run_each(self, statements: list[tuple[Any, Any]]) -> list[Result[Any]]:
        """Execute several statements now, in order, after the writes kept so far."""
        return [await self.run(statement, params) for statement, params in statements]

    async def savepoint(self, statement: Any, params: Any) -> None:
        """Execute now in a savepoint, after the writes kept so far."""
        conn = await self._open()
        async with conn.begin_nested():
            await conn.execute(statement, params)

    async def insert(self, table: Table, values: dict[str, Any]) -> None:
        """Keep an INSERT for later (``DuplicateKey`` may come from a later call)."""
        self._ops.append({"table": table.name, "row": values, "id": None})

    async def update(self, table: Table, key: str, values: dict[str, Any]) -> None:
        """Keep an UPDATE of row ``key`` for later."""
        self._ops.append({"table": table.name, "row": values, "id": key})

    async def commit(
        self, entries: Sequence[ledger.NewEntry], notify: tuple[str, Sequence[str]]
    ) -> None:
        """Send what is kept and commit: one round trip when nothing was sent before."""
        if self._conn is not None:
            await self._send(self._conn, entries, notify)
            await self._conn.commit()
            return
        if not self._ops and not entries and not notify[1]:
            return
        ops, self._ops = self._ops, []
        await _group(self._engine).commit(self._engine, _Batchable(ops, list(entries), notify))

    async def close(self) -> None:
        """Give the connection back (rolling back whatever was not committed)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


@dataclass
class _Batchable:
    """One write-only transaction, waiting to be committed (perhaps with others)."""

    ops: list[dict[str, Any]]
    entries: list[ledger.NewEntry]
    notify: tuple[str, Sequence[str]]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


# Enough to cover every request in flight; bounds one statement's size.
_MAX_BATCH = 64


class _GroupCommit:
    """Commits write-only transactions, those that queue up meanwhile as one (see above)."""

    def __init__(self) -> None:
        self._queue: list[_Batchable] = []
        self._running: asyncio.Task[None] | None = None

    async def commit(self, engine: AsyncEngine, tx: _Batchable) -> None:
        """Commit ``tx``, with whatever queues up while the previous batch commits."""
        self._queue.append(tx)
        if self._running is None or self._running.done():
            # A task of its own: a caller cancelled while waiting must not stop the batch.
            self._running = asyncio.get_running_loop().create_task(self._drain(engine))
        await asyncio.shield(tx.done)

    async def _drain(self, engine: AsyncEngine) -> None:
        while self._queue:
            batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
            try:
                await self._send(engine, batch)
            except DBAPIError as exc:
                if len(batch) == 1 or exc.connection_invalidated:
                    _fail(batch, exc)
                    continue
                for tx in batch:  # the server refused a statement: nothing was committed
                    try:
                        await self._send(engine, [tx])
                    except BaseException as one:
                        _fail([tx], one)
            except BaseException as exc:
                _fail(batch, exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise

    async def _send(self, engine: AsyncEngine, batch: list[_Batchable]) -> None:
        channel = next((tx.notify[0] for tx in batch if tx.notify[1]), "")
        params = {
            "ops": encode_rows([op for tx in batch for op in tx.ops]),
            "entries": pending_entries([e for tx in batch for e in tx.entries]),
            "channel": channel,
            "ids": [i for tx in batch for i in tx.notify[1]],
        }
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(WRITE, params)
        for tx in batch:
            if not tx.done.done():
                tx.done.set_result(None)


def _fail(batch: list[_Batchable], exc: BaseException) -> None:
    if isinstance(exc, IntegrityError):
        exc = DuplicateKey(str(exc.orig))
    for tx in batch:
        if not tx.done.done():
            tx.done.set_exception(exc)


_GROUPS: weakref.WeakKeyDictionary[Any, _GroupCommit] = weakref.WeakKeyDictionary()


def _group(engine: AsyncEngine) -> _GroupCommit:
    found = _GROUPS.get(engine.sync_engine)
    if found is None:
        found = _GROUPS[engine.sync_engine] = _GroupCommit()
    return found
