"""Teams scenarios: our real server and botbuilder, a fake Bot Framework, and fake Slack.

Activities reach ``POST /api/messages`` with JWTs signed by the fake token
issuer, exactly as the Bot Framework Connector signs them; cards posted and
updated proactively are read back from the fake connector.
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
from countersign.server import CHAT, ENGINE, SERVICE, create_app
from countersign.service import ApprovalService
from storage import SqlStore
from storage import chat as chat_store
from tests.api.conftest import EXPORT, settings_for
from tests.fakes import teams_activities as acts
from tests.fakes.slack_api import FakeSlack
from tests.fakes.teams_api import FakeBotFramework, StoredActivity

APP_ID = "00000000-0000-4000-8000-00000000c0de"
APP_PASSWORD = "teams-app-password-for-tests"
SLACK_SECRET = "slack-signing-secret-for-teams-tests"
SLACK_TOKEN = "xoxb-teams-tests"

PEOPLE = {
    "29:alice": ("alice@example.com", "Alice"),
    "29:bob": ("bob@example.com", "Bob"),
    "29:carol": ("carol@example.com", "Carol"),
    "29:dana": ("dana@example.com", "Dana"),
    "29:mallory": ("mallory@example.com", "Mallory"),
}

POLICY = """
groups:
  sre: [alice@example.com, bob@example.com, carol@example.com]
rules:
  - name: prod-export
    match: {action: "db.export"}
    approvers: [group:sre]
    quorum: 2
    notify:
      slack: ["#approvals"]
      teams: ["Ops/General", "approvers"]
  - name: reviewed-export
    match: {action: "db.review"}
    approvers: [group:sre]
    quorum: 1
    approve_comment: true
    notify:
      teams: ["Ops/General"]
  - name: default
    match: {}
    approvers: [group:sre]
    quorum: 1
    notify:
      teams: ["approvers"]
"""


@dataclass
class TeamsWorld:
    """The running server, the fakes, and an HTTP session."""

    app: Any
    server: TestServer
    http: aiohttp.ClientSession
    bf: FakeBotFramework
    slack: FakeSlack
    token: str
    channel: str

    @property
    def service(self) -> ApprovalService:
        """The server's service."""
        return self.app[SERVICE]

    def url(self, path: str) -> str:
        """Absolute URL on our server."""
        return str(self.server.make_url(path))

    async def create(self, **fields: Any) -> str:
        """Create a request over the REST API; its id."""
        headers = {"Authorization": f"Bearer {self.token}"}
        body = {**EXPORT, **fields}
        async with self.http.post(self.url("/v1/requests"), json=body, headers=headers) as resp:
            assert resp.status == 201, await resp.text()
            return str((await resp.json())["id"])

    async def request(self, request_id: str) -> ApprovalRequest:
        """The request as stored."""
        return await self.service.get_request(request_id)

    async def send(
        self, activity: dict[str, Any], *, token: str | None = None, raw_headers: Any = None
    ) -> tuple[int, Any]:
        """POST one activity, signed unless told otherwise; status and decoded body."""
        if raw_headers is None:
            token = token or self.bf.sign_activity_token(activity["serviceUrl"])
            raw_headers = acts.headers(token)
        async with self.http.post(
            self.url("/api/messages"), data=json.dumps(activity), headers=raw_headers
        ) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text.strip() else None)

    async def install(self, user_id: str) -> str:
        """The user installs the app (personal scope); the conversation id."""
        conversation = self.bf.personal_conversation_id(user_id)
        activity = acts.installation_update(
            app_id=APP_ID,
            **self.bf.sender_kwargs(user_id),
            **self.bf.conversation_kwargs(conversation),
        )
        status, _ = await self.send(activity)
        assert status in (200, 201), status
        return conversation

    async def settle(self) -> None:
        """Run every due chat job now."""
        await self.app[CHAT].drain()

    async def cards_of(self, request_id: str, conversation: str) -> list[StoredActivity]:
        """The request cards of ``request_id`` posted in a conversation (as remembered)."""
        refs = await SqlStore(self.app[ENGINE]).read_job(
            lambda conn: chat_store.card_refs(conn, request_id, "teams")
        )
        ids = [
            ref.message_id.rpartition("|")[2]
            for ref in refs
            if not ref.destination.startswith("outcome:")
            and ref.message_id.rpartition("|")[0] == conversation
        ]
        return [a for a in self.bf.activities(conversation) if a.id in ids]

    async def click(
        self, verb: str, request_id: str, user_id: str, conversation: str, **data: Any
    ) -> tuple[int, Any]:
        """An ``Action.Execute`` on the request's card in ``conversation``."""
        card = (await self.cards_of(request_id, conversation))[0]
        activity = acts.invoke_action(
            verb,
            {"request_id": request_id, **data},
            app_id=APP_ID,
            reply_to_id=card.id,
            **self.bf.sender_kwargs(user_id),
            **self.bf.conversation_kwargs(conversation),
        )
        return await self.send(activity)

    async def until_votes(self, request_id: str, count: int, within: float = 5.0) -> None:
        """Return once the request has ``count`` votes."""
        deadline = asyncio.get_running_loop().time() + within
        while len((await self.request(request_id)).votes) < count:
            assert asyncio.get_running_loop().time() < deadline, "the vote never landed"
            await asyncio.sleep(0.01)


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[TeamsWorld]:
    """Server + fake Bot Framework + fake Slack on a fresh database."""
    policy = tmp_path / "countersign.yaml"
    policy.write_text(POLICY)
    async with (
        FakeBotFramework(app_id=APP_ID, app_password=APP_PASSWORD) as bf,
        FakeSlack(token=SLACK_TOKEN) as slack,
    ):
        for user_id, (email, name) in PEOPLE.items():
            bf.add_user(user_id, email, name)
        slack.add_user("U0CAROL", "carol@example.com", name="carol")
        channel = bf.add_channel("Ops", "General")
        settings = settings_for(
            database_url,
            microsoft_app_id=APP_ID,
            microsoft_app_password=APP_PASSWORD,
            teams_openid_metadata_url=bf.openid_metadata_url,
            teams_token_issuer=bf.issuer,
            teams_login_url=bf.login_url,
            slack_bot_token=SLACK_TOKEN,
            slack_signing_secret=SLACK_SECRET,
            slack_api_url=slack.api_url,
        )
        app = create_app(settings, load_policy(policy))
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        try:
            _client, token, _ = await app[SERVICE].add_client("copilot", "owen@example.com")
            async with aiohttp.ClientSession() as http:
                world = TeamsWorld(app, server, http, bf, slack, token, channel)
                # The app is installed in the Ops team and by each approver.
                status, _ = await world.send(
                    acts.installation_update(
                        app_id=APP_ID,
                        **bf.sender_kwargs("29:alice"),
                        **bf.conversation_kwargs(channel),
                    )
                )
                assert status in (200, 201)
                for user_id in ("29:alice", "29:bob", "29:carol", "29:dana"):
                    await world.install(user_id)
                yield world
        finally:
            await server.close()
