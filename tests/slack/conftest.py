"""Slack scenarios: our real server, bolt included, talking to a fake Slack Web API.

Requests reach ``POST /slack/events`` signed exactly as Slack signs them; the
cards, updates, replies, modals and private answers are read back from what
the fake Slack received.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from countersign.core.model import ApprovalRequest
from countersign.policy import load_policy
from countersign.server import CHAT, SERVICE, create_app
from countersign.service import ApprovalService
from tests.api.conftest import EXPORT, settings_for
from tests.fakes import slack_requests as slack_req
from tests.fakes.slack_api import FakeSlack, Message

SIGNING_SECRET = "slack-signing-secret-for-tests"
BOT_TOKEN = "xoxb-countersign-tests"

# Everyone the policy below names, as Slack users.
PEOPLE = {
    "U0ALICE": "alice@example.com",
    "U0BOB": "bob@example.com",
    "U0CAROL": "carol@example.com",
    "U0ERIN": "erin@example.com",
    "U0FRANK": "frank@example.com",
    "U0DANA": "dana@example.com",
    "U0OWEN": "owen@example.com",
    "U0MALLORY": "mallory@example.com",
}
CROWD = [f"U0CROWD{i:02d}" for i in range(20)]

POLICY = """
groups:
  security: [carol@example.com, erin@example.com]
  sre: [alice@example.com, bob@example.com]
  crowd: [{crowd}]
rules:
  - name: prod-export
    match: {{action: "db.export", resource: "prod/*"}}
    approvers: [group:security, group:sre, frank@example.com]
    quorum: 2
    ttl: 30m
    notify:
      slack: ["#approvals", "approvers"]
  - name: crowd-vote
    match: {{action: "crowd.*"}}
    approvers: [group:crowd]
    quorum: 3
    deny_quorum: 20
    notify:
      slack: ["#approvals"]
  - name: default
    match: {{}}
    approvers: [group:sre]
    quorum: 1
    notify:
      slack: ["#approvals"]
"""


@dataclass
class SlackWorld:
    """The running server, the fake Slack, and an HTTP session to send Slack's requests."""

    app: Any
    server: TestServer
    http: aiohttp.ClientSession
    slack: FakeSlack
    token: str

    @property
    def service(self) -> ApprovalService:
        """The server's service."""
        return self.app[SERVICE]

    def url(self, path: str) -> str:
        """Absolute URL on our server."""
        return str(self.server.make_url(path))

    async def create(self, **fields: Any) -> str:
        """Create a request over the REST API; its id."""
        body = {**EXPORT, **fields}
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.post(self.url("/v1/requests"), json=body, headers=headers) as resp:
            assert resp.status == 201, await resp.text()
            return str((await resp.json())["id"])

    async def request(self, request_id: str) -> ApprovalRequest:
        """The request as stored."""
        return await self.service.get_request(request_id)

    async def send(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """POST one Slack request to ``/slack/events``; status and body text."""
        async with self.http.post(self.url("/slack/events"), data=body, headers=headers) as resp:
            return resp.status, await resp.text()

    async def until_votes(self, request_id: str, count: int, within: float = 5.0) -> None:
        """Return once the request has ``count`` votes (clicks vote in the background)."""
        deadline = asyncio.get_running_loop().time() + within
        while len((await self.request(request_id)).votes) < count:
            assert asyncio.get_running_loop().time() < deadline, "the vote never landed"
            await asyncio.sleep(0.01)

    async def settle(self) -> None:
        """Run every due chat job now (the background worker may be doing so too)."""
        await self.app[CHAT].drain()

    def card(self, request_id: str, channel: str = "C0APPROVALS") -> Message:
        """The (top-level) card of ``request_id`` in ``channel``."""
        found = [
            m
            for m in self.slack.messages_in(channel)
            if m.thread_ts is None and request_id in json.dumps(m.blocks)
        ]
        assert len(found) == 1, f"{len(found)} cards of {request_id} in {channel}"
        return found[0]

    async def click(
        self,
        action: str,
        request_id: str,
        user: str,
        *,
        channel: str = "C0APPROVALS",
        **signing: Any,
    ) -> tuple[int, str]:
        """A signed button click on the request's card in ``channel``."""
        card = self.card(request_id, channel)
        body, headers = slack_req.block_actions(
            secret=SIGNING_SECRET,
            signing=signing or None,
            action_id=action,
            value=request_id,
            user_id=user,
            user_name=user.lower(),
            channel_id=channel,
            message_ts=card.ts,
            message=card.as_payload(),
            response_url=self.slack.new_response_url(channel, card.ts, user),
        )
        return await self.send(body, headers)

    async def submit(
        self, callback_id: str, request_id: str, user: str, values: dict[str, str | None]
    ) -> tuple[int, Any]:
        """A signed modal submission; status and decoded answer (None when empty)."""
        body, headers = slack_req.view_submission(
            secret=SIGNING_SECRET,
            callback_id=callback_id,
            private_metadata=request_id,
            user_id=user,
            user_name=user.lower(),
            values={block: {block: value} for block, value in values.items()},
        )
        status, text = await self.send(body, headers)
        return status, (json.loads(text) if text.strip() else None)

    async def command(self, text: str, user: str = "U0ALICE") -> tuple[int, Any]:
        """A signed ``/countersign`` slash command; status and decoded answer."""
        body, headers = slack_req.slash_command(
            secret=SIGNING_SECRET,
            text=text,
            user_id=user,
            response_url=self.slack.new_response_url("C0APPROVALS", None, user),
        )
        status, answer = await self.send(body, headers)
        return status, (json.loads(answer) if answer.strip() else None)

    def ephemerals_for(self, user: str) -> list[str]:
        """Texts privately shown to ``user`` (chat.postEphemeral and ephemeral responses)."""
        return [e.text for e in self.slack.ephemerals if e.user == user]


def write_policy(tmp_path: Path) -> Path:
    """The scenarios' policy file."""
    crowd = ", ".join(f"{u.lower()}@example.com" for u in CROWD)
    path = tmp_path / "countersign.yaml"
    path.write_text(POLICY.format(crowd=crowd))
    return path


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[SlackWorld]:
    """Server + fake Slack on a fresh database (SQLite, then PostgreSQL)."""
    async with FakeSlack(token=BOT_TOKEN) as slack:
        for user_id, email in PEOPLE.items():
            slack.add_user(user_id, email, name=email.split("@")[0])
        for user_id in CROWD:
            slack.add_user(user_id, f"{user_id.lower()}@example.com")
        settings = settings_for(
            database_url,
            slack_bot_token=BOT_TOKEN,
            slack_signing_secret=SIGNING_SECRET,
            slack_api_url=slack.api_url,
        )
        app = create_app(settings, load_policy(write_policy(tmp_path)))
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        try:
            _client, token, _ = await app[SERVICE].add_client("copilot", "owen@example.com")
            async with aiohttp.ClientSession() as http:
                yield SlackWorld(app, server, http, slack, token)
        finally:
            await server.close()
