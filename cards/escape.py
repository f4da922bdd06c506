"""Slack text safety: the one escaping filter for untrusted values, and length clipping.

Everything a request carries (action, resource, reason, params, context,
client name, comments, decision reasons) is written by an agent or a person
we do not trust. Rendered into Slack ``mrkdwn`` it must not be able to:

* **ping or link**: ``<!channel>``, ``<@U123>``, ``<https://evil|click>``.
  Slack's own rule: ``&``, ``<``, ``>`` become ``&amp;``, ``&lt;``, ``&gt;``.
  Text objects are also sent with ``verbatim: true`` (see ``blockkit``), so
  bare URLs, ``#channel`` and ``@here`` are not auto-linked either.
* **format**: mrkdwn has no escape character for ``*``, ``_``, ``~`` and
  backtick. Zero-width spaces do not help (Slack treats them as word breaks,
  which *enables* formatting), so each is replaced by a look-alike that Slack
  does not parse: ``*`` -> U+2217, ``_`` -> U+02CD, ``~`` -> U+223C, backtick
  -> U+02CB, and their full-width forms (U+FF0A, U+FF3F, U+FF40) -> U+FE61,
  U+2E0F, U+02CB. A reader sees the same shapes; the card is a rendering, the
  exact values stay available (Details shows JSON, the edit box holds it raw).
* **start a line of ours**: one-line fields collapse every line break; the
  multi-line fields (reason, comments) are rendered as a quote block, each
  line prefixed with ``>`` by us. So no untrusted text ever begins a line,
  and a fake ``*Status:* Approved`` stays inside the quote, unformatted.
* **reorder our text**: bidi embeddings/overrides/isolates (U+202A-202E,
  U+2066-2069) are dropped, since an unterminated RLO would flip the rest of
  our line; other control characters are dropped; runs of combining marks
  are capped ("zalgo" text cannot paint over neighbouring lines).

``plain_text`` objects (headers) parse no markup, but we do not rely on Slack
decoding entities there: ``&<>`` become their full-width forms (U+FF06,
U+FF1C, U+FF1E), safe whether or not Slack decodes entities in plain text.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

__all__ = [
    "ELLIPSIS",
    "Mode",
    "clip",
    "escape_mrkdwn",
    "sanitize",
    "slack_len",
]

ELLIPSIS = "…"
Mode = Literal["inline", "span", "quote", "code", "plain"]

# A vote comment or reason may carry accents; nobody needs more than this many
# marks on one letter, and "zalgo" text uses dozens.
_MAX_MARKS = 6

_NEWLINES = re.compile(r"\r\n|[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")
_BIDI = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
_CONTROLS = dict.fromkeys([*range(0x00, 0x09), *range(0x0E, 0x1C), 0x1F, *range(0x7F, 0xA0)])
_DROP = {**_BIDI, **_CONTROLS, 0x09: " "}

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_FORMATTING = {
    "*": "\u2217",
    "_": "\u02cd",
    "~": "\u223c",
    "`": "\u02cb",
    "\uff0a": "\ufe61",
    "\uff3f": "\u2e0f",
    "\uff40": "\u02cb",
}
_INLINE = str.maketrans({**_ENTITIES, **_FORMATTING})
# Inside a code block nothing is formatted; only a backtick could close it.
_CODE = str.maketrans({**_ENTITIES, "`": "\u02cb", "\uff40": "\u02cb"})
_PLAIN = str.maketrans({"&": "\uff06", "<": "\uff1c", ">": "\uff1e"})
_SPACES = re.compile(r"\s+")
# What clip() must not cut through: entities, our <...> tokens, inline code spans.
# A fence (```) is not a span: it is matched first so its backticks pair up.
_ATOM = re.compile(r"```|&(?:amp|lt|gt);|<[^<>\n]*>|`[^`\n]+`")
_CLOSE_FENCE = "\n```"


def slack_len(text: str) -> int:
    """Length as Slack counts it (UTF-16 code units: an emoji may count 2)."""
    return len(text.encode("utf-16-le")) // 2


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` Slack characters, ending in "…" when cut.

    The cut never lands inside an entity (a stray ``&``), one of our ``<...>``
    tokens (an unclosed ``<``) or an inline code span: an unclosed backtick
    would let the exact text inside the span be *formatted* after all. A code
    block left open by the cut is closed.
    """
    if slack_len(text) <= limit:
        return text
    budget = limit - slack_len(ELLIPSIS) - len(_CLOSE_FENCE)
    cut = 0
    used = 0
    for ch in text:
        size = 2 if ord(ch) > 0xFFFF else 1
        if used + size > budget:
            break
        used += size
        cut += 1
    # Atoms never span lines, so scanning the cut's own line finds the one it splits.
    line_start = text.rfind("\n", 0, cut) + 1
    for atom in _ATOM.finditer(text, line_start):
        if atom.start() >= cut:
            break
        if cut < atom.end():
            cut = atom.start()
            break
    head = text[:cut].rstrip()
    if head.endswith("\n>") or head == ">":  # a quote marker with nothing left to quote
        head = head[:-1].rstrip()
    head += ELLIPSIS
    if head.count("```") % 2:
        head += _CLOSE_FENCE
    return head


def _cap_marks(text: str) -> str:
    out: list[str] = []
    run = 0
    for ch in text:
        if unicodedata.category(ch) in ("Mn", "Me"):
            run += 1
            if run > _MAX_MARKS:
                continue
        else:
            run = 0
        out.append(ch)
    return "".join(out)


def sanitize(text: str, *, one_line: bool) -> str:
    """Untrusted text without controls, bidi overrides or runaway marks; one line if asked."""
    text = _NEWLINES.sub("\n", text).translate(_DROP)
    text = _cap_marks(text)
    if one_line:
        return _SPACES.sub(" ", text).strip()
    return "\n".join(line.rstrip() for line in text.strip("\n").split("\n"))


def escape_mrkdwn(text: str, mode: Mode = "inline", *, limit: int | None = None) -> str:
    """Untrusted ``text`` made safe for Slack; the ``mrkdwn`` template filter.

    ``inline``: one line of prose, no markup. ``span``: one line as inline
    code, exact but for backticks (identifiers, param values). ``quote``: a
    quote block, every line prefixed with ``>``. ``code``: the inside of a
    code block (keeps line breaks and ``*_~``). ``plain``: for ``plain_text``.
    ``limit`` first cuts the raw text (so no entity is ever cut in half).
    """
    clean = sanitize(text, one_line=mode in ("inline", "span", "plain"))
    if limit is not None and len(clean) > limit:
        clean = clean[: max(0, limit - 1)].rstrip() + ELLIPSIS
    if mode == "plain":
        return clean.translate(_PLAIN)
    if mode == "code":
        return clean.translate(_CODE)
    if mode == "span":
        # Inline code shows identifiers exactly (no look-alikes): only a backtick could end it.
        return f"`{clean.translate(_CODE)}`" if clean else "_(empty)_"
    safe = clean.translate(_INLINE)
    if mode == "quote":
        if not safe:
            return ""
        return "\n".join(f"> {line}" if line else ">" for line in safe.split("\n"))
    return safe
