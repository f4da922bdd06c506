"""The aiohttp application: one process serving every route, plus the background jobs.

Resources live in ``cleanup_ctx`` (engine, service, waiters, jobs) and are
reached through typed ``AppKey``s (defined in ``countersign.api.keys``,
re-exported here); nothing is built at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from sqlalchemy import text

from bot.slack import SLACK, setup_slack
from bot.teams import TEAMS, setup_teams
from countersign.api import MIDDLEWARES, api_context, setup_api
from countersign.api.keys import (
    CHANGE_FEED,
    ENGINE,
    METRICS,
    POLICY,
    SERVICE,
    SETTINGS,
    WAITERS,
)
from countersign.api.schemas import MAX_BODY_BYTES
from countersign.callbacks.worker import CallbackWorker
from countersign.chat import ChatWorker, Messenger
from countersign.crypto import SecretBox
from countersign.keyring import load_receipts, refresh_receipts
from countersign.metrics import Metrics
from countersign.policy import Policy
from countersign.receipts import RECEIPTS
from countersign.service import ApprovalService
from countersign.settings import Settings
from storage import SqlStore, create_engine
from storage.migrate import upgrade

__all__ = [
    "CALLBACKS",
    "CHANGE_FEED",
    "CHAT",
    "ENGINE",
    "METRICS",
    "POLICY",
    "RECEIPTS",
    "SEALER",
    "SERVICE",
    "SETTINGS",
    "WAITERS",
    "create_app",
]

log = logging.getLogger("countersign")

SEALER = web.AppKey("sealer", SecretBox)
CHAT = web.AppKey("chat", ChatWorker)
CALLBACKS = web.AppKey("callbacks", CallbackWorker)

EXPIRY_INTERVAL_SECONDS = 1.0
KEY_REFRESH_SECONDS = 30.0


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = settings.database_pool_size
    if settings.database_url.startswith("sqlite"):
        engine = create_engine(settings.database_url)
    else:
        engine = create_engine(settings.database_url, pool_size=pool, max_overflow=pool)
    await upgrade(engine)
    app[ENGINE] = engine
    app[RECEIPTS] = await load_receipts(engine, app[SEALER], app[SETTINGS].public_url)
    app[SERVICE] = ApprovalService(
        SqlStore(engine), app[POLICY], sealer=app[SEALER], receipts=app[RECEIPTS]
    )
    yield
    await engine.dispose()


async def _chat_worker(app: web.Application) -> AsyncIterator[None]:
    """Post and update cards from the durable chat jobs, on every chat platform that is on."""
    messengers: list[Messenger] = []
    if SLACK in app:
        messengers.append(app[SLACK].messenger)
    if TEAMS in app:
        messengers.append(app[TEAMS].messenger)
    if not messengers:
        yield
        return
    service = app[SERVICE]
    service.chat = True  # from now on every change arms its request's chat jobs
    worker = ChatWorker(
        app[ENGINE], service, app[POLICY], messengers, lease=app[SETTINGS].chat_lease_seconds
    )
    service.listeners.append(worker)
    app[CHAT] = worker
    task = asyncio.create_task(worker.run(), name="countersign-chat")
    yield
    await worker.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _callback_worker(app: web.Application) -> AsyncIterator[None]:
    """Deliver callbacks from the outbox (claims use SKIP LOCKED: safe with replicas)."""
    worker = CallbackWorker(
        app[ENGINE],
        app[SERVICE],
        app[METRICS],
        allow_private=app[SETTINGS].allow_private_callbacks,
        lease=app[SETTINGS].callback_lease_seconds,
    )
    app[SERVICE].listeners.append(worker)  # wakes on local decisions; polling finds the rest
    app[CALLBACKS] = worker
    task = asyncio.create_task(worker.run(), name="countersign-callbacks")
    yield
    await worker.stop()  # lets in-flight attempts finish and be recorded
    await task


async def _key_refresh_job(app: web.Application) -> AsyncIterator[None]:
    """Reload receipt keys every 30 s, so a rotation by any process reaches every replica."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(KEY_REFRESH_SECONDS)
            try:
                await refresh_receipts(app[RECEIPTS], app[ENGINE], app[SEALER])
            except Exception:  # keep signing with the keys we have; retry next tick
                log.exception("receipt key refresh failed")

    task = asyncio.create_task(loop(), name="countersign-key-refresh")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _expiry_job(app: web.Application) -> AsyncIterator[None]:
    """Expire due requests every second (each under its row lock: safe with replicas)."""

    async def loop() -> None:
        while True:
            try:
                expired = await app[SERVICE].expire_due()
                for request in expired:
                    log.info("request %s expired", request.id)
            except Exception:  # keep the job alive; the next tick retries
                log.exception("expiry job failed")
            await asyncio.sleep(EXPIRY_INTERVAL_SECONDS)

    task = asyncio.create_task(loop(), name="countersign-expiry")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers."""
    try:
        async with request.app[ENGINE].connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return web.json_response(
            {"status": "unavailable", "detail": f"database: {type(exc).__name__}"}, status=503
        )
    return web.json_response({"status": "ok"})


def create_app(settings: Settings, policy: Policy) -> web.Application:
    """The application for ``settings`` and ``policy``.

    ``ConfigError`` (e.g. PostgreSQL without ``COUNTERSIGN_SECRET_KEY``) is raised
    here, before anything starts, so the command line can print its one line.
    """
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=MIDDLEWARES)
    app[SETTINGS] = settings
    app[POLICY] = policy
    app[METRICS] = Metrics()
    app[SEALER] = SecretBox(settings.server_key())
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(api_context)
    app.cleanup_ctx.append(_expiry_job)
    app.cleanup_ctx.append(_callback_worker)
    app.cleanup_ctx.append(_key_refresh_job)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    setup_api(app)
    if settings.slack_enabled:
        setup_slack(app, settings, ENGINE, SERVICE)
        log.info("Slack is on: POST /slack/events, Web API at %s", settings.slack_api_url)
    else:
        log.info("Slack is off: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET to turn it on")
    if settings.teams_enabled:
        setup_teams(app, settings, ENGINE, SERVICE)
        log.info("Teams is on: POST /api/messages")
    else:
        log.info("Teams is off: set MICROSOFT_APP_ID (and its password) to turn it on")
    app.cleanup_ctx.append(_chat_worker)
    return app
