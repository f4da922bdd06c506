"""Slack Block Kit for approval requests: pure functions from a request to JSON-ready dicts.

Templates (``cards/templates/slack/*.j2``) write the text, escaped by the one
``mrkdwn`` filter; ``cards.blockkit`` builds the blocks and keeps every Slack
limit. Nothing here talks to Slack: the adapter posts what these return.
``people`` maps a normalised e-mail to a Slack user id, so people we know are
mentioned (``<@U123>``) and the others are shown by address.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cards.blockkit import Block, context, divider, header, message, section
from cards.slack_actions import (
    ACTION_APPROVE,
    ACTION_COMMENT,
    ACTION_DENY,
    ACTION_DETAILS,
    ACTION_EDIT,
    ACTION_MORE,
    ACTION_PARAMS,
    ACTION_REASON,
    BLOCK_ACTIONS,
    BLOCK_COMMENT,
    BLOCK_LIST_PREFIX,
    BLOCK_MORE,
    BLOCK_PARAMS,
    BLOCK_REASON,
    CALLBACK_APPROVE,
    CALLBACK_DENY,
    CALLBACK_EDIT,
    details_button,
    request_buttons,
)
from cards.slack_lists import list_capacity, request_list
from cards.slack_modals import approve_modal, deny_modal, details_modal, edit_modal
from cards.templating import piece
from cards.view import MAX_INLINE_ITEMS, RequestView, person, request_view, voter_view
from countersign.core.model import ApprovalRequest, Vote
from countersign.core.voting import tally

__all__ = [
    "ACTION_APPROVE",
    "ACTION_COMMENT",
    "ACTION_DENY",
    "ACTION_DETAILS",
    "ACTION_EDIT",
    "ACTION_MORE",
    "ACTION_PARAMS",
    "ACTION_REASON",
    "BLOCK_ACTIONS",
    "BLOCK_COMMENT",
    "BLOCK_LIST_PREFIX",
    "BLOCK_MORE",
    "BLOCK_PARAMS",
    "BLOCK_REASON",
    "CALLBACK_APPROVE",
    "CALLBACK_DENY",
    "CALLBACK_EDIT",
    "REFUSALS",
    "approve_modal",
    "deny_modal",
    "details_modal",
    "edit_modal",
    "escalation_message",
    "help_message",
    "list_capacity",
    "outcome_message",
    "refusal_text",
    "reminder_message",
    "request_list",
    "request_message",
    "vote_reply",
]

Message = dict[str, Any]

# What a refused click is told, per error code of countersign.core.errors.
REFUSALS: Mapping[str, str] = {
    "self_approval": (
        "You can't approve your own request (no self-approval). Denying it withdraws it instead."
    ),
    "not_an_approver": (
        "You're not an approver for this request: only the people its rule names can vote."
    ),
    "already_voted": "You've already voted on this request (one vote per person).",
    "already_decided": "This request has already been decided; votes no longer change it.",
    "expired": "This request has expired: nobody decided in time, so it can't be approved now.",
    "not_found": "That request doesn't exist, or you can't see it.",
    "invalid_request": "That can't be done: the request or the vote is not valid.",
    "invalid_edit": "Those changes can't be approved: the edited params are not acceptable.",
}


def _request_blocks(v: RequestView, *, buttons: bool = True) -> list[Block]:
    """The body of a request card, shared by the card, reminders and escalations."""
    blocks = [section(piece("request", "summary", v=v))]
    blocks.append(section(piece("request", "params", v=v, shown=MAX_INLINE_ITEMS)))
    blocks.append(section(piece("request", "reason", v=v)))
    if v.context:
        blocks.append(context(piece("request", "context_items", v=v, shown=MAX_INLINE_ITEMS)))
    blocks.append(section(piece("request", "progress", v=v)))
    if v.voters:
        blocks.append(section(piece("request", "votes", v=v)))
    if not v.is_pending:
        blocks.append(section(piece("request", "outcome", v=v)))
    blocks.append(context(piece("request", "footer", v=v)))
    if v.is_pending and buttons:
        blocks.append(request_buttons(v.id, details=v.needs_details))
    elif v.needs_details:
        # Decided requests keep a way to read the full params, nothing to vote with.
        blocks.append(details_button(v.id))
    return blocks


def request_message(
    request: ApprovalRequest, *, people: Mapping[str, str] | None = None
) -> Message:
    """The request card for a channel or a DM, in its current state."""
    v = request_view(request, people=people)
    blocks = [header(piece("request", "header", v=v)), *_request_blocks(v)]
    return message(piece("request", "fallback", v=v), blocks)


def vote_reply(
    request: ApprovalRequest, vote: Vote, *, people: Mapping[str, str] | None = None
) -> Message:
    """The thread reply for one vote: "✅ @alice approved (1 of 2)", with any changes."""
    votes = request.votes if vote in request.votes else (*request.votes, vote)
    v = request_view(request, people=people)
    voter = voter_view(vote, request.params, people)
    counted = tally(votes)
    count = len(counted.approvals_by_params.get(vote.params_sha256 or "", ()))
    # Only the last vote of a decided request is the one that decided it.
    decisive = not v.is_pending and bool(request.votes) and request.votes[-1] == vote
    text = piece(
        "notices",
        "vote_reply",
        voter=voter,
        count=count,
        required=v.quorum.required,
        denials=len(counted.denials),
        deny_required=v.quorum.deny_required,
        decisive=decisive,
        v=v,
    )
    return message(piece("notices", "vote_fallback", voter=voter, v=v), [section(text)])


def outcome_message(
    request: ApprovalRequest, *, people: Mapping[str, str] | None = None
) -> Message:
    """The DM to the requester: the outcome, by whom, when, why, and the request id."""
    v = request_view(request, people=people)
    blocks: list[Block] = [section(piece("notices", "outcome", v=v))]
    if v.approved_with_changes or v.decision_reason:
        blocks.append(section(piece("request", "outcome_details", v=v)))
    blocks.append(context(piece("request", "footer", v=v)))
    return message(piece("notices", "outcome_fallback", v=v), blocks)


def reminder_message(
    request: ApprovalRequest,
    pending: Sequence[str],
    *,
    people: Mapping[str, str] | None = None,
) -> Message:
    """A nudge to the approvers in ``pending`` (e-mails) who have not voted yet."""
    v = request_view(request, people=people)
    who = tuple(person(e, people) for e in pending)
    text = piece("notices", "reminder", v=v, pending=who)
    blocks = [section(text), divider(), *_request_blocks(v)]
    return message(text, blocks)


def escalation_message(
    request: ApprovalRequest,
    added: Sequence[str],
    *,
    people: Mapping[str, str] | None = None,
) -> Message:
    """Tells a channel (or the people in ``added``) that a request was escalated to them."""
    v = request_view(request, people=people)
    who = tuple(person(e, people) for e in added)
    text = piece("notices", "escalation", v=v, added=who)
    blocks = [section(text), divider(), *_request_blocks(v)]
    return message(text, blocks)


def refusal_text(code: str, message: str) -> str:
    """The private answer to a refused click, naming the rule it broke (mrkdwn)."""
    friendly = REFUSALS.get(code, "That didn't work.")
    return piece("notices", "refusal", friendly=friendly, message=message)


def help_message() -> Message:
    """The answer to ``/countersign help``."""
    text = piece("notices", "help")
    return message(
        "Countersign: approvals for AI agents. Try /countersign pending.",
        [header("Countersign"), section(text)],
    )
