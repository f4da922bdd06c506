"""The agent clients against a real server: typed results, retries, one request per create."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from countersign.agent import ApiError, AsyncClient, Client, Decision
from countersign.ports import HistoryQuery
from tests.agent.conftest import pending_id
from tests.agent.proxy import blip_proxy
from tests.api.conftest import Api

DEPLOY: dict[str, Any] = {
    "action": "deploy.release",
    "resource": "prod/api",
    "reason": "ship 1.2.3",
    "params": {"service": "api", "version": "1.2.3"},
}


async def _count(api: Api) -> int:
    return len(await api.service.history(HistoryQuery(limit=50)))


async def test_sync_client_round_trip(api: Api) -> None:
    client = Client()  # COUNTERSIGN_URL / COUNTERSIGN_TOKEN from the environment
    created = await asyncio.to_thread(client.request, **DEPLOY, context={"ticket": "OPS-1"})
    assert isinstance(created, Decision)
    assert (created.status, created.final, created.approved) == ("pending", False, False)
    assert created.params == DEPLOY["params"]
    assert created.rule == "deploys"
    assert (await asyncio.to_thread(client.get, created.id)).id == created.id
    waiting = asyncio.create_task(asyncio.to_thread(client.wait, created.id, 30))
    await api.until_waiting()
    await api.service.cast_vote(created.id, "alice@example.com", "teams", "approve", "go")
    decided = await waiting
    assert decided.approved and decided.final and not decided.edited
    assert decided.approved_params == DEPLOY["params"]
    assert decided.decided_by == ("alice@example.com",)
    assert decided.votes[0].platform == "teams" and decided.votes[0].comment == "go"
    assert decided.receipt
    assert "keys" in await asyncio.to_thread(client.jwks)


async def test_async_client_round_trip(api: Api) -> None:
    async with AsyncClient() as client:
        created = await client.request(**DEPLOY)
        assert (await client.wait(created.id, 0.2)).status == "pending"
        cancelled = await client.cancel(created.id, "not needed")
        assert cancelled.status == "cancelled"
        assert cancelled.reasons == ("not needed",)
        with pytest.raises(ApiError) as again:
            await client.cancel(created.id)
        assert again.value.status == 409
        with pytest.raises(ApiError) as missing:
            await client.get("req_nothing")
        assert missing.value.status == 404
    # Outside ``async with`` every call opens its own session.
    edited = {"service": "api", "version": "1.2.2"}
    created = await AsyncClient().request(**DEPLOY)
    waiting = asyncio.create_task(AsyncClient().wait(created.id, 30))
    await api.until_waiting()
    await api.service.cast_vote(
        created.id, "alice@example.com", "slack", "approve", edited_params=edited
    )
    decided = await waiting
    assert decided.edited and decided.approved_params == edited


async def test_clients_need_url_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COUNTERSIGN_URL", raising=False)
    monkeypatch.delenv("COUNTERSIGN_TOKEN", raising=False)
    for make in (Client, AsyncClient):
        with pytest.raises(ApiError, match="COUNTERSIGN_URL is not set"):
            make()
        with pytest.raises(ApiError, match="COUNTERSIGN_TOKEN is not set"):
            make("http://127.0.0.1:1")


async def test_bad_token_is_not_retried(api: Api) -> None:
    with pytest.raises(ApiError) as refused:
        await AsyncClient(token="wrong").request(**DEPLOY)
    assert refused.value.status == 401


@pytest.mark.parametrize("mode", ["drop", "503"])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_blip_during_create_never_makes_two_requests(
    api: Api, kind: str, mode: str
) -> None:
    async with blip_proxy(api.server.port or 0, mode) as proxy:
        token = os.environ["COUNTERSIGN_TOKEN"]
        if kind == "sync":
            client = Client(proxy.url, token)
            created = await asyncio.to_thread(client.request, **DEPLOY)
        else:
            created = await AsyncClient(proxy.url, token).request(**DEPLOY)
    assert proxy.broken == 1
    assert proxy.creates == 2  # the create was sent twice ...
    assert await _count(api) == 1  # ... and made one request
    assert await pending_id(api) == created.id
    assert created.status == "pending"


async def test_unreachable_server_gives_up_after_the_retries() -> None:
    with pytest.raises(ApiError, match="cannot reach") as failed:
        await asyncio.to_thread(Client("http://127.0.0.1:9", "t", retries=1).get, "req_x")
    assert failed.value.status == 0
    with pytest.raises(ApiError, match="cannot reach") as failed:
        await AsyncClient("http://127.0.0.1:9", "t", retries=1).get("req_x")
    assert failed.value.status == 0
