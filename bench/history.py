"""History query benchmark: p95 of ``GET /v1/requests`` pages at 1,000,000 requests.

    python bench/history.py [--backend sqlite|postgres|both] [--rows 1000000] [--quick]
                            [--samples 60] [--json PATH]

Per backend, on this machine:
1. bulk load (raw SQL: ``executemany`` on SQLite, ``COPY`` on PostgreSQL; not the
   append path) ``--rows`` requests spread over a year, from 10 clients, 500
   requesters, 20 actions; 85 % approved (with a vote each), 8 % denied, 5 %
   expired, 2 % cancelled, the newest 500 pending. PostgreSQL is then
   ``VACUUM ANALYZE``d (as autovacuum would); SQLite is left as the service
   leaves it (no ``ANALYZE``).
2. countersign: a real ``countersign serve`` answering ``GET /v1/requests`` with
   typical filters, as the admin and as one client (whose scope adds
   ``client = …``), each first page followed by up to 4 more pages through
   ``next_cursor``; one query at a time, over loopback.
3. baseline: the bare SELECT the same page needs (same WHERE, ``ORDER BY id DESC
   LIMIT 51``) straight on the driver in this process: no HTTP, no ORM, no votes
   lookup, no JSON.
The figure is the p95 over every page of every query; each query's own p95 is
printed too, with (on PostgreSQL) the plan's access path, so a missing index shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

SELF = Path(__file__).resolve()
sys.path.insert(0, str(SELF.parents[1]))

from bench.common import client_token, free_port, pct, process, server_env  # noqa: E402
from countersign.core.ids import id_floor  # noqa: E402
from storage.repository import ID_WINDOW_MARGIN  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
BENCH_DB = "countersign_bench_history"
SECRET = "bench-server-key-0123456789abcdef"
ADMIN = "bench-admin-token-0123456789abcdef"
CLIENTS = [f"agent-{i}" for i in range(10)]
ME = CLIENTS[3]  # the client whose token queries its own history
ACTIONS = [
    "db.export",
    "db.migrate",
    "deploy.web",
    "deploy.api",
    "iam.grant",
    "iam.revoke",
    "k8s.scale",
    "k8s.restart",
    "s3.delete",
    "s3.policy",
    "dns.change",
    "cdn.purge",
    "billing.refund",
    "billing.credit",
    "secrets.rotate",
    "vm.stop",
    "vm.resize",
    "queue.purge",
    "feature.flag",
    "db.restore",
]
APPROVERS = [f"approver{i}@example.com" for i in range(10)]
PENDING = 500
PAGE = 50
PAGES = 5  # a first page and up to 4 more through next_cursor

COLUMNS = [
    "id",
    "client",
    "client_owner",
    "requested_by",
    "action",
    "resource",
    "reason",
    "params",
    "params_sha256",
    "context",
    "rule_name",
    "verdict",
    "approvers",
    "quorum",
    "deny_quorum",
    "status",
    "created_at",
    "expires_at",
    "decided_at",
    "decided_by",
    "decision_reason",
    "approved_params",
    "approved_params_sha256",
    "callback_url",
    "idempotency_key",
    "body_sha256",
    "receipt",
]
VOTE_COLUMNS = ["request_id", "voter", "platform", "choice", "comment", "params_sha256", "at"]


# -- the rows ----------------------------------------------------------------------------


def _ulid(ms: int, rnd: random.Random) -> str:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    t = "".join(alphabet[(ms >> (5 * k)) & 31] for k in range(9, -1, -1))
    return "req_" + t + "".join(rnd.choices(alphabet, k=16))


def generate(rows: int, now: datetime) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Request rows oldest first (ids are time-ordered), each with its vote if it has one."""
    rnd = random.Random(7)
    start = now - timedelta(days=365)
    step = (timedelta(days=365) - timedelta(minutes=30)) / rows
    sha = "9f2c" * 16
    receipt = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0." + "x" * 420 + "." + "s" * 86
    for i in range(rows):
        created = start + step * i
        pending = i >= rows - PENDING
        roll = rnd.random()
        status = (
            "pending"
            if pending
            else "approved"
            if roll < 0.85
            else "denied"
            if roll < 0.93
            else "expired"
            if roll < 0.98
            else "cancelled"
        )
        action = ACTIONS[i % len(ACTIONS)]
        voter = APPROVERS[rnd.randrange(len(APPROVERS))]
        decided = None if status == "pending" else created + timedelta(minutes=rnd.randint(1, 25))
        row = {
            "id": _ulid(int(created.timestamp() * 1000), rnd),
            "client": CLIENTS[i % len(CLIENTS)],
            "client_owner": "owen@example.com",
            "requested_by": f"user{rnd.randrange(500)}@example.com",
            "action": action,
            "resource": f"prod/{action.split('.')[0]}-{i % 997}",
            "reason": f"Ticket OPS-{i % 9973}: routine change requested by the agent",
            "params": json.dumps({"table": "customers", "rows": i % 100000, "dry_run": False}),
            "params_sha256": sha,
            "context": json.dumps({"ticket": f"OPS-{i % 9973}", "agent": "copilot"}),
            "rule_name": "default",
            "verdict": "require_approval",
            "approvers": json.dumps(APPROVERS),
            "quorum": 1,
            "deny_quorum": 1,
            "status": status,
            "created_at": created,
            "expires_at": created + timedelta(hours=1),
            "decided_at": decided,
            "decided_by": json.dumps([voter] if status in ("approved", "denied") else []),
            "decision_reason": None if status in ("pending", "approved") else status,
            "approved_params": None,
            "approved_params_sha256": sha if status == "approved" else None,
            "callback_url": None,
            "idempotency_key": None,
            "body_sha256": sha,
            "receipt": receipt if status == "approved" else None,
        }
        vote = None
        if status in ("approved", "denied"):
            vote = {
                "request_id": row["id"],
                "voter": voter,
                "platform": "slack" if i % 2 else "teams",
                "choice": "approve" if status == "approved" else "deny",
                "comment": None,
                "params_sha256": sha,
                "at": decided,
            }
        yield row, vote


