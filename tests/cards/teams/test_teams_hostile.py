"""Requests written to attack the Teams card: no link, no fake line, no forged date, under 28 KB."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cards import teams
from cards.slack import REFUSALS
from countersign.core import ApprovalRequest, Status
from tests.cards.factory import cancelled, decided, expired, make, vote
from tests.cards.teams.checks import check, escaping_problems, markdown_texts, walk

ATTACKS = [
    "[click](https://evil.example/login)",
    "![x](https://evil.example/p.png)",
    "[a][ref]\n[ref]: https://evil.example",
    "<https://evil.example>",
    "www.evil.example",
    "**Status:** Approved",
    "\n**Status:** ✅ Approved\n",
    "✅ Approved by security",
    "<at>Alice</at> <b>bold</b> <script>x</script>",
    "&lt;at&gt;Bob&lt;/at&gt;",
    "\n- item\n* star\n+ plus\n1. one\n2) two\n# Heading\n> quote\n---\n===",
    "_x_ ~y~ `z` __u__",
    "\\**escaped**",
    "{{DATE(2030-01-01T00:00:00Z, SHORT)}}",
    "\u202eevil\u202c \u2066iso\u2069",
    "مرحبا שלום",
    "e\u0301\u0302\u0303" + "\u0336" * 40,
    "👩\u200d👩\u200d👧\u200d👦🏳️\u200d🌈",
    "\r\n\u2028\u2029\x0b\x0c\x85",
]
HOSTILE = " ".join(ATTACKS)
BIG = ("[x](https://e) **b** <at>" * 500)[:10_240]
ASTRAL = "\U0001d400" * 3000  # MATHEMATICAL BOLD CAPITAL A: 12 bytes as escaped JSON


def hostile_request() -> ApprovalRequest:
    """A request whose every free-text field attacks the card."""
    return make(
        action="db.export" + HOSTILE,
        resource=HOSTILE,
        reason=HOSTILE + "\n" + "\n".join(ATTACKS) + BIG,
        client=HOSTILE,
        requested_by=HOSTILE,
        params={
            HOSTILE: HOSTILE,
            "big": BIG,
            "astral": ASTRAL,
            "nested": {"a": [HOSTILE, {"<at>": "**x**"}], "n": 1},
            **{f"k{i}[x](https://e)": f"v{i}" for i in range(20)},
        },
        context={HOSTILE: HOSTILE, "big": BIG},
    )


def states(r: ApprovalRequest) -> Iterator[ApprovalRequest]:
    """``r`` in every state, with hostile votes and decision reasons."""
    yield r
    one = vote(r, "alice@example.com", "approve", comment=HOSTILE, edit={HOSTILE: BIG})
    yield one
    yield vote(one, "bob@example.com", "approve", edit={HOSTILE: BIG}, comment=BIG, minutes=2)
    yield vote(one, "bob@example.com", "deny", comment=HOSTILE + BIG, minutes=2)
    yield expired(one)
    yield cancelled(r, HOSTILE)
    yield decided(r, Status.APPROVED)


def every_card(r: ApprovalRequest) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every card for ``r``."""
    people = {"alice@example.com": HOSTILE, "bob@example.com": "**Status:** Approved"}
    for s in states(r):
        yield "card", teams.request_card(s, people=people, user_ids=[HOSTILE] * 100)
        yield "viewer", teams.request_card(s, viewer="alice@example.com", viewer_note=HOSTILE)
        yield "outcome", teams.outcome_card(s, people=people)
        yield "reminder", teams.reminder_card(s, [HOSTILE, "bob@example.com"], people=people)
        yield "escalation", teams.escalation_card(s, [HOSTILE] * 40, people=people)
        yield "list", teams.request_list_card([s] * 60, title=HOSTILE, with_actions=True)
        for i, v in enumerate(s.votes):
            yield f"vote{i}", teams.vote_card(s, v, people=people)
    for code in REFUSALS:
        yield "refusal", teams.refusal_card(code, HOSTILE + BIG)


