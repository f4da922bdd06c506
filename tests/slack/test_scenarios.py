"""Slack end to end: cards posted, clicks decided by the rules, every card kept true."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from sqlalchemy.exc import OperationalError

from bot.slack import SLACK
from bot.slack.app import API_TIMEOUT_SECONDS
from cards import slack as cards
from countersign.chat import worker as worker_module
from countersign.core.model import Status
from countersign.server import CHAT
from storage import chat as chat_store
from tests.fakes import slack_requests as slack_req
from tests.slack.conftest import CROWD, SIGNING_SECRET, SlackWorld

APPROVERS = ["U0ALICE", "U0BOB", "U0CAROL", "U0ERIN", "U0FRANK"]


def _buttons(blocks: list[dict]) -> list[str]:
    return [
        element.get("action_id", "")
        for block in blocks
        if block.get("type") == "actions"
        for element in block.get("elements", [])
    ]


async def _until(check: Any, within: float) -> None:
    """Return once ``check()`` is true, or after ``within`` seconds (the caller asserts)."""
    for _ in range(int(within / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)


async def _posted(world: SlackWorld, request_id: str) -> None:
    await world.settle()
    world.card(request_id)  # exactly one card in the channel


async def test_a_request_reaches_the_channel_and_each_approver(world: SlackWorld) -> None:
    request_id = await world.create()
    await _posted(world, request_id)
    card = world.card(request_id)
    assert cards.ACTION_APPROVE in _buttons(card.blocks)
    assert cards.ACTION_DENY in _buttons(card.blocks)
    assert cards.ACTION_EDIT in _buttons(card.blocks)
    for user in APPROVERS:  # "approvers": a DM to each, found by e-mail
        dm = world.slack.dm_channel(user)
        assert [m for m in world.slack.messages_in(dm) if request_id in json.dumps(m.blocks)]
    looked_up = {c.args.get("email") for c in world.slack.calls_to("users.lookupByEmail")}
    assert {"alice@example.com", "frank@example.com"} <= looked_up
    # Running the job again posts nothing new.
    before = len(world.slack.calls_to("chat.postMessage"))
    await world.app[CHAT].run_job(request_id, "sync")
    await world.settle()
    assert len(world.slack.calls_to("chat.postMessage")) == before


async def test_quorum_of_two_from_two_people_updates_every_card(world: SlackWorld) -> None:
    request_id = await world.create()
    await _posted(world, request_id)
    status, _ = await world.click(cards.ACTION_APPROVE, request_id, "U0ALICE")
    assert status == 200
    await world.slack.wait_for(lambda c: c.method == "chat.update")
    await world.settle()
    assert (await world.request(request_id)).status is Status.PENDING
    card = world.card(request_id)
    assert "1 of 2" in json.dumps(card.blocks)
    assert _buttons(card.blocks)  # still open

    status, _ = await world.click(cards.ACTION_APPROVE, request_id, "U0CAROL")
    assert status == 200
    for _ in range(100):
        if (await world.request(request_id)).status is Status.APPROVED:
            break
        await asyncio.sleep(0.02)
    request = await world.request(request_id)
    assert request.status is Status.APPROVED
    assert request.decided_by == ("alice@example.com", "carol@example.com")
    await world.settle()
    # Every message of the request now shows the outcome, and no buttons.
    cards_of_request = [
        m
        for m in world.slack.messages.values()
        if m.thread_ts is None
        and request_id in json.dumps(m.blocks)
        and m.channel != world.slack.dm_channel("U0DANA")  # her outcome DM, not a card
    ]
    assert len(cards_of_request) == 6  # the channel and five DMs
    for message in cards_of_request:
        assert not _buttons(message.blocks), message.channel
        assert "Approved" in json.dumps(message.blocks) or "approved" in json.dumps(message.blocks)
    # Each vote is a thread reply under the channel card.
    card = world.card(request_id)
    replies = world.slack.replies("C0APPROVALS", card.ts)
    assert len(replies) == 2
    # The requesting human hears the outcome in a DM.
    dana_dm = world.slack.dm_channel("U0DANA")
    assert any(
        request_id in (m.text + json.dumps(m.blocks)) for m in world.slack.messages_in(dana_dm)
    )


async def test_self_approval_is_refused_privately(world: SlackWorld) -> None:
    request_id = await world.create(requested_by="alice@example.com")
    await _posted(world, request_id)
    status, _ = await world.click(cards.ACTION_APPROVE, request_id, "U0ALICE")
    assert status == 200
    await world.slack.wait_for("chat.postEphemeral")
    assert any("self-approval" in text for text in world.ephemerals_for("U0ALICE"))
    assert (await world.request(request_id)).votes == ()


async def test_a_non_approver_is_refused_privately(world: SlackWorld) -> None:
    request_id = await world.create()
    await _posted(world, request_id)
    await world.click(cards.ACTION_APPROVE, request_id, "U0MALLORY")
    await world.slack.wait_for("chat.postEphemeral")
    assert any("not an approver" in t.lower() for t in world.ephemerals_for("U0MALLORY"))
    assert (await world.request(request_id)).votes == ()


async def test_the_same_person_twice_counts_once(world: SlackWorld) -> None:
    request_id = await world.create()
    await _posted(world, request_id)
    await world.click(cards.ACTION_APPROVE, request_id, "U0BOB")
    await world.click(cards.ACTION_APPROVE, request_id, "U0BOB")
    await world.slack.wait_for("chat.postEphemeral")
    assert any("already" in t.lower() for t in world.ephemerals_for("U0BOB"))
    request = await world.request(request_id)
    assert len(request.votes) == 1
    assert request.status is Status.PENDING


async def test_deny_opens_a_modal_and_needs_a_reason(world: SlackWorld) -> None:
    request_id = await world.create()
    await _posted(world, request_id)
    await world.click(cards.ACTION_DENY, request_id, "U0ERIN")
    opened = await world.slack.wait_for("views.open")
    assert opened.ok, opened.response
    view = (
        json.loads(opened.args["view"])
        if isinstance(opened.args["view"], str)
        else opened.args["view"]
    )
    assert view["callback_id"] == cards.CALLBACK_DENY
    assert view["private_metadata"] == request_id

    status, answer = await world.submit(cards.CALLBACK_DENY, request_id, "U0ERIN", {"reason": "  "})
    assert status == 200
    assert answer["response_action"] == "errors"
    assert (await world.request(request_id)).status is Status.PENDING

    status, answer = await world.submit(
        cards.CALLBACK_DENY, request_id, "U0ERIN", {"reason": "Not during the freeze"}
    )
    assert status == 200
    assert answer is None or answer.get("response_action") != "errors"
    request = await world.request(request_id)
    assert request.status is Status.DENIED
    assert request.votes[0].comment == "Not during the freeze"
    await world.settle()
    assert not _buttons(world.card(request_id).blocks)
    assert "Not during the freeze" in json.dumps(world.card(request_id).blocks)


async def test_approve_with_changes_records_the_edit(world: SlackWorld) -> None:
    request_id = await world.create()
    await _posted(world, request_id)
    await world.click(cards.ACTION_EDIT, request_id, "U0ALICE")
    opened = await world.slack.wait_for("views.open")
    assert opened.ok, opened.response

    status, answer = await world.submit(
        cards.CALLBACK_EDIT, request_id, "U0ALICE", {"params": "{not json"}
    )
    assert answer["response_action"] == "errors"
    assert "params" in answer["errors"]

    edited = {"table": "customers", "columns": ["id"], "rows": 500}
    status, answer = await world.submit(
        cards.CALLBACK_EDIT, request_id, "U0ALICE", {"params": json.dumps(edited), "comment": None}
    )
    assert status == 200
    assert answer is None or answer.get("response_action") != "errors", answer
    await world.submit(cards.CALLBACK_EDIT, request_id, "U0BOB", {"params": json.dumps(edited)})
    request = await world.request(request_id)
    assert request.status is Status.APPROVED
    assert request.approved_params == edited


async def test_twenty_concurrent_clickers_make_one_decision(world: SlackWorld) -> None:
    request_id = await world.create(action="crowd.deploy", resource="prod/web")
    await _posted(world, request_id)
    results = await asyncio.gather(
        *(world.click(cards.ACTION_APPROVE, request_id, user) for user in CROWD)
    )
    assert all(status == 200 for status, _ in results)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        await world.settle()
        refusals = sum(len(world.ephemerals_for(u)) for u in CROWD)
        if refusals >= 17:
            break
        await asyncio.sleep(0.05)
    request = await world.request(request_id)
    assert request.status is Status.APPROVED
    assert len(request.votes) == 3
    assert sum(len(world.ephemerals_for(u)) for u in CROWD) == 17  # "already decided"


async def test_a_slack_retry_is_not_run_twice(world: SlackWorld) -> None:
    request_id = await world.create()
    await _posted(world, request_id)
    card = world.card(request_id)
    body, headers = slack_req.block_actions(
        secret=SIGNING_SECRET,
        action_id=cards.ACTION_APPROVE,
        value=request_id,
        user_id="U0BOB",
        message_ts=card.ts,
    )
    assert (await world.send(body, headers))[0] == 200
    _, retry_headers = slack_req.signed(body, SIGNING_SECRET, retry_num=1, retry_reason="timeout")
    assert (await world.send(body, retry_headers))[0] == 200
    await asyncio.sleep(0.3)
    request = await world.request(request_id)
    assert len(request.votes) == 1
    assert world.ephemerals_for("U0BOB") == []  # no "already voted" for Slack's own retry


async def test_bad_missing_and_stale_signatures_get_401_and_change_nothing(
    world: SlackWorld,
) -> None:
    request_id = await world.create()
    await _posted(world, request_id)
    card = world.card(request_id)
    for signing in (
        {"sign_with": "not-the-secret"},
        {"unsigned": True},
        {"stale": True},
        {"no_timestamp": True},
    ):
        body, headers = slack_req.block_actions(
            secret=SIGNING_SECRET,
            signing=signing,
            action_id=cards.ACTION_APPROVE,
            value=request_id,
            user_id="U0BOB",
            message_ts=card.ts,
        )
        status, _ = await world.send(body, headers)
        assert status == 401, signing
    body, headers = slack_req.slash_command(secret="wrong", text="history")
    assert (await world.send(body, headers))[0] == 401
    await asyncio.sleep(0.2)
    assert (await world.request(request_id)).votes == ()
    assert world.slack.calls_to("users.info") == []


async def test_expiry_updates_the_cards(world: SlackWorld) -> None:
    request_id = await world.create(action="deploy.web", resource="prod/web", ttl_seconds=2)
    await _posted(world, request_id)
    deadline = time.monotonic() + 10
    while (await world.request(request_id)).status is Status.PENDING:
        assert time.monotonic() < deadline, "never expired"
        await asyncio.sleep(0.1)
    assert (await world.request(request_id)).status is Status.EXPIRED
    await world.settle()
    card = world.card(request_id)
    assert not _buttons(card.blocks)
    assert "xpired" in json.dumps(card.blocks)


async def test_a_hostile_request_renders_safely(world: SlackWorld) -> None:
    hostile = "<!channel> <@U0ALICE> <https://evil.example|click me> *Status:* Approved & done"
    request_id = await world.create(
        action="db.export",
        resource="prod/<!here>",
        reason=hostile + "\n*Status:* Approved",
        params={"rows": 20000, "blob": "x" * 10_000, "note": hostile, "unicode": "é漢字👍\u202e"},
        context={"ticket": "<@U0BOB>"},
    )
    await _posted(world, request_id)  # the fake enforces every Block Kit limit
    for message in world.slack.messages.values():
        shown = message.text + json.dumps(message.blocks)
        assert "<!channel>" not in shown
        assert "<!here>" not in shown
        assert "<https://evil.example|" not in shown
        assert "<@U0BOB>" not in shown


async def test_posting_survives_rate_limits(world: SlackWorld) -> None:
    world.slack.rate_limit("chat.postMessage", times=2, retry_after=1)
    request_id = await world.create(action="deploy.web", resource="prod/web")
    await _posted(world, request_id)
    limited = [c for c in world.slack.calls_to("chat.postMessage") if c.status == 429]
    assert len(limited) == 2


async def test_a_database_drop_after_posting_does_not_post_the_card_twice(
    world: SlackWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The card went out, then its reference could not be stored for a few seconds."""
    real = chat_store.set_card_message
    failures = {"left": 4}

    def flaky(conn: Any, ref: chat_store.CardRef, message_id: str, extra: Any) -> Any:
        if ref.destination.startswith("channel:") and failures["left"] > 0:
            failures["left"] -= 1
            raise OperationalError("UPDATE card_refs", {}, ConnectionError("connection lost"))
        return real(conn, ref, message_id, extra)

    monkeypatch.setattr(chat_store, "set_card_message", flaky)
    request_id = await world.create()
    await world.settle()
    assert failures["left"] == 0
    world.card(request_id)  # exactly one card in the channel
    assert not world.slack.calls_to("conversations.history")  # the reference was stored
    await world.app[CHAT].run_job(request_id, "sync", retry=True)
    world.card(request_id)  # and still one after the job runs again


