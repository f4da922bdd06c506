"""``SlackMessenger``: the chat ``Messenger`` port on the Slack Web API.

A Slack message id is ``<channel id>/<ts>``. Channels are posted to by name or
id as the policy names them (Slack resolves names); people by e-mail, through
``users.lookupByEmail`` and ``conversations.open``. HTTP 429 is retried by the
client's rate-limit handler (see ``bot.slack.app.web_client``), never dropped.

Every card carries message metadata naming its request and destination
(``countersign_card``), so a card whose ``chat.postMessage`` answer was lost (a
timeout, a replica killed mid-call) is found again in the channel's history
instead of being posted twice: ``find``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.people import PLATFORM, SlackPeople
from cards import slack as cards
from countersign.chat.ports import DirectKind, Unreachable
from countersign.core.model import ApprovalRequest, Vote

__all__ = ["CARD_EVENT", "FIND_SCAN_LIMIT", "SlackMessenger", "split_message_id"]

log = logging.getLogger("countersign.slack")

# A conversation id (public or private channel, DM), as opposed to a channel name.
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{6,}")
# The metadata event type of a request card.
CARD_EVENT = "countersign_card"
# How far back ``find`` reads a conversation (newest first), in messages: a card
# in doubt was posted a few minutes earlier at most (a job's lease and retry).
FIND_SCAN_LIMIT = 1000
FIND_PAGE = 200
# Errors of a history lookup meaning "we may not read here" (an install without
# the history scopes, a public channel the bot posts to without being a member):
# the card is then posted again, as before this lookup existed.
_NOT_READABLE = frozenset(
    {"missing_scope", "not_in_channel", "channel_not_found", "not_allowed_token_type"}
)

# Errors meaning "that place does not exist for us": remembered, not retried.
_UNREACHABLE = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "user_not_found",
        "users_not_found",
        "cannot_dm_bot",
        "user_disabled",
    }
)


def split_message_id(message_id: str) -> tuple[str, str]:
    """``(channel, ts)`` of a stored Slack message id."""
    channel, _, ts = message_id.partition("/")
    return channel, ts


def _people_of(request: ApprovalRequest, extra: Sequence[str] = ()) -> set[str]:
    found = {v.voter for v in request.votes} | set(request.decided_by) | set(extra)
    found |= set(request.rule.approvers)
    if request.requested_by:
        found.add(request.requested_by)
    return found


class SlackMessenger:
    """Posts and keeps Slack cards of requests."""

    platform = PLATFORM

    finds_cards = True

    def __init__(self, client: AsyncWebClient, people: SlackPeople) -> None:
        self.client = client
        self.people = people
        self._bot_id: str | None = None
        self._channel_ids: dict[str, str] = {}  # "#name" -> channel id, for ``find``

    async def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return await getattr(self.client, method)(**kwargs)
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error in _UNREACHABLE:
                raise Unreachable(f"{method}: {error}") from exc
            raise

    async def _dm_channel(self, email: str) -> str:
        user_id = await self.people.user_id_of(email)
        if user_id is None:
            raise Unreachable(f"{email} is not in this Slack workspace")
        opened = await self._call("conversations_open", users=user_id)
        return str(opened["channel"]["id"])

    async def _where(self, destination: str) -> str:
        kind, _, target = destination.partition(":")
        if kind == "dm":
            return await self._dm_channel(target)
        if kind == "channel":
            return target
        raise Unreachable(f"unknown destination {destination!r}")

    async def post(self, destination: str, request: ApprovalRequest) -> str:
        """Post the card; ``<channel>/<ts>``."""
        channel = await self._where(destination)
        message = cards.request_message(
            request, people=await self.people.mentions(_people_of(request))
        )
        metadata = {
            "event_type": CARD_EVENT,
            "event_payload": {"request_id": request.id, "destination": destination},
        }
        posted = await self._call("chat_postMessage", channel=channel, metadata=metadata, **message)
        return f"{posted['channel']}/{posted['ts']}"

    async def find(self, destination: str, request: ApprovalRequest) -> str | None:
        """The card of ``request`` that we posted to ``destination``, from its metadata.

        Reads the conversation newest first, up to ``FIND_SCAN_LIMIT`` messages;
        only a message posted by this bot counts (another app could post a message
        with the same metadata). ``None`` when there is none, or when this install
        may not read the conversation (then the caller posts again).
        """
        try:
            channel = await self._channel_id(destination)
            if channel is None:
                return None
            bot_id = await self._our_bot_id()
            cursor: str | None = None
            read = 0
            while read < FIND_SCAN_LIMIT:
                page = await self._call(
                    "conversations_history",
                    channel=channel,
                    limit=FIND_PAGE,
                    include_all_metadata=True,
                    **({"cursor": cursor} if cursor else {}),
                )
                messages = page.get("messages") or []
                for message in messages:
                    if message.get("bot_id") == bot_id and _is_card(message, request, destination):
                        return f"{channel}/{message['ts']}"
                read += len(messages)
                cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
                if not page.get("has_more") or cursor is None:
                    return None
            return None
        except SlackApiError as exc:
            if exc.response.get("error") in _NOT_READABLE:
                log.warning(
                    "cannot look for the card of %s in %s (%s): posting it again",
                    request.id,
                    destination,
                    exc.response.get("error"),
                )
                return None
            raise

    async def _our_bot_id(self) -> str:
        if self._bot_id is None:
            self._bot_id = str((await self._call("auth_test"))["bot_id"])
        return self._bot_id

    async def _channel_id(self, destination: str) -> str | None:
        """The conversation id behind a destination (history takes ids, not names)."""
        kind, _, target = destination.partition(":")
        if kind == "dm":
            return await self._dm_channel(target)
        if kind != "channel":
            return None
        if _CHANNEL_ID.fullmatch(target):
            return target
        target = "#" + target.removeprefix("#")
        if target not in self._channel_ids:
            cursor: str | None = None
            while True:
                page = await self._call(
                    "conversations_list",
                    types="public_channel,private_channel",
                    exclude_archived=True,
                    limit=1000,
                    **({"cursor": cursor} if cursor else {}),
                )
                for channel in page.get("channels") or []:
                    self._channel_ids[f"#{channel['name']}"] = str(channel["id"])
                cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
                if target in self._channel_ids or cursor is None:
                    break
        return self._channel_ids.get(target)

    async def update(self, message_id: str, request: ApprovalRequest) -> None:
        """Re-render the card in place (``chat.update``)."""
        channel, ts = split_message_id(message_id)
        message = cards.request_message(
            request, people=await self.people.mentions(_people_of(request))
        )
        try:
            await self._call("chat_update", channel=channel, ts=ts, **message)
        except SlackApiError as exc:
            if exc.response.get("error") not in ("message_not_found", "cant_update_message"):
                raise  # a card someone deleted stays deleted; anything else is retried

    async def reply(
        self,
        message_id: str,
        request: ApprovalRequest,
        *,
        vote: Vote | None = None,
        reminder: Sequence[str] = (),
        escalated: Sequence[str] = (),
    ) -> None:
        """A thread reply under the card."""
        channel, ts = split_message_id(message_id)
        people = await self.people.mentions(_people_of(request, [*reminder, *escalated]))
        if vote is not None:
            message = cards.vote_reply(request, vote, people=people)
        elif reminder:
            message = cards.reminder_message(request, reminder, people=people)
        else:
            message = cards.escalation_message(request, escalated, people=people)
        await self._call("chat_postMessage", channel=channel, thread_ts=ts, **message)

    async def tell(
        self,
        email: str,
        request: ApprovalRequest,
        kind: DirectKind,
        *,
        people: Sequence[str] = (),
    ) -> str:
        """A direct message: the outcome to the requester, or a reminder to an approver."""
        channel = await self._dm_channel(email)
        mentions = await self.people.mentions(_people_of(request, people))
        if kind == "outcome":
            message = cards.outcome_message(request, people=mentions)
        elif kind == "reminder":
            message = cards.reminder_message(request, people or [email], people=mentions)
        else:
            message = cards.escalation_message(request, people or [email], people=mentions)
        posted = await self._call("chat_postMessage", channel=channel, **message)
        return f"{posted['channel']}/{posted['ts']}"


def _is_card(message: Any, request: ApprovalRequest, destination: str) -> bool:
    metadata = message.get("metadata") or {}
    payload = metadata.get("event_payload") or {}
    return bool(
        metadata.get("event_type") == CARD_EVENT
        and payload.get("request_id") == request.id
        and payload.get("destination") == destination
        and message.get("ts")
    )
