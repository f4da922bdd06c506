"""Wiring the REST API into an application: routes, middlewares, waiters and the feed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from countersign.api.changefeed import ChangeFeed, listen_dsn
from countersign.api.jwks import jwks_handler
from countersign.api.keys import CHANGE_FEED, ENGINE, METRICS, SERVICE, WAITERS
from countersign.api.observe import DecisionMetrics, http_metrics_middleware, metrics_handler
from countersign.api.openapi import openapi_handler
from countersign.api.problems import problem_middleware
from countersign.api.routes import routes
from countersign.api.waiters import Waiters

__all__ = ["MIDDLEWARES", "api_context", "release_waiters", "setup_api"]

log = logging.getLogger("countersign.api")

# Outermost first: metrics see the status the problem middleware settled on.
MIDDLEWARES = (http_metrics_middleware, problem_middleware)


def setup_api(app: web.Application) -> None:
    """Add the REST routes, ``/metrics``, ``/openapi.json`` and the JWKS to ``app``."""
    app.router.add_routes(routes)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/openapi.json", openapi_handler)
    app.router.add_get("/.well-known/jwks.json", jwks_handler)
    app.on_shutdown.append(release_waiters)


async def api_context(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context (after the database one): waiters, decision metrics, the change feed.

    On PostgreSQL a LISTEN connection wakes this process's waiters when another
    process changes a request; SQLite has no such channel and relies on the
    waiters' periodic sweep (one status query for all of them).
    """
    service = app[SERVICE]
    waiters = Waiters(service, gauge=app[METRICS].waiters)
    decisions = DecisionMetrics(app[METRICS])
    app[WAITERS] = waiters
    service.listeners.extend([waiters, decisions])
    sweeps = asyncio.create_task(waiters.run_sweeps(), name="countersign-waiters-sweep")
    feed: asyncio.Task[None] | None = None
    engine = app[ENGINE]
    if engine.dialect.name == "postgresql":
        changes = ChangeFeed(listen_dsn(engine.url), waiters.wake, waiters.wake_all)
        feed = asyncio.create_task(changes.run(), name="countersign-change-feed")
        app[CHANGE_FEED] = changes
    yield
    waiters.close()
    sweeps.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeps
    if feed is not None:
        feed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed
    for listener in (waiters, decisions):
        service.listeners.remove(listener)


async def release_waiters(app: web.Application) -> None:
    """On shutdown, answer long-polls now (with the request as it is) instead of holding exit."""
    if WAITERS in app:
        app[WAITERS].close()
