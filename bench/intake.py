"""Intake and waiter benchmark: prints figures and ratios (no pass/fail).

    python bench/intake.py [--backend sqlite|postgres|both] [--seconds 8] [--connections 32]

Per backend, on this machine:
1. baseline: a bare aiohttp server that parses the JSON body and does one
   committed INSERT per request on the same database (same driver stack);
2. intake: the real ``countersign serve`` taking POST /v1/requests (auth,
   validation, policy, request row, two ledger entries, one transaction);
both in their own process, loaded by this process with aiohttp over loopback.
3. waiter latency: a long-poll on /wait released by the deciding vote made
   through the server's own service (as Slack and Teams do), and on PostgreSQL
   also across replicas (vote on server B, waiter on server A: LISTEN/NOTIFY).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

SELF = Path(__file__).resolve()
ROOT = SELF.parents[1]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
BENCH_DB = "countersign_bench_intake"
SECRET = "bench-server-key-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# -- the baseline server (run in a subprocess: python bench/intake.py --baseline URL PORT) ----


def run_baseline(url: str, port: int) -> None:
    """A bare aiohttp endpoint: parse JSON, one committed INSERT, answer 201."""
    from aiohttp import web
    from sqlalchemy import text

    from storage import create_engine

    async def make() -> web.Application:
        # The same pool as `countersign serve` (COUNTERSIGN_DATABASE_POOL_SIZE=20).
        pool = {} if url.startswith("sqlite") else {"pool_size": 20, "max_overflow": 20}
        engine = create_engine(url, **pool)
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS baseline"))
            await conn.execute(
                text("CREATE TABLE baseline (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
            )
        counter = iter(range(10**12))

        async def handle(request: web.Request) -> web.Response:
            body = await request.json()
            row_id = f"b{os.getpid()}_{next(counter)}"
            async with engine.begin() as conn:
                await conn.execute(
                    text("INSERT INTO baseline (id, body) VALUES (:id, :body)"),
                    {"id": row_id, "body": json.dumps(body)},
                )
            return web.json_response({"id": row_id}, status=201)

        app = web.Application()
        app.router.add_post("/v1/requests", handle)
        return app

    web.run_app(make(), host="127.0.0.1", port=port, print=None, access_log=None)


# -- load ------------------------------------------------------------------------------


def _body(i: int) -> dict[str, Any]:
    return {
        "action": "db.export",
        "resource": f"prod/customers-{i}",
        "reason": "Quarterly churn analysis for finance (FIN-42)",
        "requested_by": "dana@example.com",
        "params": {"table": "customers", "columns": ["id", "plan"], "rows": 120000},
        "context": {"ticket": "FIN-42", "agent": "analytics-copilot"},
    }


async def load(url: str, token: str, seconds: float, connections: int) -> dict[str, float]:
    """POST bodies for ``seconds`` from ``connections`` workers; rate and latency."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))
    headers = {"Authorization": f"Bearer {token}"}
    conn = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=conn, headers=headers) as http:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                async with http.post(url + "/v1/requests", json=_body(next(counter))) as resp:
                    await resp.read()
                    if resp.status != 201:
                        errors += 1
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": _pct(latencies, 0.50) * 1000,
        "p99_ms": _pct(latencies, 0.99) * 1000,
        "errors": errors,
        "count": len(latencies),
    }


async def _wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url + "/healthz") as resp:
                    if resp.status in (200, 404, 405):
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server at {url} did not come up")


@contextlib.asynccontextmanager
async def process(argv: list[str], env: dict[str, str], url: str) -> AsyncIterator[None]:
    """A server subprocess, up before the block and stopped after it."""
    # Logs go to a file: an unread pipe fills up and blocks the server mid-run.
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=log)
    try:
        await _wait_up(url)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


