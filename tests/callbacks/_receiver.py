"""A real callback receiver on 127.0.0.1: checks signatures, records deliveries, answers as told."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from countersign.callbacks.signing import verify_signature

Respond = Callable[["Received"], Awaitable[int]]


@dataclass
class Received:
    """One POST as the receiver saw it, and what it answered (None while it has not)."""

    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool
    status: int | None = None

    @property
    def delivery_id(self) -> str:
        return self.headers.get("Countersign-Delivery", "")


@dataclass
class Receiver:
    """Answers ``answers`` in turn, then ``respond`` (default: 200 at once)."""

    now: Callable[[], int] = field(default_factory=lambda: lambda: int(time.time()))
    secret: str | None = None
    answers: deque[int] = field(default_factory=deque)
    respond: Respond | None = None
    received: list[Received] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)
    base: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        app.router.add_route("*", "/elsewhere", self._elsewhere)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str = "/hook") -> str:
        return self.base + path

    def delivered(self) -> list[Received]:
        """Requests answered with a 2xx."""
        return [r for r in self.received if r.status is not None and 200 <= r.status < 300]

    async def _hook(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        ok = self.secret is not None and verify_signature(
            self.secret, headers.get("Countersign-Signature", ""), body, now=self.now()
        )
        seen = Received(request.path, headers, body, ok)
        self.received.append(seen)
        if self.answers:
            status = self.answers.popleft()
        elif self.respond is not None:
            status = await self.respond(seen)
        else:
            status = 200
        seen.status = status
        if 300 <= status < 400:
            return web.Response(status=status, headers={"Location": self.url("/elsewhere")})
        return web.Response(status=status, text="ok" if status < 300 else "no")

    async def _elsewhere(self, request: web.Request) -> web.StreamResponse:
        self.elsewhere.append(request.method)
        return web.Response(text="followed")


async def eventually(check: Callable[[], object], within: float = 10.0) -> None:
    """Wait until ``check()`` is truthy (polling), or fail saying so."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within} s: {check}")
        await asyncio.sleep(0.02)
