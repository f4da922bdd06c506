"""Decision-to-callback benchmark: prints figures and ratios (no pass/fail).

    python bench/callbacks.py [--backend sqlite|postgres|both] [--samples 200] [--quick]
                              [--json PATH]

Per backend, on this machine:
1. a receiver in its own process (``--receiver PORT SECRET``): a bare aiohttp app
   that checks ``Countersign-Signature`` on the raw body (as receivers should)
   and notes when each POST arrived (``time.monotonic()``, one clock for every
   process on Linux);
2. baseline: this process POSTs a body of the same size, signed the same way,
   to that receiver: one bare aiohttp POST between two local processes;
3. countersign: a real server (``create_app``, in this process, as
   ``bench/intake.py`` does for waiters) with ``COUNTERSIGN_ALLOW_PRIVATE_CALLBACKS``
   on. Each sample is a request with a ``callback_url`` on the receiver, decided
   by two approvals cast through the server's own service (as Slack and Teams
   do). Latency runs from the return of the deciding vote (its transaction has
   committed) to the signed POST's arrival at the receiver: the outbox row
   written in that transaction, the worker woken by the in-process listener,
   the claim (a write transaction), the destination check, signing, the POST.
Samples are spaced out (one at a time), so this is latency, not throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

SELF = Path(__file__).resolve()
sys.path.insert(0, str(SELF.parents[1]))

from bench.common import free_port, pct, process, server_env  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
BENCH_DB = "countersign_bench_callbacks"
SECRET = "bench-server-key-0123456789abcdef"


# -- the receiver (python bench/callbacks.py --receiver PORT SECRET) -------------------------


def run_receiver(port: int, secret: str) -> None:
    """Note the arrival time of every signed POST; ``GET /times`` returns them."""
    from aiohttp import web

    from countersign.callbacks.signing import verify_signature

    arrived: dict[str, float] = {}
    bad = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal bad
        at = time.monotonic()
        raw = await request.read()
        header = request.headers.get("Countersign-Signature", "")
        if not verify_signature(secret, header, raw, now=int(time.time())):
            bad += 1
            return web.Response(status=401)
        body = json.loads(raw)
        arrived.setdefault(str(body.get("id")), at)
        return web.Response(status=204)

    async def times(_request: web.Request) -> web.Response:
        return web.json_response({"arrived": arrived, "bad": bad})

    async def root(_request: web.Request) -> web.Response:
        return web.Response(text="receiver")

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/times", times)
    app.router.add_get("/", root)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


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
        return f"sqlite+aiosqlite:///{tmp / f'callbacks-{time.time_ns()}.db'}"
    await _pg(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    await _pg(f'CREATE DATABASE "{BENCH_DB}"')
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{BENCH_DB}"


def _body(i: int, hook: str) -> dict[str, Any]:
    return {
        "action": "db.export",
        "resource": f"prod/customers-{i}",
        "reason": "Quarterly churn analysis for finance (FIN-42)",
        "requested_by": "dana@example.com",
        "params": {"table": "customers", "columns": ["id", "plan"], "rows": 120000},
        "context": {"ticket": "FIN-42", "agent": "analytics-copilot"},
        "callback_url": hook,
    }


def _summary(latencies: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in latencies]
    return {
        "p50_ms": pct(ms, 0.50),
        "p99_ms": pct(ms, 0.99),
        "max_ms": max(ms) if ms else float("nan"),
        "count": len(ms),
    }


async def _arrivals(http: aiohttp.ClientSession, receiver: str) -> dict[str, Any]:
    async with http.get(receiver + "/times") as resp:
        return dict(await resp.json())


async def bench(backend: str, samples: int, gap: float) -> dict[str, Any]:
    """Baseline and countersign figures for one backend."""
    from aiohttp.test_utils import TestServer

    from countersign.callbacks.signing import signature_header
    from countersign.core import RequestSpec
    from countersign.policy import EXAMPLE_POLICY_PATH, load_policy
    from countersign.server import SERVICE, create_app
    from countersign.settings import Settings

    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        url = await fresh_database(backend, tmp)
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, database_url=url, secret_key=SECRET, allow_private_callbacks=True
        )
        app = create_app(settings, load_policy(EXAMPLE_POLICY_PATH))
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        try:
            service = app[SERVICE]
            client, _token, secret = await service.add_client(f"cb{time.time_ns()}", None)
            assert secret is not None, "no callback secret: is the server key set?"
            port = free_port()
            receiver = f"http://127.0.0.1:{port}"
            hook = receiver + "/hook"
            argv = [sys.executable, str(SELF), "--receiver", str(port), secret]
            async with (
                process(argv, server_env(), receiver, tmp / "receiver.log"),
                aiohttp.ClientSession() as http,
            ):
                # Warm-up: the first delivery opens the worker's HTTP session.
                warm = await service.create_request(client, RequestSpec(**_body(-1, hook)))
                await service.cast_vote(warm.request.id, "alice@example.com", "slack", "approve")
                await service.cast_vote(warm.request.id, "carol@example.com", "teams", "approve")
                await asyncio.sleep(0.5)

                # Countersign: decide, note when the deciding vote returned.
                decided: dict[str, float] = {}
                vote_ms: list[float] = []
                for i in range(samples):
                    made = await service.create_request(client, RequestSpec(**_body(i, hook)))
                    request_id = made.request.id
                    await service.cast_vote(request_id, "alice@example.com", "slack", "approve")
                    began = time.monotonic()
                    result = await service.cast_vote(
                        request_id, "carol@example.com", "teams", "approve"
                    )
                    decided[request_id] = time.monotonic()
                    vote_ms.append((decided[request_id] - began) * 1000)
                    assert result.decided, result
                    await asyncio.sleep(gap)
                deadline = time.monotonic() + 15
                while True:
                    got = await _arrivals(http, receiver)
                    if all(k in got["arrived"] for k in decided) or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                arrived = got["arrived"]
                lat = [arrived[k] - t for k, t in decided.items() if k in arrived]
                figures["countersign"] = _summary(lat)
                figures["countersign"]["missing"] = len(decided) - len(lat)
                figures["countersign"]["bad_signatures"] = got["bad"]
                figures["countersign"]["deciding_vote_p50_ms"] = pct(vote_ms, 0.5)

                # Baseline: the same receiver, a body of the same size, signed the same way.
                async with http.get(
                    str(server.make_url(f"/v1/requests/{next(iter(decided))}")),
                    headers={"Authorization": f"Bearer {_token}"},
                ) as resp:
                    template = await resp.json()
                sent: dict[str, float] = {}
                for i in range(samples):
                    key = f"baseline-{i}"
                    raw = json.dumps({**template, "id": key}).encode()
                    headers = {
                        "Content-Type": "application/json",
                        "Countersign-Signature": signature_header(secret, raw, int(time.time())),
                    }
                    sent[key] = time.monotonic()
                    async with http.post(hook, data=raw, headers=headers) as resp:
                        await resp.read()
                    await asyncio.sleep(gap)
                arrived = (await _arrivals(http, receiver))["arrived"]
                figures["baseline"] = _summary(
                    [arrived[k] - t for k, t in sent.items() if k in arrived]
                )
        finally:
            await server.close()
    if backend == "postgres":
        await _pg(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    return figures


def main() -> None:
    """Parse arguments, run, print."""
    if len(sys.argv) == 4 and sys.argv[1] == "--receiver":
        run_receiver(int(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between samples")
    parser.add_argument("--quick", action="store_true", help="100 samples")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    samples = 100 if args.quick else args.samples
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    print(f"decision-to-callback: {samples} samples per backend, {os.cpu_count()} cores")
    results: dict[str, Any] = {}
    for backend in backends:
        print(f"  [{backend}] ...", flush=True)
        f = asyncio.run(bench(backend, samples, args.gap))
        results[backend] = f
        base, ours = f["baseline"], f["countersign"]
        print(f"\n[{backend}]")
        for name, r in (("bare POST", base), ("countersign", ours)):
            print(
                f"  {name:12} p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                f"max {r['max_ms']:6.2f} ms  ({r['count']} received)"
            )
        print(
            f"  callback p99 / bare POST p99: {ours['p99_ms'] / base['p99_ms']:.1f}x  "
            f"(deciding vote itself: p50 {ours['deciding_vote_p50_ms']:.1f} ms; "
            f"missing {ours['missing']}, bad signatures {ours['bad_signatures']})"
        )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average {load}")
    if args.json:
        args.json.write_text(json.dumps(results, default=float, indent=1))


if __name__ == "__main__":
    main()
