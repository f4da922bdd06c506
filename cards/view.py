"""One platform-neutral view of a request: everything a card shows, nothing about how.

Slack renders from it now and Teams later, so it holds readable values (not
markup), people with their platform user id when we know it, and moments as
both RFC 3339 and unix seconds. Long values are cut here, once, with a flag
that tells the card to offer the full text in a Details view.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from countersign.core.model import ApprovalRequest, Choice, Status, Vote
from countersign.core.voting import tally
from countersign.resource import iso

__all__ = [
    "MAX_INLINE_ITEMS",
    "MAX_KEY_CHARS",
    "MAX_VALUE_CHARS",
    "Change",
    "Item",
    "Moment",
    "Person",
    "QuorumView",
    "RequestView",
    "VoterView",
    "changes",
    "moment",
    "person",
    "pretty_json",
    "readable",
    "request_view",
    "voter_view",
]

MAX_VALUE_CHARS = 200
MAX_KEY_CHARS = 80
# More params than this do not fit a card readably; the rest go to Details.
MAX_INLINE_ITEMS = 12
# Readable params longer than this in total make the card too tall to scan.
_MAX_INLINE_TOTAL = 1500
_ABSENT = object()
# Outside strings JSON has only ASCII, so every match is inside a string literal.
_INVISIBLE = re.compile(
    r"[\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]"
)


@dataclass(frozen=True)
class Person:
    """Someone by normalised e-mail, with their platform user id when known."""

    email: str
    user_id: str | None = None


@dataclass(frozen=True)
class Moment:
    """A point in time as RFC 3339 UTC text and as unix seconds."""

    iso: str
    unix: int


@dataclass(frozen=True)
class Item:
    """One readable ``key: value`` line; ``truncated`` when either side was cut."""

    key: str
    value: str
    truncated: bool = False


@dataclass(frozen=True)
class Change:
    """One param an approver changed: its value before and after (None = absent)."""

    key: str
    before: str | None
    after: str | None
    truncated: bool = False


@dataclass(frozen=True)
class VoterView:
    """One vote as a card shows it."""

    person: Person
    choice: Choice
    comment: str | None
    edited: bool
    changes: tuple[Change, ...]
    at: Moment


@dataclass(frozen=True)
class QuorumView:
    """Progress toward a decision: approvals behind the leading params, and denials."""

    approvals: int
    required: int
    approvers: tuple[Person, ...]
    denials: int
    deny_required: int
    deniers: tuple[Person, ...]


@dataclass(frozen=True)
class RequestView:
    """Everything a card shows about one request, already made readable."""

    id: str
    status: Status
    action: str
    resource: str
    reason: str
    params: tuple[Item, ...]
    params_json: str
    context: tuple[Item, ...]
    context_json: str
    client: str
    requested_by: Person | None
    rule: str
    quorum: QuorumView
    voters: tuple[VoterView, ...]
    created: Moment
    expires: Moment
    decided: Moment | None
    decided_by: tuple[Person, ...]
    decision_reason: str | None
    edited_params: tuple[Change, ...] | None
    edited_params_json: str | None
    truncated: bool
    needs_details: bool

    @property
    def is_pending(self) -> bool:
        """True while votes can still change the request."""
        return self.status is Status.PENDING

    @property
    def approved_with_changes(self) -> bool:
        """True when the request was approved with params an approver edited."""
        return self.status is Status.APPROVED and self.edited_params is not None


def moment(when: datetime) -> Moment:
    """``when`` as a Moment; a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return Moment(iso=iso(when) or "", unix=int(when.timestamp()))


def person(email: str, people: Mapping[str, str] | None) -> Person:
    """The person behind ``email``, with their user id when ``people`` knows them."""
    key = email.strip().lower()
    return Person(email=email, user_id=(people or {}).get(key))


