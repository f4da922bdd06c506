"""SQLite writes in one thread hand-off per transaction instead of one per driver call.

aiosqlite runs every driver call (cursor, execute, fetch, close, commit) on its
thread, each a hand-off and an event-loop wake-up, and SQLite lets one writer
in at a time: a create took 18 hand-offs while holding the write lock. Here a
write transaction's statements are buffered and run, with its ledger entries
and COMMIT, as one job on one thread with a blocking ``sqlite3`` connection on
the same file. A read inside the transaction (``get_request(lock=True)``) is
one job too, and from then on the transaction holds this process's writer
lock until its last job is queued. Jobs run in the order they were queued, so
a transaction's COMMIT always comes before the next writer's BEGIN.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Table, event, text
from sqlalchemy.engine import Connection, Engine, Result
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from countersign.ports import DuplicateKey
from storage import ledger
from storage.engine import BEGIN_MODE, sqlite_sync_engine
from storage.rows import insert_statement, update_statement

__all__ = ["SqliteThread", "WriteStatements", "append_many_sync", "reader", "writer"]

T = TypeVar("T")
_Op = tuple[Any, Any]


class SqliteThread:
    """One thread owning one blocking connection; jobs run on it in submission order."""

    def __init__(self, engine: AsyncEngine, begin_mode: str) -> None:
        self._engine: Engine = sqlite_sync_engine(engine)
        self._begin_mode = begin_mode
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="countersign-sqlite")
        self._conn: Connection | None = None
        # Serialises this process's write transactions that span several jobs.
        self.lock = asyncio.Lock()

    def _connection(self) -> Connection:
        if self._conn is None:  # made on the thread that uses it (sqlite3 insists)
            conn = self._engine.connect()
            conn.execution_options(**{BEGIN_MODE: self._begin_mode})
            self._conn = conn
        return self._conn

    def submit(self, job: Callable[[Connection], T]) -> asyncio.Future[T]:
        """Queue ``job`` to run with the connection; the future has its result."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool, lambda: job(self._connection()))

    def close(self) -> None:
        """Close the connection on its thread and stop the thread."""

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._engine.dispose()

        self._pool.submit(shut)
        self._pool.shutdown(wait=True)


# Per engine, like its pool: every store on the engine shares the writer.
_WRITERS: weakref.WeakKeyDictionary[Any, SqliteThread] = weakref.WeakKeyDictionary()
_READERS: weakref.WeakKeyDictionary[Any, SqliteThread] = weakref.WeakKeyDictionary()


def _thread(
    registry: weakref.WeakKeyDictionary[Any, SqliteThread], engine: AsyncEngine, mode: str
) -> SqliteThread:
    found = registry.get(engine.sync_engine)
    if found is None:
        found = registry[engine.sync_engine] = SqliteThread(engine, mode)

        def disposed(_engine: Any) -> None:
            # engine.dispose() closes its connections; ours go too (a later use makes new ones).
            gone = registry.pop(engine.sync_engine, None)
            if gone is not None:
                gone.close()

        event.listen(engine.sync_engine, "engine_disposed", disposed, once=True)
    return found


def writer(engine: AsyncEngine) -> SqliteThread:
    """The writer thread of ``engine`` (transactions start ``BEGIN IMMEDIATE``)."""
    return _thread(_WRITERS, engine, "IMMEDIATE")


def reader(engine: AsyncEngine) -> SqliteThread:
    """A thread for single-statement reads of ``engine`` (no BEGIN: autocommit)."""
    return _thread(_READERS, engine, "NONE")


class WriteStatements:
    """A write transaction's statements on the writer thread: writes wait, reads go at once."""

    dialect = "sqlite"

    def __init__(self, thread: SqliteThread) -> None:
        self._thread = thread
        self._ops: list[_Op] = []
        self._locked = False

    async def _lock(self) -> None:
        if not self._locked:
            await self._thread.lock.acquire()
            self._locked = True

    def _unlock(self) -> None:
        if self._locked:
            self._locked = False
            self._thread.lock.release()

    async def _job(self, job: Callable[[Connection], T]) -> T:
        """Run the buffered writes, then ``job``, in the transaction (begun if need be)."""
        await self._lock()
        ops, self._ops = self._ops, []

        def run(conn: Connection) -> T:
            if not conn.in_transaction():
                conn.begin()
            _apply(conn, ops)
            return job(conn)

        return await self._thread.submit(run)

    async def run(self, statement: Any, params: Any = None) -> Result[Any]:
        """Execute a statement returning rows, now; its rows are read on the thread."""
        frozen = await self._job(lambda conn: conn.execute(statement, params).freeze())
        return frozen()

    async def run_each(self, statements: list[tuple[Any, Any]]) -> list[Result[Any]]:
        """Execute several statements returning rows, now, as one job."""

        def job(conn: Connection) -> list[Any]:
            return [conn.execute(statement, params).freeze() for statement, params in statements]

        return [frozen() for frozen in await self._job(job)]

    async def insert(self, table: Table, values: dict[str, Any]) -> None:
        """Insert a row with the next job, or at commit."""
        self._ops.append((insert_statement(table), values))

    async def update(self, table: Table, key: str, values: dict[str, Any]) -> None:
        """Update the row whose id is ``key`` with the next job, or at commit."""
        self._ops.append((update_statement(table), {"row_key": key, **values}))

    async def savepoint(self, statement: Any, params: Any) -> None:
        """Execute a statement now, in a savepoint (``IntegrityError`` leaves the rest intact)."""

        def job(conn: Connection) -> None:
            with conn.begin_nested():
                conn.execute(statement, params)

        await self._job(job)

    async def commit(self, entries: Sequence[ledger.NewEntry]) -> None:
        """Buffered writes, ledger entries and COMMIT in one job; ``DuplicateKey`` on a clash."""
        await self._lock()
        ops, self._ops = self._ops, []

        def run(conn: Connection) -> None:
            try:
                if not conn.in_transaction():
                    conn.begin()
                _apply(conn, ops)
                append_many_sync(conn, entries)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

        done = self._thread.submit(run)
        # Queued: the next writer's jobs run after this COMMIT, so it need not wait here.
        self._unlock()
        try:
            await done
        except IntegrityError as exc:
            raise DuplicateKey(str(exc.orig)) from exc

    async def rollback(self) -> None:
        """Abandon the transaction (nothing reached the database if no job ran)."""
        self._ops = []
        if not self._locked:
            return
        done = self._thread.submit(lambda conn: conn.rollback())
        self._unlock()
        await done


def _apply(conn: Connection, ops: list[_Op]) -> None:
    for statement, params in ops:
        conn.execute(statement, params)


def append_many_sync(
    conn: Connection, entries: Sequence[ledger.NewEntry]
) -> list[ledger.LedgerEntry]:
    """``append_many`` on a blocking SQLite connection in an exclusive write transaction."""
    if not entries:
        return []
    head = conn.execute(text(ledger.HEAD)).one()
    written = ledger.chain(int(head.seq), str(head.hash), entries)
    conn.execute(ledger.INSERT_ENTRIES, ledger.entry_rows(written))
    conn.execute(ledger.MOVE_HEAD, {"seq": written[-1].seq, "hash": written[-1].hash})
    return written
