"""The slash command's answer: a compact list of requests, with paging and optional buttons."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cards.blockkit import (
    MESSAGE_BLOCKS,
    Block,
    actions,
    button,
    context,
    header,
    message,
    section,
)
from cards.slack_actions import (
    ACTION_APPROVE,
    ACTION_DENY,
    ACTION_DETAILS,
    ACTION_MORE,
    BLOCK_LIST_PREFIX,
    BLOCK_MORE,
)
from cards.templating import piece
from cards.view import request_view
from countersign.core.model import ApprovalRequest

__all__ = ["list_capacity", "request_list"]

# Header, the "showing N of M" note and the More button.
_RESERVED = 3


def list_capacity(*, with_buttons: bool) -> int:
    """How many requests one list message shows (page sizes should not exceed it)."""
    per_request = 2 if with_buttons else 1
    return (MESSAGE_BLOCKS - _RESERVED) // per_request


def _row_buttons(request_id: str, index: int) -> Block:
    return actions(
        [
            button("Approve", ACTION_APPROVE, request_id, style="primary"),
            # From a list the reason is asked in the deny modal, which is its confirmation.
            button("Deny", ACTION_DENY, request_id, style="danger"),
            button("Details", ACTION_DETAILS, request_id),
        ],
        block_id=f"{BLOCK_LIST_PREFIX}{index}",
    )


def request_list(
    requests: Sequence[ApprovalRequest],
    *,
    title: str,
    people: Mapping[str, str] | None = None,
    more_value: str | None = None,
    with_buttons: bool = False,
) -> dict[str, Any]:
    """One section per request (id, action, resource, status, requester, age); never > 50 blocks.

    ``more_value`` (a cursor, at most 2000 characters) adds a "More" button
    (``countersign.more``). A list longer than ``list_capacity`` is cut, and
    says so.
    """
    shown = requests[: list_capacity(with_buttons=with_buttons)]
    blocks: list[Block] = [header(piece("lists", "title", text=title))]
    for index, request in enumerate(shown):
        v = request_view(request, people=people)
        blocks.append(section(piece("lists", "row", v=v)))
        if with_buttons and v.is_pending:
            blocks.append(_row_buttons(v.id, index))
    if not requests:
        blocks.append(section(piece("lists", "empty")))
    if len(shown) < len(requests):
        blocks.append(context(piece("lists", "trimmed", shown=len(shown), total=len(requests))))
    if more_value is not None:
        blocks.append(actions([button("More", ACTION_MORE, more_value)], block_id=BLOCK_MORE))
    return message(piece("lists", "fallback", text=title, count=len(requests)), blocks)
