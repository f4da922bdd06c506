"""Microsoft Teams Adaptive Cards (1.5) for approval requests: pure functions to JSON-ready dicts.

The same ``cards.view.RequestView`` as Slack; templates
(``cards/templates/teams/*.j2``) write the text, escaped by the one ``teams``
filter (``cards.teams_escape``), and ``cards.adaptive`` shapes the JSON. Votes
are universal actions (``Action.Execute`` with a verb, each with an
``Action.Submit`` fallback); pending cards carry a ``refresh`` so Teams asks
the bot for each viewer's own version. ``people`` maps a normalised e-mail to
a display name: a card cannot @mention without ``msteams`` entities, which the
1.5 schema does not allow on the card. Every card stays under 28 KB: when it
would not, it is rendered again with a smaller budget (shorter texts, fewer
rows), and says what it left out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cards.adaptive import (
    MAX_CARD_BYTES,
    Budget,
    Element,
    action_set,
    adaptive_card,
    container,
    execute,
    fact_set,
    fit_card,
    monospace,
    refresh,
    show_card,
    text_block,
    text_input,
)
from cards.slack import REFUSALS
from cards.teams_escape import escape_teams_markdown, piece, request_id_text, teams_date
from cards.view import RequestView, person, request_view, voter_view
from countersign.core.model import ApprovalRequest, Status, Vote
from countersign.core.voting import tally

__all__ = [
    "INPUT_COMMENT",
    "INPUT_PARAMS",
    "INPUT_REASON",
    "MAX_CARD_BYTES",
    "VERB_APPROVE",
    "VERB_DENY",
    "VERB_EDIT",
    "VERB_MORE",
    "VERB_REFRESH",
    "escalation_card",
    "help_card",
    "invoke_error",
    "invoke_response",
    "outcome_card",
    "refusal_card",
    "reminder_card",
    "request_card",
    "request_list_card",
    "vote_card",
]

Card = dict[str, Any]

VERB_APPROVE = "countersign.approve"
VERB_DENY = "countersign.deny"
VERB_EDIT = "countersign.edit"
VERB_REFRESH = "countersign.refresh"
VERB_MORE = "countersign.more"
INPUT_REASON = "reason"
INPUT_PARAMS = "params"
INPUT_COMMENT = "comment"
INPUT_APPROVE_COMMENT = "approve_comment"  # ids are unique per card: not the edit's comment

_CARD_TYPE = "application/vnd.microsoft.card.adaptive"
_MAX_MORE_DATA = 2000
# Colour of the status line and style of the header, per state.
_COLOR = {
    Status.PENDING: "accent",
    Status.APPROVED: "good",
    Status.DENIED: "attention",
    Status.EXPIRED: "warning",
    Status.CANCELLED: "default",
}
_STYLE = {
    Status.PENDING: "emphasis",
    Status.APPROVED: "good",
    Status.DENIED: "attention",
    Status.EXPIRED: "warning",
    Status.CANCELLED: "emphasis",
}


def _esc(text: str, limit: int) -> str:
    return escape_teams_markdown(text, limit=limit) or "(empty)"


def _data(request_id: str) -> dict[str, str]:
    return {"request_id": request_id}


def _facts(v: RequestView, b: Budget) -> list[tuple[str, str]]:
    facts = [
        ("Requested by", piece("request", "requester", v=v)),
        ("Client", _esc(v.client, b.field)),
        ("Action", _esc(v.action, b.field)),
        ("Resource", _esc(v.resource, b.field)),
        ("Rule", _esc(v.rule, b.field)),
        ("Approvals", piece("request", "approvals", v=v, b=b)),
    ]
    if v.quorum.denials or v.quorum.deny_required > 1:
        facts.append(("Denials", piece("request", "denials", v=v, b=b)))
    return facts


def _items(items: Sequence[Any], b: Budget) -> Element:
    return fact_set([(_esc(i.key, b.key), _esc(i.value, b.value)) for i in items[: b.items]])


def _footer(v: RequestView) -> Element:
    when = (
        f"Expires {teams_date(v.expires)}" if v.is_pending else f"Requested {teams_date(v.created)}"
    )
    return text_block(f"{when} · Request {request_id_text(v.id)}", subtle=True, size="Small")


def _body(v: RequestView, b: Budget) -> list[Element]:
    """The request as the card shows it, shared by the card, reminders and escalations."""
    header = [
        text_block(
            piece("request", "title", v=v, b=b), heading=True, size="Medium", weight="Bolder"
        ),
        text_block(piece("request", "status", v=v, b=b), color=_COLOR[v.status], weight="Bolder"),
    ]
    body = [container(header, style=_STYLE[v.status]), fact_set(_facts(v, b))]
    body.append(text_block(piece("request", "params_label", v=v), separator=True))
    if v.params:
        body.append(_items(v.params, b))
    note = piece("request", "params_note", v=v, shown=b.items)
    if note:
        body.append(text_block(note, subtle=True))
    body.append(text_block("**Reason**"))
    body.append(text_block(piece("request", "reason", v=v, b=b)))
    if v.context:
        body += [text_block("**Context**"), _items(v.context, b)]
        more = piece("request", "context_note", v=v, shown=b.items)
        if more:
            body.append(text_block(more, subtle=True))
    if v.voters:
        body.append(text_block("**Votes**", separator=True))
        shown = v.voters[-b.voters :]
        if len(v.voters) > len(shown):
            body.append(text_block(piece("request", "more_votes", n=len(v.voters) - len(shown))))
        body += [text_block(piece("request", "vote", voter=x, b=b)) for x in shown]
    details = piece("request", "outcome_details", v=v, b=b)
    if details:
        body.append(container([text_block(details)], separator=True))
    body.append(_footer(v))
    return body


def _json_block(label: str, text: str, limit: int) -> list[Element]:
    if limit <= 0:
        return []
    return [text_block(label), monospace(escape_teams_markdown(text, "plain", limit=limit))]


def _details(v: RequestView, b: Budget) -> Element:
    body = _json_block("**Params (JSON)**", v.params_json, b.json)
    if v.context:
        body += _json_block("**Context (JSON)**", v.context_json, b.json // 4)
    if v.edited_params_json is not None:
        body += _json_block("**Approved params (JSON)**", v.edited_params_json, b.json // 2)
    cut = (
        len(v.params_json) > b.json
        or (bool(v.context) and len(v.context_json) > b.json // 4)
        or len(v.edited_params_json or "") > b.json // 2
    )
    if cut:
        body.append(text_block(piece("request", "too_long", v=v), subtle=True))
    return show_card("Details", body)


def _deny(v: RequestView) -> Element:
    reason = text_input(
        INPUT_REASON,
        label="Why deny? The requester sees this.",
        max_length=2000,
        required=True,
        error="A reason is required to deny.",
        placeholder="e.g. not during the change freeze",
    )
    deny = execute("Deny", VERB_DENY, _data(v.id), style="destructive")
    return show_card("Deny", [reason], [deny])


def _edit(v: RequestView, b: Budget) -> Element:
    fits = len(v.params_json) <= b.prefill
    hint = piece("request", "edit_hint", size=None if fits else len(v.params_json))
    params = text_input(
        INPUT_PARAMS,
        label="Params (JSON)",
        max_length=20000,
        required=True,
        error="The params must be one JSON object: { ... }.",
        value=v.params_json if fits else None,
        regex=r"^\s*\{[\s\S]*\}\s*$",
    )
    comment = text_input(INPUT_COMMENT, label="Comment (optional)", max_length=1000)
    approve = execute("Approve these params", VERB_EDIT, _data(v.id), style="positive")
    return show_card(
        "Approve with changes", [text_block(hint, subtle=True), params, comment], [approve]
    )


def _approve(v: RequestView, *, comment: bool) -> Element:
    if not comment:
        return execute("Approve", VERB_APPROVE, _data(v.id), style="positive", inputs=False)
    # The rule offers approvers a comment (``approve_comment``): optional, inline.
    box = text_input(
        INPUT_APPROVE_COMMENT,
        label="Comment (optional). The requester sees this.",
        max_length=1000,
        placeholder="e.g. checked with the data owner",
    )
    approve = execute("Approve", VERB_APPROVE, _data(v.id), style="positive")
    return show_card("Approve", [box], [approve])


def _actions(v: RequestView, b: Budget, *, vote: bool, comment: bool = False) -> list[Element]:
    actions: list[Element] = []
    if v.is_pending and vote:
        actions += [_approve(v, comment=comment), _deny(v), _edit(v, b)]
    if v.needs_details:
        actions.append(_details(v, b))
    return actions


def _viewer_note(v: RequestView, viewer: str | None, note: str | None) -> str | None:
    if not v.is_pending:
        return None
    if note is not None:
        return piece("request", "viewer_note", text=note)
    if viewer is None:
        return None
    mine = [x for x in v.voters if x.person.email.strip().lower() == viewer.strip().lower()]
    return piece("request", "you_voted", voter=mine[-1]) if mine else None


def _request(
    v: RequestView,
    *,
    lead: Callable[[Budget], str] | None = None,
    note: str | None = None,
    user_ids: Sequence[str] = (),
    approve_comment: bool = False,
) -> Card:
    def build(b: Budget) -> Card:
        body = [text_block(lead(b))] if lead else []
        body += _body(v, b)
        if note:
            body.append(text_block(note, color="accent", separator=True))
        again = refresh(VERB_REFRESH, _data(v.id), user_ids) if v.is_pending else None
        actions = _actions(v, b, vote=note is None, comment=approve_comment)
        return adaptive_card(
            body, actions, fallback_text=piece("request", "fallback", v=v), refresh_=again
        )

    return fit_card(build)


def request_card(
    request: ApprovalRequest,
    *,
    viewer: str | None = None,
    viewer_note: str | None = None,
    user_ids: Sequence[str] = (),
    people: Mapping[str, str] | None = None,
    approve_comment: bool = False,
) -> Card:
    """The request card in its current state, as ``viewer`` (an e-mail) should see it.

    ``viewer_note`` (the caller's reason this viewer may not vote) replaces
    the vote buttons; without one, a viewer who already voted sees their vote
    instead. ``user_ids`` (Teams user ids, up to 60) get the card refreshed
    automatically while it is pending. ``approve_comment``: the rule offers
    approvers an optional comment, so Approve opens a comment box first.
    """
    v = request_view(request, people=people)
    note = _viewer_note(v, viewer, viewer_note)
    return _request(v, note=note, user_ids=user_ids, approve_comment=approve_comment)


def reminder_card(
    request: ApprovalRequest, pending: Sequence[str], people: Mapping[str, str] | None = None
) -> Card:
    """A nudge to the approvers in ``pending`` (e-mails), above the request itself."""
    v = request_view(request, people=people)
    who = tuple(person(e, people) for e in pending)
    return _request(v, lead=lambda b: piece("notices", "reminder", v=v, pending=who, b=b))


def escalation_card(
    request: ApprovalRequest, added: Sequence[str], people: Mapping[str, str] | None = None
) -> Card:
    """Tells a chat that a request was escalated to the people in ``added``, above the request."""
    v = request_view(request, people=people)
    who = tuple(person(e, people) for e in added)
    return _request(v, lead=lambda b: piece("notices", "escalation", v=v, added=who, b=b))


def outcome_card(request: ApprovalRequest, people: Mapping[str, str] | None = None) -> Card:
    """The message to the requester: the outcome, by whom, when, why, and the request id."""
    v = request_view(request, people=people)

    def build(b: Budget) -> Card:
        line = piece("notices", "outcome", v=v, b=b)
        body = [text_block(line, color=_COLOR[v.status], weight="Bolder")]
        details = piece("request", "outcome_details", v=v, b=b)
        if details:
            body.append(text_block(details))
        body.append(_footer(v))
        return adaptive_card(body, fallback_text=piece("notices", "outcome_fallback", v=v))

    return fit_card(build)


def vote_card(
    request: ApprovalRequest, vote: Vote, people: Mapping[str, str] | None = None
) -> Card:
    """The small reply for one vote: "✅ Alice approved (1 of 2)", with changes and comment."""
    votes = request.votes if vote in request.votes else (*request.votes, vote)
    v = request_view(request, people=people)
    voter = voter_view(vote, request.params, people)
    counted = tally(votes)
    count = len(counted.approvals_by_params.get(vote.params_sha256 or "", ()))
    # Only the last vote of a decided request is the one that decided it.
    decisive = not v.is_pending and bool(request.votes) and request.votes[-1] == vote
    line = piece(
        "notices",
        "vote_reply",
        voter=voter,
        count=count,
        required=v.quorum.required,
        denials=len(counted.denials),
        deny_required=v.quorum.deny_required,
    )

    def build(b: Budget) -> Card:
        color = "good" if voter.choice.value == "approve" else "attention"
        body = [
            text_block(line, color=color),
            text_block(piece("notices", "vote_subject", v=v), subtle=True, spacing="None"),
        ]
        changes = piece("request", "changes", items=voter.changes, b=b)
        if changes:
            body.append(text_block(changes))
        quote = escape_teams_markdown(voter.comment or "", "quote", limit=b.reason)
        if quote:
            body.append(text_block(quote))
        if decisive:
            body.append(text_block(piece("notices", "decisive", v=v), weight="Bolder"))
        return adaptive_card(body, fallback_text=line)

    return fit_card(build)


def refusal_card(code: str, message: str) -> Card:
    """The answer to a refused vote: an error card naming the rule (codes as ``cards.slack``)."""
    friendly = REFUSALS.get(code, "That didn't work.")
    body = [text_block(piece("notices", "refusal", friendly=friendly), color="attention")]
    detail = piece("notices", "refusal_detail", message=message)
    if detail:
        body.append(text_block(detail, subtle=True))
    return adaptive_card(body, fallback_text=friendly)


def help_card() -> Card:
    """The answer to ``help``."""
    body = [
        text_block("Countersign", heading=True, size="Medium", weight="Bolder"),
        text_block(piece("notices", "help")),
    ]
    return adaptive_card(body, fallback_text="Countersign: approvals for AI agents. Try: pending.")


def _row(
    request: ApprovalRequest, b: Budget, actions: bool, people: Mapping[str, str] | None
) -> Element:
    v = request_view(request, people=people)
    items = [
        text_block(piece("lists", "row_title", v=v, b=b)),
        text_block(piece("lists", "row_meta", v=v), subtle=True, size="Small", spacing="None"),
    ]
    if actions and v.is_pending:
        # No inline reason inputs here: ids would repeat across rows. "Open" answers
        # with the request card, which has Deny and Approve with changes.
        approve = execute("Approve", VERB_APPROVE, _data(v.id), style="positive", inputs=False)
        items.append(action_set([approve, execute("Open", VERB_REFRESH, _data(v.id))]))
    return container(items, separator=True)


def request_list_card(
    requests: Sequence[ApprovalRequest],
    *,
    title: str,
    more_data: dict[str, Any] | None = None,
    with_actions: bool = False,
    people: Mapping[str, str] | None = None,
) -> Card:
    """A compact list (action, resource, id, status, requester, age), capped, with "More".

    ``more_data`` (at most 2000 characters as JSON, e.g. a cursor) adds a
    "More" ``Action.Execute`` with verb ``countersign.more`` and that data.
    """
    if more_data is not None and len(json.dumps(more_data)) > _MAX_MORE_DATA:
        raise ValueError(f"more_data is over the limit {_MAX_MORE_DATA} as JSON")

    def build(b: Budget) -> Card:
        shown = requests[: b.rows]
        head = text_block(piece("lists", "title", text=title), heading=True, weight="Bolder")
        body = [head, *(_row(r, b, with_actions, people) for r in shown)]
        if not requests:
            body.append(text_block(piece("lists", "empty")))
        if len(shown) < len(requests):
            trimmed = piece("lists", "trimmed", shown=len(shown), total=len(requests))
            body.append(text_block(trimmed, subtle=True, separator=True))
        actions = [execute("More", VERB_MORE, more_data)] if more_data is not None else []
        fallback = piece("lists", "fallback", text=title, count=len(requests))
        return adaptive_card(body, actions, fallback_text=fallback)

    return fit_card(build)


def invoke_response(card: Card) -> dict[str, Any]:
    """The body answering an ``adaptiveCard/action`` invoke with ``card`` (shown in place)."""
    return {"statusCode": 200, "type": _CARD_TYPE, "value": card}


def invoke_error(code: str, message: str) -> dict[str, Any]:
    """The invoke answer to a refused action: status 200 so Teams shows the error card."""
    return invoke_response(refusal_card(code, message))
