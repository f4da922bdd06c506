"""The one escaping filter and the clipping helper."""

from __future__ import annotations

import pytest

from cards.escape import clip, escape_mrkdwn, slack_len


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("<!channel>", "&lt;!channel&gt;"),
        ("<@U999>", "&lt;@U999&gt;"),
        ("<https://evil|click>", "&lt;https://evil|click&gt;"),
        ("a & b", "a &amp; b"),
        ("&lt;", "&amp;lt;"),
        ("*Status:* Approved", "\u2217Status:\u2217 Approved"),
        ("_it_ ~no~ `x`", "\u02cdit\u02cd \u223cno\u223c \u02cbx\u02cb"),
        ("line one\nline two\r\nthree", "line one line two three"),
        ("tab\there", "tab here"),
        ("rtl \u202eevil\u202c ok", "rtl evil ok"),
        ("isolate \u2066x\u2069", "isolate x"),
        ("bell\x07 nul\x00", "bell nul"),
        ("  padded  ", "padded"),
    ],
)
def test_inline(raw: str, safe: str) -> None:
    assert escape_mrkdwn(raw) == safe


def test_quote_prefixes_every_line_so_none_starts_with_requester_text() -> None:
    out = escape_mrkdwn("fine\n*Status:* Approved\n\n> nested\u2028sep", "quote")
    assert out.split("\n") == [
        "> fine",
        "> \u2217Status:\u2217 Approved",
        ">",
        "> &gt; nested",
        "> sep",
    ]
    assert escape_mrkdwn("", "quote") == ""


def test_span_is_exact_but_for_backticks_and_entities() -> None:
    assert escape_mrkdwn("snake_case *x*", "span") == "`snake_case *x*`"
    assert escape_mrkdwn("a`b<c>", "span") == "`a\u02cbb&lt;c&gt;`"
    assert escape_mrkdwn("a\nb", "span") == "`a b`"
    assert escape_mrkdwn("", "span") == "_(empty)_"


def test_code_keeps_lines_and_stars_but_cannot_close_the_fence() -> None:
    assert escape_mrkdwn('{\n  "a": "*<b>*```"\n}', "code") == (
        '{\n  "a": "*&lt;b&gt;*\u02cb\u02cb\u02cb"\n}'
    )


def test_plain_uses_full_width_forms() -> None:
    assert escape_mrkdwn("a <b> & c\nd", "plain") == "a \uff1cb\uff1e \uff06 c d"


def test_combining_marks_are_capped() -> None:
    zalgo = "e" + "\u0301" * 50
    assert escape_mrkdwn(zalgo) == "e" + "\u0301" * 6
    assert escape_mrkdwn("cafe\u0301") == "cafe\u0301"


def test_limit_cuts_the_raw_text_before_escaping() -> None:
    out = escape_mrkdwn("&" * 50, limit=10)
    assert out == "&amp;" * 9 + "…"


def test_clip_keeps_short_text() -> None:
    assert clip("hello", 5) == "hello"


def test_clip_counts_utf16_and_never_splits_entities_or_tokens() -> None:
    assert slack_len("😀") == 2
    assert slack_len(clip("😀" * 10, 7)) <= 7
    text = "ab&amp;cd"
    for limit in range(1, len(text)):
        out = clip(text, limit)
        assert slack_len(out) <= limit
        assert "&" not in out or "&amp;" in out
    mention = "x <@U12345> y"
    for limit in range(2, len(mention)):
        out = clip(mention, limit)
        assert slack_len(out) <= limit
        assert out.count("<") == out.count(">")


def test_clip_never_leaves_a_code_span_open() -> None:
    # An open backtick would let "*Status:*" from inside the span be formatted.
    text = "*Action:* `db.export *Status:* Approved` tail"
    for limit in range(5, len(text)):
        out = clip(text, limit)
        assert slack_len(out) <= limit
        assert out.count("`") % 2 == 0, out


def test_clip_closes_a_code_block_it_cuts() -> None:
    out = clip("```\n" + "x\n" * 100 + "```", 50)
    assert slack_len(out) <= 50
    assert out.endswith("…\n```") and out.count("```") == 2