def _sqlite_ts(value: datetime | None) -> str | None:
    # How UTCDateTime + SQLAlchemy's SQLite DateTime store a timestamp: naive UTC text.
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def load_sqlite(path: Path, rows: int, now: datetime) -> float:
    """Insert ``rows`` requests (and votes) with executemany; seconds taken."""
    began = time.perf_counter()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    req_sql = (
        f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    )
    vote_sql = f"INSERT INTO votes ({', '.join(VOTE_COLUMNS)}) VALUES ({', '.join('?' * len(VOTE_COLUMNS))})"
    ts = {"created_at", "expires_at", "decided_at", "at"}
    batch: list[tuple[Any, ...]] = []
    votes: list[tuple[Any, ...]] = []

    def flush() -> None:
        db.executemany(req_sql, batch)
        db.executemany(vote_sql, votes)
        batch.clear()
        votes.clear()

    db.execute("BEGIN")
    for row, vote in generate(rows, now):
        batch.append(tuple(_sqlite_ts(row[c]) if c in ts else row[c] for c in COLUMNS))
        if vote is not None:
            votes.append(tuple(_sqlite_ts(vote[c]) if c in ts else vote[c] for c in VOTE_COLUMNS))
        if len(batch) >= 50_000:
            flush()
    flush()
    db.execute("COMMIT")
    db.close()
    return time.perf_counter() - began


async def load_postgres(dsn: str, rows: int, now: datetime) -> float:
    """COPY ``rows`` requests (and votes), then VACUUM ANALYZE; seconds taken."""
    import asyncpg

    began = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        batch: list[tuple[Any, ...]] = []
        votes: list[tuple[Any, ...]] = []

        async def flush() -> None:
            await conn.copy_records_to_table("requests", records=batch, columns=COLUMNS)
            await conn.copy_records_to_table("votes", records=votes, columns=VOTE_COLUMNS)
            batch.clear()
            votes.clear()

        async with conn.transaction():
            for row, vote in generate(rows, now):
                batch.append(tuple(row[c] for c in COLUMNS))
                if vote is not None:
                    votes.append(tuple(vote[c] for c in VOTE_COLUMNS))
                if len(batch) >= 50_000:
                    await flush()
            await flush()
        await conn.execute("VACUUM ANALYZE requests")
        await conn.execute("VACUUM ANALYZE votes")
    finally:
        await conn.close()
    return time.perf_counter() - began


# -- the queries ---------------------------------------------------------------------------