async def _with_client_timeout(world: SlackWorld, seconds: float) -> aiohttp.ClientSession:
    """Make the bot's Slack calls give up after ``seconds``; the shared session to put back."""
    shared = world.app[SLACK].client.session
    world.app[SLACK].client.session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=seconds)
    )
    return shared


async def test_a_card_post_whose_answer_was_lost_is_found_not_posted_again(
    world: SlackWorld,
) -> None:
    """RELIABILITY problem 3: Slack applies a ``chat.postMessage`` our client gave up on.

    (In the soak: a replica killed while its post hung.) The retry finds the card
    by its metadata in the channel's history and keeps that one up to date.
    """
    shared = await _with_client_timeout(world, 1)
    try:
        world.slack.hang("chat.postMessage", 2.5)  # the first post: the channel's card
        request_id = await world.create()
        await world.settle()  # the job failed on the timeout and waits for its retry
        hung = world.slack.calls_to("chat.postMessage")[0]
        assert hung.args["channel"] == "#approvals"
        await _until(lambda: hung.status is not None, within=5)  # Slack applied it
        assert hung.status == 200
        await world.app[CHAT].run_job(request_id, "sync", retry=True)
        await world.settle()
        card = world.card(request_id)  # exactly one card in the channel
        assert card.ts == hung.response["ts"]
        looked = world.slack.calls_to("conversations.history")
        assert looked and looked[0].args["channel"] == "C0APPROVALS"
        assert world.slack.calls_to("conversations.list")  # "#approvals" → its id

        status, _ = await world.click(cards.ACTION_APPROVE, request_id, "U0ALICE")
        assert status == 200
        await world.until_votes(request_id, 1)
        await world.settle()
        assert "1 of 2" in json.dumps(world.card(request_id).blocks)  # the found card is kept
    finally:
        await world.app[SLACK].client.session.close()
        world.app[SLACK].client.session = shared


