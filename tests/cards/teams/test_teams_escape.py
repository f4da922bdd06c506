"""The one Teams escaping filter: what each attack turns into, character by character."""

from __future__ import annotations

import pytest

from cards.teams_escape import (
    escape_teams_markdown,
    people_text,
    request_id_text,
    teams_date,
)
from cards.view import Moment, Person


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("[click](https://evil)", "\uff3bclick\uff3d(https\u2236//evil)"),
        ("![img](http://x/y.png)", "!\uff3bimg\uff3d(http\u2236//x/y.png)"),
        ("see www.evil.example", "see www\u2024evil.example"),
        ("<https://evil>", "\uff1chttps\u2236//evil\uff1e"),
        ("<at>Bob</at>", "\uff1cat\uff1eBob\uff1c/at\uff1e"),
        ("<b>x</b> &lt;", "\uff1cb\uff1ex\uff1c/b\uff1e \uff06lt;"),
        ("**Status:** Approved", "\u2217\u2217Status:\u2217\u2217 Approved"),
        ("_it_ ~no~ `x`", "\u02cdit\u02cd \u223cno\u223c \u02cbx\u02cb"),
        ("trailing\\", "trailing\uff3c"),
        ("{{DATE(2030-01-01T00:00:00Z, SHORT)}}", "\uff5b{DATE(2030-01-01T00:00:00Z, SHORT)}}"),
        ("{{{x", "\uff5b\uff5b{x"),
        ("- item", "\u2010 item"),
        ("+ item", "\uff0b item"),
        ("# Heading", "\uff03 Heading"),
        ("1. one", "1\u2024 one"),
        ("12) twelve", "12\uff09 twelve"),
        ("> quote", "\uff1e quote"),
        ("| a | b |", "\u2502 a | b |"),
        ("a - b 1. c", "a - b 1. c"),
        ("line one\nline two\r\n- three", "line one line two - three"),
        ("rtl \u202eevil\u202c ok", "rtl evil ok"),
        ("bell\x07 nul\x00", "bell nul"),
        ("  padded  ", "padded"),
        ("مرحبا שלום", "مرحبا שלום"),
    ],
)
def test_inline(raw: str, safe: str) -> None:
    assert escape_teams_markdown(raw) == safe


def test_quote_puts_our_bar_before_every_line() -> None:
    out = escape_teams_markdown("fine\n**Status:** Approved\n\n- item\n[x](https://e)", "quote")
    assert out.split("\n") == [
        "\u2502 fine",
        "\u2502 \u2217\u2217Status:\u2217\u2217 Approved",
        "\u2502",
        "\u2502 \u2010 item",
        "\u2502 \uff3bx\uff3d(https\u2236//e)",
    ]
    assert escape_teams_markdown("   \n", "quote") == ""


def test_plain_keeps_markup_and_lines_for_text_runs() -> None:
    raw = '{\n  "a": "[x](https://e) **b**",\n  "b": "{{DATE(x)}}"\u202e\n}'
    assert escape_teams_markdown(raw, "plain") == (
        '{\n  "a": "[x](https://e) **b**",\n  "b": "\uff5b{DATE(x)}}"\n}'
    )


def test_limit_cuts_before_escaping() -> None:
    assert escape_teams_markdown("<" * 10, limit=4) == "\uff1c\uff1c\uff1c\u2026"
    assert escape_teams_markdown("abc", limit=3) == "abc"


def test_combining_marks_are_capped() -> None:
    out = escape_teams_markdown("e" + "\u0301" * 50)
    assert len(out) == 7


def test_request_ids_of_our_shape_stay_exact() -> None:
    assert request_id_text("req_01JD0000000000000000000000") == "req_01JD0000000000000000000000"
    assert request_id_text("a_b_c") == "a\u02cdb\u02cdc"
    assert request_id_text("-1") == "\u2010" + "1"
    assert request_id_text("") == "(none)"


def test_people_and_dates() -> None:
    people = [Person("a@x", "Alice"), Person("b@x"), Person("[c](https://e)@x")]
    assert people_text(people) == "Alice, b@x and \uff3bc\uff3d(https\u2236//e)@x"
    assert people_text(people, most=1) == "Alice and 2 more"
    assert people_text([]) == "nobody"
    assert teams_date(Moment("2026-11-21T10:00:00.000Z", 1795255200)) == (
        "{{DATE(2026-11-21T10:00:00Z, SHORT)}} {{TIME(2026-11-21T10:00:00Z)}}"
    )
