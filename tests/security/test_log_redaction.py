"""No secret ever reaches a log line: every logger at DEBUG, through every flow that holds one.

Secrets: the Slack bot token and signing secret, the Teams app password, the
access tokens the bot fetches and the tokens the Connector sends, API bearer
tokens (client and admin), callback secrets, the server key and the receipts'
private key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from cards import slack as slack_cards
from cards import teams as teams_cards
from countersign.receipts import RECEIPTS
from countersign.server import SERVICE
from tests.api.conftest import ADMIN_TOKEN, SECRET_KEY, running
from tests.fakes import slack_requests as slack_req
from tests.fakes import teams_activities as acts
from tests.teams.conftest import APP_ID, APP_PASSWORD, SLACK_SECRET, SLACK_TOKEN, TeamsWorld
from tests.teams.conftest import world as world  # the fixture


def _private_pem(app: web.Application) -> list[str]:
    found = []
    for key in app[RECEIPTS].keys:
        if key.private is not None:
            pem = key.private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode()
            found.append(pem.splitlines()[1])  # the base64 body
            raw = key.private.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            found.append(raw.hex())
    return found


def _leaks(caplog: pytest.LogCaptureFixture, secrets: dict[str, str]) -> list[str]:
    lines = [caplog.text]
    for record in caplog.records:
        lines.append(record.getMessage())
        lines.append(repr(record.args))
        lines.append(record.exc_text or "")
    text = "\n".join(lines)
    return [name for name, value in secrets.items() if value and value in text]


@pytest.fixture
def everything_logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in (
        "aiohttp.access",
        "aiohttp.server",
        "slack_sdk",
        "slack_bolt",
        "msrest",
        "botbuilder",
        "botframework",
        "urllib3",
        "countersign",
        "asyncio",
    ):
        logging.getLogger(name).setLevel(logging.DEBUG)
    return caplog


async def test_slack_teams_and_api_flows_log_no_secret(
    everything_logged: pytest.LogCaptureFixture, world: TeamsWorld
) -> None:
    caplog = everything_logged
    request_id = await world.create()
    async with world.http.get(
        world.url(f"/v1/requests/{request_id}"), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as resp:
        assert resp.status == 200
    async with world.http.get(
        world.url("/v1/requests"), headers={"Authorization": f"Bearer {world.token}x"}
    ) as resp:
        assert resp.status == 401
    await world.settle()
    # Slack: a click, a bad signature and a command.
    card = next(
        m for m in world.slack.messages_in("C0APPROVALS") if request_id in json.dumps(m.blocks)
    )
    body, headers = slack_req.block_actions(
        secret=SLACK_SECRET,
        action_id=slack_cards.ACTION_APPROVE,
        value=request_id,
        user_id="U0CAROL",
        message_ts=card.ts,
    )
    async with world.http.post(world.url("/slack/events"), data=body, headers=headers) as resp:
        assert resp.status == 200
    _, bad = slack_req.signed(body, "wrong-secret")
    async with world.http.post(world.url("/slack/events"), data=body, headers=bad) as resp:
        assert resp.status == 401
    body, headers = slack_req.slash_command(secret=SLACK_SECRET, text="history", user_id="U0CAROL")
    async with world.http.post(world.url("/slack/events"), data=body, headers=headers) as resp:
        assert resp.status == 200
    await world.until_votes(request_id, 1)
    # Teams: a vote that decides (a receipt is signed), and a forged token.
    alice = world.bf.personal_conversation_id("29:alice")
    status, _ = await world.click(teams_cards.VERB_APPROVE, request_id, "29:alice", alice)
    assert status == 200
    inbound = world.bf.sign_activity_token(world.bf.service_url)
    activity = acts.message(
        "history",
        app_id=APP_ID,
        **world.bf.sender_kwargs("29:bob"),
        **world.bf.conversation_kwargs(world.bf.personal_conversation_id("29:bob")),
    )
    assert (await world.send(activity, token=inbound))[0] in (200, 201)
    assert (
        await world.send(
            activity, token=world.bf.sign_activity_token(activity["serviceUrl"], key="rogue")
        )
    )[0] == 401
    await world.settle()
    request = await world.request(request_id)
    assert request.status.value == "approved"
    assert world.bf.issued_tokens, "the bot never fetched an access token"

    secrets = {
        "Slack bot token": SLACK_TOKEN,
        "Slack signing secret": SLACK_SECRET,
        "Teams app password": APP_PASSWORD,
        "API client token": world.token,
        "admin token": ADMIN_TOKEN,
        "server key": SECRET_KEY,
        "Connector → bot token": inbound,
    }
    for i, issued in enumerate(world.bf.issued_tokens):
        secrets[f"bot access token {i}"] = issued.token
    for i, value in enumerate(_private_pem(world.app)):
        secrets[f"receipt private key {i}"] = value
    assert caplog.records, "nothing was logged: the test proves nothing"
    assert _leaks(caplog, secrets) == []
    # The loggers that would leak did speak (else this test proves nothing).
    names = {r.name for r in caplog.records}
    assert {"aiohttp.access", "countersign.slack.api", "countersign.slack.bolt"} <= names
    assert any(n.startswith("msrest") for n in names)


async def test_callbacks_log_no_secret(
    database_url: str, everything_logged: pytest.LogCaptureFixture
) -> None:
    caplog = everything_logged
    received: list[dict[str, str]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        return web.Response(status=204)

    def routes(app: web.Application) -> None:
        app.router.add_post("/hook", hook)

    async with running(database_url, extra_routes=routes, allow_private_callbacks=True) as api:
        _client, token, callback_secret = await api.app[SERVICE].add_client(
            "copilot", "o@example.com"
        )
        assert callback_secret
        request_id = await api.create(token, callback_url=api.url("/hook"))
        reply = await api.call(
            "POST", f"/v1/requests/{request_id}/cancel", token, json={"reason": "x"}
        )
        assert reply.status == 200
        for _ in range(200):
            if received:
                break
            await asyncio.sleep(0.02)
        assert received, "the callback never arrived"
        signature = received[0]["Countersign-Signature"]
        secrets = {
            "API client token": token,
            "callback secret": callback_secret,
            "server key": SECRET_KEY,
            "admin token": ADMIN_TOKEN,
        }
        for i, value in enumerate(_private_pem(api.app)):
            secrets[f"receipt private key {i}"] = value
        assert _leaks(caplog, secrets) == []
        assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", signature)
