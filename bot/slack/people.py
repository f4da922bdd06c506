"""Who is who on Slack: user id ↔ e-mail, cached with a TTL and remembered in the database.

Every rule compares e-mail addresses, so a click is only as trustworthy as the
address we attach to the clicking user id. It comes from ``users.info``
(the workspace's verified profile e-mail), never from the payload.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncEngine

from countersign.core.identity import normalize_email
from countersign.ports import Clock
from storage import SqlStore
from storage import chat as chat_store

__all__ = ["PLATFORM", "NoEmail", "SlackPeople"]

PLATFORM = "slack"
TTL_SECONDS = 600.0
MISSING_TTL_SECONDS = 60.0


class NoEmail(Exception):
    """The Slack user has no e-mail address we can read (a bot, or scope missing)."""


class SlackPeople:
    """Resolves Slack users to e-mail addresses and back, with TTL caches."""

    def __init__(self, client: AsyncWebClient, engine: AsyncEngine, clock: Clock) -> None:
        self.client = client
        self.store = SqlStore(engine)
        self.clock = clock
        self._emails: dict[str, tuple[float, str | None]] = {}
        self._ids: dict[str, tuple[float, str | None]] = {}

    async def email_of(self, user_id: str) -> str:
        """The normalised e-mail of a Slack user (``NoEmail`` if none)."""
        cached = self._emails.get(user_id)
        if cached is not None and cached[0] > time.monotonic():
            if cached[1] is None:
                raise NoEmail(user_id)
            return cached[1]
        try:
            user = (await self.client.users_info(user=user_id)).get("user") or {}
        except SlackApiError as exc:
            if exc.response.get("error") != "user_not_found":
                raise
            user = {}
        raw = (user.get("profile") or {}).get("email")
        email = None
        if raw and not user.get("is_bot") and not user.get("deleted"):
            try:
                email = normalize_email(str(raw))
            except ValueError:
                email = None
        self._emails[user_id] = (
            time.monotonic() + (TTL_SECONDS if email else MISSING_TTL_SECONDS),
            email,
        )
        if email is None:
            raise NoEmail(user_id)
        self._ids[email] = (time.monotonic() + TTL_SECONDS, user_id)
        await self._remember(user_id, email, user.get("real_name") or user.get("name"))
        return email

    async def user_id_of(self, email: str) -> str | None:
        """The Slack user id for an e-mail (``users.lookupByEmail``), None if not in Slack."""
        cached = self._ids.get(email)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            user = (await self.client.users_lookupByEmail(email=email)).get("user") or {}
        except SlackApiError as exc:
            if exc.response.get("error") not in ("users_not_found", "user_not_found"):
                raise
            user = {}
        user_id = user.get("id")
        self._ids[email] = (
            time.monotonic() + (TTL_SECONDS if user_id else MISSING_TTL_SECONDS),
            user_id,
        )
        if user_id:
            await self._remember(user_id, email, user.get("real_name") or user.get("name"))
        return str(user_id) if user_id else None

    async def mentions(self, emails: Iterable[str]) -> dict[str, str]:
        """E-mail → Slack user id for everyone we already know (no API calls)."""
        wanted = {e for e in emails if e}
        found = {
            email: entry[1]
            for email in wanted
            if (entry := self._ids.get(email)) is not None and entry[1]
        }
        missing = wanted - found.keys()
        if missing:
            async with self.store.read() as tx:
                found.update(await chat_store.user_ids(tx.conn, PLATFORM, missing))
        return found

    async def _remember(self, user_id: str, email: str, name: object) -> None:
        now = self.clock.now()
        await self.store.write_job(
            lambda conn: chat_store.remember_identity(
                conn,
                platform=PLATFORM,
                user_id=user_id,
                email=email,
                display_name=str(name)[:255] if name else None,
                now=now,
            )
        )