async def test_a_lookalike_card_from_another_app_is_not_adopted(world: SlackWorld) -> None:
    """Only this bot's message counts: any app can post our metadata."""
    world.slack.fail("chat.postMessage", status=500, times=3)  # with the client's 2 retries
    request_id = await world.create()
    await world.settle()
    assert not world.slack.messages_in("C0APPROVALS")
    fake_card = world.slack.add_message(
        "C0APPROVALS",
        "Approved (not really)",
        user="U0MALLORY",
        bot_id="B0OTHER",
        app_id="A0OTHER",
        metadata={
            "event_type": "countersign_card",
            "event_payload": {"request_id": request_id, "destination": "channel:#approvals"},
        },
    )
    await world.app[CHAT].run_job(request_id, "sync", retry=True)
    await world.settle()
    card = world.card(request_id)  # ours, posted now
    assert card.ts != fake_card.ts
    assert world.slack.calls_to("conversations.history")
    status, _ = await world.click(cards.ACTION_APPROVE, request_id, "U0ALICE")
    assert status == 200
    await world.until_votes(request_id, 1)
    await world.settle()
    assert "1 of 2" in json.dumps(world.card(request_id).blocks)
    assert not fake_card.updates


async def test_without_the_history_scopes_a_card_in_doubt_is_posted_again(
    world: SlackWorld, caplog: pytest.LogCaptureFixture
) -> None:
    """An install that lacks the history scopes: the card is posted again, with a warning."""
    world.slack.fail("chat.postMessage", status=500, times=3)
    world.slack.fail("conversations.list", status=200, error="missing_scope")
    request_id = await world.create()
    await world.settle()
    await world.app[CHAT].run_job(request_id, "sync", retry=True)
    await world.settle()
    world.card(request_id)
    assert "posting it again" in caplog.text