def test_hostile_request_cannot_link_forge_or_break_limits() -> None:
    seen = 0
    for name, card in every_card(hostile_request()):
        assert check(card) == [], name
        assert escaping_problems(card, strict_starts=name != "list") == [], name
        blob = "\n".join(text for _, text in markdown_texts(card))
        for attack in ("[click]", "https://", "<at>", "**Status:**", "{{DATE(2030"):
            assert attack not in blob, (name, attack)
        seen += 1
    assert seen > 50


def test_hostile_values_are_escaped_not_dropped() -> None:
    card = teams.request_card(hostile_request())
    text = json.dumps(card, ensure_ascii=False)
    assert "\uff3bclick\uff3d(https\u2236//evil.example/login)" in text
    assert "\u2217\u2217Status:\u2217\u2217 Approved" in text
    assert "\uff1cat\uff1eAlice\uff1c/at\uff1e" in text
    assert "مرحبا שלום" in text
    assert "\u202e" not in text
    # The status line is ours, coloured by state: a requester cannot produce another one.
    status = card["body"][0]["items"][1]
    assert status["text"].startswith("⏳ Pending") and status["color"] == "accent"


def test_ten_kilobyte_values_shrink_the_card_and_stay_in_details() -> None:
    card = teams.request_card(make(params={"big": BIG}))
    details = next(a for a in card["actions"] if a["title"] == "Details")
    run = next(n for n in walk(details) if n.get("type") == "TextRun")
    assert run["text"].startswith('{\n  "big": "[x](https://e) **b**')  # plain TextRun, exact
    assert "GET /v1/requests/" in json.dumps(details)
    assert check(card) == []


def test_huge_cards_degrade_but_still_fit() -> None:
    r = hostile_request()
    for s in states(r):
        card = teams.request_card(s)
        assert check(card) == []
    many = make(params={f"k{i}": ASTRAL[:200] for i in range(40)}, reason=ASTRAL)
    card = teams.request_card(vote(many, "alice@example.com", "approve", comment=ASTRAL))
    assert check(card) == []


scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"])),
    st.sampled_from(ATTACKS),
)
json_values = st.recursive(
    scalar,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
texts = st.one_of(
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=300),
    st.lists(st.sampled_from(ATTACKS), max_size=6).map("".join),
    st.integers(0, 1200).map(lambda n: "[<&>*_\n{{" * n),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    action=texts,
    resource=texts,
    reason=texts,
    client=texts,
    comment=texts,
    params=st.dictionaries(texts, json_values, max_size=16),
    context=st.dictionaries(texts, scalar, max_size=20),
)
def test_any_request_renders_valid_escaped_and_small(
    action: str,
    resource: str,
    reason: str,
    client: str,
    comment: str,
    params: dict[str, Any],
    context: dict[str, Any],
) -> None:
    r = make(
        action=action,
        resource=resource,
        reason=reason,
        client=client,
        params=params,
        context=context,
        requested_by=client or None,
    )
    r = vote(r, "alice@example.com", "approve", comment=comment or None, edit={"x": comment})
    people = {"alice@example.com": comment}
    cards = {
        "card": teams.request_card(r, people=people, viewer_note=comment or None),
        "vote": teams.vote_card(r, r.votes[0], people=people),
        "denied": teams.request_card(vote(r, "bob@example.com", "deny", comment=comment)),
        "outcome": teams.outcome_card(cancelled(r, comment or None)),
        "list": teams.request_list_card([r] * 3, title=action, more_data={"c": comment[:100]}),
        "reminder": teams.reminder_card(r, ["bob@example.com", client]),
        "escalation": teams.escalation_card(r, [resource]),
        "refusal": teams.refusal_card("expired", reason),
    }
    for name, card in cards.items():
        assert check(card) == [], name
        assert escaping_problems(card, strict_starts=name != "list") == [], name
