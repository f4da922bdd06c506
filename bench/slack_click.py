"""Slack click-to-ack benchmark: prints figures and ratios (no pass/fail).

    python bench/slack_click.py [--seconds 8] [--clickers 50] [--requests 200]

On this machine, in the same run, against the same in-process fake Slack Web API:
1. baseline: a bare bolt ``AsyncApp`` on aiohttp whose listener only acks a
   signed ``block_actions`` click (bolt's own signature check included);
2. countersign: the real ``countersign serve`` (SQLite) taking Approve clicks
   on real pending requests: signature check, ack, then in the background the
   clicker's e-mail (``users.info``, cached), the vote under the request's lock
   with its ledger entry, and the card update job.
Both in their own process, loaded by ``--clickers`` concurrent clickers over
loopback. Each click is a distinct (person, request) pair, so every click is a
real vote. Besides click-to-ack latency and clicks/s, the run reports how long
the votes behind the acks took to land (votes/s), since acking early must not
hide a backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp

SELF = Path(__file__).resolve()
ROOT = SELF.parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import client_token, free_port, pct, process, server_env  # noqa: E402
from tests.fakes import slack_requests as slack_req  # noqa: E402
from tests.fakes.slack_api import FakeSlack  # noqa: E402

SECRET = "bench-slack-signing-secret"
TOKEN = "xoxb-bench"
SERVER_KEY = "bench-server-key-0123456789abcdef"
ACTION = "countersign.approve"


# -- the baseline (subprocess: python bench/slack_click.py --bare PORT API_URL) ----------


def run_bare(port: int, api_url: str) -> None:
    """A bolt app that only acks ``countersign.approve`` clicks."""
    from aiohttp import web
    from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
    from slack_bolt.async_app import AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient

    async def make() -> web.Application:
        bolt = AsyncApp(
            client=AsyncWebClient(token=TOKEN, base_url=api_url),
            signing_secret=SECRET,
            process_before_response=True,
        )

        @bolt.action(ACTION)
        async def approve(ack: Any) -> None:
            await ack()

        async def handle(request: web.Request) -> web.Response:
            return await to_aiohttp_response(
                await bolt.async_dispatch(await to_bolt_request(request))
            )

        app = web.Application()
        app.router.add_post("/slack/events", handle)
        return app

    web.run_app(make(), host="127.0.0.1", port=port, print=None)


# -- load ----------------------------------------------------------------------------


async def clicks(
    url: str, pairs: Iterable[tuple[str, str]], seconds: float, clickers: int
) -> dict[str, float]:
    """Signed Approve clicks from ``clickers`` workers, one (user, request) pair each click."""
    latencies: list[float] = []
    errors = 0
    source = iter(pairs)
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clickers)) as http:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                pair = next(source, None)
                if pair is None:
                    return
                user, request_id = pair
                body, headers = slack_req.block_actions(
                    secret=SECRET, action_id=ACTION, value=request_id, user_id=user
                )
                start = time.perf_counter()
                async with http.post(url + "/slack/events", data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clickers)))
        elapsed = time.perf_counter() - began
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(latencies, 0.50) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "errors": errors,
        "count": len(latencies),
        "elapsed": elapsed,
    }


def _policy(tmp: Path, users: list[str]) -> Path:
    crowd = ", ".join(f"{u.lower()}@example.com" for u in users)
    path = tmp / "policy.yaml"
    path.write_text(
        "groups:\n"
        f"  crowd: [{crowd}]\n"
        "rules:\n"
        "  - name: crowd\n"
        "    match: {}\n"
        "    approvers: [group:crowd]\n"
        f"    quorum: {len(users)}\n"
        f"    deny_quorum: {len(users)}\n"
        "    ttl: 2h\n"
        '    notify: {slack: ["#approvals"]}\n'
    )
    return path


async def _votes(env: dict[str, str]) -> int:
    from sqlalchemy import text

    from storage import create_engine

    engine = create_engine(env["COUNTERSIGN_DATABASE_URL"])
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM votes"))).scalar_one())
    finally:
        await engine.dispose()


async def bench(seconds: float, clickers: int, requests: int) -> dict[str, Any]:
    """Both figures, with one fake Slack."""
    users = [f"U0C{i:03d}" for i in range(clickers)]
    figures: dict[str, Any] = {}
    async with FakeSlack(token=TOKEN) as slack:
        for user in users:
            slack.add_user(user, f"{user.lower()}@example.com")
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            argv = [sys.executable, str(SELF), "--bare", str(port), slack.api_url]
            print("  baseline (bare bolt ack) ...", flush=True)
            endless = ((u, f"req_{i}") for i in itertools.count() for u in users)
            async with process(argv, dict(os.environ), base, tmp / "bare.log"):
                figures["baseline"] = await clicks(base, endless, seconds, clickers)

            env = server_env(
                COUNTERSIGN_DATABASE_URL=f"sqlite+aiosqlite:///{tmp / 'bench.db'}",
                COUNTERSIGN_SECRET_KEY=SERVER_KEY,
                COUNTERSIGN_POLICY=str(_policy(tmp, users)),
                SLACK_BOT_TOKEN=TOKEN,
                SLACK_SIGNING_SECRET=SECRET,
                SLACK_API_URL=slack.api_url,
            )
            token = client_token(env)
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            argv = [sys.executable, "-m", "countersign", "serve", "--port", str(port)]
            print(f"  countersign (creating {requests} requests) ...", flush=True)
            async with process(argv, env, base, tmp / "server.log"):
                ids = []
                async with aiohttp.ClientSession() as http:
                    for i in range(requests):
                        body = {
                            "action": "deploy.web",
                            "resource": f"prod/web{i}",
                            "reason": "bench",
                        }
                        async with http.post(
                            base + "/v1/requests",
                            json=body,
                            headers={"Authorization": f"Bearer {token}"},
                        ) as resp:
                            assert resp.status == 201, await resp.text()
                            ids.append((await resp.json())["id"])
                await asyncio.sleep(2)  # let the card posts settle before the timed run
                # Each clicker works through the requests in turn, so a request gathers
                # votes from several people over the run, as real ones do.
                pairs = [
                    (u, ids[(i + k) % len(ids)])
                    for i in range(len(ids))
                    for k, u in enumerate(users)
                ]
                print("  countersign clicks ...", flush=True)
                began = time.perf_counter()
                figures["countersign"] = result = await clicks(base, pairs, seconds, clickers)
                deadline = time.perf_counter() + 120
                while (landed := await _votes(env)) < result["count"] - result["errors"]:
                    if time.perf_counter() > deadline:
                        break
                    await asyncio.sleep(0.2)
                figures["votes"] = {"count": landed, "seconds": time.perf_counter() - began}
    return figures


def main() -> None:
    """Parse arguments, run, print."""
    if len(sys.argv) == 4 and sys.argv[1] == "--bare":
        run_bare(int(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clickers", type=int, default=50)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    print(f"Slack click-to-ack, {args.clickers} concurrent clickers, {args.seconds:.0f} s each")
    figures = asyncio.run(bench(args.seconds, args.clickers, args.requests))
    base, ours, votes = figures["baseline"], figures["countersign"], figures["votes"]
    for name, f in (("bare bolt ack", base), ("countersign", ours)):
        print(
            f"  {name:14} {f['rps']:7.0f} clicks/s  p50 {f['p50_ms']:6.1f} ms  "
            f"p99 {f['p99_ms']:6.1f} ms  errors {f['errors']}"
        )
    ratio = ours["rps"] / base["rps"] if base["rps"] else float("nan")
    print(f"  countersign / bare-ack throughput: {ratio:.2f}  (goal >= 0.50)")
    print(f"  countersign click-to-ack p99: {ours['p99_ms']:.1f} ms  (goal < 100 ms)")
    rate = votes["count"] / votes["seconds"] if votes["seconds"] else float("nan")
    print(
        f"  votes behind the acks: {votes['count']} of {ours['count']} landed "
        f"{votes['seconds']:.1f} s after the first click ({rate:.0f} votes/s)"
    )
    print(json.dumps({"baseline": base, "countersign": ours, "votes": votes}, default=float))


if __name__ == "__main__":
    main()