# -- databases ---------------------------------------------------------------------------


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fresh_database(backend: str, tmp: Path) -> str:
    """A new empty database URL for ``backend``."""
    if backend == "sqlite":
        path = tmp / f"intake-{time.time_ns()}.db"
        return f"sqlite+aiosqlite:///{path}"
    await _pg(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    await _pg(f'CREATE DATABASE "{BENCH_DB}"')
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{BENCH_DB}"


def _env(database_url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COUNTERSIGN_", "SLACK_", "MICROSOFT_"))
    }
    env.update(COUNTERSIGN_DATABASE_URL=database_url, COUNTERSIGN_SECRET_KEY=SECRET)
    return env


def _client_token(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "countersign", "clients", "add", f"bench{time.time_ns()}"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return next(line.split()[1] for line in out.splitlines() if line.startswith("token:"))


# -- waiter latency ------------------------------------------------------------------------


async def waiter_latency(database_url: str, samples: int, cross: bool) -> dict[str, float]:
    """Time from the deciding vote's return to the long-poll's answer, in ms."""
    from aiohttp.test_utils import TestServer

    from countersign.core import RequestSpec
    from countersign.policy import EXAMPLE_POLICY_PATH, load_policy
    from countersign.server import SERVICE, create_app
    from countersign.settings import Settings

    def app() -> Any:
        settings = Settings(_env_file=None, database_url=database_url, secret_key=SECRET)  # type: ignore[call-arg]
        return create_app(settings, load_policy(EXAMPLE_POLICY_PATH))

    a, b = app(), app()
    server_a = TestServer(a, host="127.0.0.1", port=0)
    await server_a.start_server()
    server_b = TestServer(b, host="127.0.0.1", port=0) if cross else None
    if server_b is not None:
        await server_b.start_server()
    voter = (b if cross else a)[SERVICE]
    client, token, _ = await a[SERVICE].add_client(f"waiter{time.time_ns()}", None)
    results: list[float] = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for i in range(samples):
            spec = RequestSpec(**_body(i))
            request_id = (await a[SERVICE].create_request(client, spec)).request.id
            poll = asyncio.create_task(
                http.get(str(server_a.make_url(f"/v1/requests/{request_id}/wait?timeout=10")))
            )
            await asyncio.sleep(0.02)  # let the long-poll register
            await voter.cast_vote(request_id, "alice@example.com", "slack", "approve")
            await voter.cast_vote(request_id, "carol@example.com", "teams", "approve")
            decided = time.perf_counter()
            resp = await poll
            body = await resp.json()
            results.append((time.perf_counter() - decided) * 1000)
            assert body["status"] == "approved", body
    await server_a.close()
    if server_b is not None:
        await server_b.close()
    return {"p50_ms": _pct(results, 0.5), "p99_ms": _pct(results, 0.99), "max_ms": max(results)}


# -- main ------------------------------------------------------------------------------------


async def bench(backend: str, seconds: float, connections: int, samples: int) -> dict[str, Any]:
    """All figures for one backend."""
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        url = await fresh_database(backend, tmp)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        argv = [sys.executable, str(SELF), "--baseline", url, str(port)]
        print(f"  [{backend}] baseline ...", flush=True)
        async with process(argv, _env(url), base):
            figures["baseline"] = await load(base, "none", seconds, connections)

        url = await fresh_database(backend, tmp)
        env = _env(url)
        token = _client_token(env)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "countersign", "serve", "--port", str(port)]
        print(f"  [{backend}] intake ...", flush=True)
        async with process(argv, env, base):
            figures["intake"] = await load(base, token, seconds, connections)

        url = await fresh_database(backend, tmp)
        print(f"  [{backend}] waiters ...", flush=True)
        figures["waiter"] = await waiter_latency(url, samples, cross=False)
        if backend == "postgres":
            url = await fresh_database(backend, tmp)
            figures["waiter_cross"] = await waiter_latency(url, samples, cross=True)
    if backend == "postgres":
        await _pg(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    return figures


def main() -> None:
    """Parse arguments, run, print."""
    if len(sys.argv) == 4 and sys.argv[1] == "--baseline":
        run_baseline(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--samples", type=int, default=200, help="waiter latency samples")
    parser.add_argument("--json", type=Path, help="also write the figures here (bench/all.py)")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    print(
        f"intake bench: {args.seconds:g}s per run, {args.connections} connections, {os.cpu_count()} cores"
    )
    rows = []
    every: dict[str, Any] = {}
    for backend in backends:
        f = every[backend] = asyncio.run(
            bench(backend, args.seconds, args.connections, args.samples)
        )
        base, intake = f["baseline"], f["intake"]
        ratio = intake["rps"] / base["rps"]
        print(f"\n[{backend}]")
        for name in ("baseline", "intake"):
            r = f[name]
            print(
                f"  {name:9} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  errors {r['errors']}"
            )
        print(f"  intake / bare-insert baseline: {ratio:.2f}  (goal >= 0.50)")
        for name in ("waiter", "waiter_cross"):
            if name in f:
                w = f[name]
                label = "waiter (same process)" if name == "waiter" else "waiter (other replica)"
                print(
                    f"  {label:24} p50 {w['p50_ms']:5.1f} ms  p99 {w['p99_ms']:5.1f} ms  max {w['max_ms']:5.1f} ms  (goal p99 < 50 ms)"
                )
        rows.append((backend, base["rps"], intake["rps"], ratio, f["waiter"]["p99_ms"]))
    print("\nsummary: backend  baseline req/s  intake req/s  ratio  waiter p99 ms")
    for backend, b, i, r, w in rows:
        print(f"         {backend:8} {b:14.0f} {i:13.0f} {r:6.2f} {w:13.1f}")
    if args.json:
        args.json.write_text(json.dumps(every, default=float, indent=1))


if __name__ == "__main__":
    main()
