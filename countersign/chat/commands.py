"""Chat commands (Slack ``/countersign``, words typed to the Teams bot): what to show.

``help``, ``pending``, ``show <id>``, ``history [status:<s>] [action:<a>]
[by:<email>] [since:<date>]``. Anything else is answered with help. Filter
values only ever become bound parameters of the history query.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from countersign.core.identity import normalize_email
from countersign.core.model import Status
from countersign.ports import HistoryQuery

__all__ = ["PAGE_SIZE", "Command", "decode_more", "encode_more", "parse_command"]

PAGE_SIZE = 10
MAX_FILTER_CHARS = 200


@dataclass(frozen=True)
class Command:
    """What the caller asked for; ``problem`` says why their words were not understood."""

    name: str
    request_id: str | None = None
    query: HistoryQuery = field(default_factory=lambda: HistoryQuery(limit=PAGE_SIZE))
    problem: str | None = None


def _since(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = datetime.combine(date.fromisoformat(value), datetime.min.time())
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_command(text: str) -> Command:
    """The command in the slash command's text; unknown words give ``help`` with a problem."""
    words = text.split()
    if not words:
        return Command("help")
    name, rest = words[0].lower(), words[1:]
    if name in ("help", "pending") and not rest:
        return Command(name)
    if name == "show" and len(rest) == 1 and len(rest[0]) <= 64:
        return Command("show", request_id=rest[0])
    if name != "history":
        return Command("help", problem=f"I don't know `{text[:60]}`.")
    filters: dict[str, Any] = {}
    for word in rest:
        key, sep, value = word.partition(":")
        key = key.lower()
        if not sep or not value or len(value) > MAX_FILTER_CHARS:
            return Command(
                "help", problem=f"History filters look like `key:value`, not `{word[:60]}`."
            )
        try:
            if key == "status":
                filters["status"] = Status(value.lower())
            elif key == "action":
                filters["action"] = value
            elif key == "by":
                filters["requested_by"] = normalize_email(value)
            elif key == "since":
                filters["since"] = _since(value)
            else:
                return Command("help", problem=f"Unknown history filter `{key[:30]}`.")
        except ValueError:
            return Command("help", problem=f"`{word[:60]}` is not a valid {key} filter.")
    return Command("history", query=HistoryQuery(limit=PAGE_SIZE, **filters))


def encode_more(query: HistoryQuery, cursor: str) -> str:
    """The "More" button's value: the query and where the next page starts (≤ 2000 chars)."""
    data = {
        k: v for k, v in asdict(query).items() if v is not None and k not in ("limit", "cursor")
    }
    if "status" in data:
        data["status"] = data["status"].value
    if "since" in data:
        data["since"] = data["since"].isoformat()
    return json.dumps({"q": data, "c": cursor}, separators=(",", ":"))


def decode_more(value: str) -> HistoryQuery:
    """The next page's query from a "More" button's value (``ValueError`` if it is not ours)."""
    data = json.loads(value)
    q = dict(data["q"])
    allowed = {"status", "action", "requested_by", "since"}
    if not set(q) <= allowed or not isinstance(data["c"], str):
        raise ValueError("not a history page")
    if "status" in q:
        q["status"] = Status(q["status"])
    if "since" in q:
        q["since"] = _since(q["since"])
    return HistoryQuery(limit=PAGE_SIZE, cursor=data["c"], **q)
