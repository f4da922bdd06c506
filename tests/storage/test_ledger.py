"""The ledger chain: appends link up, and any SQL tampering is caught and named."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from countersign.cli import main
from countersign.core import canonical_json
from storage import SqlStore, create_engine
from storage import ledger as chain

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
N = 10


async def _fill(store: SqlStore, n: int = N) -> None:
    for i in range(n):
        async with store.write() as tx:
            await tx.append_ledger(
                "vote.cast" if i % 2 else "request.created",
                at=T0 + timedelta(seconds=i),
                request_id=f"req_{i // 2}",
                actor=f"user{i}@example.com",
                data={"i": i, "note": "naïve <b>&</b>"},
            )


async def _drop_guards(conn: AsyncConnection) -> None:
    """What an attacker with table-owner rights does first."""
    if conn.dialect.name == "sqlite":
        await conn.execute(text("DROP TRIGGER ledger_no_update"))
        await conn.execute(text("DROP TRIGGER ledger_no_delete"))
    else:
        await conn.execute(text("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only"))


async def _tamper(store: SqlStore, *statements: str) -> chain.VerifyReport:
    async with store.engine.begin() as conn:
        await _drop_guards(conn)
        for sql in statements:
            await conn.exec_driver_sql(sql)
    async with store.engine.connect() as conn:
        report = await chain.verify(conn)
    # The CLI's path (one snapshot; on SQLite the sqlite3 reader) must agree exactly.
    assert await chain.verify_engine(store.engine) == report
    return report


async def test_chain_links_and_hashes_its_canonical_json(store: SqlStore) -> None:
    await _fill(store)
    async with store.engine.connect() as conn:
        report = await chain.verify(conn)
        rows = (await conn.execute(text("SELECT * FROM ledger ORDER BY seq"))).all()
    assert report.ok and report.checked == N and report.head_seq == N
    prev = chain.GENESIS_HASH
    for row in rows:
        entry = {
            "actor": row.actor,
            "at": row.at,
            "data": json.loads(row.data),
            "event": row.event,
            "prev_hash": row.prev_hash,
            "request_id": row.request_id,
            "seq": row.seq,
        }
        assert row.prev_hash == prev
        assert hashlib.sha256(canonical_json(entry).encode()).hexdigest() == row.hash
        prev = row.hash
    assert report.head_hash == prev


async def test_ledger_refuses_update_and_delete(store: SqlStore) -> None:
    await _fill(store, 2)
    for sql in ("UPDATE ledger SET actor = 'x' WHERE seq = 1", "DELETE FROM ledger WHERE seq = 2"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with store.engine.begin() as conn:
                await conn.execute(text(sql))


def _forged(seq: int, prev: str, data: str = '{"forged":true}') -> str:
    at = "2026-11-21T11:00:00.000000Z"
    digest = chain.entry_hash(seq, at, "vote.cast", "req_9", "mallory@example.com", data, prev)
    return (
        "INSERT INTO ledger (seq, at, event, request_id, actor, data, prev_hash, hash) VALUES "
        f"({seq}, '{at}', 'vote.cast', 'req_9', 'mallory@example.com', '{data}', '{prev}', '{digest}')"
    )


TAMPERING = [
    ("edit data", ['UPDATE ledger SET data = \'{"i":4,"note":"ok"}\' WHERE seq = 5'], 5, "altered"),
    ("edit actor", ["UPDATE ledger SET actor = 'mallory@example.com' WHERE seq = 5"], 5, "altered"),
    (
        "edit time",
        ["UPDATE ledger SET at = '2026-01-01T00:00:00.000000Z' WHERE seq = 3"],
        3,
        "altered",
    ),
    ("edit event", ["UPDATE ledger SET event = 'vote.refused' WHERE seq = 8"], 8, "altered"),
    ("delete a middle entry", ["DELETE FROM ledger WHERE seq = 5"], 5, "missing"),
    ("delete the first entry", ["DELETE FROM ledger WHERE seq = 1"], 1, "missing"),
    ("delete the last entry", [f"DELETE FROM ledger WHERE seq = {N}"], N, "missing"),
    (
        "swap two entries",
        [
            "UPDATE ledger SET seq = -4 WHERE seq = 4",
            "UPDATE ledger SET seq = 4 WHERE seq = 5",
            "UPDATE ledger SET seq = 5 WHERE seq = -4",
        ],
        4,
        "does not link",
    ),
    (
        "insert a bogus entry at the end",
        [
            f"INSERT INTO ledger (seq, at, event, request_id, actor, data, prev_hash, hash) VALUES "
            f"({N + 1}, 'x', 'vote.cast', 'req_9', 'm@example.com', '{{}}', '{'0' * 64}', '{'1' * 64}')"
        ],
        N + 1,
        "does not link",
    ),
]


@pytest.mark.parametrize(
    ("statements", "bad", "words"), [t[1:] for t in TAMPERING], ids=[t[0] for t in TAMPERING]
)
async def test_tampering_is_named(
    store: SqlStore, statements: list[str], bad: int, words: str
) -> None:
    await _fill(store)
    report = await _tamper(store, *statements)
    assert not report.ok
    assert report.bad_seq == bad
    assert words in (report.problem or "")


async def test_a_forged_entry_with_a_valid_hash_is_caught_by_the_head(store: SqlStore) -> None:
    await _fill(store)
    async with store.engine.connect() as conn:
        head = (await chain.verify(conn)).head_hash
    report = await _tamper(store, _forged(N + 1, head))
    assert report.bad_seq == N + 1 and "head" in (report.problem or "")


async def test_a_replaced_entry_with_valid_hash_breaks_the_next_link(store: SqlStore) -> None:
    await _fill(store)
    async with store.engine.connect() as conn:
        prev = (await conn.execute(text("SELECT hash FROM ledger WHERE seq = 4"))).scalar_one()
    report = await _tamper(store, "DELETE FROM ledger WHERE seq = 5", _forged(5, prev))
    assert report.bad_seq == 6 and "does not link" in (report.problem or "")


def _run_on(database_url: str, *work: str) -> None:
    """Fill the ledger (and run tampering SQL) on a private engine and event loop."""

    async def run() -> None:
        engine = create_engine(database_url)
        try:
            store = SqlStore(engine)
            if not work:
                await _fill(store)
            else:
                await _tamper(store, *work)
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_cli_verify_and_export(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNTERSIGN_DATABASE_URL", database_url)
    _run_on(database_url)
    out = io.StringIO()
    assert main(["ledger", "verify"], out=out) == 0
    assert out.getvalue().startswith(f"ledger OK: {N} entries, head {N} ")
    head = out.getvalue().split()[-1]

    out = io.StringIO()
    assert main(["ledger", "export", "--format", "jsonl"], out=out) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, N + 1))
    assert lines[0]["data"] == {"i": 0, "note": "naïve <b>&</b>"}

    out = io.StringIO()
    assert main(["ledger", "export", "--format", "csv"], out=out) == 0
    csv_lines = out.getvalue().splitlines()
    assert csv_lines[0] == "seq,at,event,request_id,actor,data,prev_hash,hash"
    assert len(csv_lines) == N + 1

    assert main(["ledger", "verify", "--expect-head", head], out=io.StringIO()) == 0
    out = io.StringIO()
    assert main(["ledger", "verify", "--expect-head", "f" * 64], out=out) == 1
    assert "BROKEN" in out.getvalue()

    _run_on(database_url, "UPDATE ledger SET data = '{}' WHERE seq = 7")
    out = io.StringIO()
    assert main(["ledger", "verify"], out=out) == 1
    assert out.getvalue().startswith("ledger BROKEN at entry 7:")


PAGED_TAMPERING = [
    ("intact", [], None, ""),
    ("edit in the last page", ["UPDATE ledger SET data = '{}' WHERE seq = 4500"], 4500, "altered"),
    ("edit in the first page", ["UPDATE ledger SET actor = 'x' WHERE seq = 7"], 7, "altered"),
    ("delete in the middle page", ["DELETE FROM ledger WHERE seq = 2500"], 2500, "missing"),
    (
        "edit before a later deletion",
        ["UPDATE ledger SET data = '{}' WHERE seq = 1999", "DELETE FROM ledger WHERE seq = 4001"],
        1999,
        "altered",
    ),
    (
        "deletion before a later edit",
        ["DELETE FROM ledger WHERE seq = 1500", "UPDATE ledger SET data = '{}' WHERE seq = 3000"],
        1500,
        "missing",
    ),
]


@pytest.mark.parametrize(
    ("statements", "bad", "words"),
    [t[1:] for t in PAGED_TAMPERING],
    ids=[t[0] for t in PAGED_TAMPERING],
)
async def test_tampering_across_pages_names_the_first_bad_entry(
    store: SqlStore, statements: list[str], bad: int | None, words: str
) -> None:
    async with store.write_connection() as conn:  # 5,000 entries: verify reads several pages
        entries = [
            chain.NewEntry(
                "vote.cast",
                T0 + timedelta(milliseconds=i),
                f"req_{i // 3}",
                f"u{i}@example.com",
                {"i": i},
            )
            for i in range(5000)
        ]
        await chain.append_many(conn, entries)
    report = await _tamper(store, *statements)
    if bad is None:
        assert report.ok
        assert report.checked == 5000
        return
    assert report.bad_seq == bad
    assert words in (report.problem or "")
    assert report.checked == bad - 1


# Every character class json.dumps(ensure_ascii=False) treats specially, and some it does not.
AWKWARD = [
    'quote " backslash \\ slash /',
    "controls \b\f\n\r\t \x01\x1f and DEL \x7f",
    "non-ASCII: naïve Ünïcödé ß 日本語, emoji 😀, separators \u2028\u2029",
    "",
]


async def test_awkward_text_hashes_as_entry_hash_does(store: SqlStore) -> None:
    # On PostgreSQL the COMMIT's trigger hashes in SQL; verify re-hashes in Python.
    for i, text_value in enumerate(AWKWARD):
        async with store.write() as tx:
            await tx.append_ledger(
                text_value[:64] or "event",
                at=T0 + timedelta(seconds=i),
                request_id=text_value[-40:] or None,
                actor=text_value or None,
                data={"text": text_value, text_value: [1, None, 2.5, True]},
            )
            await tx.append_ledger("second.in.tx", at=T0, data={})
    async with store.engine.connect() as conn:
        report = await chain.verify(conn)
        actors = (await conn.execute(text("SELECT actor FROM ledger ORDER BY seq"))).scalars()
        assert list(actors)[::2] == [t or None for t in AWKWARD]
    assert report.ok, report.problem
    assert report.checked == 2 * len(AWKWARD)


async def test_a_failed_write_leaves_no_trace_and_the_next_one_commits(store: SqlStore) -> None:
    await _fill(store, 2)

    async def abandoned() -> None:
        async with store.write() as tx:
            await tx.append_ledger("lost", at=T0)
            assert await tx.get_request("req_none", lock=True) is None  # the transaction began
            raise RuntimeError("abandon")

    with pytest.raises(RuntimeError, match="abandon"):
        await abandoned()
    async with store.write() as tx:
        await tx.append_ledger("kept", at=T0)
    async with store.engine.connect() as conn:
        events = (await conn.execute(text("SELECT event FROM ledger ORDER BY seq"))).scalars()
        assert list(events)[2:] == ["kept"]
        assert (await chain.verify(conn)).ok
