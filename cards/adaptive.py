"""Adaptive Card 1.5 building blocks: small functions that return JSON-ready dicts.

Text arrives already escaped (``cards.teams_escape``); these functions only
shape it. Every ``Action.Execute`` carries an ``Action.Submit`` fallback with
the same data plus the verb, so clients without universal actions still reach
the bot. Nothing here knows about requests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LEVELS",
    "MAX_CARD_BYTES",
    "SCHEMA_URL",
    "VERSION",
    "Budget",
    "Element",
    "action_set",
    "adaptive_card",
    "card_bytes",
    "container",
    "execute",
    "fact_set",
    "fit_card",
    "monospace",
    "refresh",
    "show_card",
    "text_block",
    "text_input",
]

Element = dict[str, Any]

VERSION = "1.5"
SCHEMA_URL = "http://adaptivecards.io/schemas/adaptive-card.json"
# Teams refuses messages over about 28 KB; stay under it with the JSON as sent.
MAX_CARD_BYTES = 28_000
# Teams refreshes automatically for at most 60 listed users.
MAX_REFRESH_USERS = 60
_USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._@-]{0,127}")


def text_block(
    text: str,
    *,
    weight: str | None = None,
    size: str | None = None,
    color: str | None = None,
    subtle: bool = False,
    separator: bool = False,
    spacing: str | None = None,
    heading: bool = False,
) -> Element:
    """A wrapping TextBlock; line breaks become paragraph breaks, which every renderer shows."""
    # Blank lines are the templates' own layout, never content (quotes mark theirs with a bar).
    lines = [line for line in text.split("\n") if line.strip()]
    block: Element = {"type": "TextBlock", "text": "\n\n".join(lines), "wrap": True}
    if heading:
        block["style"] = "heading"
    for key, value in (("weight", weight), ("size", size), ("color", color)):
        if value is not None:
            block[key] = value
    if subtle:
        block["isSubtle"] = True
    if separator:
        block["separator"] = True
    if spacing is not None:
        block["spacing"] = spacing
    return block


def fact_set(facts: Sequence[tuple[str, str]]) -> Element:
    """A FactSet from (title, value) pairs, both already escaped."""
    return {"type": "FactSet", "facts": [{"title": t, "value": v} for t, v in facts]}


def monospace(text: str) -> Element:
    """Preformatted text as a RichTextBlock: a TextRun is never parsed as markdown."""
    run = {"type": "TextRun", "text": text, "fontType": "Monospace", "size": "Small"}
    return {"type": "RichTextBlock", "inlines": [run]}


def container(
    items: Sequence[Element], *, style: str | None = None, separator: bool = False
) -> Element:
    """A Container of ``items``, optionally styled (``emphasis``, ``good``, ``attention``...)."""
    box: Element = {"type": "Container", "items": list(items)}
    if style is not None:
        box["style"] = style
    if separator:
        box["separator"] = True
    return box


def execute(
    title: str,
    verb: str,
    data: Mapping[str, Any],
    *,
    style: str | None = None,
    inputs: bool = True,
) -> Element:
    """An ``Action.Execute`` with an equivalent ``Action.Submit`` fallback carrying the verb."""
    action: Element = {"type": "Action.Execute", "title": title, "verb": verb, "data": dict(data)}
    submit: Element = {"type": "Action.Submit", "title": title, "data": {**data, "verb": verb}}
    if style is not None:
        action["style"] = style
        submit["style"] = style
    if not inputs:
        # A top-level button must not validate inputs that sit in a closed ShowCard.
        action["associatedInputs"] = "none"
        submit["associatedInputs"] = "none"
    action["fallback"] = submit
    return action


def show_card(title: str, body: Sequence[Element], actions: Sequence[Element] = ()) -> Element:
    """An ``Action.ShowCard``: a sub-card opened in place (no version needed inside)."""
    card: Element = {"type": "AdaptiveCard", "body": list(body)}
    if actions:
        card["actions"] = list(actions)
    return {"type": "Action.ShowCard", "title": title, "card": card}


def text_input(
    input_id: str,
    *,
    label: str,
    max_length: int,
    multiline: bool = True,
    required: bool = False,
    error: str | None = None,
    value: str | None = None,
    placeholder: str | None = None,
    regex: str | None = None,
) -> Element:
    """An ``Input.Text``; a required one always says why it was refused (``errorMessage``)."""
    if required and not error:
        raise ValueError(f"required input {input_id!r} needs an error message")
    field: Element = {
        "type": "Input.Text",
        "id": input_id,
        "label": label,
        "isMultiline": multiline,
        "maxLength": max_length,
    }
    if required:
        field["isRequired"] = True
    if error:
        field["errorMessage"] = error
    if value is not None:
        field["value"] = value
    if placeholder is not None:
        field["placeholder"] = placeholder
    if regex is not None:
        field["regex"] = regex
    return field


def action_set(actions: Sequence[Element], *, separator: bool = False) -> Element:
    """Buttons inside the body (a list row's own actions)."""
    block: Element = {"type": "ActionSet", "actions": list(actions)}
    if separator:
        block["separator"] = True
    return block


def refresh(verb: str, data: Mapping[str, Any], user_ids: Sequence[str]) -> Element:
    """The card's ``refresh``: Teams asks the bot for each listed viewer's own version.

    Only ids shaped like Teams user ids (``29:...``, AAD object ids) are kept,
    at most 60, so the list cannot push the card over the size limit.
    """
    action = {"type": "Action.Execute", "verb": verb, "data": dict(data)}
    ids = [u for u in dict.fromkeys(user_ids) if _USER_ID.fullmatch(u)]
    return {"action": action, "userIds": ids[:MAX_REFRESH_USERS]}


def adaptive_card(
    body: Sequence[Element],
    actions: Sequence[Element] = (),
    *,
    fallback_text: str,
    refresh_: Element | None = None,
) -> Element:
    """A top-level Adaptive Card 1.5."""
    card: Element = {
        "type": "AdaptiveCard",
        "$schema": SCHEMA_URL,
        "version": VERSION,
        "fallbackText": fallback_text,
        "body": list(body),
    }
    if actions:
        card["actions"] = list(actions)
    if refresh_ is not None:
        card["refresh"] = refresh_
    return card


def card_bytes(card: Element) -> int:
    """The card's size as sent: JSON with non-ASCII escaped, the larger of the usual encodings."""
    return len(json.dumps(card))


@dataclass(frozen=True)
class Budget:
    """How much of each text a card shows (characters), and how many rows of each list."""

    title: int
    field: int
    key: int
    value: int
    items: int
    reason: int
    comment: int
    voters: int
    changes: int
    people: int
    json: int
    prefill: int
    rows: int


# Tried in order until the card fits: non-ASCII text costs up to 12 bytes a
# character in escaped JSON, so a hostile request can need the last one.
LEVELS = (
    Budget(120, 600, 80, 200, 12, 2000, 500, 10, 12, 10, 8000, 6000, 25),
    Budget(100, 300, 60, 120, 8, 1000, 250, 6, 6, 6, 3000, 3000, 15),
    Budget(80, 120, 40, 80, 4, 300, 120, 3, 3, 4, 0, 0, 8),
    Budget(40, 60, 20, 40, 2, 80, 40, 1, 1, 2, 0, 0, 4),
)


def fit_card(build: Callable[[Budget], Element]) -> Element:
    """``build`` with the largest budget whose card fits ``MAX_CARD_BYTES`` (else the smallest)."""
    card = build(LEVELS[0])
    for budget in LEVELS[1:]:
        if card_bytes(card) <= MAX_CARD_BYTES:
            break
        card = build(budget)
    return card