def _cut(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[: limit - 1] + "…", True


def readable(value: Any) -> str:
    """A param value as a person reads it: strings as is, the rest as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def _items(mapping: Mapping[str, Any]) -> tuple[Item, ...]:
    out = []
    for key, value in mapping.items():
        k, k_cut = _cut(str(key), MAX_KEY_CHARS)
        v, v_cut = _cut(readable(value), MAX_VALUE_CHARS)
        out.append(Item(k, v, k_cut or v_cut))
    return tuple(out)


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[Change, ...]:
    """The keys whose values differ between two params objects, in ``after``'s order."""
    out = []
    for key in [*after, *(k for k in before if k not in after)]:
        old, new = before.get(key, _ABSENT), after.get(key, _ABSENT)
        if old == new and type(old) is type(new):
            continue
        k, cut = _cut(str(key), MAX_KEY_CHARS)
        b, b_cut = (None, False) if old is _ABSENT else _cut(readable(old), MAX_VALUE_CHARS)
        a, a_cut = (None, False) if new is _ABSENT else _cut(readable(new), MAX_VALUE_CHARS)
        out.append(Change(k, b, a, cut or b_cut or a_cut))
    return tuple(out)


def _visible(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def pretty_json(value: Any) -> str:
    """Indented JSON, keys in their order, unicode readable, invisible characters shown.

    Format and control characters (bidi overrides, zero-width joiners, line
    separators) can hide what a value really says, so they are written as
    ``\\uXXXX`` escapes: still valid JSON that decodes to the same value.
    """
    text = json.dumps(value, ensure_ascii=False, indent=2, default=str)
    return _INVISIBLE.sub(_visible, text)


def voter_view(
    vote: Vote, params: Mapping[str, Any], people: Mapping[str, str] | None = None
) -> VoterView:
    """One vote as a card shows it; ``params`` are the requested ones, for the diff."""
    edit = vote.edited_params
    return VoterView(
        person=person(vote.voter, people),
        choice=vote.choice,
        comment=vote.comment,
        edited=edit is not None,
        changes=changes(params, edit) if edit is not None else (),
        at=moment(vote.at),
    )


def _people(emails: Iterable[str], people: Mapping[str, str] | None) -> tuple[Person, ...]:
    return tuple(person(e, people) for e in emails)


def request_view(
    request: ApprovalRequest, *, people: Mapping[str, str] | None = None
) -> RequestView:
    """The readable view of ``request``; ``people`` maps e-mail to platform user id."""
    counted = tally(request.votes)
    lead = counted.leading_params
    params = _items(request.params)
    context = _items(request.context)
    voters = tuple(voter_view(v, request.params, people) for v in request.votes)
    edited = request.edited_params
    edited_changes = changes(request.params, edited) if edited is not None else None
    truncated = any(i.truncated for i in (*params, *context)) or any(
        c.truncated for c in (edited_changes or ())
    )
    too_many = len(params) > MAX_INLINE_ITEMS or len(context) > MAX_INLINE_ITEMS
    too_long = sum(len(i.key) + len(i.value) for i in params) > _MAX_INLINE_TOTAL
    return RequestView(
        id=request.id,
        status=request.status,
        action=request.action,
        resource=request.resource,
        reason=request.reason,
        params=params,
        params_json=pretty_json(dict(request.params)),
        context=context,
        context_json=pretty_json(dict(request.context)),
        client=request.client,
        requested_by=(
            person(request.requested_by, people) if request.requested_by is not None else None
        ),
        rule=request.rule.name,
        quorum=QuorumView(
            approvals=counted.approvals,
            required=request.rule.quorum,
            approvers=_people(counted.approvals_by_params[lead] if lead else (), people),
            denials=len(counted.denials),
            deny_required=request.rule.deny_quorum,
            deniers=_people(counted.denials, people),
        ),
        voters=voters,
        created=moment(request.created_at),
        expires=moment(request.expires_at),
        decided=moment(request.decided_at) if request.decided_at is not None else None,
        decided_by=_people(request.decided_by, people),
        decision_reason=request.decision_reason,
        edited_params=edited_changes,
        edited_params_json=pretty_json(dict(edited)) if edited is not None else None,
        truncated=truncated,
        needs_details=truncated or too_many or too_long,
    )
