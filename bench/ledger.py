"""Ledger benchmark: append, bulk fill, verify and export rates on SQLite and PostgreSQL.

    python bench/ledger.py [--entries 1000000] [--backend sqlite|postgres|both]
                           [--pg-url URL] [--sample N]

Appends go through the service's real path (``SqlStore.write()`` and
``append_ledger``, one per transaction). The rest of the ledger is filled by a
bulk path that builds the same chain with ``entry_hash``, so ``verify`` and
``export`` run over a realistic, valid ledger. Exits 1 if verify finds it broken.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Run as a script from anywhere: the project root holds the storage package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from countersign.core.digest import canonical_json
from storage import SqlStore, create_engine
from storage import ledger as chain
from storage.migrate import upgrade

VERIFY_GOAL = 200_000  # entries/s
WRITERS = 8
FILL_BATCH = 50_000  # rows per executemany
FILL_TX_ROWS = 250_000  # rows per bulk transaction
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/countersign_bench"
T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)

_INSERT = (
    "INSERT INTO ledger (seq, at, event, request_id, actor, data, prev_hash, hash) VALUES ({})"
)


@dataclass
class Figures:
    """What one backend measured."""

    backend: str
    seq_rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    conc_rate: float = 0.0
    fill_rate: float = 0.0
    verify_rate: float = 0.0
    verify_s: float = 0.0
    verify_cpu_s: float = 0.0
    export_rate: float = 0.0
    scan_rate: float = 0.0
    entries: int = 0
    ok: bool = True
    notes: list[str] = field(default_factory=list)


def _event(i: int) -> tuple[str, str, str | None, dict[str, Any]]:
    """The i-th realistic entry: event, request id, actor, data (a request, 2 votes, a decision)."""
    req = f"req_01JD{i // 4:022d}"
    sha = hashlib.sha256(req.encode()).hexdigest()
    kind = i % 4
    if kind == 0:
        data: dict[str, Any] = {
            "action": "db.migrate",
            "resource": f"prod/orders-{i % 97}",
            "rule": "prod-writes",
            "params_sha256": sha,
        }
        return "request.created", req, "agent-deployer", data
    if kind in (1, 2):
        data = {
            "platform": "slack" if kind == 1 else "teams",
            "decision": "approve",
            "comment": f"looks fine, ticket OPS-{i % 9973} — ship it",
            "params_sha256": sha,
        }
        return "vote.cast", req, f"user{i % 53}@example.com", data
    data = {"status": "approved", "decided_by": ["user1@example.com", "user2@example.com"]}
    return "request.decided", req, None, data


def _at(i: int) -> datetime:
    return T0 + timedelta(milliseconds=37 * i)


async def _append_one(store: SqlStore, i: int) -> None:
    event, req, actor, data = _event(i)
    async with store.write() as tx:
        await tx.append_ledger(event, at=_at(i), request_id=req, actor=actor, data=data)


async def bench_appends(store: SqlStore, sample: int, figures: Figures) -> None:
    """``sample`` sequential appends through the real path, then as many from 8 writers."""
    latencies: list[float] = []
    start = time.perf_counter()
    for i in range(sample):
        t = time.perf_counter()
        await _append_one(store, i)
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - start
    figures.seq_rate = sample / elapsed
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    figures.p50_ms, figures.p99_ms = cuts[49] * 1e3, cuts[98] * 1e3
    print(
        f"  append, sequential : {sample:>9,} in {elapsed:6.2f}s = {figures.seq_rate:9,.0f}/s"
        f"  (p50 {figures.p50_ms:.2f} ms, p99 {figures.p99_ms:.2f} ms)"
    )

    async def writer(first: int, count: int) -> None:
        for i in range(first, first + count):
            await _append_one(store, i)

    shares = [sample // WRITERS + (1 if w < sample % WRITERS else 0) for w in range(WRITERS)]
    firsts = [sample + sum(shares[:w]) for w in range(WRITERS)]
    start = time.perf_counter()
    await asyncio.gather(*(writer(f, n) for f, n in zip(firsts, shares, strict=True)))
    elapsed = time.perf_counter() - start
    figures.conc_rate = sample / elapsed
    print(
        f"  append, {WRITERS} writers  : {sample:>9,} in {elapsed:6.2f}s = "
        f"{figures.conc_rate:9,.0f}/s  ({figures.conc_rate / figures.seq_rate:.2f}x sequential)"
    )


def _rows(first_seq: int, count: int, prev: str) -> Iterator[tuple[Any, ...]]:
    """Entries first_seq.. as insert tuples, chained from ``prev`` exactly as ``append`` does."""
    entry_hash, fmt = chain.entry_hash, chain.format_at
    for seq in range(first_seq, first_seq + count):
        event, req, actor, data = _event(seq - 1)
        at = fmt(_at(seq - 1))
        data_text = canonical_json(data)
        digest = entry_hash(seq, at, event, req, actor, data_text, prev)
        yield seq, at, event, req, actor, data_text, prev, digest
        prev = digest


async def bulk_fill(engine: AsyncEngine, total: int, figures: Figures) -> None:
    """Top the ledger up to ``total`` entries with executemany in big transactions."""
    async with engine.connect() as conn:
        head = (await conn.execute(text("SELECT seq, hash FROM ledger_head WHERE id = 1"))).one()
        await conn.rollback()
    seq, prev = int(head.seq), str(head.hash)
    todo = total - seq
    if todo <= 0:
        return
    pg = engine.dialect.name == "postgresql"
    marks = ", ".join(f"${n}" for n in range(1, 9)) if pg else ", ".join("?" * 8)
    sql = _INSERT.format(marks)
    start = time.perf_counter()
    while seq < total:
        tx_rows = min(FILL_TX_ROWS, total - seq)
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            await raw.execute("BEGIN IMMEDIATE" if not pg else "BEGIN")
            done = 0
            while done < tx_rows:
                n = min(FILL_BATCH, tx_rows - done)
                batch = list(_rows(seq + 1, n, prev))
                await raw.executemany(sql, batch)
                seq, prev = batch[-1][0], batch[-1][-1]
                done += n
            # The head moves in the same transaction, as append() does.
            if pg:
                await raw.execute(
                    "UPDATE ledger_head SET seq = $1, hash = $2 WHERE id = 1", seq, prev
                )
            else:
                await raw.execute(
                    "UPDATE ledger_head SET seq = ?, hash = ? WHERE id = 1", (seq, prev)
                )
            await raw.execute("COMMIT")
    elapsed = time.perf_counter() - start
    figures.fill_rate = todo / elapsed
    print(
        f"  bulk fill (not the append path): {todo:>9,} in {elapsed:6.2f}s = "
        f"{figures.fill_rate:9,.0f}/s"
    )
    if pg:
        # What autovacuum does to a ledger that grew over months: without it the
        # first read of each fresh row also sets its hint bits, a one-off cost.
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            await raw.execute("VACUUM (ANALYZE) ledger")


async def bench_verify(engine: AsyncEngine, entries: int, figures: Figures) -> None:
    """Time ``verify`` over the whole ledger."""
    # verify_engine: the path `countersign ledger verify` takes (one snapshot).
    start, cpu = time.perf_counter(), time.process_time()
    report = await chain.verify_engine(engine)
    elapsed = time.perf_counter() - start
    # This process's CPU (all threads): steadier than wall time on a busy machine.
    figures.verify_cpu_s = time.process_time() - cpu
    figures.verify_s = elapsed
    figures.verify_rate = report.checked / elapsed if elapsed else 0.0
    figures.ok = report.ok and report.checked == entries
    status = "ok" if figures.ok else f"BROKEN at {report.bad_seq}: {report.problem}"
    print(
        f"  verify             : {report.checked:>9,} in {elapsed:6.2f}s = "
        f"{figures.verify_rate:9,.0f}/s  ({figures.verify_rate / VERIFY_GOAL:.2f}x the "
        f"{VERIFY_GOAL:,}/s goal)  {status}, {figures.verify_cpu_s:.2f}s CPU"
    )
    if report.checked != entries:
        figures.notes.append(f"verify checked {report.checked:,}, expected {entries:,}")


async def bench_scan(engine: AsyncEngine, url: str, figures: Figures) -> None:
    """Baseline for verify: read every entry in seq order on the bare driver, check nothing."""
    cols = "seq, at, event, request_id, actor, data, prev_hash, hash"
    rows = 0
    start = time.perf_counter()
    if engine.dialect.name == "sqlite":

        def scan() -> int:
            conn = sqlite3.connect(str(engine.url.database))
            try:
                cursor = conn.execute(f"SELECT {cols} FROM ledger ORDER BY seq")
                count = 0
                while chunk := cursor.fetchmany(10_000):
                    count += len(chunk)
                return count
            finally:
                conn.close()

        rows = await asyncio.to_thread(scan)
    else:
        dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(dsn)
        try:
            last = 0
            while chunk := await conn.fetch(
                f"SELECT {cols} FROM ledger WHERE seq > $1 ORDER BY seq LIMIT 10000", last
            ):
                rows += len(chunk)
                last = chunk[-1][0]
        finally:
            await conn.close()
    elapsed = time.perf_counter() - start
    figures.scan_rate = rows / elapsed if elapsed else 0.0
    print(
        f"  bare scan (baseline): {rows:>9,} in {elapsed:6.2f}s = {figures.scan_rate:9,.0f}/s"
        f"  (verify / bare scan: {figures.verify_rate / figures.scan_rate:.2f})"
    )


async def bench_export(engine: AsyncEngine, figures: Figures) -> None:
    """Time a jsonl export, consuming the iterator."""
    lines = 0
    async with engine.connect() as conn:
        start = time.perf_counter()
        async for chunk in chain.export(conn, "jsonl"):
            lines += chunk.count("\n")
        elapsed = time.perf_counter() - start
    figures.export_rate = lines / elapsed if elapsed else 0.0
    print(f"  export jsonl       : {lines:>9,} in {elapsed:6.2f}s = {figures.export_rate:9,.0f}/s")


async def run_backend(name: str, url: str, entries: int, sample: int) -> Figures:
    """Every measurement on one fresh, migrated database."""
    figures = Figures(name, entries=entries)
    print(f"{name}: {url}")
    engine = create_engine(url)
    try:
        await upgrade(engine)
        await bench_appends(SqlStore(engine), sample, figures)
        await bulk_fill(engine, entries, figures)
        await bench_verify(engine, figures.entries, figures)
        await bench_scan(engine, url, figures)
        await bench_export(engine, figures)
    finally:
        await engine.dispose()
    return figures


def _admin_dsn(url: str) -> tuple[str, str]:
    """The raw DSN of the ``test`` maintenance database and the bench database's name."""
    base, _, name = url.partition("?")[0].rpartition("/")
    return base.replace("postgresql+asyncpg://", "postgresql://", 1) + "/test", name


