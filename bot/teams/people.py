"""Who is who on Teams: user id → e-mail (``TeamsInfo.get_member``), cached, and back.

The e-mail (or UPN) comes from the Teams roster through the connector, never
from the activity payload, so a click is bound to the tenant's identity.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from botbuilder.core import TurnContext
from botbuilder.core.teams import TeamsInfo
from sqlalchemy.ext.asyncio import AsyncEngine

from countersign.core.identity import normalize_email
from countersign.core.model import ApprovalRequest
from countersign.ports import Clock
from storage import SqlStore
from storage import chat as chat_store

__all__ = ["PLATFORM", "NoEmail", "TeamsPeople", "involved"]

PLATFORM = "teams"
TTL_SECONDS = 600.0
IDS_TTL_SECONDS = 60.0
IDS_CACHE_SIZE = 1000


class NoEmail(Exception):
    """The Teams member has no e-mail or UPN we can read."""


class TeamsPeople:
    """Resolves Teams users to e-mail addresses (TTL cache + the identities table)."""

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self.store = SqlStore(engine)
        self.clock = clock
        self._emails: dict[str, tuple[float, str]] = {}
        self._known_sets: dict[frozenset[str], tuple[float, dict[str, chat_store.KnownPerson]]] = {}

    async def email_of(self, turn_context: TurnContext, user_id: str) -> str:
        """The normalised e-mail of the member ``user_id`` (``NoEmail`` if none)."""
        cached = self._emails.get(user_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            member = await TeamsInfo.get_member(turn_context, user_id)
        except Exception as exc:  # not in the roster, or the connector refused
            raise NoEmail(user_id) from exc
        raw = getattr(member, "email", None) or getattr(member, "user_principal_name", None)
        try:
            email = normalize_email(str(raw)) if raw else None
        except ValueError:
            email = None
        if email is None:
            raise NoEmail(user_id)
        self._emails[user_id] = (time.monotonic() + TTL_SECONDS, email)
        now = self.clock.now()
        name = str(member.name)[:255] if getattr(member, "name", None) else None
        await self.store.write_job(
            lambda conn: chat_store.remember_identity(
                conn, platform=PLATFORM, user_id=user_id, email=email, display_name=name, now=now
            )
        )
        return email

    async def _known(self, emails: Iterable[str]) -> dict[str, chat_store.KnownPerson]:
        """The people of ``emails`` we know on Teams (one query, cached a minute per set).

        A request's people are the same set card after card, so one lookup serves
        them all.
        """
        wanted = frozenset(emails)
        cached = self._known_sets.get(wanted)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        async with self.store.read() as tx:
            found = await chat_store.known_people(tx.conn, PLATFORM, wanted)
        if len(self._known_sets) > IDS_CACHE_SIZE:
            self._known_sets.clear()
        self._known_sets[wanted] = (time.monotonic() + IDS_TTL_SECONDS, found)
        return found

    async def user_ids(self, emails: Iterable[str]) -> dict[str, str]:
        """E-mail → Teams user id (every card carries its approvers' ids for ``refresh``)."""
        return {email: p.user_id for email, p in (await self._known(emails)).items()}

    async def names(self, emails: Iterable[str]) -> dict[str, str]:
        """E-mail → Teams display name, for those we know by name.

        Cards name people as Teams does; someone never seen on Teams keeps their
        e-mail. Names come from the roster (``TeamsInfo.get_member``) and are
        escaped on the card like every other untrusted string.
        """
        known = await self._known(emails)
        return {email: p.display_name for email, p in known.items() if p.display_name}


def involved(request: ApprovalRequest, extra: Iterable[str] = ()) -> set[str]:
    """Everyone a card of ``request`` may name: approvers, voters, deciders, the requester."""
    found = set(request.rule.approvers) | {v.voter for v in request.votes}
    found |= set(request.decided_by) | set(extra)
    if request.requested_by:
        found.add(request.requested_by)
    return found
