"""The Jinja2 environment of the Slack cards: templates write text, Python builds JSON.

Templates under ``cards/templates/slack/`` hold macros that return mrkdwn or
plain text pieces; ``cards.slack`` puts those pieces into Block Kit dicts, so
JSON quoting is never a template's business. Every untrusted value in a
template goes through the ``mrkdwn`` filter (``cards.escape.escape_mrkdwn``);
``mention``/``mentions`` render people, ``date`` renders a moment in the
reader's own time zone. ``StrictUndefined`` turns a typo into an error in tests
instead of an empty line on a card.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from cards.escape import escape_mrkdwn
from cards.view import Moment, Person
from countersign.core.model import Status

__all__ = ["date", "environment", "label", "mention", "mentions", "piece"]

# Slack user ids (U..., W... on Enterprise Grid). Anything else is not put in <@...>.
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")

_LABELS = {
    Status.PENDING: "Pending",
    Status.APPROVED: "Approved",
    Status.DENIED: "Denied",
    Status.EXPIRED: "Expired",
    Status.CANCELLED: "Cancelled",
}


def label(status: Status) -> str:
    """The status as a word for people ("Approved")."""
    return _LABELS[status]


def mention(who: Person | None) -> str:
    """``<@U123>`` for someone we know on Slack, else their e-mail, exact, as inline code."""
    if who is None:
        return "nobody"
    if who.user_id is not None and _USER_ID.match(who.user_id):
        return f"<@{who.user_id}>"
    return escape_mrkdwn(who.email, "span")


def mentions(people: Sequence[Person]) -> str:
    """People as "a, b and c" (mentions where known); "nobody" for none."""
    names = [mention(p) for p in people]
    if not names:
        return "nobody"
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def date(when: Moment, tokens: str = "{date_short_pretty} at {time}") -> str:
    """A Slack date token: shown in the reader's time zone, UTC text as fallback."""
    fallback = datetime.fromtimestamp(when.unix, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{when.unix}^{tokens}|{fallback}>"


@cache
def environment() -> Environment:
    """The one Jinja2 environment of the cards (built on first use, not at import)."""
    env = Environment(
        loader=PackageLoader("cards", "templates"),
        autoescape=False,  # noqa: S701 - the output is mrkdwn, escaped by the mrkdwn filter
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        # Templates ship with the package: no stat() of the file on every render.
        auto_reload=False,
    )
    env.filters["mrkdwn"] = escape_mrkdwn
    env.filters["mention"] = mention
    env.filters["mentions"] = mentions
    env.filters["date"] = date
    env.filters["label"] = label
    return env


def piece(template: str, macro: str, **kwargs: Any) -> str:
    """Call ``macro`` of ``slack/<template>.j2``: one text piece, outer blank lines removed."""
    return str(getattr(_module(template), macro)(**kwargs)).strip("\n")


@cache
def _module(template: str) -> Any:
    """The macros of ``slack/<template>.j2``, loaded once."""
    return environment().get_template(f"slack/{template}.j2").module
