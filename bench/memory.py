"""Memory benchmark: a server's RSS per 10,000 pending requests (no pass/fail).

    python bench/memory.py [--backend sqlite|postgres|both] [--pending 10000] [--quick]
                           [--json PATH]

Per backend, one real ``countersign serve`` process (its RSS from /proc):
1. baseline: the idle server, after a warm-up (200 requests created, waited on,
   listed), so imports, pools and caches are already paid for;
2. the same server once ``--pending`` more requests are pending (created over
   the API: in the database, nothing held per request in the process);
3. the same again while every one of them has a long-poll waiting on it
   (``GET /v1/requests/{id}/wait?timeout=60``, one connection each, counted by
   the ``countersign_waiters`` gauge): what a fleet of blocked agents costs.
The server's CPU while the long-polls wait is printed too, measured once their
first reads are done (the safety net is one status query per 500 waiters every
5 s). Figures are the RSS growth over the idle server, scaled to 10,000 requests, and
the ratio of the loaded server's RSS to the idle one's. RSS only grows here
(Python rarely hands freed memory back), so these are high-water marks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

SELF = Path(__file__).resolve()
sys.path.insert(0, str(SELF.parents[1]))

from bench.common import client_token, free_port, process, server_env  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
BENCH_DB = "countersign_bench_memory"
SECRET = "bench-server-key-0123456789abcdef"
ADMIN = "bench-admin-token-0123456789abcdef"
PER = 10_000
SETTLE_SECONDS = 8.0  # after the last long-poll registered, before CPU is measured


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def settled_rss(pid: int, seconds: float = 2.0) -> float:
    """RSS after ``seconds`` of quiet (the last of a few readings)."""
    value = 0.0
    for _ in range(int(seconds / 0.5)):
        await asyncio.sleep(0.5)
        value = rss_mib(pid)
    return value


def _body(i: int) -> dict[str, Any]:
    return {
        "action": "deploy.web",
        "resource": f"prod/web-{i}",
        "reason": "Roll out build 2026.11.21-1 to the web tier (CHG-1234)",
        "requested_by": "dana@example.com",
        "params": {"image": "web:2026.11.21-1", "replicas": 12, "canary": True},
        "context": {"ticket": "CHG-1234", "agent": "deploy-copilot"},
    }


async def create(base: str, token: str, count: int, first: int, connections: int = 32) -> list[str]:
    """``count`` pending requests over the API; their ids."""
    ids: list[str] = []
    numbers = iter(range(first, first + count))
    headers = {"Authorization": f"Bearer {token}"}
    conn = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=conn, headers=headers) as http:

        async def worker() -> None:
            for i in numbers:
                async with http.post(base + "/v1/requests", json=_body(i)) as resp:
                    body = await resp.json()
                    assert resp.status == 201, body
                    assert body["status"] == "pending", body
                    ids.append(body["id"])

        await asyncio.gather(*(worker() for _ in range(connections)))
    return ids


async def waiters(base: str) -> int:
    """The server's ``countersign_waiters`` gauge."""
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as http,
        http.get(base + "/metrics") as resp,
    ):
        text = await resp.text()
    match = re.search(r"^countersign_waiters\S* (\S+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else -1


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def bench(backend: str, pending: int) -> dict[str, Any]:
    """Idle, pending and waited-on RSS of one server."""
    figures: dict[str, Any] = {"pending": pending}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp / 'memory.db'}"
        else:
            await _pg(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
            await _pg(f'CREATE DATABASE "{BENCH_DB}"')
            url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{BENCH_DB}"
        env = server_env(
            COUNTERSIGN_DATABASE_URL=url,
            COUNTERSIGN_SECRET_KEY=SECRET,
            COUNTERSIGN_ADMIN_TOKEN=ADMIN,
        )
        token = client_token(env)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "countersign", "serve", "--port", str(port)]
        async with process(argv, env, base, tmp / "server.log") as proc:
            figures["start_mib"] = rss_mib(proc.pid)
            # Warm-up: every path the measured phases take, once over.
            warm = await create(base, token, 200, 0)
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
                for request_id in warm:
                    async with http.get(f"{base}/v1/requests/{request_id}/wait?timeout=0.01"):
                        pass
                async with http.get(f"{base}/v1/requests?limit=100"):
                    pass
            await waiters(base)
            cpu = cpu_seconds(proc.pid)
            began = time.monotonic()
            figures["idle_mib"] = idle = await settled_rss(proc.pid, 5.0)
            figures["idle_cpu"] = (cpu_seconds(proc.pid) - cpu) / (time.monotonic() - began)
            print(f"  [{backend}] idle (after warm-up): {idle:.1f} MiB", flush=True)

            began = time.perf_counter()
            ids = await create(base, token, pending, 1000)
            figures["pending_mib"] = await settled_rss(proc.pid)
            print(
                f"  [{backend}] +{pending:,} pending (created in {time.perf_counter() - began:.1f}s):"
                f" {figures['pending_mib']:.1f} MiB",
                flush=True,
            )

            # One long-poll per pending request, each on its own connection.
            conn = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=120)
            async with aiohttp.ClientSession(
                connector=conn, timeout=timeout, headers={"Authorization": f"Bearer {token}"}
            ) as http:

                async def poll(request_id: str) -> int:
                    async with http.get(f"{base}/v1/requests/{request_id}/wait?timeout=60") as r:
                        await r.read()
                        return r.status

                tasks = []
                for n, request_id in enumerate(ids):
                    tasks.append(asyncio.create_task(poll(request_id)))
                    if n % 200 == 199:
                        await asyncio.sleep(0.05)  # do not flood the listen backlog
                deadline = time.monotonic() + 50
                held = await waiters(base)
                while held < pending and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    held = await waiters(base)
                figures["waiters"] = held
                # A waiter registers before its first read: let those reads finish
                # (seconds on SQLite) so the figure is the cost of waiting itself.
                await asyncio.sleep(SETTLE_SECONDS)
                cpu = cpu_seconds(proc.pid)
                began = time.monotonic()
                figures["waiting_mib"] = await settled_rss(proc.pid, 10.0)
                figures["waiting_cpu"] = (cpu_seconds(proc.pid) - cpu) / (time.monotonic() - began)
                print(
                    f"  [{backend}] +{held:,} long-polls held: {figures['waiting_mib']:.1f} MiB, "
                    f"server CPU {figures['waiting_cpu']:.0%} of a core while they wait",
                    flush=True,
                )
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    if backend == "postgres":
        await _pg(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    scale = PER / pending
    figures["per10k_pending_mib"] = (figures["pending_mib"] - figures["idle_mib"]) * scale
    figures["per10k_waiting_mib"] = (figures["waiting_mib"] - figures["idle_mib"]) * scale
    figures["ratio_waiting_to_idle"] = figures["waiting_mib"] / figures["idle_mib"]
    return figures


def main() -> None:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--pending", type=int, default=PER)
    parser.add_argument("--quick", action="store_true", help="SQLite only, 5,000 pending")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    if args.quick:
        backends, args.pending = ["sqlite"], 5_000
    print(f"memory: {args.pending:,} pending requests, {os.cpu_count()} cores")
    results: dict[str, Any] = {}
    for backend in backends:
        f = results[backend] = asyncio.run(bench(backend, args.pending))
        print(
            f"  [{backend}] per 10,000 pending: +{f['per10k_pending_mib']:.1f} MiB in the database "
            f"only; +{f['per10k_waiting_mib']:.1f} MiB with a long-poll on each "
            f"({f['waiting_mib']:.0f} vs {f['idle_mib']:.0f} MiB idle: "
            f"{f['ratio_waiting_to_idle']:.2f}x)",
            flush=True,
        )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average {load}")
    if args.json:
        args.json.write_text(json.dumps(results, default=float, indent=1))


if __name__ == "__main__":
    main()