def queries(now: datetime) -> list[tuple[str, bool, dict[str, str]]]:
    """(name, as the client?, filters): what a dashboard, a chat ``history`` and an agent ask."""
    day = (now - timedelta(days=30)).replace(hour=0, minute=0, second=0, microsecond=0)
    return [
        ("newest (admin)", False, {}),
        ("newest (one client's scope)", True, {}),
        ("client + status=approved", True, {"status": "approved"}),
        ("status=pending", False, {"status": "pending"}),
        ("status=denied", False, {"status": "denied"}),
        ("action=deploy.web", False, {"action": "deploy.web"}),
        ("requested_by=user42", False, {"requested_by": "User42@example.com"}),
        ("approver=approver3", False, {"approver": "approver3@example.com"}),
        (
            "since/until: one day, 30 days ago",
            False,
            {"since": day.isoformat(), "until": (day + timedelta(days=1)).isoformat()},
        ),
    ]


def bare_sql(
    filters: dict[str, str], client: str | None, cursor: str | None, pg: bool
) -> tuple[str, list[Any]]:
    """The SELECT the page needs, on the driver (``$n`` for asyncpg, ``?`` for sqlite3)."""
    where: list[str] = []
    args: list[Any] = []

    def mark(value: Any) -> str:
        args.append(value)
        return f"${len(args)}" if pg else "?"

    def when(text: str) -> Any:
        value = datetime.fromisoformat(text)
        return value if pg else _sqlite_ts(value)

    if "status" in filters:
        where.append(f"status = {mark(filters['status'])}")
    if "action" in filters:
        where.append(f"action = {mark(filters['action'])}")
    if "requested_by" in filters:
        where.append(f"lower(requested_by) = {mark(filters['requested_by'].lower())}")
    if client is not None:
        where.append(f"client = {mark(client)}")
    if "approver" in filters:
        where.append(
            "EXISTS (SELECT 1 FROM votes WHERE votes.request_id = requests.id "
            f"AND votes.voter = {mark(filters['approver'])})"
        )
    # The same id bounds as the service's query (ids are time-ordered).
    if "since" in filters:
        since = datetime.fromisoformat(filters["since"])
        where.append(f"created_at >= {mark(when(filters['since']))}")
        where.append(f"id >= {mark(id_floor(since - ID_WINDOW_MARGIN))}")
    if "until" in filters:
        until = datetime.fromisoformat(filters["until"])
        where.append(f"created_at < {mark(when(filters['until']))}")
        where.append(f"id < {mark(id_floor(until + ID_WINDOW_MARGIN))}")
    if cursor is not None:
        where.append(f"id < {mark(cursor)}")
    sql = "SELECT * FROM requests"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + f" ORDER BY id DESC LIMIT {PAGE + 1}", args


async def pg_plan(dsn: str, filters: dict[str, str], client: str | None) -> str:
    """The access path PostgreSQL picks for a first page (index names, or a Seq Scan)."""
    import asyncpg

    sql, args = bare_sql(filters, client, None, pg=True)
    conn = await asyncpg.connect(dsn)
    try:
        plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
    finally:
        await conn.close()
    found: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        kind = node.get("Node Type", "")
        if "Scan" in kind:
            name = node.get("Index Name") or node.get("Relation Name", "")
            found.append(f"{kind.replace(' Scan', '')}:{name}")
        for child in node.get("Plans", []):
            walk(child)

    walk(json.loads(plan)[0]["Plan"] if isinstance(plan, str) else plan[0]["Plan"])
    return ", ".join(found)


async def time_api(
    base: str, token: str, filters: dict[str, str], samples: int, budget: float
) -> tuple[list[float], list[tuple[str | None, int]]]:
    """Page latencies in seconds, and the (cursor, rows) of every page fetched."""
    latencies: list[float] = []
    pages: list[tuple[str | None, int]] = []
    deadline = time.perf_counter() + budget
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        while len(latencies) < samples and time.perf_counter() < deadline:
            cursor: str | None = None
            for _ in range(PAGES):
                query = {**filters, "limit": str(PAGE)}
                if cursor:
                    query["cursor"] = cursor
                began = time.perf_counter()
                async with http.get(f"{base}/v1/requests?{urlencode(query)}") as resp:
                    body = await resp.json()
                latencies.append(time.perf_counter() - began)
                assert resp.status == 200, body
                pages.append((cursor, len(body["items"])))
                cursor = body["next_cursor"]
                if cursor is None or len(latencies) >= samples:
                    break
    return latencies, pages


