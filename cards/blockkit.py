"""Block Kit building blocks whose every limit holds by construction.

Each constructor clips its text to Slack's limit for that place, so no
request, however large, can make Slack reject a message (``invalid_blocks``)
and leave approvers without a card. Identifiers (action ids, button values,
private metadata) are never clipped: a cut request id would act on another
request, so an over-long one is a ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from cards.escape import clip, slack_len

__all__ = [
    "BUTTON_TEXT",
    "BUTTON_VALUE",
    "CONTEXT_ELEMENTS",
    "FIELDS",
    "FIELD_TEXT",
    "HEADER_TEXT",
    "INPUT_INITIAL",
    "MESSAGE_BLOCKS",
    "MESSAGE_TEXT",
    "MODAL_BLOCKS",
    "MODAL_TITLE",
    "PRIVATE_METADATA",
    "SECTION_TEXT",
    "Block",
    "actions",
    "button",
    "confirm",
    "context",
    "divider",
    "fit",
    "header",
    "identifier",
    "message",
    "modal",
    "mrkdwn",
    "plain",
    "section",
    "text_input",
]

Block = dict[str, Any]

MESSAGE_BLOCKS = 50
MODAL_BLOCKS = 100
SECTION_TEXT = 3000
FIELDS = 10
FIELD_TEXT = 2000
HEADER_TEXT = 150
BUTTON_TEXT = 75
BUTTON_VALUE = 2000
CONTEXT_ELEMENTS = 10
CONTEXT_TEXT = 3000
MESSAGE_TEXT = 40000
MODAL_TITLE = 24
MODAL_BUTTON = 24
INPUT_INITIAL = 3000
INPUT_MAX_LENGTH = 3000
INPUT_LABEL = 2000
INPUT_HINT = 2000
PLACEHOLDER = 150
PRIVATE_METADATA = 3000
CONFIRM_TITLE = 100
CONFIRM_TEXT = 300
CONFIRM_BUTTON = 30
ACTIONS_ELEMENTS = 25
ID_CHARS = 255

# Slack rejects empty text objects; a dash reads as "nothing here".
_EMPTY = "—"


def identifier(value: str, limit: int = ID_CHARS) -> str:
    """``value`` unchanged if within ``limit``; ValueError otherwise (ids are never cut)."""
    if not value or slack_len(value) > limit:
        raise ValueError(f"identifier of {slack_len(value)} characters (limit {limit})")
    return value


def mrkdwn(text: str, limit: int = SECTION_TEXT) -> Block:
    """A mrkdwn text object; ``verbatim`` so Slack auto-links nothing we did not write."""
    return {"type": "mrkdwn", "text": clip(text or _EMPTY, limit), "verbatim": True}


def plain(text: str, limit: int) -> Block:
    """A plain_text object clipped to ``limit``."""
    return {"type": "plain_text", "text": clip(text or _EMPTY, limit), "emoji": True}


def header(text: str) -> Block:
    """A header block (plain text, at most 150 characters)."""
    return {"type": "header", "text": plain(text, HEADER_TEXT)}


def section(
    text: str,
    *,
    fields: Sequence[str] = (),
    block_id: str | None = None,
    accessory: Block | None = None,
) -> Block:
    """A section with mrkdwn text, optionally up to ten mrkdwn fields."""
    block: Block = {"type": "section", "text": mrkdwn(text)}
    if fields:
        block["fields"] = [mrkdwn(f, FIELD_TEXT) for f in fields[:FIELDS]]
    if block_id is not None:
        block["block_id"] = identifier(block_id)
    if accessory is not None:
        block["accessory"] = accessory
    return block


def context(*texts: str) -> Block:
    """A context block of at most ten mrkdwn elements."""
    parts = [t for t in texts if t][:CONTEXT_ELEMENTS] or [_EMPTY]
    return {"type": "context", "elements": [mrkdwn(t, CONTEXT_TEXT) for t in parts]}


def divider() -> Block:
    """A divider block."""
    return {"type": "divider"}


def confirm(title: str, text: str, ok: str, cancel: str) -> Block:
    """A confirmation dialog for a dangerous button."""
    return {
        "title": plain(title, CONFIRM_TITLE),
        "text": plain(text, CONFIRM_TEXT),
        "confirm": plain(ok, CONFIRM_BUTTON),
        "deny": plain(cancel, CONFIRM_BUTTON),
        "style": "danger",
    }


def button(
    text: str,
    action_id: str,
    value: str,
    *,
    style: Literal["primary", "danger"] | None = None,
    confirm_dialog: Block | None = None,
) -> Block:
    """A button; its ``value`` (a request id) is checked, never clipped."""
    block: Block = {
        "type": "button",
        "text": plain(text, BUTTON_TEXT),
        "action_id": identifier(action_id),
        "value": identifier(value, BUTTON_VALUE),
    }
    if style is not None:
        block["style"] = style
    if confirm_dialog is not None:
        block["confirm"] = confirm_dialog
    return block


def actions(buttons: Sequence[Block], *, block_id: str) -> Block:
    """An actions block holding at most 25 elements."""
    return {
        "type": "actions",
        "block_id": identifier(block_id),
        "elements": list(buttons[:ACTIONS_ELEMENTS]),
    }


def text_input(
    *,
    block_id: str,
    label: str,
    multiline: bool,
    max_length: int,
    optional: bool = False,
    initial_value: str | None = None,
    placeholder: str | None = None,
    hint: str | None = None,
) -> Block:
    """An input block with one plain_text_input whose action_id equals its block_id."""
    element: Block = {
        "type": "plain_text_input",
        "action_id": identifier(block_id),
        "multiline": multiline,
        "max_length": min(max_length, INPUT_MAX_LENGTH),
    }
    if initial_value is not None:
        # The value must round-trip exactly, so it is never clipped: callers check it.
        if slack_len(initial_value) > min(max_length, INPUT_INITIAL):
            raise ValueError("initial_value longer than the input allows")
        element["initial_value"] = initial_value
    if placeholder is not None:
        element["placeholder"] = plain(placeholder, PLACEHOLDER)
    block: Block = {
        "type": "input",
        "block_id": identifier(block_id),
        "label": plain(label, INPUT_LABEL),
        "element": element,
        "optional": optional,
    }
    if hint is not None:
        block["hint"] = plain(hint, INPUT_HINT)
    return block


def fit(blocks: Sequence[Block], limit: int) -> list[Block]:
    """At most ``limit`` blocks; when cut, the last one says that the rest was left out."""
    if len(blocks) <= limit:
        return list(blocks)
    return [*blocks[: limit - 1], context(f"… {len(blocks) - limit + 1} more blocks left out.")]


def message(text: str, blocks: Sequence[Block]) -> dict[str, Any]:
    """A chat message: fallback ``text`` (notifications, screen readers) and its blocks."""
    return {"text": clip(text or _EMPTY, MESSAGE_TEXT), "blocks": fit(blocks, MESSAGE_BLOCKS)}


def modal(
    title: str,
    blocks: Sequence[Block],
    *,
    callback_id: str | None = None,
    private_metadata: str | None = None,
    submit: str | None = None,
    close: str = "Close",
) -> dict[str, Any]:
    """A ``views.open`` modal view."""
    view: dict[str, Any] = {
        "type": "modal",
        "title": plain(title, MODAL_TITLE),
        "close": plain(close, MODAL_BUTTON),
        "blocks": fit(blocks, MODAL_BLOCKS),
    }
    if submit is not None:
        view["submit"] = plain(submit, MODAL_BUTTON)
    if callback_id is not None:
        view["callback_id"] = identifier(callback_id)
    if private_metadata is not None:
        view["private_metadata"] = identifier(private_metadata, PRIVATE_METADATA)
    return view
