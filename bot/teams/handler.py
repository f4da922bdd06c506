"""The Teams bot: universal actions on cards, typed commands, and conversation capture.

``adaptiveCard/action`` invokes are answered inside the request with the card
as the clicker should now see it, or an error card naming the rule. Older
clients send the same data as an ``Action.Submit`` message; it is handled the
same way. Every conversation the bot sees is stored so cards can be posted to
it later. Commands (``help``, ``pending``, ``show <id>``, ``history ...``) are
answered with cards.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from dataclasses import replace
from typing import Any

from botbuilder.core import InvokeResponse, MessageFactory, TurnContext
from botbuilder.core.teams import TeamsActivityHandler
from botbuilder.schema import (
    Attachment,
    ChannelAccount,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.teams.people import NoEmail, TeamsPeople, involved
from cards import teams as cards
from cards.slack import REFUSALS
from countersign.chat.commands import decode_more, parse_command
from countersign.chat.queries import history_page, parse_edit, pending_for, refusal_for
from countersign.core.errors import CountersignError
from countersign.core.model import ApprovalRequest, Choice, Status
from countersign.ports import DuplicateKey, HistoryQuery
from countersign.service import SYNC_JOB, ApprovalService
from storage import SqlStore
from storage import chat as chat_store

__all__ = ["TURN_STARTED", "CountersignTeamsBot", "card_attachment", "conversation_of"]

log = logging.getLogger("countersign.teams")

PLATFORM = "teams"
CARD_TYPE = "application/vnd.microsoft.card.adaptive"
NO_EMAIL = (
    "Countersign can't read the e-mail address of your Teams account, so it can't tell "
    "whether you may vote."
)
MAX_PENDING = 200
# The destination prefix of a card found by its refresh (``_adopt``).
FOUND = "found:"
MAX_TRACKED = 10_000
# Set once the bot's turn begins: an exception before it is an authentication failure.
TURN_STARTED: contextvars.ContextVar[bool] = contextvars.ContextVar("turn_started", default=False)


def card_attachment(card: dict[str, Any]) -> Attachment:
    """An Adaptive Card as a message attachment."""
    return Attachment(content_type=CARD_TYPE, content=card)


def conversation_of(activity: Any) -> chat_store.TeamsConversation:
    """The conversation an activity came from, as we store it."""
    reference = TurnContext.get_conversation_reference(activity)
    conversation = activity.conversation
    kind = conversation.conversation_type or "personal"
    conversation_id = str(conversation.id).split(";messageid=")[0]
    reference.conversation.id = conversation_id
    # A proactive post is a new message, not a reply to whatever activity we saw last.
    reference.activity_id = None
    data = activity.channel_data or {}
    team = data.get("team") or {}
    channel = data.get("channel") or {}
    tenant = (data.get("tenant") or {}).get("id") or conversation.tenant_id
    channel_name = channel.get("name")
    if kind == "channel" and not channel_name and channel.get("id") == team.get("id"):
        channel_name = "General"  # Teams leaves the General channel's name out
    return chat_store.TeamsConversation(
        id=conversation_id,
        kind=kind,
        service_url=str(activity.service_url),
        tenant_id=tenant,
        team_id=team.get("id"),
        team_name=team.get("name"),
        channel_name=channel_name,
        user_id=activity.from_property.id if kind == "personal" else None,
        user_email=None,
        reference=reference.serialize(),
    )


def _invoke(body: dict[str, Any]) -> InvokeResponse:
    # The body stays a plain dict (the card as rendered): ``TeamsBot.handle`` writes
    # it as JSON itself. PLATFORM-NOTES: ``CloudAdapter.process`` would serialise a
    # dict once more; we do not use it.
    return InvokeResponse(status=200, body=body)


class CountersignTeamsBot(TeamsActivityHandler):  # type: ignore[misc]
    """Teams activities in, service calls and cards out."""

    def __init__(self, service: ApprovalService, people: TeamsPeople, engine: AsyncEngine) -> None:
        super().__init__()
        self.service = service
        self.people = people
        self.store = SqlStore(engine)
        self._known: set[str] = set()
        self._tracked: set[str] = set()  # card message ids known to be stored

    async def on_turn(self, turn_context: TurnContext) -> None:
        """Every activity: remember its conversation, then dispatch."""
        TURN_STARTED.set(True)
        await self._remember(turn_context)
        await super().on_turn(turn_context)

    async def _remember(self, turn_context: TurnContext, *, force: bool = False) -> None:
        activity = turn_context.activity
        if activity.conversation is None or activity.from_property is None:
            return
        base_id = str(activity.conversation.id).split(";messageid=")[0]
        if base_id in self._known and not force:
            return  # known already: no need to build and store its reference again
        conversation = conversation_of(activity)
        if conversation.kind == "personal" and activity.from_property.id:
            try:
                email = await self.people.email_of(turn_context, activity.from_property.id)
                conversation = replace(conversation, user_email=email)
            except NoEmail:
                log.info("personal chat %s: no e-mail for its user", conversation.id)
        now = self.service.clock.now()
        found = conversation
        await self.store.write_job(
            lambda conn: chat_store.save_teams_conversation(conn, found, now)
        )
        self._known.add(conversation.id)

    async def on_installation_update_add(self, turn_context: TurnContext) -> None:
        """Installed in a team, chat or personal scope: remember it and say hello."""
        await self._remember(turn_context, force=True)
        await turn_context.send_activity(
            MessageFactory.attachment(card_attachment(cards.help_card()))
        )

    async def on_teams_members_added(
        self, members_added: list[ChannelAccount], team_info: Any, turn_context: TurnContext
    ) -> None:
        """The bot was added somewhere: remember the conversation."""
        bot_id = turn_context.activity.recipient.id if turn_context.activity.recipient else None
        if any(m.id == bot_id for m in members_added):
            await self._remember(turn_context, force=True)

    # -- universal actions ---------------------------------------------------------------

    async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse:
        """``adaptiveCard/action``: vote, refresh or page; answered with a card."""
        activity = turn_context.activity
        if activity.name != "adaptiveCard/action":
            return await super().on_invoke_activity(turn_context)
        value = activity.value or {}
        action = value.get("action") or {}
        data = dict(action.get("data") or {})
        body = await self.act(
            turn_context,
            str(action.get("verb") or ""),
            data,
            automatic=value.get("trigger") == "automatic",
        )
        return _invoke(body)

    async def act(
        self,
        turn_context: TurnContext,
        verb: str,
        data: dict[str, Any],
        *,
        automatic: bool = False,
    ) -> dict[str, Any]:
        """Do what a card action asks; the universal-action answer (a card or an error card).

        ``automatic``: Teams refreshing a request card as someone looks at it.
        """
        if verb == cards.VERB_MORE:
            try:
                query = decode_more(str(data.get("more") or ""))
            except (ValueError, KeyError, TypeError):
                return cards.invoke_error("invalid_request", "That page is gone.")
            return cards.invoke_response(await self._history(query))
        request_id = str(data.get("request_id") or "")
        try:
            email = await self.people.email_of(turn_context, turn_context.activity.from_property.id)
        except NoEmail:
            return cards.invoke_error("no_email", NO_EMAIL)
        try:
            if verb == cards.VERB_REFRESH:
                request = await self.service.get_request(request_id)
                if automatic:
                    try:
                        await self._adopt(turn_context, request)
                    except Exception:  # the viewer's refresh is answered regardless
                        log.exception("could not store the refreshed card of %s", request.id)
            elif verb == cards.VERB_APPROVE:
                comment = str(data.get(cards.INPUT_APPROVE_COMMENT) or "").strip() or None
                request = (
                    await self.service.cast_vote(
                        request_id, email, PLATFORM, Choice.APPROVE, comment=comment
                    )
                ).request
            elif verb == cards.VERB_DENY:
                reason = str(data.get(cards.INPUT_REASON) or "").strip()
                if not reason:
                    return cards.invoke_error("invalid_request", "A reason is required to deny.")
                request = (
                    await self.service.cast_vote(
                        request_id, email, PLATFORM, Choice.DENY, comment=reason
                    )
                ).request
            elif verb == cards.VERB_EDIT:
                params = parse_edit(str(data.get(cards.INPUT_PARAMS) or ""))
                if isinstance(params, str):
                    return cards.invoke_error("invalid_edit", params)
                comment = str(data.get(cards.INPUT_COMMENT) or "").strip() or None
                request = (
                    await self.service.cast_vote(
                        request_id,
                        email,
                        PLATFORM,
                        Choice.APPROVE,
                        comment=comment,
                        edited_params=params,
                    )
                ).request
            else:
                return cards.invoke_error("invalid_request", f"Unknown action {verb[:40]!r}.")
        except CountersignError as err:
            return cards.invoke_error(err.code, str(err))
        return cards.invoke_response(await self.card_for(request, viewer=email))

    async def _adopt(self, turn_context: TurnContext, request: ApprovalRequest) -> None:
        """Keep a request card that nothing tracks up to date from now on.

        Only request cards carry a ``refresh``, so an automatic refresh comes from
        one of them; if its message is not among the request's card references,
        its post's answer was lost (a replica killed mid-call) and the card was
        posted again elsewhere. A Teams bot cannot list a conversation's messages,
        so this is where such a card is found: it is stored (no vote replies
        under it, so the thread is not repeated) and the next sync updates it.
        """
        activity = turn_context.activity
        if activity.conversation is None or not activity.reply_to_id:
            return
        conversation = str(activity.conversation.id or "").split(";messageid=")[0]
        if not conversation:
            return
        message_id = f"{conversation}|{activity.reply_to_id}"
        if message_id in self._tracked:
            return
        refs = await self.store.read_job(
            lambda conn: chat_store.card_refs(conn, request.id, PLATFORM)
        )
        if any(ref.message_id == message_id for ref in refs):
            self._tracked.add(message_id)
            return
        now = self.service.clock.now()
        extra = {"quiet": True, "replied": [vote.voter for vote in request.votes]}

        def write(conn: Any) -> None:
            chat_store.add_card_ref(
                conn,
                request_id=request.id,
                platform=PLATFORM,
                destination=f"{FOUND}{conversation}",
                message_id=message_id,
                extra=extra,
                now=now,
            )
            chat_store.enqueue_job(conn, request.id, SYNC_JOB, now)

        try:
            await self.store.write_job(write)
        except (IntegrityError, DuplicateKey):
            pass  # another refresh of the same card stored it first
        else:
            # The chat worker's next poll (within a second) runs the sync.
            log.warning(
                "found an untracked card of %s (%s): keeping it true", request.id, message_id
            )
        self._tracked.add(message_id)
        if len(self._tracked) > MAX_TRACKED:
            self._tracked.clear()

    async def card_for(self, request: ApprovalRequest, *, viewer: str | None) -> dict[str, Any]:
        """The request card as ``viewer`` sees it (refreshing for every approver we know)."""
        note = None
        if viewer is not None and request.status is Status.PENDING:
            refused = refusal_for(request, viewer, PLATFORM, self.service.clock.now())
            # A viewer who voted already sees their own vote on the card instead.
            if refused is not None and refused.code != "already_voted":
                note = REFUSALS.get(refused.code, str(refused))
        everyone = involved(request)  # one cached lookup for the ids and the names
        ids = await self.people.user_ids(everyone)
        user_ids = [ids[e] for e in sorted(request.rule.approvers) if e in ids][:60]
        names = await self.people.names(everyone)
        rule = self.service.policy.rule(request.rule.name)
        return cards.request_card(
            request,
            viewer=viewer,
            viewer_note=note,
            user_ids=user_ids,
            people=names,
            approve_comment=rule is not None and rule.approve_comment,
        )

    # -- messages: commands, and Action.Submit from older clients ------------------------

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        """A typed command, or an ``Action.Submit`` (its data carries the verb)."""
        activity = turn_context.activity
        if isinstance(activity.value, dict) and activity.value.get("verb"):
            data = dict(activity.value)
            answer = await self.act(turn_context, str(data.pop("verb")), data)
            reply = MessageFactory.attachment(card_attachment(answer["value"]))
            if activity.reply_to_id and answer["value"].get("type") == "AdaptiveCard":
                reply.id = activity.reply_to_id
                try:
                    await turn_context.update_activity(reply)
                    return
                except Exception:  # the card is gone: answer with a new message instead
                    reply.id = None
            await turn_context.send_activity(reply)
            return
        text = TurnContext.remove_recipient_mention(activity) or activity.text or ""
        card = await self.command(turn_context, text.strip())
        await turn_context.send_activity(MessageFactory.attachment(card_attachment(card)))

    async def command(self, turn_context: TurnContext, text: str) -> dict[str, Any]:
        """The card answering ``help | pending | show <id> | history [filters]``."""
        parsed = parse_command(text)
        if parsed.name == "show":
            try:
                request = await self.service.get_request(str(parsed.request_id))
            except CountersignError as err:
                return cards.refusal_card(err.code, str(err))
            viewer = None
            with contextlib.suppress(NoEmail):
                viewer = await self.people.email_of(
                    turn_context, turn_context.activity.from_property.id
                )
            return await self.card_for(request, viewer=viewer)
        if parsed.name == "pending":
            try:
                email = await self.people.email_of(
                    turn_context, turn_context.activity.from_property.id
                )
            except NoEmail:
                return cards.refusal_card("no_email", NO_EMAIL)
            return await self._pending(email)
        if parsed.name == "history":
            return await self._history(parsed.query)
        return cards.help_card()

    async def _pending(self, email: str) -> dict[str, Any]:
        mine = await pending_for(self.service, email, PLATFORM)
        return cards.request_list_card(mine, title="Waiting for your vote", with_actions=True)

    async def _history(self, query: HistoryQuery) -> dict[str, Any]:
        page, more = await history_page(self.service, query)
        more_data = {"more": more} if more is not None else None
        return cards.request_list_card(page, title="History", more_data=more_data)
