"""The hash-chained, append-only ledger: append, verify, export.

Each entry's hash is the SHA-256 of its canonical JSON::

    {"actor":…,"at":…,"data":…,"event":…,"prev_hash":…,"request_id":…,"seq":N}

keys sorted, no whitespace, raw UTF-8 (``json.dumps(entry, sort_keys=True,
separators=(",", ":"), ensure_ascii=False)``), where ``data`` is the event's
payload object and ``prev_hash`` the previous entry's hash (64 zeros for the
first). ``seq`` counts from 1 without gaps. One row, ``ledger_head``, names
the last entry; every append locks it, so entries from many writers form one
linear chain in commit order, and ``verify`` notices entries cut from the end.

Editing, deleting, inserting or reordering rows with SQL breaks a hash, a
link or the numbering, and ``verify`` names the first entry where it breaks.
A chain can only prove itself against a head you trust: keep the head that
``verify`` prints somewhere else to detect a wholesale rewrite.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from countersign.core.digest import canonical_json

__all__ = [
    "GENESIS_HASH",
    "HEAD",
    "INSERT_ENTRIES",
    "MOVE_HEAD",
    "LedgerEntry",
    "NewEntry",
    "VerifyReport",
    "append",
    "append_many",
    "chain",
    "entry_hash",
    "entry_rows",
    "export",
    "format_at",
    "verify",
    "verify_engine",
]

GENESIS_HASH = "0" * 64
# Rows per page. CPython keeps up to 2,000 freed tuples of each size for reuse,
# and asyncpg as many records, so pages this small recycle the last page's rows
# instead of allocating: bigger pages wake the cyclic GC, which then takes a
# quarter of verify's time on PostgreSQL.
_CHUNK = 2_000

# json's C string encoder: the exact quoting json.dumps(ensure_ascii=False) uses,
# without building a dict per entry. verify hashes millions of entries with it.
_quote: Any = json.encoder.encode_basestring


@dataclass(frozen=True)
class LedgerEntry:
    """One entry as stored."""

    seq: int
    at: str
    event: str
    request_id: str | None
    actor: str | None
    data: str
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        """The entry with ``data`` decoded, for export."""
        return {
            "seq": self.seq,
            "at": self.at,
            "event": self.event,
            "request_id": self.request_id,
            "actor": self.actor,
            "data": json.loads(self.data),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def format_at(moment: datetime) -> str:
    """The ledger's timestamp text: UTC, microseconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(
    seq: int,
    at: str,
    event: str,
    request_id: str | None,
    actor: str | None,
    data: str,
    prev_hash: str,
) -> str:
    """SHA-256 hex of the entry's canonical JSON (``data`` is already canonical JSON text)."""
    a = "null" if actor is None else _quote(actor)
    r = "null" if request_id is None else _quote(request_id)
    body = (
        f'{{"actor":{a},"at":{_quote(at)},"data":{data},"event":{_quote(event)},'
        f'"prev_hash":{_quote(prev_hash)},"request_id":{r},"seq":{seq}}}'
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class NewEntry:
    """An event to append; it gets its ``seq`` and hashes when written."""

    event: str
    at: datetime
    request_id: str | None = None
    actor: str | None = None
    data: Mapping[str, Any] | None = None


INSERT_ENTRIES = text(
    "INSERT INTO ledger (seq, at, event, request_id, actor, data, prev_hash, hash) "
    "VALUES (:seq, :at, :event, :request_id, :actor, :data, :prev_hash, :hash)"
)


HEAD = "SELECT seq, hash FROM ledger_head WHERE id = 1"
MOVE_HEAD = text("UPDATE ledger_head SET seq = :seq, hash = :hash WHERE id = 1")


def chain(seq: int, prev: str, entries: Sequence[NewEntry]) -> list[LedgerEntry]:
    """``entries`` numbered and hashed after the entry ``seq`` whose hash is ``prev``."""
    written: list[LedgerEntry] = []
    for entry in entries:
        seq += 1
        at_text = format_at(entry.at)
        data_text = canonical_json(dict(entry.data or {}))
        digest = entry_hash(
            seq, at_text, entry.event, entry.request_id, entry.actor, data_text, prev
        )
        written.append(
            LedgerEntry(
                seq, at_text, entry.event, entry.request_id, entry.actor, data_text, prev, digest
            )
        )
        prev = digest
    return written


def entry_rows(written: Sequence[LedgerEntry]) -> list[dict[str, Any]]:
    """The INSERT parameters of written entries."""
    return [
        {
            "seq": e.seq,
            "at": e.at,
            "event": e.event,
            "request_id": e.request_id,
            "actor": e.actor,
            "data": e.data,
            "prev_hash": e.prev_hash,
            "hash": e.hash,
        }
        for e in written
    ]


async def append_many(conn: AsyncConnection, entries: Sequence[NewEntry]) -> list[LedgerEntry]:
    """Append ``entries`` in order inside the caller's transaction, after locking the head.

    The head lock (``FOR UPDATE`` on PostgreSQL; SQLite write transactions are
    already exclusive) is held until the caller commits, so the next writer
    links to these entries, never to the same predecessor. Three statements
    whatever the number of entries.
    """
    if not entries:
        return []
    lock = " FOR UPDATE" if conn.dialect.name == "postgresql" else ""
    head = (await conn.execute(text(HEAD + lock))).one()
    written = chain(int(head.seq), str(head.hash), entries)
    await conn.execute(INSERT_ENTRIES, entry_rows(written))
    await conn.execute(MOVE_HEAD, {"seq": written[-1].seq, "hash": written[-1].hash})
    return written


async def append(
    conn: AsyncConnection,
    *,
    event: str,
    at: datetime,
    request_id: str | None = None,
    actor: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> LedgerEntry:
    """Append one entry inside the caller's transaction (see ``append_many``)."""
    (entry,) = await append_many(conn, [NewEntry(event, at, request_id, actor, data)])
    return entry


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify`` found: how many entries checked, the head, the first bad entry."""

    checked: int
    head_seq: int
    head_hash: str
    bad_seq: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """True when every entry and the head check out."""
        return self.problem is None


_COLUMNS = "seq, at, event, request_id, actor, data, prev_hash, hash"
_PAGE = f"SELECT {_COLUMNS} FROM ledger WHERE seq > {{}} ORDER BY seq LIMIT {_CHUNK}"  # noqa: S608

_Rows = Sequence[Sequence[Any]]


async def _page_reader(conn: AsyncConnection) -> Callable[[int], Awaitable[_Rows]]:
    """A function reading the page after a ``seq``: through the driver when we know it.

    Driver rows (tuples, asyncpg records) skip SQLAlchemy's per-row processing,
    a large share of verify's time on PostgreSQL.
    """
    driver = conn.dialect.driver
    if driver in ("asyncpg", "aiosqlite"):
        raw: Any = (await conn.get_raw_connection()).driver_connection
        if driver == "asyncpg":
            pg_page = _PAGE.format("$1")
            return lambda last: raw.fetch(pg_page, last)
        lite_page = _PAGE.format("?")
        return lambda last: raw.execute_fetchall(lite_page, (last,))
    page = text(_PAGE.format(":last"))

    async def read(last: int) -> _Rows:
        return (await conn.execute(page, {"last": last})).all()

    return read


async def _chunks(conn: AsyncConnection, *, prefetch: bool = False) -> AsyncGenerator[_Rows, None]:
    """All entries in ``seq`` order, a chunk at a time (keyset paging, no long cursor).

    ``prefetch`` asks for the next page before yielding this one, so the server
    reads while the caller works. The caller must then leave the connection alone
    while iterating and close the generator (``contextlib.aclosing``): closing
    waits for that page, so no query outlives the iteration.
    """
    # The first page goes through SQLAlchemy so the caller's transaction (and its
    # isolation level) is open before we use the driver underneath it.
    rows: _Rows = (await conn.execute(text(_PAGE.format(":last")), {"last": -1})).all()
    read = await _page_reader(conn)
    while rows:
        if not prefetch:
            yield rows
            rows = await read(rows[-1][0])
            continue
        pending = asyncio.ensure_future(read(rows[-1][0]))
        try:
            yield rows
        finally:
            rows = await pending


async def verify_engine(engine: AsyncEngine) -> VerifyReport:
    """Verify the whole ledger in one snapshot, so entries appended meanwhile are not seen.

    PostgreSQL: a REPEATABLE READ transaction (under READ COMMITTED the head
    and the pages could come from different moments). A SQLite file: read with
    the standard ``sqlite3`` module in one worker thread and one read
    transaction (in WAL mode a snapshot from its first read), which avoids a
    thread hand-off per page.
    """
    path = engine.url.database
    if engine.dialect.name == "sqlite" and path and path != ":memory:":
        return await asyncio.to_thread(_verify_sqlite_file, path)
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            return await verify(conn)


def _verify_sqlite_file(path: str) -> VerifyReport:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        head_seq, head_hash = conn.execute(
            "SELECT seq, hash FROM ledger_head WHERE id = 1"
        ).fetchone()
        checker = _Checker(int(head_seq), str(head_hash))
        cursor = conn.execute(f"SELECT {_COLUMNS} FROM ledger ORDER BY seq")  # noqa: S608
        while rows := cursor.fetchmany(_CHUNK):
            report = checker.feed(rows)
            if report is not None:
                return report
        return checker.finish()
    finally:
        conn.close()


_ALTERED = "entry {} ({}) was altered: its content does not match its hash"
_UNLINKED = "entry {} does not link to entry {} (reordered or replaced)"


class _Checker:
    """Checks the chain a page at a time, in order; the first fault becomes the report."""

    def __init__(self, head_seq: int, head_hash: str) -> None:
        self.head_seq, self.head_hash = head_seq, head_hash
        self.expected_seq = 1
        self.prev = GENESIS_HASH

    def _report(self, checked: int, bad_seq: int, problem: str) -> VerifyReport:
        return VerifyReport(checked, self.head_seq, self.head_hash, bad_seq, problem)

    def feed(self, rows: _Rows) -> VerifyReport | None:
        """Check the next page of entries; a report at the first one that does not check out."""
        expected_seq, prev = self.expected_seq, self.prev
        # Local names: this loop runs once per entry, millions of times.
        sha256, quote = hashlib.sha256, _quote
        try:
            for seq, at, event, request_id, actor, data, prev_hash, stored in rows:
                if seq != expected_seq:
                    if seq > expected_seq:
                        problem = f"entry {expected_seq} is missing (next entry is {seq})"
                    else:
                        problem = f"entry {seq} is out of order"
                    return self._report(expected_seq - 1, expected_seq, problem)
                if prev_hash != prev:
                    problem = (
                        f"entry {seq} does not link to entry {seq - 1} (reordered or replaced)"
                    )
                    return self._report(expected_seq - 1, seq, problem)
                # entry_hash, inlined. prev_hash equals a hash we checked (hex), so it
                # needs no quoting.
                a = "null" if actor is None else quote(actor)
                r = "null" if request_id is None else quote(request_id)
                body = (
                    f'{{"actor":{a},"at":{quote(at)},"data":{data},"event":{quote(event)},'
                    f'"prev_hash":"{prev_hash}","request_id":{r},"seq":{seq}}}'
                )
                if sha256(body.encode()).hexdigest() != stored:
                    altered = (
                        f"entry {seq} ({event}) was altered: its content does not match its hash"
                    )
                    return self._report(expected_seq - 1, seq, altered)
                prev = stored
                expected_seq += 1
            return None
        finally:
            self.expected_seq, self.prev = expected_seq, prev

    def finish(self) -> VerifyReport:
        """The report once every entry was read: the head must name the last one."""
        last_seq, head_seq = self.expected_seq - 1, self.head_seq
        if head_seq > last_seq:
            problem = (
                f"entries {last_seq + 1}..{head_seq} are missing (the head names entry {head_seq})"
            )
            return self._report(last_seq, last_seq + 1, problem)
        if head_seq < last_seq or self.head_hash != self.prev:
            bad = head_seq + 1 if head_seq < last_seq else last_seq
            problem = (
                f"entry {bad} is not the one the head names (added or changed outside the ledger)"
            )
            return self._report(last_seq, bad, problem)
        return VerifyReport(last_seq, head_seq, self.head_hash)


async def verify(conn: AsyncConnection) -> VerifyReport:
    """Walk the chain from the first entry; stop at the first entry that does not check out."""
    head = (await conn.execute(text("SELECT seq, hash FROM ledger_head WHERE id = 1"))).one()
    checker = _Checker(int(head.seq), str(head.hash))
    # Reading ahead pays where the server works in parallel; aiosqlite's thread
    # needs the GIL we hash with, so there it gains nothing.
    prefetch = conn.dialect.name == "postgresql"
    async with aclosing(_chunks(conn, prefetch=prefetch)) as chunks:
        async for rows in chunks:
            report = checker.feed(rows)
            if report is not None:
                return report
    return checker.finish()


async def export(conn: AsyncConnection, fmt: str) -> AsyncIterator[str]:
    """The whole ledger as ``jsonl`` lines or ``csv`` rows (with a header), in order."""
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"unknown export format {fmt!r}: use jsonl or csv")
    fields = ["seq", "at", "event", "request_id", "actor", "data", "prev_hash", "hash"]
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf).writerow(fields)
        yield buf.getvalue()
    async for rows in _chunks(conn):
        buf = io.StringIO()
        writer = csv.writer(buf)
        for row in rows:
            entry = LedgerEntry(*row)
            if fmt == "jsonl":
                buf.write(canonical_json(entry.as_dict()) + "\n")
            else:
                writer.writerow(["" if v is None else v for v in row])
        yield buf.getvalue()