async def test_a_late_older_update_applied_after_the_final_one_is_repaired(
    world: SlackWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RELIABILITY problem 1b: Slack applies an update our client gave up on, over newer state.

    Vote 1's card update hangs past the client's timeout; vote 2 decides and its
    job makes the card final; the job retried after the timeout rewrites it; then
    Slack applies the hung (pending) update last. Only the forced re-sync that
    follows every failed sync, later than such a call can land, repairs the card.
    """
    # The hung update lands 10 s after vote 1's job sent it (its client gave up after
    # 1 s); the re-sync comes 12 s after that failure, past the landing. Wide margins:
    # under a loaded CI host a job can take seconds to get its turn.
    monkeypatch.setattr(worker_module, "RESYNC_AFTER_SECONDS", 12.0)
    # Production calls give up after 10 s; 1 s here keeps the test short.
    assert world.app[SLACK].client.session.timeout.total == API_TIMEOUT_SECONDS == 10
    shared = await _with_client_timeout(world, 1)
    try:
        request_id = await world.create()
        await _posted(world, request_id)
        since = len(world.slack.calls)
        world.slack.hang("chat.update", 10.0)  # past the retry after the timeout too
        status, _ = await world.click(cards.ACTION_APPROVE, request_id, "U0ALICE")
        assert status == 200
        await world.until_votes(request_id, 1)
        status, _ = await world.click(cards.ACTION_APPROVE, request_id, "U0CAROL")
        assert status == 200
        await world.until_votes(request_id, 2)
        assert (await world.request(request_id)).status is Status.APPROVED
        hung = await world.slack.wait_for("chat.update", since=since, answered=False)

        def final() -> bool:
            return not _buttons(world.card(request_id).blocks)

        await _until(lambda: hung.status is not None, within=20)  # Slack applied it
        await _until(final, within=20)  # and the re-sync repaired it
        shown = [not _buttons(state.blocks) for state in world.card(request_id).history]
        assert final(), f"the card stayed stale: {shown}"
        assert "Approved" in json.dumps(world.card(request_id).blocks)
        # The race happened: final, then the late (pending) update, then final again.
        first_final = shown.index(True)
        assert False in shown[first_final:], f"no late update after the final card: {shown}"
    finally:
        await world.app[SLACK].client.session.close()
        world.app[SLACK].client.session = shared


async def test_find_reads_a_channel_given_by_id_or_by_name(world: SlackWorld) -> None:
    """History takes ids: an id is used as is, a name (with or without ``#``) is listed once."""
    messenger = world.app[SLACK].messenger
    request_id = await world.create()
    await world.settle()
    request = await world.request(request_id)
    by_id = await messenger.post("channel:C0APPROVALS", request)
    assert await messenger.find("channel:C0APPROVALS", request) == by_id
    assert not world.slack.calls_to("conversations.list")
    found = await messenger.find("channel:#approvals", request)
    assert found is not None and found != by_id  # the policy's own card, not the one by id
    assert await messenger.find("channel:approvals", request) is None  # another destination
    assert len(world.slack.calls_to("conversations.list")) == 1  # names are cached
