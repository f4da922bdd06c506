"""Outbound Bot Framework clients are built once and shared, inbound tokens still checked."""

from __future__ import annotations

from botbuilder.core import CloudAdapterBase

from bot.teams import TEAMS
from bot.teams.auth import CONNECTOR_TIMEOUT_SECONDS, authentication
from tests.api.conftest import settings_for
from tests.teams.conftest import APP_ID, APP_PASSWORD, TeamsWorld


async def test_connector_clients_are_shared_per_service_url_and_audience() -> None:
    settings = settings_for(
        "sqlite+aiosqlite:///:memory:",
        microsoft_app_id=APP_ID,
        microsoft_app_password=APP_PASSWORD,
        teams_login_url="http://127.0.0.1:9/token",
    )
    auth = authentication(settings)
    identity = CloudAdapterBase(auth).create_claims_identity(APP_ID)
    first = await auth.create_connector_factory(identity).create("https://smba.example/a/", None)
    again = await auth.create_connector_factory(identity).create("https://smba.example/a/", None)
    other = await auth.create_connector_factory(identity).create("https://smba.example/b/", None)
    assert first is again
    assert first.config.connection.timeout == CONNECTOR_TIMEOUT_SECONDS == 10
    assert other is not first
    users = await auth.create_user_token_client(identity)
    assert users is await auth.create_user_token_client(identity)


async def test_many_card_updates_reuse_one_client_and_one_token(world: TeamsWorld) -> None:
    request_id = await world.create()
    await world.settle()
    before = len(world.bf.issued_tokens)
    for user in ("29:alice", "29:bob"):
        conversation = world.bf.personal_conversation_id(user)
        status, body = await world.click("countersign.approve", request_id, user, conversation)
        assert status == 200, body
        await world.settle()
    # Every card was updated, with no new token fetched for the proactive turns.
    assert len(world.bf.issued_tokens) == before
    clients = world.app[TEAMS].adapter.bot_framework_authentication._clients
    assert len(clients) == 1
