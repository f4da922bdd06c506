"""A real Countersign server on 127.0.0.1, spoken to over real HTTP, on both backends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from countersign.policy import EXAMPLE_POLICY_PATH, load_policy
from countersign.server import SERVICE, WAITERS, create_app
from countersign.service import ApprovalService
from countersign.settings import Settings

ADMIN_TOKEN = "admin-token-for-the-tests-0123456789"
SECRET_KEY = "test-server-key-0123456789abcdef"
PROBLEM = "application/problem+json"

EXPORT: dict[str, Any] = {
    "action": "db.export",
    "resource": "prod/customers",
    "reason": "Quarterly churn analysis for finance (FIN-42)",
    "requested_by": "dana@example.com",
    "params": {"table": "customers", "columns": ["id", "plan"], "rows": 120000},
    "context": {"ticket": "FIN-42", "agent": "analytics-copilot"},
    "ttl_seconds": 1800,
}


@dataclass
class Reply:
    """What came back: status, headers and the decoded body (JSON, else text)."""

    status: int
    headers: Any
    body: Any

    @property
    def content_type(self) -> str:
        """The media type, without parameters."""
        return str(self.headers.get("Content-Type", "")).split(";")[0].strip()

    def problem(self, status: int) -> dict[str, Any]:
        """Assert this is an RFC 9457 problem with ``status``; return it."""
        assert self.status == status, (self.status, self.body)
        assert self.content_type == PROBLEM, self.headers
        for key in ("type", "title", "status", "detail"):
            assert key in self.body, self.body
        assert self.body["status"] == status
        assert self.body["type"].startswith("https://countersign.dev/problems/")
        return dict(self.body)

    def fields(self) -> set[str]:
        """The fields a 422 problem names."""
        return {e["field"] for e in self.problem(422)["errors"]}


@dataclass
class Api:
    """A running server and a client session to it."""

    app: web.Application
    server: TestServer
    http: aiohttp.ClientSession

    @property
    def service(self) -> ApprovalService:
        """The server's own service (as Slack or Teams would reach it)."""
        return self.app[SERVICE]

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this server."""
        return str(self.server.make_url(path))

    async def client(self, name: str = "copilot", owner: str | None = "owen@example.com") -> str:
        """A new API client's bearer token."""
        _client, token, _secret = await self.service.add_client(name, owner)
        return token

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Reply:
        """One HTTP request; ``token`` becomes the bearer."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.url(path), headers=sent, **kwargs) as resp:
            raw = await resp.read()
            try:
                body: Any = await resp.json(content_type=None) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            return Reply(resp.status, resp.headers, body)

    async def create(self, token: str, body: dict[str, Any] | None = None, **extra: Any) -> str:
        """Create a request (``EXPORT`` with ``extra`` fields) and return its id."""
        reply = await self.call("POST", "/v1/requests", token, json={**(body or EXPORT), **extra})
        assert reply.status == 201, reply.body
        return str(reply.body["id"])

    async def until_waiting(self, count: int = 1, within: float = 5.0) -> None:
        """Return once ``count`` long-polls are registered in this process."""
        deadline = time.monotonic() + within
        while len(self.app[WAITERS]) < count:
            assert time.monotonic() < deadline, "the waiter never registered"
            await asyncio.sleep(0.002)


def settings_for(database_url: str, **overrides: Any) -> Settings:
    """Test settings: this database, an admin token, a server key; no ``.env``."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "secret_key": SECRET_KEY,
        "allow_private_callbacks": False,
        "public_url": "https://countersign.example.com",
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def running(
    database_url: str,
    *,
    extra_routes: Callable[[web.Application], None] | None = None,
    **overrides: Any,
) -> AsyncIterator[Api]:
    """A real server on an ephemeral port of 127.0.0.1, stopped on exit."""
    app = create_app(settings_for(database_url, **overrides), load_policy(EXAMPLE_POLICY_PATH))
    if extra_routes is not None:
        extra_routes(app)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            yield Api(app, server, http)
    finally:
        await server.close()


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[Api]:
    """A running server on a fresh database (SQLite, then PostgreSQL)."""
    async with running(database_url) as started:
        yield started
