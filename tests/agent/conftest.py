"""A real server with a policy for agents (SQLite), its URL and a client token in the environment."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from countersign.agent.receipts import DEFAULT_CACHE
from countersign.policy import load_policy
from countersign.ports import HistoryQuery
from countersign.server import create_app
from tests.api.conftest import Api, settings_for

ISSUER = "https://countersign.example.com"  # settings_for's public URL: the receipts' iss

POLICY = """\
groups:
  sre: [alice@example.com, bob@example.com]

rules:
  - name: status-reads
    match: {action: "deploy.status*"}
    decision: allow
  - name: no-drops
    match: {action: "deploy.drop"}
    decision: deny
  - name: deploys
    match: {action: "deploy.*"}
    approvers: [alice@example.com]
    quorum: 1
    ttl: 30m
  - name: mcp-reads
    match: {action: "mcp.read_*"}
    decision: allow
  - name: mcp-tools
    match: {action: "mcp.*"}
    approvers: [group:sre]
    quorum: 1
"""


@pytest.fixture
def database_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh, migrated SQLite file (the agent tests need no second backend)."""
    path = tmp_path / "countersign.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(autouse=True)
def _fresh_jwks_cache() -> Iterator[None]:
    """Each test's server has new keys, perhaps on a port an earlier one used."""
    DEFAULT_CACHE.clear()
    yield
    DEFAULT_CACHE.clear()


@pytest.fixture
async def api(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Api]:
    """A running server with ``POLICY``; COUNTERSIGN_URL / COUNTERSIGN_TOKEN point at it."""
    policy = tmp_path / "countersign.yaml"
    policy.write_text(POLICY)
    app = create_app(settings_for(database_url), load_policy(policy))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            started = Api(app, server, http)
            monkeypatch.setenv("COUNTERSIGN_URL", base_url(started))
            monkeypatch.setenv("COUNTERSIGN_TOKEN", await started.client("agent", None))
            yield started
    finally:
        await server.close()


def base_url(api: Api) -> str:
    """The server's base URL, no trailing slash."""
    return api.url("/").rstrip("/")


async def pending_id(api: Api, count: int = 1) -> str:
    """The id of the newest request, once ``count`` requests exist."""
    for _ in range(1000):
        items = await api.service.history(HistoryQuery(limit=count))
        if len(items) >= count:
            return items[0].id
        await asyncio.sleep(0.01)
    raise AssertionError("no request was created")
