"""Two problems the soak found, reproduced deterministically (fixed since; now regressions).

1. (fixed by "Chat worker re-reads after a sync and goes again if the request moved on")

Two chat jobs of one request run at the same time on two replicas: the first
(after vote 1) read the request while it was pending and is slow at Slack (a
thread reply that takes 6 s, inside the client's timeout); the second (after
vote 2, which decides) updates the card to "Approved" at once. Then the first
one carries on and updates the card with what it read: pending, buttons back.
No job is left to correct it, so the card stays stale for good.

2. (fixed by "Slack: a retry of a click that failed runs again") Slack's retry of a
click whose first delivery failed with 500 was answered 200 by the duplicate
filter without being processed: an acknowledged vote never recorded.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cards import slack as slack_cards
from countersign.crypto import SecretBox
from countersign.policy import load_policy
from countersign.service import ApprovalService
from storage import SqlStore, create_engine
from tests.fakes import slack_requests as slack_req
from tests.fakes.slack_api import FakeSlack, Message
from tests.fakes.teams_api import FakeBotFramework

from .harness import (
    APPROVERS,
    REQUESTER,
    SERVER_SECRET,
    SLACK_CHANNEL,
    SLACK_IDS,
    SLACK_SECRET,
    SLACK_TOKEN,
    TEAMS_APP_ID,
    TEAMS_APP_PASSWORD,
    Server,
    server_env,
    write_policy,
)

pytestmark = [pytest.mark.postgres, pytest.mark.soak]


async def _until(check: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} not within {within} s"
        await asyncio.sleep(0.05)


def _card(slack: FakeSlack, request_id: str) -> Message | None:
    for (channel, _ts), message in list(slack.messages.items()):
        top = channel == SLACK_CHANNEL and message.thread_ts is None
        if top and request_id in json.dumps(message.blocks):
            return message
    return None


def _buttons(message: Message) -> list[str]:
    return [
        e.get("action_id", "")
        for b in message.blocks
        if b.get("type") == "actions"
        for e in b.get("elements", [])
        if e.get("action_id") != slack_cards.ACTION_DETAILS
    ]


async def test_a_slow_older_sync_does_not_overwrite_the_final_card(
    soak_database: tuple[str, str], tmp_path: Path
) -> None:
    database_url, _ = soak_database
    policy = write_policy(tmp_path)
    engine = create_engine(database_url)
    try:
        service = ApprovalService(
            SqlStore(engine), load_policy(policy), sealer=SecretBox(SERVER_SECRET)
        )
        _client, token, _ = await service.add_client("stale-card", "owen@example.com")
    finally:
        await engine.dispose()
    servers: list[Server] = []
    async with (
        FakeSlack(token=SLACK_TOKEN) as slack,
        FakeBotFramework(app_id=TEAMS_APP_ID, app_password=TEAMS_APP_PASSWORD) as bf,
        aiohttp.ClientSession() as http,
    ):
        try:
            for email in APPROVERS:
                slack.add_user(SLACK_IDS[email], email, name=email.split("@")[0])
            env = server_env(database_url, policy, slack.api_url, bf)
            servers = [Server(name, env, tmp_path) for name in ("a", "b")]
            for server in servers:
                server.start()
            await asyncio.gather(*(s.ready() for s in servers))
            a, b = servers
            body = {
                "action": "deploy.service",
                "resource": "prod/stale-card",
                "reason": "stale card reproduction",
                "requested_by": REQUESTER,
                "params": {"version": 1},
            }
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(a.url + "/v1/requests", json=body, headers=headers) as resp:
                assert resp.status == 201, await resp.text()
                request_id = (await resp.json())["id"]
            await _until(lambda: _card(slack, request_id) is not None, 20, "the card")
            await asyncio.sleep(2)  # the posting job has finished and remembered the card
            card = _card(slack, request_id)
            assert card is not None

            async def click(server: Server, email: str) -> None:
                user = SLACK_IDS[email]
                data, signed = slack_req.block_actions(
                    secret=SLACK_SECRET,
                    action_id=slack_cards.ACTION_APPROVE,
                    value=request_id,
                    user_id=user,
                    user_name=user.lower(),
                    channel_id=SLACK_CHANNEL,
                    message_ts=card.ts,
                    message=card.as_payload(),
                )
                async with http.post(server.url + "/slack/events", data=data, headers=signed) as r:
                    assert r.status == 200

            # Vote 1 on A: A's sync job posts the vote's thread reply, which hangs 6 s.
            posts = len(slack.calls_to("chat.postMessage"))
            slack.hang("chat.postMessage", seconds=6, times=1)
            await click(a, APPROVERS[0])
            await _until(
                lambda: len(slack.calls_to("chat.postMessage")) > posts, 10, "A's slow reply"
            )
            # Vote 2 on B decides; B's own job brings the card to "Approved" at once.
            await click(b, APPROVERS[1])
            await _until(
                lambda: not _buttons(slack.messages[(card.channel, card.ts)]),
                15,
                "the final card",
            )
            # A's job finishes after its slow reply; then nothing else should touch the card.
            await asyncio.sleep(10)
            final = slack.messages[(card.channel, card.ts)]
            states = [("buttons" if _buttons(final) else "final", final.history[-1].via)]
            assert not _buttons(final), f"the card went back to pending: {states}"
            assert "Approved" in json.dumps(final.blocks, ensure_ascii=False)
        finally:
            for server in servers:
                server.stop()


async def test_a_slack_retry_of_a_failed_click_is_processed(
    soak_database: tuple[str, str], tmp_path: Path
) -> None:
    database_url, _ = soak_database
    policy = write_policy(tmp_path)
    engine = create_engine(database_url)
    try:
        service = ApprovalService(
            SqlStore(engine), load_policy(policy), sealer=SecretBox(SERVER_SECRET)
        )
        _client, token, _ = await service.add_client("lost-click", "owen@example.com")
    finally:
        await engine.dispose()
    server: Server | None = None
    async with (
        FakeSlack(token=SLACK_TOKEN) as slack,
        FakeBotFramework(app_id=TEAMS_APP_ID, app_password=TEAMS_APP_PASSWORD) as bf,
        aiohttp.ClientSession() as http,
    ):
        try:
            for email in APPROVERS:
                slack.add_user(SLACK_IDS[email], email, name=email.split("@")[0])
            server = Server("a", server_env(database_url, policy, slack.api_url, bf), tmp_path)
            server.start()
            await server.ready()
            body = {
                "action": "deploy.service",
                "resource": "prod/lost-click",
                "reason": "lost click reproduction",
                "requested_by": REQUESTER,
                "params": {"version": 1},
            }
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(server.url + "/v1/requests", json=body, headers=headers) as resp:
                assert resp.status == 201, await resp.text()
                request_id = (await resp.json())["id"]
            await _until(lambda: _card(slack, request_id) is not None, 20, "the card")
            card = _card(slack, request_id)
            assert card is not None
            user = SLACK_IDS[APPROVERS[0]]
            data, signed = slack_req.block_actions(
                secret=SLACK_SECRET,
                action_id=slack_cards.ACTION_APPROVE,
                value=request_id,
                user_id=user,
                user_name=user.lower(),
                channel_id=SLACK_CHANNEL,
                message_ts=card.ts,
                message=card.as_payload(),
            )
            # The first delivery fails: Slack's users.info answers 500 (and so do the retries).
            slack.fail("users.info", status=500, times=3)
            async with http.post(server.url + "/slack/events", data=data, headers=signed) as r:
                assert r.status == 500
            # Slack retries the same body; this time everything works.
            retry = {**signed, "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_error"}
            async with http.post(server.url + "/slack/events", data=data, headers=retry) as r:
                acked = r.status == 200
            request = await _request(http, server, token, request_id)
            voters = [v["voter"] for v in request["votes"]]
            assert not acked or APPROVERS[0] in voters, (
                f"the retry was acknowledged (200) but the vote is not recorded: {voters}"
            )
        finally:
            if server is not None:
                server.stop()


async def _request(
    http: aiohttp.ClientSession, server: Server, token: str, request_id: str
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.get(f"{server.url}/v1/requests/{request_id}", headers=headers) as resp:
        assert resp.status == 200
        return dict(await resp.json())
