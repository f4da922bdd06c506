"""The aiohttp application: one process serving every route, plus the background jobs.

Resources live in ``cleanup_ctx`` (engine, service, jobs) and are reached through
typed ``AppKey``s; nothing is built at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from countersign.policy import Policy
from countersign.service import ApprovalService
from countersign.settings import Settings
from storage import SqlStore, create_engine
from storage.migrate import upgrade

__all__ = ["ENGINE", "SERVICE", "SETTINGS", "create_app"]

log = logging.getLogger("countersign")

SETTINGS = web.AppKey("settings", Settings)
POLICY = web.AppKey("policy", Policy)
ENGINE = web.AppKey("engine", AsyncEngine)
SERVICE = web.AppKey("service", ApprovalService)

EXPIRY_INTERVAL_SECONDS = 1.0


async def _database(app: web.Application) -> AsyncIterator[None]:
    engine = create_engine(app[SETTINGS].database_url)
    await upgrade(engine)
    app[ENGINE] = engine
    app[SERVICE] = ApprovalService(SqlStore(engine), app[POLICY])
    yield
    await engine.dispose()


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
    """The application for ``settings`` and ``policy``."""
    app = web.Application()
    app[SETTINGS] = settings
    app[POLICY] = policy
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_expiry_job)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if not settings.slack_enabled:
        log.info("Slack is off: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET to turn it on")
    if not settings.teams_enabled:
        log.info("Teams is off: set MICROSOFT_APP_ID (and its password) to turn it on")
    return app
