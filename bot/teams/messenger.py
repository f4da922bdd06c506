"""``TeamsMessenger``: the chat ``Messenger`` port on the Bot Framework connector.

Cards are posted proactively into stored conversations (``CloudAdapter.
continue_conversation``): ``channel:Team/Channel`` (names or a conversation
id) and ``dm:<e-mail>`` (the personal chat of an approver who has the app).
A Teams message id is ``<conversation id>|<activity id>``. Replies under a
channel card go into its thread (``;messageid=``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Any

from botbuilder.core import BotAdapter, MessageFactory, TurnContext
from botbuilder.schema import ConversationReference
from botframework.connector.models import ErrorResponseException
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.teams.handler import CountersignTeamsBot, card_attachment
from bot.teams.people import involved
from cards import teams as cards
from countersign.chat.ports import DirectKind, Unreachable
from countersign.core.model import ApprovalRequest, Vote
from storage import SqlStore
from storage import chat as chat_store

log = logging.getLogger("countersign.teams")

__all__ = ["TeamsMessenger", "split_message_id"]


def split_message_id(message_id: str) -> tuple[str, str]:
    """``(conversation id, activity id)`` of a stored Teams message id."""
    conversation, _, activity = message_id.rpartition("|")
    return conversation, activity


class TeamsMessenger:
    """Posts and keeps Teams cards of requests."""

    platform = "teams"
    # A bot cannot list a conversation's messages in Teams: a card posted by a
    # call whose answer was lost cannot be found again (see RELIABILITY.md).
    finds_cards = False

    def __init__(self, adapter: Any, app_id: str, bot: CountersignTeamsBot, engine: AsyncEngine):
        self.adapter = adapter
        self.app_id = app_id
        self.bot = bot
        self.store = SqlStore(engine)

    async def _conversation(self, destination: str) -> chat_store.TeamsConversation:
        kind, _, target = destination.partition(":")
        async with self.store.read() as tx:
            if kind == "dm":
                found = await chat_store.personal_teams_conversation(tx.conn, target)
            elif kind == "channel":
                found = await chat_store.find_teams_channel(tx.conn, target)
            else:
                found = None
        if found is None:
            raise Unreachable(f"no Teams conversation for {destination} (is the app installed?)")
        return found

    async def _by_id(self, conversation_id: str) -> chat_store.TeamsConversation:
        async with self.store.read() as tx:
            found = await chat_store.find_teams_channel(tx.conn, conversation_id)
        if found is None:
            raise Unreachable(f"Teams conversation {conversation_id} is not stored")
        return found

    async def _in(
        self,
        conversation: chat_store.TeamsConversation,
        work: Callable[[TurnContext, ConversationReference], Awaitable[None]],
    ) -> None:
        reference = ConversationReference().deserialize(dict(conversation.reference))

        async def run(turn_context: TurnContext) -> None:
            await work(turn_context, reference)

        await self.adapter.continue_conversation(reference, run, self.app_id)

    async def _send(
        self,
        conversation: chat_store.TeamsConversation,
        card: dict[str, Any],
        *,
        thread: str | None = None,
    ) -> str:
        """Post a new message (or a reply in a channel thread) with the connector itself.

        ``TurnContext.send_activity`` inside ``continue_conversation`` would mark
        the post as a reply to the synthetic continuation event; a card is a
        new message of its own.
        """
        sent: list[str] = []

        async def work(turn_context: TurnContext, reference: ConversationReference) -> None:
            connector = turn_context.turn_state[BotAdapter.BOT_CONNECTOR_CLIENT_KEY]
            activity = MessageFactory.attachment(card_attachment(card))
            TurnContext.apply_conversation_reference(activity, reference)
            activity.reply_to_id = None
            if thread is not None and conversation.kind == "channel":
                activity.reply_to_id = thread
                answer = await connector.conversations.reply_to_activity(
                    conversation.id, thread, activity
                )
            else:
                answer = await connector.conversations.send_to_conversation(
                    conversation.id, activity
                )
            sent.append(str(answer.id))

        await self._in(conversation, work)
        return f"{conversation.id}|{sent[0]}"

    async def find(self, destination: str, request: ApprovalRequest) -> str | None:
        """Never found: see ``finds_cards``."""
        return None

    async def post(self, destination: str, request: ApprovalRequest) -> str:
        """Post the card into the destination's conversation."""
        conversation = await self._conversation(destination)
        return await self._send(conversation, await self.bot.card_for(request, viewer=None))

    async def update(self, message_id: str, request: ApprovalRequest) -> None:
        """Replace a posted card with the request's current state (``update_activity``)."""
        conversation_id, activity_id = split_message_id(message_id)
        conversation = await self._by_id(conversation_id)
        card = await self.bot.card_for(request, viewer=None)

        async def work(turn_context: TurnContext, reference: ConversationReference) -> None:
            activity = MessageFactory.attachment(card_attachment(card))
            activity.id = activity_id
            await turn_context.update_activity(activity)

        try:
            await self._in(conversation, work)
        except ErrorResponseException as exc:
            if getattr(exc.response, "status_code", None) != HTTPStatus.NOT_FOUND:
                raise  # anything else is retried
            # Someone deleted the card: it stays deleted (as on Slack), not retried forever.
            log.info("Teams card %s is gone; not updating it", message_id)

    async def reply(
        self,
        message_id: str,
        request: ApprovalRequest,
        *,
        vote: Vote | None = None,
        reminder: Sequence[str] = (),
        escalated: Sequence[str] = (),
    ) -> None:
        """A reply under the card (its thread in a channel; the chat elsewhere)."""
        conversation_id, activity_id = split_message_id(message_id)
        conversation = await self._by_id(conversation_id)
        names = await self.bot.people.names(involved(request, [*reminder, *escalated]))
        if vote is not None:
            card = cards.vote_card(request, vote, people=names)
        elif reminder:
            card = cards.reminder_card(request, reminder, people=names)
        else:
            card = cards.escalation_card(request, escalated, people=names)
        await self._send(conversation, card, thread=activity_id)

    async def tell(
        self,
        email: str,
        request: ApprovalRequest,
        kind: DirectKind,
        *,
        people: Sequence[str] = (),
    ) -> str:
        """A personal message: the outcome, a reminder or an escalation notice."""
        conversation = await self._conversation(f"dm:{email}")
        names = await self.bot.people.names(involved(request, [*people, email]))
        if kind == "outcome":
            card = cards.outcome_card(request, people=names)
        elif kind == "reminder":
            card = cards.reminder_card(request, people or [email], people=names)
        else:
            card = cards.escalation_card(request, people or [email], people=names)
        return await self._send(conversation, card)
