"""Slack on our aiohttp server: bolt's ``AsyncApp`` behind ``POST /slack/events``.

The adapter is bolt's own two conversion functions (``to_bolt_request``,
``to_aiohttp_response``); bolt verifies every request's ``v0`` signature and
timestamp (over five minutes old: 401) before any listener runs. Bolt does not
de-duplicate Slack's retries, so a signed request carrying ``X-Slack-Retry-Num``
whose body we have already taken is answered 200 and not run again. The
signature is checked here first too: bolt answers 500 (and logs a traceback)
for a timestamp that is not a number, where any bad signature must be 401.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.slack.listeners import SlackListeners
from bot.slack.messenger import SlackMessenger
from bot.slack.people import SlackPeople
from countersign.service import ApprovalService
from countersign.settings import Settings

__all__ = ["EVENTS_PATH", "SLACK", "SlackBot", "setup_slack", "web_client"]

log = logging.getLogger("countersign.slack")

EVENTS_PATH = "/slack/events"
RETRY_MEMORY = 10_000
RETRY_WINDOW_SECONDS = 600.0
# Each Web API call gives up after this long (then the job is retried). slack_sdk
# applies its own ``timeout`` only to sessions it opens itself, so the shared
# session carries it too.
API_TIMEOUT_SECONDS = 10


def web_client(settings: Settings, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """The Web API client: ``SLACK_API_URL``, and retries on 429 (``Retry-After``) and 5xx."""
    client = AsyncWebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        session=session,
        timeout=API_TIMEOUT_SECONDS,
        logger=logging.getLogger("countersign.slack.api"),
    )
    # Rate limits are waited out, never dropped; a job that still fails is retried later.
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=5))
    client.retry_handlers.append(AsyncServerErrorRetryHandler(max_retry_count=2))
    return client


class SlackBot:
    """Everything Slack in one process: bolt app, Web API client, people, messenger."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        service: ApprovalService,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        assert settings.slack_signing_secret is not None
        self.client = web_client(settings, session)
        self.people = SlackPeople(self.client, engine, service.clock)
        self.messenger = SlackMessenger(self.client, self.people)
        self.listeners = SlackListeners(service, self.people, self.client)
        self.bolt = AsyncApp(
            client=self.client,
            signing_secret=settings.slack_signing_secret,
            process_before_response=True,
            logger=logging.getLogger("countersign.slack.bolt"),
        )
        self.listeners.register(self.bolt)
        self._verifier = SignatureVerifier(settings.slack_signing_secret)
        # Bodies answered 200 (for Slack's retries), and those being worked on now.
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._running: dict[str, asyncio.Future[bool]] = {}

    def _signed(self, body: bytes, request: web.Request) -> bool:
        """True when ``body`` carries a valid, fresh ``v0`` signature (bolt checks it again)."""
        try:
            return self._verifier.is_valid_request(body, dict(request.headers))
        except ValueError:  # X-Slack-Request-Timestamp is not a number
            return False

    def _forget_old(self) -> None:
        cutoff = time.monotonic() - RETRY_WINDOW_SECONDS
        while self._seen and next(iter(self._seen.values())) < cutoff:
            self._seen.popitem(last=False)
        while len(self._seen) > RETRY_MEMORY:
            self._seen.popitem(last=False)

    async def handle(self, request: web.Request) -> web.Response:
        """``POST /slack/events``: one signed Slack request through bolt.

        A Slack retry (``X-Slack-Retry-Num``) of a body we answered 200 is answered
        200 again without running it twice; a retry of a body still being worked on
        waits for that outcome first. A body is remembered only once it succeeded,
        so the retry of a click that failed (no acknowledgement) runs again.
        """
        body = await request.read()
        if not self._signed(body, request):
            return web.json_response({"error": "invalid request"}, status=401)
        digest = hashlib.sha256(body).hexdigest()
        self._forget_old()
        if request.headers.get("X-Slack-Retry-Num"):
            running = self._running.get(digest)
            if running is not None and await asyncio.shield(running):
                return web.Response(status=200)
            if digest in self._seen:
                return web.Response(status=200)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._running.setdefault(digest, done)
        ok = False
        try:
            bolt_request = await to_bolt_request(request)
            response = await to_aiohttp_response(await self.bolt.async_dispatch(bolt_request))
            ok = response.status == 200
            return response
        finally:
            if self._running.get(digest) is done:
                del self._running[digest]
            done.set_result(ok)
            if ok:
                self._seen[digest] = time.monotonic()


SLACK = web.AppKey("slack", SlackBot)


async def _events(request: web.Request) -> web.Response:
    return await request.app[SLACK].handle(request)


def setup_slack(
    app: web.Application,
    settings: Settings,
    engine_key: web.AppKey[AsyncEngine],
    service_key: web.AppKey[ApprovalService],
) -> None:
    """Mount ``POST /slack/events``; the bot is built once the database is up."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        # One keep-alive session for every Web API call (slack_sdk opens one per call otherwise).
        timeout = aiohttp.ClientTimeout(total=API_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            app[SLACK] = SlackBot(settings, app[engine_key], app[service_key], session)
            yield

    app.cleanup_ctx.append(context)
    app.router.add_post(EVENTS_PATH, _events)
