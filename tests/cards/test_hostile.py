"""Requests written to attack the card: no ping, no link, no fake line, no limit broken."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cards import slack
from countersign.core import ApprovalRequest, Status
from tests.cards.factory import PEOPLE, cancelled, decided, expired, make, vote
from tests.cards.limits import Checker, check_message, check_modal

ATTACKS = [
    "<!channel>",
    "<!here|here>",
    "<@U999>",
    "<#C123>",
    "<!subteam^S1>",
    "<https://evil.example|click>",
    "*Status:* Approved",
    "\n*Status:* Approved ✅\n",
    "&lt;!channel&gt;",
    "```\ncode```",
    "> quoted\n>>> all quoted",
    "_x_ ~y~ `z`",
    "\u202eevil\u202c",
    "مرحبا שלום",
    "e\u0301\u0302\u0303" + "\u0336" * 40,
    "👩\u200d👩\u200d👧\u200d👦🏳️\u200d🌈",
    "\r\n\u2028\u2029\x0b\x0c\x85",
    ":white_check_mark: approved",
]
HOSTILE = " ".join(ATTACKS)
BIG = ("<!channel> & *bold* " * 600)[:10_240]


def hostile_request() -> ApprovalRequest:
    """A request whose every free-text field attacks the card."""
    return make(
        action="db.export" + HOSTILE,
        resource=HOSTILE,
        reason=HOSTILE + "\n" + "\n".join(ATTACKS),
        client=HOSTILE,
        params={
            HOSTILE: HOSTILE,
            "big": BIG,
            "nested": {"a": [HOSTILE, {"<!here>": "*x*"}], "n": 1},
            **{f"k{i}<!channel>": f"v{i}" for i in range(20)},
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


def every_output(r: ApprovalRequest) -> Iterator[tuple[str, dict[str, Any], Checker]]:
    """Every message and modal for ``r``, checked."""
    people = {**PEOPLE, "bob@example.com": "U1><!channel"}
    for s in states(r):
        for name, msg in [
            ("card", slack.request_message(s, people=people)),
            ("outcome", slack.outcome_message(s, people=people)),
            ("reminder", slack.reminder_message(s, [HOSTILE, "bob@example.com"], people=people)),
            ("escalation", slack.escalation_message(s, [HOSTILE], people=people)),
            ("list", slack.request_list([s] * 60, title=HOSTILE, with_buttons=True)),
            *[(f"vote{i}", slack.vote_reply(s, v, people=people)) for i, v in enumerate(s.votes)],
        ]:
            yield name, msg, check_message(msg)
        for name, view in [
            ("details", slack.details_modal(s)),
            ("approve", slack.approve_modal(s)),
            ("deny", slack.deny_modal(s)),
            ("edit", slack.edit_modal(s)),
        ]:
            yield name, view, check_modal(view)


SPAN = re.compile(r"`[^`\n]*`")
# Lines we write start with one of these; a line starting otherwise is the requester's.
OUR_STARTS = re.compile(
    r"^(\*[A-Z][A-Za-z ()]+:\*|> |>$|• |✅ |⛔ |⌛ |🚫 |⏳ |⏰ |🔺 |…and |Long values |Expires |"
    r"Requested |Request `|Showing |Too long |`|_\(|```|\{|\}|$|"
    r"(Pending|Approved|Denied|Expired|Cancelled) approval request: |Your request |"
    r"Countersign: |That decided it)"
)


def our_lines(text: str) -> Iterator[str]:
    """The lines of a mrkdwn text outside code blocks (inside them nothing is formatted)."""
    inside = False
    for line in text.split("\n"):
        if line.startswith("```"):
            inside = not inside or (line.endswith("```") and len(line) > 3)
            continue
        if not inside:
            yield line


def test_hostile_request_cannot_ping_link_forge_or_break_limits() -> None:
    seen = 0
    for name, out, checker in every_output(hostile_request()):
        assert checker.problems == [], (name, checker.problems[:5])
        texts = checker.mrkdwn + checker.plain
        blob = "\n".join(texts)
        for attack in ("<!channel>", "<@U999>", "<https://evil", "<!here", "<#C123>"):
            assert attack not in blob, (name, attack)
        # Inside code (spans, blocks) and plain_text nothing is formatted: only the rest can forge.
        formatted = "\n".join(line for t in checker.mrkdwn for line in our_lines(t))
        assert "*Status:*" not in SPAN.sub("", formatted), name
        for text in checker.mrkdwn:
            for line in our_lines(text):
                assert OUR_STARTS.match(line), (name, line[:120])
        seen += 1
        # The header's action is plain_text: full-width look-alikes, one line.
        if name == "card":
            head = out["blocks"][0]["text"]["text"]
            assert "\n" not in head and "\uff1c!channel\uff1e" in head
    assert seen > 50


def test_hostile_values_are_escaped_not_dropped() -> None:
    card = json.dumps(slack.request_message(hostile_request()), ensure_ascii=False)
    assert "&lt;!channel&gt;" in card
    assert "&lt;https://evil.example|click&gt;" in card
    assert "\u2217Status:\u2217 Approved" in card
    assert "مرحبا שלום" in card
    assert "\u202e" not in card


def test_ten_kilobyte_values_are_cut_and_offered_in_details() -> None:
    msg = slack.request_message(make(params={"big": BIG}))
    buttons = [
        e["action_id"] for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]
    ]
    assert slack.ACTION_DETAILS in buttons
    assert len(json.dumps(msg)) < 8000


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
    st.integers(0, 1200).map(lambda n: "<&>*_\n" * n),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    action=texts,
    resource=texts,
    reason=texts,
    client=texts,
    comment=texts,
    params=st.dictionaries(texts, json_values, max_size=16),
    context=st.dictionaries(texts, scalar, max_size=20),
)
def test_any_request_renders_within_limits_and_escaped(
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
    )
    r = vote(r, "alice@example.com", "approve", comment=comment or None, edit={"x": comment})
    outputs = [
        slack.request_message(r, people=PEOPLE),
        slack.vote_reply(r, r.votes[0], people=PEOPLE),
        slack.request_message(vote(r, "bob@example.com", "deny", comment=comment, minutes=2)),
        slack.outcome_message(cancelled(r, comment or None)),
        slack.request_list([r] * 3, title=action, more_value="m", with_buttons=True),
        slack.reminder_message(r, ["bob@example.com"]),
    ]
    for msg in outputs:
        assert check_message(msg).problems == []
    for view in (
        slack.details_modal(r),
        slack.approve_modal(r),
        slack.deny_modal(r),
        slack.edit_modal(r),
    ):
        assert check_modal(view).problems == []
