"""A checker of Slack's Block Kit limits and of our escaping, run over every rendered card."""

from __future__ import annotations

import re
from typing import Any

MESSAGE_BLOCKS = 50
MODAL_BLOCKS = 100

# Our own tokens in mrkdwn: mentions, dates, entities. Anything else with <, > or & is a leak.
_OURS = re.compile(r"<@[UW][A-Z0-9]+>|<!date\^\d+\^[^|<>]*\|[^<>]*>|&(?:amp|lt|gt);")
# A quote marker we put at the start of a line.
_QUOTE = re.compile(r"^>(?: |$)", re.MULTILINE)


def ulen(text: str) -> int:
    """Length as Slack counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


class Checker:
    """Collects every problem with one message or modal."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.mrkdwn: list[str] = []
        self.plain: list[str] = []

    def fail(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def limit(self, where: str, text: Any, most: int) -> None:
        if not isinstance(text, str):
            self.fail(where, f"not a string: {text!r}")
        elif ulen(text) > most:
            self.fail(where, f"{ulen(text)} > {most}")

    def text(self, where: str, obj: Any, most: int, *, plain_only: bool = False) -> None:
        if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
            self.fail(where, f"not a text object: {obj!r}")
            return
        if plain_only and obj["type"] != "plain_text":
            self.fail(where, "must be plain_text")
        text = obj.get("text")
        self.limit(where, text, most)
        if not text or not str(text).strip():
            self.fail(where, "empty text")
            return
        (self.mrkdwn if obj["type"] == "mrkdwn" else self.plain).append(text)

    def button(self, where: str, el: dict[str, Any]) -> None:
        self.text(f"{where}.text", el["text"], 75, plain_only=True)
        self.limit(f"{where}.action_id", el["action_id"], 255)
        self.limit(f"{where}.value", el.get("value", ""), 2000)
        if "confirm" in el:
            c = el["confirm"]
            self.text(f"{where}.confirm.title", c["title"], 100, plain_only=True)
            self.text(f"{where}.confirm.text", c["text"], 300)
            self.text(f"{where}.confirm.confirm", c["confirm"], 30, plain_only=True)
            self.text(f"{where}.confirm.deny", c["deny"], 30, plain_only=True)

    def block(self, where: str, block: dict[str, Any]) -> None:
        kind = block["type"]
        if "block_id" in block:
            self.limit(f"{where}.block_id", block["block_id"], 255)
        if kind == "header":
            self.text(f"{where}.text", block["text"], 150, plain_only=True)
        elif kind == "section":
            if "text" in block:
                self.text(f"{where}.text", block["text"], 3000)
            fields = block.get("fields", [])
            if len(fields) > 10:
                self.fail(where, f"{len(fields)} fields")
            for i, f in enumerate(fields):
                self.text(f"{where}.fields[{i}]", f, 2000)
            if "accessory" in block:
                self.button(f"{where}.accessory", block["accessory"])
        elif kind == "context":
            elements = block["elements"]
            if not 1 <= len(elements) <= 10:
                self.fail(where, f"{len(elements)} context elements")
            for i, e in enumerate(elements):
                self.text(f"{where}.elements[{i}]", e, 3000)
        elif kind == "actions":
            elements = block["elements"]
            if not 1 <= len(elements) <= 25:
                self.fail(where, f"{len(elements)} action elements")
            for i, e in enumerate(elements):
                self.button(f"{where}.elements[{i}]", e)
        elif kind == "input":
            self.text(f"{where}.label", block["label"], 2000, plain_only=True)
            el = block["element"]
            if el["type"] != "plain_text_input":
                self.fail(where, "unexpected input element")
            if "initial_value" in el:
                self.limit(f"{where}.initial_value", el["initial_value"], 3000)
            if not 0 < el.get("max_length", 3000) <= 3000:
                self.fail(where, "max_length out of range")
            if "hint" in block:
                self.text(f"{where}.hint", block["hint"], 2000, plain_only=True)
            if "placeholder" in el:
                self.text(f"{where}.placeholder", el["placeholder"], 150, plain_only=True)
        elif kind != "divider":
            self.fail(where, f"unknown block type {kind}")

    def blocks(self, blocks: list[dict[str, Any]], most: int) -> None:
        if len(blocks) > most:
            self.fail("blocks", f"{len(blocks)} > {most}")
        ids = [b["block_id"] for b in blocks if "block_id" in b]
        if len(ids) != len(set(ids)):
            self.fail("blocks", f"duplicate block ids {ids}")
        for i, b in enumerate(blocks):
            self.block(f"blocks[{i}]", b)

    def escaping(self) -> None:
        for text in self.mrkdwn:
            rest = _QUOTE.sub("", _OURS.sub("", text))
            for ch in "<>&":
                if ch in rest:
                    self.fail("mrkdwn", f"raw {ch!r} in {text[:300]!r}")
        for text in self.plain:
            for ch in "<>&":
                if ch in text:
                    self.fail("plain_text", f"raw {ch!r} in {text[:300]!r}")


def check_message(msg: dict[str, Any]) -> Checker:
    """Problems of a chat message (``text`` + ``blocks``); empty when Slack would accept it."""
    c = Checker()
    c.limit("text", msg["text"], 40000)
    if not msg["text"].strip():
        c.fail("text", "empty")
    c.mrkdwn.append(msg["text"])
    c.blocks(msg["blocks"], MESSAGE_BLOCKS)
    c.escaping()
    return c


def check_modal(view: dict[str, Any]) -> Checker:
    """Problems of a ``views.open`` modal."""
    c = Checker()
    if view["type"] != "modal":
        c.fail("type", view["type"])
    c.text("title", view["title"], 24, plain_only=True)
    c.text("close", view["close"], 24, plain_only=True)
    if "submit" in view:
        c.text("submit", view["submit"], 24, plain_only=True)
    if "callback_id" in view:
        c.limit("callback_id", view["callback_id"], 255)
    if "private_metadata" in view:
        c.limit("private_metadata", view["private_metadata"], 3000)
    c.blocks(view["blocks"], MODAL_BLOCKS)
    c.escaping()
    return c
