"""The modals behind a card's buttons: Details, Deny (with a reason), Approve with changes."""

from __future__ import annotations

import re
from typing import Any

from cards.blockkit import (
    INPUT_INITIAL,
    MODAL_BLOCKS,
    SECTION_TEXT,
    Block,
    context,
    modal,
    section,
    text_input,
)
from cards.escape import escape_mrkdwn, slack_len
from cards.slack_actions import (
    BLOCK_COMMENT,
    BLOCK_PARAMS,
    BLOCK_REASON,
    CALLBACK_APPROVE,
    CALLBACK_DENY,
    CALLBACK_EDIT,
)
from cards.templating import piece
from cards.view import RequestView, request_view
from countersign.core.model import ApprovalRequest

__all__ = ["approve_modal", "code_sections", "deny_modal", "details_modal", "edit_modal"]

View = dict[str, Any]

_FENCE = "```\n\n```"
# Room for the fences, and a margin so no rounding ever touches the limit.
_CODE_BUDGET = SECTION_TEXT - len(_FENCE) - 16
_ENTITY = re.compile(r"&(?:amp|lt|gt);")
MAX_COMMENT_CHARS = 2000
MAX_REASON_CHARS = 2000


def _pieces(line: str, size: int) -> list[str]:
    """An escaped line cut into parts of at most ``size``, never inside an entity."""
    parts: list[str] = []
    while slack_len(line) > size:
        cut, used = 0, 0
        for ch in line:
            step = 2 if ord(ch) > 0xFFFF else 1
            if used + step > size:
                break
            used += step
            cut += 1
        for entity in _ENTITY.finditer(line, max(0, cut - 5), cut + 5):
            if entity.start() < cut < entity.end():
                cut = entity.start()
        parts.append(line[:cut])
        line = line[cut:]
    parts.append(line)
    return parts


def code_sections(text: str, *, size: int = _CODE_BUDGET) -> list[str]:
    """Untrusted ``text`` escaped and packed into code blocks that each fit one section."""
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for raw in text.split("\n"):
        for line in _pieces(escape_mrkdwn(raw, "code"), size):
            cost = slack_len(line) + 1
            if current and used + cost > size:
                chunks.append("\n".join(current))
                current, used = [], 0
            current.append(line)
            used += cost
    if current:
        chunks.append("\n".join(current))
    return [piece("modals", "code", text=chunk) for chunk in chunks]


def _json_blocks(title: str, text: str) -> list[Block]:
    return [section(title), *(section(code) for code in code_sections(text))]


def details_modal(request: ApprovalRequest) -> View:
    """The full request (params, context, any edit, reason) as a ``views.open`` modal."""
    v = request_view(request)
    blocks: list[Block] = [section(piece("modals", "summary", v=v))]
    blocks += _json_blocks("*Params:*", v.params_json)
    if v.edited_params_json is not None:
        blocks += _json_blocks("*Params as approved (edited):*", v.edited_params_json)
    if v.context:
        blocks += _json_blocks("*Context:*", v.context_json)
    blocks.append(section(piece("request", "reason", v=v)))
    if len(blocks) > MODAL_BLOCKS:
        blocks = [*blocks[: MODAL_BLOCKS - 1], context(piece("modals", "too_long", v=v))]
    return modal("Request details", blocks, private_metadata=v.id)


def _vote_modal(
    request: ApprovalRequest,
    *,
    title: str,
    block_id: str,
    label: str,
    max_length: int,
    optional: bool,
    callback_id: str,
    submit: str,
) -> View:
    """A vote modal: the request in one line, one text box, and the vote's button."""
    v = request_view(request)
    return modal(
        title,
        [
            section(piece("modals", "summary", v=v)),
            text_input(
                block_id=block_id,
                label=label,
                multiline=True,
                max_length=max_length,
                optional=optional,
                placeholder="The requester and the other approvers see this.",
            ),
        ],
        callback_id=callback_id,
        private_metadata=v.id,
        submit=submit,
        close="Cancel",
    )


def approve_modal(request: ApprovalRequest) -> View:
    """Approve with an optional comment (rules with ``approve_comment``)."""
    return _vote_modal(
        request,
        title="Approve request",
        block_id=BLOCK_COMMENT,
        label="Comment",
        max_length=MAX_COMMENT_CHARS,
        optional=True,
        callback_id=CALLBACK_APPROVE,
        submit="Approve",
    )


def deny_modal(request: ApprovalRequest) -> View:
    """Asks for the (required) reason of a denial; submits as ``countersign.deny``."""
    return _vote_modal(
        request,
        title="Deny request",
        block_id=BLOCK_REASON,
        label="Why are you denying it?",
        max_length=MAX_REASON_CHARS,
        optional=False,
        callback_id=CALLBACK_DENY,
        submit="Deny",
    )


def _edit_value(v: RequestView) -> tuple[str | None, int | None]:
    """The params to prefill, or None and their size when they do not fit the box."""
    size = slack_len(v.params_json)
    if size > INPUT_INITIAL:
        return None, size
    return v.params_json, None


def edit_modal(request: ApprovalRequest) -> View:
    """Approve with changes: the params as editable JSON, and an optional comment."""
    v = request_view(request)
    initial, size = _edit_value(v)
    return modal(
        "Approve with changes",
        [
            section(piece("modals", "summary", v=v)),
            text_input(
                block_id=BLOCK_PARAMS,
                label="Params (JSON)",
                multiline=True,
                max_length=INPUT_INITIAL,
                initial_value=initial,
                hint=piece("modals", "edit_hint", size=size, limit=INPUT_INITIAL),
            ),
            text_input(
                block_id=BLOCK_COMMENT,
                label="Comment",
                multiline=True,
                max_length=MAX_COMMENT_CHARS,
                optional=True,
                placeholder="What did you change, and why?",
            ),
        ],
        callback_id=CALLBACK_EDIT,
        private_metadata=v.id,
        submit="Approve",
        close="Cancel",
    )
