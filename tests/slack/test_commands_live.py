"""``/countersign`` on the running server, reminders and escalation, and the Details view."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace
from datetime import timedelta

from slack_sdk.errors import SlackApiError
from sqlalchemy import text

from cards import slack as cards
from countersign.core.model import Status
from countersign.policy import Escalation
from countersign.server import CHAT, ENGINE
from countersign.service import ESCALATE_JOB, REMIND_JOB
from tests.fakes import slack_requests as slack_req
from tests.slack.conftest import SIGNING_SECRET, SlackWorld


def _shown(answer: dict) -> str:
    return str(answer.get("text", "")) + json.dumps(answer.get("blocks", []))


async def test_help_and_unknown_words_get_help_privately(world: SlackWorld) -> None:
    status, answer = await world.command("help")
    assert status == 200
    assert answer["response_type"] == "ephemeral"
    assert "pending" in _shown(answer) and "history" in _shown(answer)
    status, answer = await world.command("launch the missiles")
    assert status == 200
    assert answer["response_type"] == "ephemeral"
    assert "history" in _shown(answer)


async def test_pending_lists_what_the_caller_may_vote_on(world: SlackWorld) -> None:
    mine = await world.create()  # prod-export: alice may vote
    theirs = await world.create(requested_by="alice@example.com")  # her own: she may not
    other = await world.create(action="crowd.deploy", resource="prod/web")  # not her group
    _, answer = await world.command("pending", user="U0ALICE")
    shown = _shown(answer)
    assert mine in shown
    assert theirs not in shown
    assert other not in shown
    assert cards.ACTION_APPROVE in shown  # with buttons


async def test_show_and_history_with_paging(world: SlackWorld) -> None:
    ids = [await world.create(resource=f"prod/t{i}") for i in range(12)]
    await world.service.cancel(ids[0], by="owen@example.com")
    _, answer = await world.command(f"show {ids[3]}")
    assert ids[3] in _shown(answer)
    _, answer = await world.command("show req_doesnotexist")
    assert "doesn't exist" in _shown(answer)

    _, answer = await world.command("history status:cancelled")
    assert ids[0] in _shown(answer)
    assert ids[5] not in _shown(answer)

    _, answer = await world.command("history action:db.export")
    first_page = _shown(answer)
    assert ids[-1] in first_page  # newest first
    assert ids[0] not in first_page  # page size 10 of 12
    more = [
        element
        for block in answer["blocks"]
        if block.get("type") == "actions"
        for element in block["elements"]
        if element.get("action_id") == cards.ACTION_MORE
    ]
    assert len(more) == 1
    # The More button: a signed click; the next page replaces the answer via response_url.
    body, headers = slack_req.block_actions(
        secret=SIGNING_SECRET,
        action_id=cards.ACTION_MORE,
        value=more[0]["value"],
        user_id="U0ALICE",
        response_url=world.slack.new_response_url("C0APPROVALS", None, "U0ALICE"),
    )
    assert (await world.send(body, headers))[0] == 200
    for _ in range(100):
        if world.slack.responses:
            break
        await asyncio.sleep(0.02)
    second = json.dumps(world.slack.responses[-1].body)
    assert ids[0] in second and ids[1] in second
    assert ids[-1] not in second


async def test_history_filters_are_only_values(world: SlackWorld) -> None:
    await world.create()
    status, answer = await world.command("history action:x'OR'1'='1")
    assert status == 200
    assert "req_" not in _shown(answer)
    async with world.app[ENGINE].connect() as conn:  # the table is still there
        assert (await conn.execute(text("SELECT count(*) FROM requests"))).scalar_one() == 1


async def test_details_opens_a_modal_with_the_full_params(world: SlackWorld) -> None:
    request_id = await world.create(params={"rows": 20000, "sql": "SELECT " + "x, " * 500})
    await world.settle()
    await world.click(cards.ACTION_DETAILS, request_id, "U0MALLORY")  # anyone may look
    opened = await world.slack.wait_for("views.open")
    assert opened.ok, opened.response
    assert "x, x, x" in json.dumps(opened.args["view"])


async def test_reminder_and_escalation(world: SlackWorld) -> None:
    request_id = await world.create()
    await world.settle()
    # The test policy's prod-export rule has no reminder and no escalation.
    async with world.app[ENGINE].connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT kind, due_at FROM chat_jobs WHERE request_id = :r ORDER BY kind"),
                {"r": request_id},
            )
        ).all()
    assert not {row.kind for row in rows} & {REMIND_JOB, ESCALATE_JOB}

    # A reminder, run by hand as the worker does when it falls due.
    await world.click(cards.ACTION_APPROVE, request_id, "U0ALICE")
    await world.until_votes(request_id, 1)
    await world.settle()
    card = world.card(request_id)
    before = len(world.slack.replies("C0APPROVALS", card.ts))
    await world.app[CHAT].run_job(request_id, REMIND_JOB)
    replies = world.slack.replies("C0APPROVALS", card.ts)
    assert len(replies) == before + 1
    reminder = replies[-1].blocks[0]["text"]["text"]  # the nudge; the card follows it
    assert "<@U0BOB>" in reminder  # awaited
    assert "<@U0ALICE>" not in reminder  # voted already
    # ... and a DM to each approver still awaited.
    bob_dm = world.slack.messages_in(world.slack.dm_channel("U0BOB"))
    assert any(request_id in (m.text + json.dumps(m.blocks)) for m in bob_dm[1:])


async def test_create_arms_reminder_and_escalation_from_the_rule(world: SlackWorld) -> None:
    policy = world.service.policy
    rule = policy.rule("prod-export")
    assert rule is not None
    escalation = Escalation(
        after=timedelta(minutes=20),
        approvers=frozenset({"mallory@example.com"}),
        approver_refs=("mallory@example.com",),
    )
    widened = replace(rule, remind_after=timedelta(minutes=10), escalate=escalation)
    world.service.policy = replace(
        policy, rules=tuple(widened if r.name == rule.name else r for r in policy.rules)
    )
    world.app[CHAT].policy = world.service.policy
    request_id = await world.create()
    request = await world.request(request_id)
    async with world.app[ENGINE].connect() as conn:
        rows = {
            row.kind: row.due_at
            for row in await conn.execute(
                text("SELECT kind, due_at FROM chat_jobs WHERE request_id = :r"), {"r": request_id}
            )
        }
    assert set(rows) == {"sync", REMIND_JOB, ESCALATE_JOB}
    await world.settle()  # not due yet: nothing but the cards
    assert (await world.request(request_id)).rule.approvers == request.rule.approvers

    await world.app[CHAT].run_job(request_id, ESCALATE_JOB)
    widened_request = await world.request(request_id)
    assert "mallory@example.com" in widened_request.rule.approvers
    # Mallory got the card directly and may now vote.
    dm = world.slack.dm_channel("U0MALLORY")
    assert [m for m in world.slack.messages_in(dm) if request_id in json.dumps(m.blocks)]
    await world.click(cards.ACTION_APPROVE, request_id, "U0MALLORY", channel=dm)
    await world.until_votes(request_id, 1)
    votes = (await world.request(request_id)).votes
    assert [v.voter for v in votes] == ["mallory@example.com"]
    assert (await world.request(request_id)).status is Status.PENDING


async def test_an_escalation_that_failed_half_way_still_reaches_the_new_approver(
    world: SlackWorld,
) -> None:
    # The default rule posts to the channel only, so a DM can come from the escalation alone.
    policy = world.service.policy
    rule = policy.rule("default")
    assert rule is not None
    escalation = Escalation(
        after=timedelta(minutes=20),
        approvers=frozenset({"mallory@example.com"}),
        approver_refs=("mallory@example.com",),
    )
    widened = replace(rule, escalate=escalation)
    world.service.policy = replace(
        policy, rules=tuple(widened if r.name == rule.name else r for r in policy.rules)
    )
    world.app[CHAT].policy = world.service.policy
    request_id = await world.create(action="deploy.web", resource="prod/web")
    await world.settle()
    world.slack.fail("conversations.open", status=500, times=3)  # past the client's retries
    with contextlib.suppress(SlackApiError):  # the job fails; the widening is committed
        await world.app[CHAT].run_job(request_id, ESCALATE_JOB)
    assert "mallory@example.com" in (await world.request(request_id)).rule.approvers
    dm = world.slack.dm_channel("U0MALLORY")
    assert not [m for m in world.slack.messages_in(dm) if request_id in json.dumps(m.blocks)]
    await world.app[CHAT].run_job(request_id, ESCALATE_JOB)  # the retry
    assert [m for m in world.slack.messages_in(dm) if request_id in json.dumps(m.blocks)]


async def test_a_rule_can_offer_approvers_a_comment_box(world: SlackWorld) -> None:
    policy = world.service.policy
    rule = policy.rule("prod-export")
    assert rule is not None
    world.service.policy = replace(
        policy,
        rules=tuple(
            replace(r, approve_comment=True) if r.name == rule.name else r for r in policy.rules
        ),
    )
    request_id = await world.create()
    await world.settle()
    status, _ = await world.click(cards.ACTION_APPROVE, request_id, "U0ALICE")
    assert status == 200
    opened = await world.slack.wait_for("views.open")
    view = opened.args["view"]
    view = json.loads(view) if isinstance(view, str) else view
    assert view["callback_id"] == cards.CALLBACK_APPROVE
    assert (await world.request(request_id)).votes == ()  # nothing until the modal is sent
    status, answer = await world.submit(
        cards.CALLBACK_APPROVE, request_id, "U0ALICE", {"comment": "Checked the row count"}
    )
    assert status == 200
    assert answer is None or answer.get("response_action") != "errors"
    (vote,) = (await world.request(request_id)).votes
    assert (vote.voter, vote.comment) == ("alice@example.com", "Checked the row count")
    # Without a comment it is still an approval.
    await world.submit(cards.CALLBACK_APPROVE, request_id, "U0BOB", {"comment": None})
    assert (await world.request(request_id)).status is Status.APPROVED


async def test_a_failed_card_sync_is_followed_by_a_forced_resync(world: SlackWorld) -> None:
    request_id = await world.create()
    await world.settle()
    world.slack.fail("chat.update", status=500, times=30)  # past the client's retries
    await world.click(cards.ACTION_APPROVE, request_id, "U0ALICE")
    await world.until_votes(request_id, 1)
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        async with world.app[ENGINE].connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT due_at FROM chat_jobs WHERE request_id = :r AND kind = 'resync'"),
                    {"r": request_id},
                )
            ).all()
        if rows:
            break
        assert asyncio.get_running_loop().time() < deadline, "no resync was armed"
        await asyncio.sleep(0.1)
    # A resync rewrites every card even when they are recorded as up to date.
    world.slack._faults.clear()  # the outage is over
    await world.settle()
    before = len(world.slack.calls_to("chat.update"))
    await world.app[CHAT].run_job(request_id, "resync")
    assert len(world.slack.calls_to("chat.update")) > before
