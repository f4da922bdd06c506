"""Typed keys of the objects one application shares between its routes and jobs.

They live here rather than in ``countersign.server`` so that adapters (this
REST API, and later Slack and Teams) can import them without importing the
server module that imports them (no import cycle). ``countersign.server``
re-exports every one of them.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from countersign.api.changefeed import ChangeFeed
from countersign.api.waiters import Waiters
from countersign.metrics import Metrics
from countersign.policy import Policy
from countersign.service import ApprovalService
from countersign.settings import Settings

__all__ = ["CHANGE_FEED", "ENGINE", "METRICS", "POLICY", "SERVICE", "SETTINGS", "WAITERS"]

SETTINGS = web.AppKey("settings", Settings)
POLICY = web.AppKey("policy", Policy)
ENGINE = web.AppKey("engine", AsyncEngine)
SERVICE = web.AppKey("service", ApprovalService)
METRICS = web.AppKey("metrics", Metrics)
WAITERS = web.AppKey("waiters", Waiters)
CHANGE_FEED = web.AppKey("change_feed", ChangeFeed)
