"""Sync and async clients for agents: create, read, wait for and cancel approval requests.

Both read ``COUNTERSIGN_URL`` / ``COUNTERSIGN_TOKEN`` by default, return typed
``Decision`` objects, retry connection errors and 5xx answers with jittered
exponential back-off, and send one ``Idempotency-Key`` across the retries of a
create, so a retried create never makes two requests. Neither imports the
server's database or chat dependencies.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import aiohttp

from countersign.agent.types import Decision
from countersign.client import ApiError, backoff, endpoint, quote_segment
from countersign.client import Client as _HttpClient

__all__ = ["ApiError", "AsyncClient", "Client"]

JWKS_PATH = "/.well-known/jwks.json"
MAX_WAIT_STEP = 60  # the server holds a long-poll at most this long


def _create_body(
    action: str,
    resource: str,
    reason: str,
    params: Mapping[str, Any] | None,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    body: dict[str, Any] = {"action": action, "resource": resource, "reason": reason}
    if params is not None:
        body["params"] = dict(params)
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


class Client:
    """Synchronous client (standard library HTTP); blocks while it waits."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 4,
    ) -> None:
        self._http = _HttpClient(url, token, timeout=timeout, retries=retries)
        self.url = self._http.url

    @property
    def jwks_url(self) -> str:
        """Where this server publishes its receipt keys."""
        return self.url + JWKS_PATH

    def request(
        self,
        action: str,
        resource: str,
        reason: str,
        params: Mapping[str, Any] | None = None,
        *,
        requested_by: str | None = None,
        context: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> Decision:
        """Create a request; it may come back already decided by the policy."""
        extra = {
            "requested_by": requested_by,
            "context": dict(context) if context else None,
            "callback_url": callback_url,
            "ttl_seconds": ttl_seconds,
        }
        body = _create_body(action, resource, reason, params, extra)
        key = idempotency_key or str(uuid.uuid4())
        return Decision.from_resource(self._http.request(idempotency_key=key, **body))

    def get(self, request_id: str) -> Decision:
        """The request as it is now."""
        return Decision.from_resource(self._http.get(request_id))

    def wait(self, request_id: str, timeout: float) -> Decision:
        """The request once final, or as it is after ``timeout`` seconds."""
        return Decision.from_resource(self._http.wait(request_id, timeout))

    def cancel(self, request_id: str, reason: str | None = None) -> Decision:
        """Cancel a pending request this client created."""
        return Decision.from_resource(self._http.cancel(request_id, reason))

    def jwks(self) -> dict[str, Any]:
        """The server's receipt public keys."""
        return self._http.jwks()


class AsyncClient:
    """Asynchronous client on aiohttp; use ``async with`` to share one connection pool."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 4,
    ) -> None:
        self.url, self._token = endpoint(url, token)
        self.timeout = timeout
        self.retries = retries
        self._session: aiohttp.ClientSession | None = None

    @property
    def jwks_url(self) -> str:
        """Where this server publishes its receipt keys."""
        return self.url + JWKS_PATH

    async def __aenter__(self) -> AsyncClient:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the shared connection pool, if one was opened."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        seconds: float | None = None,
    ) -> Any:
        # Outside ``async with`` each call gets its own session: a session is bound
        # to the event loop that made it, and decorated tools may run in several.
        if self._session is not None:
            return await self._attempts(self._session, method, path, body, headers, seconds)
        async with aiohttp.ClientSession() as session:
            return await self._attempts(session, method, path, body, headers, seconds)

    async def _attempts(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        seconds: float | None,
    ) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        sent = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            **(headers or {}),
        }
        if data is not None:
            sent["Content-Type"] = "application/json"
        limit = aiohttp.ClientTimeout(total=seconds or self.timeout)
        for attempt in range(self.retries + 1):
            try:
                async with session.request(
                    method, self.url + path, data=data, headers=sent, timeout=limit
                ) as resp:
                    raw = await resp.read()
                    if resp.status < 400:
                        return json.loads(raw or b"null")
                    problem = _problem(raw)
                    if resp.status < 500 or attempt == self.retries:
                        raise ApiError(
                            resp.status,
                            str(problem.get("title", resp.reason or "")),
                            str(problem.get("detail", "")),
                            problem,
                        )
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                if attempt == self.retries:
                    detail = str(exc) or type(exc).__name__
                    raise ApiError(0, f"cannot reach {self.url}", detail) from None
            await asyncio.sleep(backoff(attempt))
        raise AssertionError("unreachable")

    async def request(
        self,
        action: str,
        resource: str,
        reason: str,
        params: Mapping[str, Any] | None = None,
        *,
        requested_by: str | None = None,
        context: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> Decision:
        """Create a request; it may come back already decided by the policy."""
        extra = {
            "requested_by": requested_by,
            "context": dict(context) if context else None,
            "callback_url": callback_url,
            "ttl_seconds": ttl_seconds,
        }
        body = _create_body(action, resource, reason, params, extra)
        key = idempotency_key or str(uuid.uuid4())
        created = await self._call("POST", "/v1/requests", body, headers={"Idempotency-Key": key})
        return Decision.from_resource(created)

    async def get(self, request_id: str) -> Decision:
        """The request as it is now."""
        return Decision.from_resource(
            await self._call("GET", f"/v1/requests/{quote_segment(request_id)}")
        )

    # ``timeout`` is how long the server may hold the request, not a client-side limit.
    async def wait(self, request_id: str, timeout: float) -> Decision:  # noqa: ASYNC109
        """The request once final, or as it is after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            step = max(0.0, min(MAX_WAIT_STEP, left))
            found = Decision.from_resource(
                await self._call(
                    "GET",
                    f"/v1/requests/{quote_segment(request_id)}/wait?timeout={step:.3f}",
                    seconds=step + self.timeout,
                )
            )
            if found.final or deadline - loop.time() <= 0:
                return found

    async def cancel(self, request_id: str, reason: str | None = None) -> Decision:
        """Cancel a pending request this client created."""
        body = {"reason": reason} if reason else {}
        return Decision.from_resource(
            await self._call("POST", f"/v1/requests/{quote_segment(request_id)}/cancel", body)
        )

    async def jwks(self) -> dict[str, Any]:
        """The server's receipt public keys."""
        found: dict[str, Any] = await self._call("GET", JWKS_PATH)
        return found


def _problem(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
