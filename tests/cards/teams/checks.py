"""Checks run over every rendered Teams card: the official 1.5 schema, our own rules, escaping.

The schema lives in ``../shared/schemas/`` next to the repository. Without it
(a user's clone) schema validation skips, saying why; under ``CI=true`` it
fails instead. Our own checks never skip.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft6Validator
from jsonschema.exceptions import best_match

from cards import teams
from cards.adaptive import MAX_CARD_BYTES, card_bytes

SCHEMA = (
    Path(__file__).resolve().parents[3].parent / "shared" / "schemas" / "adaptive-card-1.5.json"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Our date functions: anything else with "{{" in a text would be a forged date.
_DATE_FN = re.compile(r"\{\{(?:DATE|TIME)\(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ(?:, SHORT)?\)\}\}")
# A line starting with one of these is a list item, heading, quote or table to some renderer.
LEADING_MARKUP = re.compile(r"^\s*(?:[-+#=|>]|\*(?!\*)|\d+[.)])")
# Lines we write start with one of these; anything else began with the requester's text.
OUR_STARTS = re.compile(
    "^(Approval request: |✅ |⛔ |⌛ |🚫 |⏳ |⏰ |🔺 |\u26a0\ufe0f |\u2139\ufe0f |│|• |…and |Long values |Expires |"
    r"Requested |Request |Too long |Edit the JSON|The params are |\*\*|Showing |_Nothing here|"
    r"Countersign|That decided it|Approve, deny|Send me|Your request |"
    r"(Pending|Approved|Denied|Expired|Cancelled) approval request: |req_)"
)
_BOLD = re.compile(r"\*\*[^*\n]*\*\*")
_OUR_ITALICS = re.compile(r"_with changes_|_Nothing here\._|\breq_[0-9A-Z]+")


@cache
def _validator() -> Draft6Validator | str:
    if not SCHEMA.is_file():
        return f"Adaptive Card schema not found at {SCHEMA} (see shared/schemas/README.md)"
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    Draft6Validator.check_schema(schema)
    return Draft6Validator(schema)


def schema_errors(card: dict[str, Any]) -> list[str]:
    """Errors of ``card`` against the official Adaptive Card 1.5 schema (skips without it)."""
    validator = _validator()
    if isinstance(validator, str):
        if IN_CI:
            pytest.fail(f"CI=true requires the schema: {validator}")
        pytest.skip(validator)
    errors = list(validator.iter_errors(card))
    if not errors:
        return []
    best = best_match(errors)
    return [f"{list(best.absolute_path)}: {best.message[:300]}"]


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every object in a card, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def own_problems(card: dict[str, Any]) -> list[str]:
    """Our rules beyond the schema: version, verbs, fallbacks, required inputs, size."""
    problems = []
    if (card.get("type"), card.get("version")) != ("AdaptiveCard", "1.5"):
        problems.append(f"not a 1.5 card: {card.get('type')} {card.get('version')}")
    if "$schema" not in card or not str(card.get("fallbackText", "")).strip():
        problems.append("no $schema or empty fallbackText")
    refresh = card.get("refresh", {}).get("action")
    ids: list[str] = []
    for node in walk(card):
        kind = node.get("type")
        if kind == "Action.Execute" and node is not refresh:
            fallback = node.get("fallback", {})
            data = node.get("data", {})
            if not node.get("verb", "").startswith("countersign."):
                problems.append(f"Execute without verb: {node}")
            if node["verb"] != teams.VERB_MORE and "request_id" not in data:
                problems.append(f"Execute without request_id: {node['verb']}")
            if fallback.get("type") != "Action.Submit" or fallback.get("data") != {
                **data,
                "verb": node["verb"],
            }:
                problems.append(f"Execute without an equivalent Submit fallback: {node['verb']}")
        if kind == "Action.Submit" and "verb" not in node.get("data", {}):
            problems.append("Submit without verb in data")
        if str(kind).startswith("Input."):
            ids.append(node["id"])
            if node.get("isRequired") and not node.get("errorMessage"):
                problems.append(f"required input {node['id']} without errorMessage")
        if kind == "TextBlock" and (not node["text"].strip() or node.get("wrap") is not True):
            problems.append(f"empty or unwrapped TextBlock: {node['text'][:80]!r}")
    if len(ids) != len(set(ids)):
        problems.append(f"duplicate input ids {ids}")
    if refresh is not None:
        if refresh.get("verb") != teams.VERB_REFRESH or "request_id" not in refresh["data"]:
            problems.append(f"bad refresh {refresh}")
        if len(card["refresh"]["userIds"]) > 60:
            problems.append("more than 60 refresh userIds")
    size = max(card_bytes(card), len(json.dumps(card, ensure_ascii=False).encode()))
    if size >= MAX_CARD_BYTES:
        problems.append(f"{size} bytes >= {MAX_CARD_BYTES}")
    return problems


def check(card: dict[str, Any]) -> list[str]:
    """Every problem with ``card``: ours first, then the official schema's."""
    return own_problems(card) + schema_errors(card)


def markdown_texts(card: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, text) of everything a client renders as markdown."""
    out = [("fallback", str(card.get("fallbackText", "")))]
    for node in walk(card):
        if node.get("type") == "TextBlock":
            out.append(("heading" if node.get("style") == "heading" else "text", node["text"]))
        elif node.get("type") == "FactSet":
            for fact in node["facts"]:
                out += [("fact", fact["title"]), ("fact", fact["value"])]
    return out


def escaping_problems(card: dict[str, Any], *, strict_starts: bool = True) -> list[str]:
    """Injected markup in ``card``: links, HTML, forged dates, stray emphasis, foreign lines."""
    problems = []
    for kind, text in markdown_texts(card):
        rest = _DATE_FN.sub("", text)
        for bad in ("](", "<", ">", "://", "{{", "\\"):
            if bad in rest:
                problems.append(f"{kind}: {bad!r} in {text[:160]!r}")
        if re.search(r"(?i)www\.", rest):
            problems.append(f"{kind}: www. in {text[:160]!r}")
        unbolded = _OUR_ITALICS.sub("", _BOLD.sub("", rest))
        for ch in "*_`~":
            if ch in unbolded:
                problems.append(f"{kind}: stray {ch!r} in {text[:160]!r}")
        lines = text.split("\n\n") if kind != "fact" else [text]
        for line in lines:
            if LEADING_MARKUP.match(line):
                problems.append(f"{kind}: line starts with markup {line[:120]!r}")
            if strict_starts and kind == "text" and not OUR_STARTS.match(line):
                problems.append(f"{kind}: line not ours {line[:120]!r}")
    return problems
