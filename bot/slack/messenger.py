"""``SlackMessenger``: the chat ``Messenger`` port on the Slack Web API.

A Slack message id is ``<channel id>/<ts>``. Channels are posted to by name or
id as the policy names them (Slack resolves names); people by e-mail, through
``users.lookupByEmail`` and ``conversations.open``. HTTP 429 is retried by the
client's rate-limit handler (see ``bot.slack.app.web_client``), never dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.people import PLATFORM, SlackPeople
from cards import slack as cards
from countersign.chat.ports import DirectKind, Unreachable
from countersign.core.model import ApprovalRequest, Vote

__all__ = ["SlackMessenger", "split_message_id"]

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

    def __init__(self, client: AsyncWebClient, people: SlackPeople) -> None:
        self.client = client
        self.people = people

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
        posted = await self._call("chat_postMessage", channel=channel, **message)
        return f"{posted['channel']}/{posted['ts']}"

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
