"""What both chat adapters ask the service: what may I vote on, a page of history."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import Any

from countersign.chat.commands import PAGE_SIZE, encode_more
from countersign.core.errors import CountersignError
from countersign.core.model import ApprovalRequest, Choice, Status
from countersign.core.voting import Ballot, cast_vote
from countersign.ports import HistoryQuery
from countersign.service import ApprovalService

__all__ = ["MAX_PENDING", "history_page", "parse_edit", "pending_for", "refusal_for"]

# Pending requests looked through for "pending" (newest first).
MAX_PENDING = 200


def parse_edit(text: str) -> dict[str, Any] | str:
    """Edited params typed in a chat box: the JSON object, or what is wrong with the text.

    The core checks the object itself (size, depth, NUL) when the vote is cast.
    """
    try:
        params = json.loads(text)
    except (ValueError, RecursionError) as exc:  # deep nesting exhausts the parser
        return f"The params are not valid JSON: {exc}"
    if not isinstance(params, dict):
        return "The params must be a JSON object."
    return params


def refusal_for(
    request: ApprovalRequest, email: str, platform: str, now: datetime
) -> CountersignError | None:
    """The rule that would refuse ``email``'s approval right now, or None if they may vote.

    The pure core decides, on the request as read: the service checks again
    under the request's lock when the vote is cast.
    """
    try:
        cast_vote(request, Ballot(email, platform, Choice.APPROVE), now)
    except CountersignError as err:
        return err
    return None


async def pending_for(service: ApprovalService, email: str, platform: str) -> list[ApprovalRequest]:
    """Pending requests ``email`` may vote on now, newest first."""
    now = service.clock.now()
    waiting = await service.history(HistoryQuery(status=Status.PENDING, limit=MAX_PENDING))
    return [r for r in waiting if refusal_for(r, email, platform, now) is None]


async def history_page(
    service: ApprovalService, query: HistoryQuery
) -> tuple[list[ApprovalRequest], str | None]:
    """One page of history and the "More" value for the next page (None on the last)."""
    page = await service.history(replace(query, limit=PAGE_SIZE + 1))
    more = encode_more(query, page[PAGE_SIZE - 1].id) if len(page) > PAGE_SIZE else None
    return page[:PAGE_SIZE], more
