"""Teams invoke benchmark: prints figures and ratios (no pass/fail).

    python bench/teams_invoke.py [--seconds 8] [--users 50] [--requests 100]

On this machine, in the same run, against the same fake Bot Framework (token
issuer, OpenID metadata and Teams connector, in a thread of this process):
1. baseline: a bare botbuilder ``CloudAdapter`` bot, same JWT validation, that
   answers every ``adaptiveCard/action`` invoke with a static card;
2. countersign: the real ``countersign serve`` (SQLite) answering Approve
   invokes on real pending requests: JWT check, the clicker's e-mail
   (``TeamsInfo.get_member``, cached), the vote under the request's lock with
   its ledger entry, and the updated card as this viewer sees it.
Both in their own process, loaded by ``--users`` concurrent users over
loopback; each invoke is a distinct (person, request) pair, so each is a vote.
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
from tests.fakes import teams_activities as acts  # noqa: E402
from tests.fakes.teams_api import FakeBotFramework  # noqa: E402

APP_ID = "00000000-0000-4000-8000-0000000bench"
APP_PASSWORD = "bench-teams-password"
SERVER_KEY = "bench-server-key-0123456789abcdef"


# -- the baseline (subprocess: python bench/teams_invoke.py --bare PORT METADATA ISSUER) ----


def run_bare(port: int, metadata_url: str, issuer: str) -> None:
    """A bare botbuilder bot answering every invoke with one static card."""
    from aiohttp import web
    from botbuilder.core import InvokeResponse, TurnContext
    from botbuilder.core.teams import TeamsActivityHandler
    from botbuilder.integration.aiohttp import (
        CloudAdapter,
        ConfigurationBotFrameworkAuthentication,
    )
    from botbuilder.schema import AdaptiveCardInvokeResponse

    from bot.teams.auth import speed_up_retry_policy

    speed_up_retry_policy()  # the same msrest fix as ours, so the baseline is not handicapped

    class Config:
        APP_ID = globals()["APP_ID"]
        APP_PASSWORD = globals()["APP_PASSWORD"]
        TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL = metadata_url
        TO_BOT_FROM_CHANNEL_TOKEN_ISSUER = issuer

    card = {
        "type": "AdaptiveCard",
        "version": "1.5",
        "body": [{"type": "TextBlock", "text": "Thanks"}],
    }

    class Bare(TeamsActivityHandler):  # type: ignore[misc]
        async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse:
            body = AdaptiveCardInvokeResponse(
                status_code=200, type="application/vnd.microsoft.card.adaptive", value=card
            )
            return InvokeResponse(status=200, body=body)

    adapter = CloudAdapter(ConfigurationBotFrameworkAuthentication(Config()))
    bot = Bare()

    async def handle(request: web.Request) -> web.StreamResponse:
        return await adapter.process(request, bot)

    app = web.Application()
    app.router.add_post("/api/messages", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


# -- load ----------------------------------------------------------------------------


async def invokes(
    url: str,
    bf: FakeBotFramework,
    token: str,
    pairs: Iterable[tuple[str, str, str, str]],
    seconds: float,
    users: int,
) -> dict[str, float]:
    """Signed Approve invokes from ``users`` workers, one (user, request) pair each."""
    latencies: list[float] = []
    errors = 0
    source = iter(pairs)
    deadline = time.perf_counter() + seconds
    headers = acts.headers(token)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=users)) as http:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                pair = next(source, None)
                if pair is None:
                    return
                user, conversation, request_id, card_id = pair
                activity = acts.invoke_action(
                    "countersign.approve",
                    {"request_id": request_id},
                    app_id=APP_ID,
                    reply_to_id=card_id,
                    **bf.sender_kwargs(user),
                    **bf.conversation_kwargs(conversation),
                )
                body = json.dumps(activity)
                start = time.perf_counter()
                async with http.post(url + "/api/messages", data=body, headers=headers) as resp:
                    answer = await resp.read()
                    if resp.status != 200 or b"AdaptiveCard" not in answer:
                        errors += 1
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(users)))
        elapsed = time.perf_counter() - began
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(latencies, 0.50) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "errors": errors,
        "count": len(latencies),
    }


def _policy(tmp: Path, emails: list[str]) -> Path:
    path = tmp / "policy.yaml"
    path.write_text(
        "groups:\n"
        f"  crowd: [{', '.join(emails)}]\n"
        "rules:\n"
        "  - name: crowd\n"
        "    match: {}\n"
        "    approvers: [group:crowd]\n"
        f"    quorum: {len(emails)}\n"
        f"    deny_quorum: {len(emails)}\n"
        "    ttl: 2h\n"
        '    notify: {teams: ["Bench/General"]}\n'
    )
    return path


async def bench(seconds: float, users: int, requests: int) -> dict[str, Any]:
    """Both figures, with one fake Bot Framework."""
    figures: dict[str, Any] = {}
    async with FakeBotFramework(app_id=APP_ID, app_password=APP_PASSWORD) as bf:
        people = [f"29:user{i:03d}" for i in range(users)]
        for user in people:
            bf.add_user(user, f"{user[3:]}@example.com", user[3:])
        token = bf.sign_activity_token(bf.service_url)
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            argv = [
                sys.executable,
                str(SELF),
                "--bare",
                str(port),
                bf.openid_metadata_url,
                bf.issuer,
            ]
            print("  baseline (bare botbuilder invoke) ...", flush=True)
            endless = (
                (u, bf.personal_conversation_id(u), f"req_{i}", "1")
                for i in itertools.count()
                for u in people
            )
            async with process(argv, dict(os.environ), base, tmp / "bare.log"):
                figures["baseline"] = await invokes(base, bf, token, endless, seconds, users)

            env = server_env(
                COUNTERSIGN_DATABASE_URL=f"sqlite+aiosqlite:///{tmp / 'bench.db'}",
                COUNTERSIGN_SECRET_KEY=SERVER_KEY,
                COUNTERSIGN_POLICY=str(_policy(tmp, [f"{u[3:]}@example.com" for u in people])),
                MICROSOFT_APP_ID=APP_ID,
                MICROSOFT_APP_PASSWORD=APP_PASSWORD,
                TEAMS_OPENID_METADATA_URL=bf.openid_metadata_url,
                TEAMS_TOKEN_ISSUER=bf.issuer,
                TEAMS_LOGIN_URL=bf.login_url,
            )
            api_token = client_token(env)
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            argv = [sys.executable, "-m", "countersign", "serve", "--port", str(port)]
            print(f"  countersign (installing for {users} users, {requests} requests) ...")
            async with (
                process(argv, env, base, tmp / "server.log"),
                aiohttp.ClientSession() as http,
            ):
                channel = bf.add_channel("Bench", "General")  # the cards go to one channel
                activity = acts.installation_update(
                    app_id=APP_ID, **bf.sender_kwargs(people[0]), **bf.conversation_kwargs(channel)
                )
                async with http.post(
                    base + "/api/messages", data=json.dumps(activity), headers=acts.headers(token)
                ) as resp:
                    assert resp.status in (200, 201), await resp.text()
                for user in people:  # each user has the app too (a personal chat)
                    conversation = bf.personal_conversation_id(user)
                    activity = acts.installation_update(
                        app_id=APP_ID,
                        **bf.sender_kwargs(user),
                        **bf.conversation_kwargs(conversation),
                    )
                    async with http.post(
                        base + "/api/messages",
                        data=json.dumps(activity),
                        headers=acts.headers(token),
                    ) as resp:
                        assert resp.status in (200, 201), await resp.text()
                ids = []
                for i in range(requests):
                    body = {"action": "deploy.web", "resource": f"prod/web{i}", "reason": "bench"}
                    async with http.post(
                        base + "/v1/requests",
                        json=body,
                        headers={"Authorization": f"Bearer {api_token}"},
                    ) as resp:
                        assert resp.status == 201, await resp.text()
                        ids.append((await resp.json())["id"])
                await asyncio.sleep(3)  # let the card posts settle before the timed run
                # Each user works through the requests in turn (as in bench/slack_click.py).
                pairs = [
                    (u, bf.personal_conversation_id(u), ids[(i + k) % len(ids)], "1")
                    for i in range(len(ids))
                    for k, u in enumerate(people)
                ]
                print("  countersign invokes ...", flush=True)
                figures["countersign"] = await invokes(base, bf, token, pairs, seconds, users)
    return figures


def main() -> None:
    """Parse arguments, run, print."""
    if len(sys.argv) == 5 and sys.argv[1] == "--bare":
        run_bare(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    print(f"Teams invoke, {args.users} concurrent users, {args.seconds:.0f} s each")
    figures = asyncio.run(bench(args.seconds, args.users, args.requests))
    base, ours = figures["baseline"], figures["countersign"]
    for name, f in (("bare botbuilder", base), ("countersign", ours)):
        print(
            f"  {name:16} {f['rps']:7.0f} invokes/s  p50 {f['p50_ms']:6.1f} ms  "
            f"p99 {f['p99_ms']:6.1f} ms  errors {f['errors']}"
        )
    ratio = ours["rps"] / base["rps"] if base["rps"] else float("nan")
    print(f"  countersign / bare throughput: {ratio:.2f}  (goal >= 0.50)")
    print(f"  countersign invoke p99: {ours['p99_ms']:.1f} ms  (goal < 150 ms)")
    print(json.dumps(figures, default=float))


if __name__ == "__main__":
    main()
