"""Replica scaling benchmark: throughput of 1, 2 and 3 servers on one PostgreSQL.

    python bench/replicas.py [--seconds 8] [--connections 48] [--replicas 1,2,3] [--quick]
                             [--json PATH]

For each replica count, on a fresh PostgreSQL database: that many real
``countersign serve`` processes (``COUNTERSIGN_DATABASE_POOL_SIZE=8`` each, so
three fit in the server's connection limit beside other users), loaded by this
process with ``--connections`` workers spread round-robin over the replicas. Each
worker loops: create a request (``POST /v1/requests``, pending under the
``default`` rule) on one replica, then decide it on the *next* replica
(``POST /v1/requests/{id}/cancel``: the API's deciding write; votes come from
chat). A decision takes the request's row lock, writes its ledger entry and
notifies the other replicas (``pg_notify`` at commit), like a deciding vote.
The figure is operations per second (creates + decisions) and its ratio to one
replica measured in the same run, with how busy the machine's CPUs were.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp

SELF = Path(__file__).resolve()
sys.path.insert(0, str(SELF.parents[1]))

from bench.common import client_token, free_port, pct, process, server_env  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
BENCH_DB = "countersign_bench_replicas"
SECRET = "bench-server-key-0123456789abcdef"
POOL = 8


def cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _body(i: int) -> dict[str, Any]:
    return {
        "action": "deploy.web",
        "resource": f"prod/web-{i}",
        "reason": "Roll out build 2026.11.21-1 to the web tier (CHG-1234)",
        "requested_by": "dana@example.com",
        "params": {"image": "web:2026.11.21-1", "replicas": 12, "canary": True},
        "context": {"ticket": "CHG-1234", "agent": "deploy-copilot"},
    }


async def load(bases: list[str], token: str, seconds: float, connections: int) -> dict[str, Any]:
    """Create-then-decide loops for ``seconds``; operations/s and latencies."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(10**9))
    headers = {"Authorization": f"Bearer {token}"}
    conn = aiohttp.TCPConnector(limit=connections * 2)
    async with aiohttp.ClientSession(connector=conn, headers=headers) as http:
        deadline = time.perf_counter() + seconds

        async def worker(w: int) -> None:
            nonlocal errors
            here, there = bases[w % len(bases)], bases[(w + 1) % len(bases)]
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                async with http.post(here + "/v1/requests", json=_body(next(counter))) as resp:
                    body = await resp.json()
                latencies.append(time.perf_counter() - began)
                if resp.status != 201:
                    errors += 1
                    continue
                began = time.perf_counter()
                async with http.post(
                    f"{there}/v1/requests/{body['id']}/cancel", json={"reason": "bench"}
                ) as resp:
                    await resp.read()
                latencies.append(time.perf_counter() - began)
                if resp.status != 200:
                    errors += 1

        busy0, total0 = cpu_busy()
        began = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(connections)))
        elapsed = time.perf_counter() - began
        busy1, total1 = cpu_busy()
    return {
        "ops": len(latencies) / elapsed,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "errors": errors,
        "cpu_busy": (busy1 - busy0) / max(1, total1 - total0),
    }


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _ledger_ok(url: str) -> bool:
    from storage import create_engine
    from storage import ledger as chain

    engine = create_engine(url)
    try:
        return (await chain.verify_engine(engine)).ok
    finally:
        await engine.dispose()


async def bench(replicas: int, seconds: float, connections: int) -> dict[str, Any]:
    """One replica count on a fresh database."""
    await _pg(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    await _pg(f'CREATE DATABASE "{BENCH_DB}"')
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{BENCH_DB}"
    env = server_env(
        COUNTERSIGN_DATABASE_URL=url,
        COUNTERSIGN_SECRET_KEY=SECRET,
        COUNTERSIGN_DATABASE_POOL_SIZE=str(POOL),
    )
    token = client_token(env)  # also migrates, before any replica starts
    with tempfile.TemporaryDirectory() as tmp_dir:
        async with AsyncExitStack() as stack:
            bases = []
            for n in range(replicas):
                port = free_port()
                base = f"http://127.0.0.1:{port}"
                argv = [sys.executable, "-m", "countersign", "serve", "--port", str(port)]
                await stack.enter_async_context(
                    process(argv, env, base, Path(tmp_dir) / f"replica{n}.log")
                )
                bases.append(base)
            await load(bases, token, 1.0, connections)  # warm-up: pools, caches
            figures = await load(bases, token, seconds, connections)
    figures["ledger_ok"] = await _ledger_ok(url)
    await _pg(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    return figures


def main() -> None:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=48)
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--quick", action="store_true", help="4 s per replica count")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    seconds = 4.0 if args.quick else args.seconds
    counts = [int(x) for x in args.replicas.split(",")]
    print(
        f"replicas on one PostgreSQL: {seconds:g}s each, {args.connections} connections, "
        f"{os.cpu_count()} cores"
    )
    results: dict[str, Any] = {}
    for n in counts:
        print(f"  {n} replica(s) ...", flush=True)
        results[str(n)] = asyncio.run(bench(n, seconds, args.connections))
    one = results[str(counts[0])]["ops"]
    print("\nreplicas  ops/s  vs 1  p50 ms  p99 ms  errors  machine CPU busy  ledger")
    for n in counts:
        r = results[str(n)]
        r["vs_first"] = r["ops"] / one
        print(
            f"{n:8} {r['ops']:6.0f} {r['vs_first']:5.2f} {r['p50_ms']:7.1f} {r['p99_ms']:7.1f} "
            f"{r['errors']:7} {r['cpu_busy']:17.0%}  {'ok' if r['ledger_ok'] else 'BROKEN'}"
        )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average {load}")
    if args.json:
        args.json.write_text(json.dumps(results, default=float, indent=1))


if __name__ == "__main__":
    main()
