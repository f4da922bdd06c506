"""Teams on our aiohttp server: botbuilder's ``CloudAdapter`` behind ``POST /api/messages``.

Every inbound activity's JWT is validated by botbuilder before the bot sees it.
Stock ``CloudAdapter.process`` answers HTTP 500 for most bad tokens (unknown
key, wrong issuer, expiry, ``serviceurl`` mismatch, a missing header; see
PLATFORM-NOTES.md): here any failure before the bot's turn begins is an
authentication failure and answers 401, and nothing of it reaches the service.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from botbuilder.core import serializer_helper
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import Activity
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.teams.auth import authentication, speed_up_retry_policy
from bot.teams.handler import TURN_STARTED, CountersignTeamsBot
from bot.teams.messenger import TeamsMessenger
from bot.teams.people import TeamsPeople
from countersign.service import ApprovalService
from countersign.settings import Settings

__all__ = ["MESSAGES_PATH", "TEAMS", "TeamsBot", "setup_teams"]

log = logging.getLogger("countersign.teams")

MESSAGES_PATH = "/api/messages"


class TeamsBot:
    """Everything Teams in one process: adapter, bot, people, messenger."""

    def __init__(self, settings: Settings, engine: AsyncEngine, service: ApprovalService) -> None:
        speed_up_retry_policy()  # before any connector client is built
        self.app_id = settings.microsoft_app_id or ""
        if not self.app_id:
            log.warning(
                "TEAMS_ALLOW_UNAUTHENTICATED=1: Teams runs with NO token checks. Anyone who can "
                "reach %s can act as any Teams user. Use this with the local emulator only.",
                MESSAGES_PATH,
            )
        self.adapter = CloudAdapter(authentication(settings))
        self.adapter.on_turn_error = self._on_turn_error
        self.people = TeamsPeople(engine, service.clock)
        self.bot = CountersignTeamsBot(service, self.people, engine)
        self.messenger = TeamsMessenger(self.adapter, self.app_id, self.bot, engine)

    @staticmethod
    async def _on_turn_error(turn_context: object, error: Exception) -> None:
        log.exception("Teams turn failed: %s", type(error).__name__, exc_info=error)
        raise error

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/messages``: one activity; 401 for anything that fails before the turn."""
        if "application/json" not in request.headers.get("Content-Type", ""):
            return web.json_response({"error": "expected application/json"}, status=415)
        try:
            body = await request.json()
            activity = Activity().deserialize(body)
        except Exception:  # not JSON, or not an activity
            return web.json_response({"error": "expected an activity"}, status=400)
        if not activity.type:
            return web.json_response({"error": "expected an activity"}, status=400)
        TURN_STARTED.set(False)
        try:
            # What ``CloudAdapter.process`` does, but the invoke answer (a plain dict,
            # the card) is written with json instead of msrest's recursive serializer.
            answer = await self.adapter.process_activity(
                request.headers.get("Authorization", ""), activity, self.bot.on_turn
            )
        except Exception as exc:
            if not TURN_STARTED.get():
                log.info("Teams activity refused: %s", type(exc).__name__)
                return web.json_response({"error": "unauthorized"}, status=401)
            return web.json_response({"error": "internal error"}, status=500)
        if answer is None:
            return web.Response(status=201)
        data = answer.body if isinstance(answer.body, dict) else serializer_helper(answer.body)
        return web.json_response(data, status=answer.status)


TEAMS = web.AppKey("teams", TeamsBot)


async def _messages(request: web.Request) -> web.StreamResponse:
    return await request.app[TEAMS].handle(request)


def setup_teams(
    app: web.Application,
    settings: Settings,
    engine_key: web.AppKey[AsyncEngine],
    service_key: web.AppKey[ApprovalService],
) -> None:
    """Mount ``POST /api/messages``; the bot is built once the database is up."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        app[TEAMS] = TeamsBot(settings, app[engine_key], app[service_key])
        yield

    app.cleanup_ctx.append(context)
    app.router.add_post(MESSAGES_PATH, _messages)