async def time_bare(
    backend: str,
    target: str,
    filters: dict[str, str],
    client: str | None,
    pages: list[tuple[str | None, int]],
) -> list[float]:
    """The same pages as bare SELECTs on the driver; seconds each."""
    latencies: list[float] = []
    if backend == "sqlite":
        db = sqlite3.connect(target)
        try:
            for cursor, _n in pages:
                sql, args = bare_sql(filters, client, cursor, pg=False)
                began = time.perf_counter()
                db.execute(sql, args).fetchall()
                latencies.append(time.perf_counter() - began)
        finally:
            db.close()
        return latencies
    import asyncpg

    conn = await asyncpg.connect(target)
    try:
        for cursor, _n in pages:
            sql, args = bare_sql(filters, client, cursor, pg=True)
            began = time.perf_counter()
            await conn.fetch(sql, *args)
            latencies.append(time.perf_counter() - began)
    finally:
        await conn.close()
    return latencies


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def bench(backend: str, rows: int, samples: int, budget: float) -> dict[str, Any]:
    """Load, then time every query through the API and bare."""
    from storage import create_engine
    from storage.migrate import upgrade

    now = datetime.now(UTC)
    result: dict[str, Any] = {"rows": rows, "queries": {}}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        if backend == "sqlite":
            path = tmp / "history.db"
            url = f"sqlite+aiosqlite:///{path}"
            target = str(path)
        else:
            await _pg(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
            await _pg(f'CREATE DATABASE "{BENCH_DB}"')
            url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{BENCH_DB}"
            target = f"postgresql://postgres@127.0.0.1:5432/{BENCH_DB}"
        engine = create_engine(url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()
        print(f"  [{backend}] loading {rows:,} requests ...", flush=True)
        if backend == "sqlite":
            took = await asyncio.to_thread(load_sqlite, path, rows, now)
        else:
            took = await load_postgres(target, rows, now)
        result["load_rows_per_s"] = rows / took
        print(f"  [{backend}] loaded in {took:.1f}s ({rows / took:,.0f} requests/s)", flush=True)

        env = server_env(
            COUNTERSIGN_DATABASE_URL=url,
            COUNTERSIGN_SECRET_KEY=SECRET,
            COUNTERSIGN_ADMIN_TOKEN=ADMIN,
        )
        token = client_token(env, ME)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "countersign", "serve", "--port", str(port)]
        every_api: list[float] = []
        every_bare: list[float] = []
        async with process(argv, env, base, tmp / "server.log"):
            for name, mine, filters in queries(now):
                scope = ME if mine else None
                api, pages = await time_api(
                    base, token if mine else ADMIN, filters, samples, budget
                )
                bare = await time_bare(backend, target, filters, scope, pages)
                plan = await pg_plan(target, filters, scope) if backend == "postgres" else ""
                every_api += api
                every_bare += bare
                q = {
                    "api_p50_ms": pct(api, 0.5) * 1000,
                    "api_p95_ms": pct(api, 0.95) * 1000,
                    "bare_p95_ms": pct(bare, 0.95) * 1000,
                    "pages": len(api),
                    "plan": plan,
                }
                result["queries"][name] = q
                print(
                    f"    {name:34} api p50 {q['api_p50_ms']:7.1f}  p95 {q['api_p95_ms']:7.1f} ms"
                    f" | bare p95 {q['bare_p95_ms']:7.2f} ms  ({len(api)} pages) {plan}",
                    flush=True,
                )
        result["api_p95_ms"] = pct(every_api, 0.95) * 1000
        result["bare_p95_ms"] = pct(every_bare, 0.95) * 1000
    if backend == "postgres":
        await _pg(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    return result


def main() -> None:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=40, help="pages per query")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per query at most")
    parser.add_argument("--quick", action="store_true", help="100,000 rows, 15 pages per query")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rows, samples, budget = (
        (100_000, 15, 2.0) if args.quick else (args.rows, args.samples, args.budget)
    )
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    print(f"history: {rows:,} requests, {samples} pages per query, {os.cpu_count()} cores")
    results: dict[str, Any] = {}
    for backend in backends:
        r = results[backend] = asyncio.run(bench(backend, rows, samples, budget))
        print(
            f"  [{backend}] every page: api p95 {r['api_p95_ms']:.1f} ms vs bare SELECT p95 "
            f"{r['bare_p95_ms']:.2f} ms: {r['api_p95_ms'] / r['bare_p95_ms']:.1f}x",
            flush=True,
        )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average {load}")
    if args.json:
        args.json.write_text(json.dumps(results, default=float, indent=1))


if __name__ == "__main__":
    main()