async def _pg_admin(url: str, sql: str) -> None:
    dsn, _ = _admin_dsn(url)
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def run_postgres(url: str, entries: int, sample: int) -> Figures:
    """The PostgreSQL run on a scratch database, dropped afterwards."""
    _, name = _admin_dsn(url)
    await _pg_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await _pg_admin(url, f'CREATE DATABASE "{name}"')
    try:
        return await run_backend("postgres", url, entries, sample)
    finally:
        await _pg_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def run_sqlite(entries: int, sample: int) -> Figures:
    """The SQLite run on a temporary file."""
    with tempfile.TemporaryDirectory(prefix="countersign-bench-") as tmp:
        return await run_backend("sqlite", f"sqlite+aiosqlite:///{tmp}/ledger.db", entries, sample)


def summary(results: list[Figures]) -> str:
    """A compact table of every figure, one column per backend."""
    rows: list[tuple[str, list[str]]] = [
        ("entries", [f"{r.entries:,}" for r in results]),
        ("append/s, sequential (real path)", [f"{r.seq_rate:,.0f}" for r in results]),
        ("append p50 ms", [f"{r.p50_ms:.2f}" for r in results]),
        ("append p99 ms", [f"{r.p99_ms:.2f}" for r in results]),
        (f"append/s, {WRITERS} writers", [f"{r.conc_rate:,.0f}" for r in results]),
        (
            f"  {WRITERS} writers / sequential",
            [f"{r.conc_rate / r.seq_rate:.2f}x" for r in results],
        ),
        ("bulk fill/s (not append)", [f"{r.fill_rate:,.0f}" for r in results]),
        ("verify s", [f"{r.verify_s:.2f}" for r in results]),
        ("verify CPU s (this process)", [f"{r.verify_cpu_s:.2f}" for r in results]),
        ("verify entries/s", [f"{r.verify_rate:,.0f}" for r in results]),
        (
            f"  verify / {VERIFY_GOAL:,} goal",
            [f"{r.verify_rate / VERIFY_GOAL:.2f}x" for r in results],
        ),
        ("bare scan entries/s (baseline)", [f"{r.scan_rate:,.0f}" for r in results]),
        ("  verify / bare scan", [f"{r.verify_rate / r.scan_rate:.2f}" for r in results]),
        ("export jsonl entries/s", [f"{r.export_rate:,.0f}" for r in results]),
        ("chain", ["ok" if r.ok else "BROKEN" for r in results]),
    ]
    width = max(len(label) for label, _ in rows)
    cols = [max(len(r.backend), *(len(v[i]) for _, v in rows)) for i, r in enumerate(results)]
    head = " | ".join(r.backend.rjust(w) for r, w in zip(results, cols, strict=True))
    lines = [f"{'':<{width}} | {head}", "-" * (width + 3 + len(head))]
    for label, values in rows:
        cells = " | ".join(v.rjust(w) for v, w in zip(values, cols, strict=True))
        lines.append(f"{label:<{width}} | {cells}")
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 1 if verify found a broken chain."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--sample", type=int, default=5_000, help="appends through the real path")
    parser.add_argument("--json", type=Path, help="also write the figures here (bench/all.py)")
    args = parser.parse_args(argv)
    if args.sample < 2 or args.entries < 2 * args.sample:
        parser.error("need --sample >= 2 and --entries >= 2 x --sample (appends come first)")
    if _admin_dsn(args.pg_url)[1] in ("", "test", "postgres", "template0", "template1"):
        parser.error("--pg-url must name a scratch database: the bench drops and recreates it")
    results: list[Figures] = []
    if args.backend in ("sqlite", "both"):
        results.append(await run_sqlite(args.entries, args.sample))
    if args.backend in ("postgres", "both"):
        results.append(await run_postgres(args.pg_url, args.entries, args.sample))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average {load} on {os.cpu_count()} CPUs (other work skews wall times)")
    print(summary(results))
    for r in results:
        for note in r.notes:
            print(f"{r.backend}: {note}")
    if args.json:
        args.json.write_text(json.dumps({r.backend: asdict(r) for r in results}, indent=1))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
