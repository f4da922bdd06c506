"""Teams text safety: the one filter for untrusted text in Adaptive Cards, and the text pieces.

Adaptive Card ``TextBlock`` and ``Fact`` text is a markdown subset (``**bold**``,
``_italic_``, ``[text](url)``, ``- ``/``1. `` lists at a line start) and Teams
also expands ``{{DATE(...)}}``/``{{TIME(...)}}``. Untrusted text (everything a
request, a vote or a display name carries) must not be able to:

* **link**: ``[``/``]`` become full-width U+FF3B/U+FF3D, so ``[click](https://evil)``
  is never link syntax; ``<``, ``>``, ``&`` become U+FF1C, U+FF1E, U+FF06 (no HTML,
  no ``<at>`` mention, no ``<https://...>`` autolink, no entity); the colon of
  ``://`` becomes U+2236 and the dot of ``www.`` U+2024, so linkifiers see no URL.
  A bare domain (``evil.example``) may still be auto-linked by some clients;
  such a link shows exactly its own target, which is not a disguised link.
* **format**: there is no escape that every Adaptive Card renderer honours
  (backslash escapes work in Teams desktop's markdown-it, not in every mobile
  renderer, and a renderer that ignores them would show ``\\*`` *and* format).
  So, as for Slack, look-alikes: ``*`` -> U+2217, ``_`` -> U+02CD, ``~`` ->
  U+223C, backtick -> U+02CB; a backslash becomes U+FF3C so it cannot escape
  *our* markup that follows it. A reader sees the same shapes; exact values
  stay available (Details shows the JSON as plain ``TextRun``, the edit box
  holds it raw).
* **start a line of ours**: ``inline`` collapses line breaks and neutralises a
  leading list/heading marker (``-``, ``+``, ``#``, ``=``, ``|``, ``1.``,
  ``1)``). ``quote`` (reason, comments) prefixes every line with our bar
  ``│ ``, so no untrusted line begins a line, and a fake ``**Status:**
  Approved`` stays inside the quote, unbolded. Our status line is also a
  separately coloured element, which no text can reproduce.
* **forge a date or reorder our text**: ``{{`` loses its second brace to a
  full-width one (U+FF5B); control and bidi override characters are dropped
  and runs of combining marks capped (``cards.escape.sanitize``).

``plain`` is for ``TextRun`` (never markdown) and JSON: only the sanitising and
the ``{{`` rule apply, line breaks kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal

from jinja2 import Environment

from cards.escape import ELLIPSIS, sanitize
from cards.templating import environment, label
from cards.view import Moment, Person

__all__ = [
    "QUOTE_BAR",
    "TeamsMode",
    "escape_teams_markdown",
    "people_text",
    "person_text",
    "piece",
    "request_id_text",
    "teams_date",
]

TeamsMode = Literal["inline", "quote", "plain"]
QUOTE_BAR = "\u2502 "

_MARKUP = str.maketrans(
    {
        "*": "\u2217",
        "_": "\u02cd",
        "~": "\u223c",
        "`": "\u02cb",
        "[": "\uff3b",
        "]": "\uff3d",
        "<": "\uff1c",
        ">": "\uff1e",
        "&": "\uff06",
        "\\": "\uff3c",
    }
)
# A line starting with one of these is a list item, heading or table to some renderer.
_LEAD = re.compile(r"^(\s*)(?:([-+#=|])|(\d+)([.)]))")
_LEAD_SWAP = {"-": "\u2010", "+": "\uff0b", "#": "\uff03", "=": "\uff1d", "|": "\u2502"}
_SCHEME = re.compile(r"://")
_WWW = re.compile(r"(?i)(www)\.")
_BRACES = re.compile(r"\{(?=\{)")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,60}(?:_[A-Za-z0-9-]{1,60})?")


def _lead(match: re.Match[str]) -> str:
    space, marker, digits, dot = match.groups()
    if marker is not None:
        return space + _LEAD_SWAP[marker]
    return space + digits + ("\u2024" if dot == "." else "\uff09")


def _markdown(line: str) -> str:
    safe = line.translate(_MARKUP)
    safe = _SCHEME.sub("\u2236//", safe)
    safe = _WWW.sub("\\1\u2024", safe)
    return _LEAD.sub(_lead, safe, count=1)


def escape_teams_markdown(
    text: str, mode: TeamsMode = "inline", *, limit: int | None = None
) -> str:
    """Untrusted ``text`` made inert for Adaptive Card markdown; the ``teams`` template filter.

    ``inline``: one line, no markup. ``quote``: every line behind our ``│ ``
    bar. ``plain``: for ``TextRun`` and JSON, line breaks and markup kept.
    ``limit`` cuts the sanitised text first (in characters, "…" at the end).
    """
    clean = sanitize(text, one_line=mode == "inline")
    if limit is not None and len(clean) > limit:
        clean = clean[: max(0, limit - 1)].rstrip() + ELLIPSIS
    clean = _BRACES.sub("\uff5b", clean)
    if mode == "plain":
        return clean
    if mode == "inline":
        return _markdown(clean)
    if not clean:
        return ""
    return "\n".join(
        QUOTE_BAR + _markdown(line) if line else QUOTE_BAR.strip() for line in clean.split("\n")
    )


def request_id_text(request_id: str) -> str:
    """A request id exactly as ``show <id>`` needs it when shaped like ours, else escaped."""
    # One underscore cannot pair into emphasis, so ``req_01J...`` is safe to show as is.
    if _ID.fullmatch(request_id):
        return request_id
    return escape_teams_markdown(request_id, limit=100) or "(none)"


def person_text(who: Person | None) -> str:
    """A person as Teams shows them: display name when known, else the e-mail (escaped)."""
    if who is None:
        return "nobody"
    return escape_teams_markdown(who.user_id or who.email, limit=120) or "(unnamed)"


def people_text(people: Sequence[Person], most: int = 10) -> str:
    """People as "a, b and c", at most ``most`` named, then "and N more"."""
    names = [person_text(p) for p in people[:most]]
    if len(people) > most:
        names.append(f"{len(people) - most} more")
    if not names:
        return "nobody"
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def teams_date(when: Moment) -> str:
    """Teams date and time functions: shown in the viewer's own time zone and locale."""
    # Teams accepts only "YYYY-MM-DDThh:mm:ssZ" (no fractions) inside the functions.
    stamp = datetime.fromtimestamp(when.unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{{{{DATE({stamp}, SHORT)}}}} {{{{TIME({stamp})}}}}"


@cache
def _environment() -> Environment:
    # An overlay shares the Slack environment's loader and settings; its own
    # filter dict keeps the Teams filters out of the Slack templates.
    env = environment().overlay()
    env.filters = {
        **env.filters,
        "teams": escape_teams_markdown,
        "person": person_text,
        "people": people_text,
        "tdate": teams_date,
        "rid": request_id_text,
        "label": label,
    }
    return env


def piece(template: str, macro: str, **kwargs: Any) -> str:
    """Call ``macro`` of ``teams/<template>.j2``: one text piece, outer blank lines removed."""
    return str(getattr(_module(template), macro)(**kwargs)).strip("\n")


@cache
def _module(template: str) -> Any:
    """The macros of ``teams/<template>.j2``, loaded once."""
    return _environment().get_template(f"teams/{template}.j2").module
