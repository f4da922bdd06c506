"""Bolt listeners: parse a click, a modal or ``/countersign``, call the service, answer.

Bolt runs with ``process_before_response``. An Approve click is acknowledged
once its vote is recorded: an acknowledged click is an accepted vote, and
nothing accepted may be lost to a crash. Other clicks (Deny and Approve with
changes open a modal, Details, More) are acknowledged at once and their work
runs in a background task; at most ``MAX_IN_FLIGHT`` of those at a time.
(Bolt's own lazy listeners deep-copy every request first, which costs more than
the work and cannot copy our shared HTTP session.) Modal
submissions do their work before answering, because a refusal is shown inside
the modal (``response_action: errors``). The service enforces every rule; a
refusal is told privately, naming it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.people import NoEmail, SlackPeople
from cards import slack as cards
from countersign.chat.commands import decode_more, parse_command
from countersign.chat.queries import history_page, parse_edit, pending_for
from countersign.core.errors import CountersignError, NotFound
from countersign.core.model import ApprovalRequest, Choice
from countersign.core.voting import Ballot, cast_vote
from countersign.ports import HistoryQuery
from countersign.service import ApprovalService

__all__ = ["PLATFORM_NAME", "SlackListeners"]

log = logging.getLogger("countersign.slack")

PLATFORM_NAME = "slack"
NO_EMAIL_TEXT = (
    "Countersign can't read the e-mail address of your Slack account, so it can't tell "
    "whether you may vote. Ask your Slack admin to grant the app the `users:read.email` scope."
)
MAX_PENDING = 200
# Clicks acknowledged but still being worked on (voting, opening a modal), at most.
MAX_IN_FLIGHT = 64

Body = dict[str, Any]


def _user(body: Body) -> str:
    # Interactions carry {"user": {"id": ...}}; slash commands a flat "user_id".
    return str((body.get("user") or {}).get("id") or body["user_id"])


def _channel(body: Body) -> str | None:
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
        "channel_id"
    )
    return str(channel) if channel else None


def _button_value(body: Body) -> str:
    return str(body["actions"][0].get("value") or "")


class SlackListeners:
    """Every Slack listener of Countersign, bound to one service."""

    def __init__(
        self, service: ApprovalService, people: SlackPeople, client: AsyncWebClient
    ) -> None:
        self.service = service
        self.people = people
        self.client = client
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._answers: set[asyncio.Task[None]] = set()

    def register(self, app: AsyncApp) -> None:
        """Attach the listeners to a bolt app."""
        clicks: dict[str, Callable[[Body, Any], Awaitable[None]]] = {
            cards.ACTION_DENY: self.deny_clicked,
            cards.ACTION_EDIT: self.edit_clicked,
            cards.ACTION_DETAILS: self.details_clicked,
            cards.ACTION_MORE: self.more_clicked,
        }
        for action_id, work in clicks.items():
            app.action(action_id)(self._after_ack(work))
        app.action(cards.ACTION_APPROVE)(self.approve_clicked)
        app.view(cards.CALLBACK_APPROVE)(self.approve_submitted)
        app.view(cards.CALLBACK_DENY)(self.deny_submitted)
        app.view(cards.CALLBACK_EDIT)(self.edit_submitted)
        app.command("/countersign")(self.command)

    def _after_ack(
        self, work: Callable[[Body, Any], Awaitable[None]]
    ) -> Callable[..., Awaitable[None]]:
        """A listener that acks, then runs ``work(body, respond)`` in the background."""

        async def listener(ack: Any, body: Body, respond: Any) -> None:
            # Backpressure: past MAX_IN_FLIGHT clicks still being worked on, the next ack
            # waits for a slot, so an overload slows acks down instead of piling up tasks.
            await self._slots.acquire()
            await ack()
            task = asyncio.create_task(self._guarded(work, body, respond))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

        listener.__name__ = work.__name__
        return listener

    def _spawn(self, work: Awaitable[None]) -> None:
        """Run a private answer in the background (kept referenced until it ends)."""

        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception("Slack private answer failed")

        task = asyncio.create_task(guarded())
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _guarded(
        self, work: Callable[[Body, Any], Awaitable[None]], body: Body, respond: Any
    ) -> None:
        try:
            await work(body, respond)
        except Exception:  # nothing to answer the click with any more; keep it in the log
            log.exception("Slack %s failed for %s", work.__name__, _user(body))

    async def drain(self) -> None:
        """Wait for clicks still being worked on (shutdown, tests)."""
        while self._tasks or self._answers:
            await asyncio.gather(*self._tasks, *self._answers, return_exceptions=True)

    # -- private answers ---------------------------------------------------------------

    async def _tell(self, body: Body, text: str) -> None:
        channel = _channel(body)
        if channel is None:
            log.info("no channel to answer %s in: %s", _user(body), text)
            return
        await self.client.chat_postEphemeral(channel=channel, user=_user(body), text=text)

    async def _email(self, body: Body) -> str | None:
        try:
            return await self.people.email_of(_user(body))
        except NoEmail:
            await self._tell(body, NO_EMAIL_TEXT)
            return None

    async def _precheck(self, body: Body, email: str, choice: Choice) -> ApprovalRequest | None:
        """The request when ``email`` may vote on it now; else tell them which rule says no."""
        try:
            request = await self.service.get_request(_button_value(body))
            cast_vote(request, Ballot(email, PLATFORM_NAME, choice), self.service.clock.now())
        except CountersignError as err:
            await self._tell(body, cards.refusal_text(err.code, str(err)))
            return None
        return request

    # -- clicks (lazy: run after the ack) ------------------------------------------------

    async def approve_clicked(self, ack: Any, body: Body) -> None:
        """Approve: the vote is recorded, then the click acknowledged.

        Recorded first because an acknowledged click is an accepted vote: a crash
        between the two must not lose it (Slack shows the clicker an error when it
        gets no acknowledgement, and they click again). A refusal is told
        privately after the acknowledgement.
        """
        try:
            email = await self.people.email_of(_user(body))
        except NoEmail:
            await ack()
            self._spawn(self._tell(body, NO_EMAIL_TEXT))
            return
        if await self._asks_for_comment(_button_value(body)):
            # The rule offers a comment box: the vote comes with the modal's submission.
            request = await self._precheck(body, email, Choice.APPROVE)
            if request is not None:
                await self.client.views_open(
                    trigger_id=body["trigger_id"], view=cards.approve_modal(request)
                )
            await ack()
            return
        try:
            await self.service.cast_vote(_button_value(body), email, PLATFORM_NAME, Choice.APPROVE)
        except CountersignError as err:
            await ack()
            self._spawn(self._tell(body, cards.refusal_text(err.code, str(err))))
            return
        await ack()

    async def _asks_for_comment(self, request_id: str) -> bool:
        """Whether the request's rule (in the current policy) offers approvers a comment box."""
        policy = self.service.policy
        if not any(rule.approve_comment for rule in policy.rules):
            return False  # the usual case: no read at all
        try:
            request = await self.service.get_request(request_id)
        except NotFound:
            return False  # the vote will say so
        rule = policy.rule(request.rule.name)
        return rule is not None and rule.approve_comment

    async def deny_clicked(self, body: Body, respond: Any = None) -> None:
        """Deny: a modal asking for the reason (or the rule that forbids voting)."""
        email = await self._email(body)
        request = await self._precheck(body, email, Choice.DENY) if email else None
        if request is not None:
            await self.client.views_open(
                trigger_id=body["trigger_id"], view=cards.deny_modal(request)
            )

    async def edit_clicked(self, body: Body, respond: Any = None) -> None:
        """Approve with changes: a modal with the params as editable JSON."""
        email = await self._email(body)
        request = await self._precheck(body, email, Choice.APPROVE) if email else None
        if request is not None:
            await self.client.views_open(
                trigger_id=body["trigger_id"], view=cards.edit_modal(request)
            )

    async def details_clicked(self, body: Body, respond: Any = None) -> None:
        """Details: the full params and context in a modal (anyone may look)."""
        try:
            request = await self.service.get_request(_button_value(body))
        except NotFound as err:
            await self._tell(body, cards.refusal_text(err.code, str(err)))
            return
        await self.client.views_open(
            trigger_id=body["trigger_id"], view=cards.details_modal(request)
        )

    async def more_clicked(self, body: Body, respond: Any) -> None:
        """The next page of a history answer, in place of the last one."""
        try:
            query = decode_more(_button_value(body))
        except (ValueError, KeyError, TypeError):
            await respond(text="That page is gone; run `/countersign history` again.")
            return
        message = await self._history_page(query)
        await respond(replace_original=True, **message)

    # -- modals (answered after the work: refusals show in the modal) -------------------

    async def approve_submitted(self, ack: Any, body: Body, view: Body) -> None:
        """The approve modal: a vote with its optional comment."""
        comment = (_input(view, "comment") or "").strip() or None
        error = await self._vote_from_modal(body, view, Choice.APPROVE, comment=comment)
        if error is None:
            await ack()
        else:
            await ack(response_action="errors", errors={"comment": error})

    async def deny_submitted(self, ack: Any, body: Body, view: Body) -> None:
        """The deny modal: a vote with its required reason."""
        reason = _input(view, "reason")
        if not reason or not reason.strip():
            await ack(response_action="errors", errors={"reason": "A reason is required."})
            return
        error = await self._vote_from_modal(body, view, Choice.DENY, comment=reason.strip())
        if error is None:
            await ack()
        else:
            await ack(response_action="errors", errors={"reason": error})

    async def edit_submitted(self, ack: Any, body: Body, view: Body) -> None:
        """The approve-with-changes modal: parse the JSON params and vote with them."""
        params = parse_edit(_input(view, "params") or "")
        if isinstance(params, str):
            await ack(response_action="errors", errors={"params": params[:150]})
            return
        comment = _input(view, "comment")
        error = await self._vote_from_modal(
            body, view, Choice.APPROVE, comment=comment, edited_params=params
        )
        if error is None:
            await ack()
        else:
            await ack(response_action="errors", errors={"params": error})

    async def _vote_from_modal(
        self,
        body: Body,
        view: Body,
        choice: Choice,
        *,
        comment: str | None,
        edited_params: dict[str, Any] | None = None,
    ) -> str | None:
        try:
            email = await self.people.email_of(_user(body))
        except NoEmail:
            return NO_EMAIL_TEXT
        try:
            await self.service.cast_vote(
                str(view.get("private_metadata") or ""),
                email,
                PLATFORM_NAME,
                choice,
                comment=comment,
                edited_params=edited_params,
            )
        except CountersignError as err:
            return cards.refusal_text(err.code, str(err))
        return None

    # -- /countersign (answered in the ack, privately) ------------------------------------

    async def command(self, ack: Any, body: Body) -> None:
        """``/countersign help | pending | show <id> | history [filters]``."""
        parsed = parse_command(str(body.get("text") or ""))
        if parsed.name == "help":
            message = cards.help_message()
            if parsed.problem:
                message = {**message, "text": f"{parsed.problem}\n{message.get('text', '')}"}
                message["blocks"] = [
                    {"type": "section", "text": {"type": "mrkdwn", "text": parsed.problem}},
                    *message.get("blocks", []),
                ]
        elif parsed.name == "show":
            message = await self._show(str(parsed.request_id))
        elif parsed.name == "pending":
            message = await self._pending(body)
        else:
            message = await self._history_page(parsed.query)
        await ack(response_type="ephemeral", **message)

    async def _show(self, request_id: str) -> dict[str, Any]:
        try:
            request = await self.service.get_request(request_id)
        except NotFound as err:
            return {"text": cards.refusal_text(err.code, str(err))}
        people = await self.people.mentions(
            {v.voter for v in request.votes} | {request.requested_by or ""}
        )
        return cards.request_message(request, people=people)

    async def _pending(self, body: Body) -> dict[str, Any]:
        try:
            email = await self.people.email_of(_user(body))
        except NoEmail:
            return {"text": NO_EMAIL_TEXT}
        mine = await pending_for(self.service, email, PLATFORM_NAME)
        return cards.request_list(mine, title="Waiting for your vote", with_buttons=True)

    async def _history_page(self, query: HistoryQuery) -> dict[str, Any]:
        page, more = await history_page(self.service, query)
        return cards.request_list(page, title="History", more_value=more)


def _input(view: Body, block_id: str) -> str | None:
    block = ((view.get("state") or {}).get("values") or {}).get(block_id) or {}
    for element in block.values():
        value = element.get("value")
        return str(value) if value is not None else None
    return None
