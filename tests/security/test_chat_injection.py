"""Untrusted text through the running server into the fake Slack and Teams, and command
arguments into history queries: text stays text, filters stay values."""

from __future__ import annotations

import json
from typing import Any

from countersign.server import ENGINE
from tests.cards.teams.checks import check, escaping_problems, markdown_texts
from tests.cards.teams.test_teams_hostile import ATTACKS
from tests.fakes import slack_requests as slack_req
from tests.fakes import teams_activities as acts
from tests.security.conftest import snapshot
from tests.teams.conftest import APP_ID, SLACK_SECRET, TeamsWorld
from tests.teams.conftest import world as world  # the fixture

SLACK_ATTACKS = [
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<!subteam^S0SEC>",
    "<@U0BOB>",
    "<#C0APPROVALS>",
    "<https://evil.example|click me>",
    "<mailto:a@evil.example|mail>",
    "*Status:* Approved",
    "&lt;!channel&gt;",
]
HOSTILE = " ".join(SLACK_ATTACKS + ATTACKS)
# What must never reach a message verbatim: each would ping, link or format.
SLACK_FORBIDDEN = [a for a in SLACK_ATTACKS if a.startswith("<")]  # mrkdwn has no [x](y) links


async def _hostile(world: TeamsWorld) -> str:
    return await world.create(
        resource="prod/" + HOSTILE[:400],
        reason=HOSTILE[:1900],
        params={"rows": 5, "note": HOSTILE, HOSTILE[:50]: "key"},
        context={"ticket": HOSTILE[:200], "agent": "<@U0ALICE> **bold**"},
    )


async def test_hostile_text_reaches_slack_and_teams_as_text(world: TeamsWorld) -> None:
    request_id = await _hostile(world)
    await world.settle()
    posted = [m for m in world.slack.messages.values() if request_id in json.dumps(m.blocks)]
    assert posted, "no Slack card"
    for message in posted:
        shown = message.text + json.dumps(message.blocks, ensure_ascii=False)
        for attack in SLACK_FORBIDDEN:
            assert attack not in shown, attack
    teams_cards: list[dict[str, Any]] = []
    for conversation in (world.channel, world.bf.personal_conversation_id("29:alice")):
        teams_cards += [c.card for c in await world.cards_of(request_id, conversation) if c.card]
    assert teams_cards, "no Teams card"
    for card in teams_cards:
        assert check(card) == []
        assert escaping_problems(card) == []
        # Markdown is rendered only in TextBlocks and the like; Input values and TextRuns are
        # shown as typed, so those may hold the text verbatim.
        rendered = " ".join(text for _where, text in markdown_texts(card))
        assert "evil.example" in json.dumps(card)  # escaped, not dropped
        for attack in ("[click](https://evil.example/login)", "<at>Alice</at>", "**Status:**"):
            assert attack not in rendered, attack


async def _slack_history(world: TeamsWorld, text: str) -> str:
    body, headers = slack_req.slash_command(secret=SLACK_SECRET, text=text, user_id="U0CAROL")
    async with world.http.post(world.url("/slack/events"), data=body, headers=headers) as resp:
        assert resp.status == 200
        return await resp.text()


async def _teams_history(world: TeamsWorld, text: str) -> str:
    alice = world.bf.personal_conversation_id("29:alice")
    before = len(world.bf.activities(alice))
    activity = acts.message(
        text,
        app_id=APP_ID,
        **world.bf.sender_kwargs("29:alice"),
        **world.bf.conversation_kwargs(alice),
    )
    status, _ = await world.send(activity)
    assert status in (200, 201)
    return json.dumps([a.card for a in world.bf.activities(alice)[before:]])


INJECTIONS = [
    "history action:x'OR'1'='1",
    "history action:db.export'--",
    "history action:%",
    "history action:*",
    "history action:db.%",
    "history action:x);DROP-TABLE-requests;--",
    "history by:'or''='@example.com",
    "history status:pending'OR'1'='1",
    "history since:2026-01-01'OR'1'='1",
    "show req_'OR'1'='1",
    "show %",
]


async def test_command_arguments_never_widen_history(world: TeamsWorld) -> None:
    request_id = await world.create()
    await world.settle()
    assert request_id in await _slack_history(world, "history action:db.export")  # control
    before = await snapshot(world.app[ENGINE])
    for text in INJECTIONS:
        for platform, ask in (("slack", _slack_history), ("teams", _teams_history)):
            answer = await ask(world, text)
            assert request_id not in answer, f"{platform}: {text!r} listed a request"
    assert await snapshot(world.app[ENGINE]) == before  # every table is still there, unchanged
