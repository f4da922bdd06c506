"""Teams end to end: cards posted, universal actions decided by the rules, all cards kept true."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile

import pytest
from slack_sdk.errors import SlackApiError
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from bot.teams import TEAMS
from cards import teams as cards
from countersign.core.model import Status
from countersign.server import CHAT, ENGINE
from storage import SqlStore
from storage import chat as chat_store
from tests.fakes import slack_requests as slack_req
from tests.fakes import teams_activities as acts
from tests.teams.conftest import APP_ID, SLACK_SECRET, TeamsWorld


def _verbs(card: dict) -> list[str]:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Action.Execute" and node.get("verb") != cards.VERB_REFRESH:
                found.append(str(node.get("verb")))
            for key, value in node.items():
                if key != "refresh":
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(card)
    return found


async def test_cards_reach_the_channel_and_each_approver(world: TeamsWorld) -> None:
    request_id = await world.create()
    await world.settle()
    assert len(await world.cards_of(request_id, world.channel)) == 1
    for user in ("29:alice", "29:bob", "29:carol"):
        conversation = world.bf.personal_conversation_id(user)
        (card,) = await world.cards_of(request_id, conversation)
        assert cards.VERB_APPROVE in _verbs(card.card or {})
    # Mallory never installed the app: nothing to post to, nothing fails.
    assert (await world.request(request_id)).status is Status.PENDING


async def test_a_vote_in_teams_and_one_in_slack_decide_and_every_card_follows(
    world: TeamsWorld,
) -> None:
    request_id = await world.create()
    await world.settle()
    alice = world.bf.personal_conversation_id("29:alice")
    status, body = await world.click(cards.VERB_APPROVE, request_id, "29:alice", alice)
    assert status == 200
    assert body["statusCode"] == 200
    assert body["type"] == "application/vnd.microsoft.card.adaptive"
    assert _verbs(body["value"]) == []  # alice has voted: her card shows her vote
    await world.settle()
    assert (await world.request(request_id)).status is Status.PENDING

    # Carol approves from Slack; Teams cards follow.
    slack_card = next(
        m for m in world.slack.messages_in("C0APPROVALS") if request_id in json.dumps(m.blocks)
    )
    body_bytes, headers = slack_req.block_actions(
        secret=SLACK_SECRET,
        action_id="countersign.approve",
        value=request_id,
        user_id="U0CAROL",
        message_ts=slack_card.ts,
    )
    async with world.http.post(world.url("/slack/events"), data=body_bytes, headers=headers) as r:
        assert r.status == 200
    await world.until_votes(request_id, 2)
    request = await world.request(request_id)
    assert request.status is Status.APPROVED
    await world.settle()
    for conversation in (world.channel, alice, world.bf.personal_conversation_id("29:bob")):
        (card,) = await world.cards_of(request_id, conversation)
        assert card.updates, conversation
        assert _verbs(card.card or {}) == []
        assert "Approved" in json.dumps(card.card)
    # The Slack card is final too, and the requester heard the outcome in Teams.
    assert "Approved" in json.dumps(
        world.slack.messages[(slack_card.channel, slack_card.ts)].blocks
    )
    dana = world.bf.personal_conversation_id("29:dana")
    assert any(request_id in json.dumps(a.card) for a in world.bf.activities(dana) if a.card)


async def test_refusals_come_back_as_an_error_card_naming_the_rule(world: TeamsWorld) -> None:
    request_id = await world.create(requested_by="alice@example.com")
    await world.settle()
    alice = world.bf.personal_conversation_id("29:alice")
    status, body = await world.click(cards.VERB_APPROVE, request_id, "29:alice", alice)
    assert status == 200
    assert "self-approval" in json.dumps(body["value"])
    bob = world.bf.personal_conversation_id("29:bob")
    await world.click(cards.VERB_APPROVE, request_id, "29:bob", bob)
    status, body = await world.click(cards.VERB_APPROVE, request_id, "29:bob", bob)
    assert "already" in json.dumps(body["value"]).lower()
    assert [v.voter for v in (await world.request(request_id)).votes] == ["bob@example.com"]


async def test_deny_needs_a_reason_and_edit_needs_json(world: TeamsWorld) -> None:
    request_id = await world.create()
    await world.settle()
    bob = world.bf.personal_conversation_id("29:bob")
    _, body = await world.click(cards.VERB_DENY, request_id, "29:bob", bob, reason=" ")
    assert "reason" in json.dumps(body["value"]).lower()
    _, body = await world.click(cards.VERB_EDIT, request_id, "29:bob", bob, params="{nope")
    assert (await world.request(request_id)).votes == ()
    edited = {"table": "customers", "rows": 10}
    _, body = await world.click(
        cards.VERB_EDIT, request_id, "29:bob", bob, params=json.dumps(edited)
    )
    assert (await world.request(request_id)).votes[0].edited_params == edited
    _, body = await world.click(
        cards.VERB_DENY,
        request_id,
        "29:carol",
        world.bf.personal_conversation_id("29:carol"),
        reason="No.",
    )
    request = await world.request(request_id)
    assert request.status is Status.DENIED
    assert request.votes[-1].comment == "No."


async def test_bad_tokens_get_401_and_change_nothing(world: TeamsWorld) -> None:
    request_id = await world.create()
    await world.settle()
    alice = world.bf.personal_conversation_id("29:alice")
    card = (await world.cards_of(request_id, alice))[0]
    activity = acts.invoke_action(
        cards.VERB_APPROVE,
        {"request_id": request_id},
        app_id=APP_ID,
        reply_to_id=card.id,
        **world.bf.sender_kwargs("29:alice"),
        **world.bf.conversation_kwargs(alice),
    )
    service_url = activity["serviceUrl"]
    bad = {
        "forged key": world.bf.sign_activity_token(service_url, key="rogue"),
        "wrong audience": world.bf.sign_activity_token(service_url, app_id="someone-else"),
        "wrong issuer": world.bf.sign_activity_token(service_url, issuer="https://evil.test"),
        "expired": world.bf.sign_activity_token(service_url, expires_in=-3600),
        "serviceurl mismatch": world.bf.sign_activity_token("https://elsewhere.test/"),
    }
    for case, token in bad.items():
        status, _ = await world.send(activity, token=token)
        assert status == 401, case
    status, _ = await world.send(activity, raw_headers={"Content-Type": "application/json"})
    assert status == 401, "missing Authorization"
    assert (await world.request(request_id)).votes == ()


async def test_commands_are_answered_with_cards(world: TeamsWorld) -> None:
    request_id = await world.create()
    await world.settle()
    alice = world.bf.personal_conversation_id("29:alice")
    for text, expect in (
        ("help", "pending"),
        ("pending", request_id),
        (f"show {request_id}", request_id),
        ("history action:db.export", request_id),
        ("what now", "history"),
    ):
        before = len(world.bf.activities(alice))
        activity = acts.message(
            text,
            app_id=APP_ID,
            **world.bf.sender_kwargs("29:alice"),
            **world.bf.conversation_kwargs(alice),
        )
        status, _ = await world.send(activity)
        assert status in (200, 201)
        answers = world.bf.activities(alice)[before:]
        assert answers, text
        # Any of them: the chat worker may post a card into this chat meanwhile.
        assert any(expect in json.dumps(answer.card) for answer in answers), text


def test_the_teams_package_is_a_valid_zip(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from countersign.cli import main

    monkeypatch.setenv("MICROSOFT_APP_ID", APP_ID)
    monkeypatch.setenv("MICROSOFT_APP_PASSWORD", "x")
    monkeypatch.setenv("COUNTERSIGN_PUBLIC_URL", "https://approvals.example.com")
    out = tmp_path / "countersign.zip"
    assert main(["teams", "package", "--out", str(out)]) == 0
    with zipfile.ZipFile(io.BytesIO(out.read_bytes())) as zf:
        assert set(zf.namelist()) == {"manifest.json", "color.png", "outline.png"}
        manifest = json.loads(zf.read("manifest.json"))
        for name, size in (("color.png", 192), ("outline.png", 32)):
            png = zf.read(name)
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            assert int.from_bytes(png[16:20], "big") == size
    (bot,) = manifest["bots"]
    assert bot["botId"] == APP_ID
    assert set(bot["scopes"]) == {"personal", "team", "groupChat"}
    commands = {c["title"] for c in bot["commandLists"][0]["commands"]}
    assert commands == {"help", "pending", "show", "history"}
    assert manifest["validDomains"] == ["approvals.example.com"]


def test_the_retry_policy_speed_up_keeps_the_same_codes() -> None:
    from msrest.universal_http.requests import ClientRetryPolicy

    from bot.teams.auth import speed_up_retry_policy

    before = sorted(ClientRetryPolicy().policy.status_forcelist)
    speed_up_retry_policy()
    assert isinstance(ClientRetryPolicy.safe_codes, frozenset)
    assert sorted(ClientRetryPolicy().policy.status_forcelist) == before


async def test_the_same_person_on_both_platforms_counts_once(world: TeamsWorld) -> None:
    request_id = await world.create()
    await world.settle()
    carol = world.bf.personal_conversation_id("29:carol")
    status, _ = await world.click(cards.VERB_APPROVE, request_id, "29:carol", carol)
    assert status == 200
    slack_card = next(
        m for m in world.slack.messages_in("C0APPROVALS") if request_id in json.dumps(m.blocks)
    )
    body_bytes, headers = slack_req.block_actions(
        secret=SLACK_SECRET,
        action_id="countersign.approve",
        value=request_id,
        user_id="U0CAROL",
        message_ts=slack_card.ts,
    )
    async with world.http.post(world.url("/slack/events"), data=body_bytes, headers=headers) as r:
        assert r.status == 200
    await world.slack.wait_for("chat.postEphemeral")
    assert any("already" in e.text.lower() for e in world.slack.ephemerals)
    request = await world.request(request_id)
    assert [v.voter for v in request.votes] == ["carol@example.com"]
    assert request.votes[0].platform == "teams"
    assert request.status is Status.PENDING


async def test_slack_failing_does_not_hold_back_the_teams_cards(world: TeamsWorld) -> None:
    request_id = await world.create()
    await world.settle()
    world.slack.fail("chat.update", status=500, times=50)
    world.slack.fail("chat.postMessage", status=500, times=50)
    alice = world.bf.personal_conversation_id("29:alice")
    status, _ = await world.click(cards.VERB_APPROVE, request_id, "29:alice", alice)
    assert status == 200
    with contextlib.suppress(SlackApiError):  # Slack is down: the job fails, retried later
        await world.app[CHAT].run_job(request_id, "sync")
    (card,) = await world.cards_of(request_id, world.bf.personal_conversation_id("29:bob"))
    assert card.updates, "the Teams card was updated although Slack failed"
    assert "1 of 2" in json.dumps(card.card)


async def test_an_action_submit_from_an_older_client_votes_too(world: TeamsWorld) -> None:
    request_id = await world.create()
    await world.settle()
    bob = world.bf.personal_conversation_id("29:bob")
    (card,) = await world.cards_of(request_id, bob)
    activity = acts.message(
        "", app_id=APP_ID, **world.bf.sender_kwargs("29:bob"), **world.bf.conversation_kwargs(bob)
    )
    activity["value"] = {"verb": cards.VERB_APPROVE, "request_id": request_id}
    activity["replyToId"] = card.id
    status, _ = await world.send(activity)
    assert status in (200, 201)
    request = await world.request(request_id)
    assert [(v.voter, v.platform) for v in request.votes] == [("bob@example.com", "teams")]
    # The card it came from now shows bob's vote.
    (card,) = await world.cards_of(request_id, bob)
    assert card.updates


async def test_a_request_decided_while_teams_was_down_still_gets_its_channel_card(
    world: TeamsWorld,
) -> None:
    """Slack decided before the Teams card could go out: the channel gets the final card."""
    world.slack.add_user("U0BOB", "bob@example.com", name="bob")
    world.bf.fail("send", status=503, times=1000)
    request_id = await world.create()
    with contextlib.suppress(Exception):  # Teams is down: the job fails, retried later
        await world.app[CHAT].run_job(request_id, "sync")
    assert await world.cards_of(request_id, world.channel) == []
    slack_card = next(
        m for m in world.slack.messages_in("C0APPROVALS") if request_id in json.dumps(m.blocks)
    )
    for user in ("U0CAROL", "U0BOB"):
        body_bytes, headers = slack_req.block_actions(
            secret=SLACK_SECRET,
            action_id="countersign.approve",
            value=request_id,
            user_id=user,
            message_ts=slack_card.ts,
        )
        async with world.http.post(
            world.url("/slack/events"), data=body_bytes, headers=headers
        ) as resp:
            assert resp.status == 200
    await world.until_votes(request_id, 2)
    assert (await world.request(request_id)).status is Status.APPROVED
    await world.settle()  # the votes' own jobs run (and fail on Teams) before it is back

    world.bf.clear_faults()
    await world.app[CHAT].run_job(request_id, "sync", retry=True)
    (card,) = await world.cards_of(request_id, world.channel)
    assert "Approved" in json.dumps(card.card)
    assert _verbs(card.card or {}) == []
    # Approvers' personal chats get no card for a request already decided.
    for user in ("29:alice", "29:bob", "29:carol"):
        assert await world.cards_of(request_id, world.bf.personal_conversation_id(user)) == [], user


async def test_cards_name_people_as_teams_does_and_escape_the_names(world: TeamsWorld) -> None:
    """Display names from the Teams roster, not e-mail addresses; a hostile name stays text."""
    now = world.service.clock.now()
    hostile = "**Approved** by [IT](https://evil.example) <at>all</at>"
    await SqlStore(world.app[ENGINE]).write_job(
        lambda conn: chat_store.remember_identity(
            conn,
            platform="teams",
            user_id="29:bob",
            email="bob@example.com",
            display_name=hostile,
            now=now,
        )
    )
    request_id = await world.create()
    await world.settle()
    alice = world.bf.personal_conversation_id("29:alice")
    status, _ = await world.click(cards.VERB_APPROVE, request_id, "29:alice", alice)
    assert status == 200
    bob = world.bf.personal_conversation_id("29:bob")
    status, _ = await world.click(cards.VERB_APPROVE, request_id, "29:bob", bob)
    assert status == 200
    await world.settle()
    (card,) = await world.cards_of(request_id, world.channel)
    text = json.dumps(card.card)
    assert "Alice" in text
    assert "alice@example.com" not in text  # named as Teams names her
    assert "[IT](https://evil.example)" not in text  # bob's name cannot make a link
    assert "**Approved**" not in text
    assert "evil.example" in text  # bob is named, as plain text
    reply = next(
        a for a in world.bf.activities(world.channel) if a.reply_to_id == card.id and a.card
    )
    assert "Alice" in json.dumps(reply.card)


async def test_a_rule_that_asks_for_a_comment_gets_one_from_teams(world: TeamsWorld) -> None:
    """``approve_comment: true``: Approve opens a comment box; the comment goes with the vote."""
    request_id = await world.create(action="db.review")
    await world.settle()
    (card,) = await world.cards_of(request_id, world.channel)
    approve = next(a for a in (card.card or {}).get("actions", []) if a.get("title") == "Approve")
    assert approve["type"] == "Action.ShowCard"
    assert approve["card"]["body"][0]["id"] == cards.INPUT_APPROVE_COMMENT
    status, body = await world.click(
        cards.VERB_APPROVE,
        request_id,
        "29:alice",
        world.channel,
        **{cards.INPUT_APPROVE_COMMENT: "  checked with the data owner  "},
    )
    assert status == 200, body
    request = await world.request(request_id)
    assert request.status is Status.APPROVED
    assert request.votes[0].comment == "checked with the data owner"
    # Without a comment it is still an approval (the box is optional).
    other = await world.create(action="db.review", resource="prod/other")
    await world.settle()
    status, _ = await world.click(cards.VERB_APPROVE, other, "29:bob", world.channel)
    assert status == 200
    assert (await world.request(other)).votes[0].comment is None


async def test_an_untracked_card_is_found_by_its_refresh_and_kept_true(world: TeamsWorld) -> None:
    """RELIABILITY problem 3 on Teams: a card whose post's answer was lost.

    A replica killed after Teams took the post leaves a card nothing tracks (the
    retry posted another one). Teams cannot list a conversation's messages, but
    an approver's client refreshes the card as they look at it: from then on the
    chat worker keeps it true too, without repeating the vote replies under it.
    """
    request_id = await world.create()
    await world.settle()
    (tracked,) = await world.cards_of(request_id, world.channel)
    request = await world.request(request_id)
    lost = await world.app[TEAMS].messenger.post("channel:Ops/General", request)
    orphan_id = lost.rpartition("|")[2]
    other_lost = await world.app[TEAMS].messenger.post("channel:Ops/General", request)
    other_id = other_lost.rpartition("|")[2]
    alice = world.bf.personal_conversation_id("29:alice")
    for user in ("29:alice", "29:bob"):
        status, _ = await world.click(cards.VERB_APPROVE, request_id, user, alice)
        assert status == 200
    assert (await world.request(request_id)).status is Status.APPROVED
    await world.settle()
    orphan = next(a for a in world.bf.activities(world.channel) if a.id == orphan_id)
    assert _verbs(orphan.card or {}), "the untracked card was updated: nothing to find"

    refresh = acts.invoke_action(
        cards.VERB_REFRESH,
        {"request_id": request_id},
        app_id=APP_ID,
        reply_to_id=orphan_id,
        trigger="automatic",
        **world.bf.sender_kwargs("29:carol"),
        **world.bf.conversation_kwargs(world.channel),
    )
    for _ in range(2):  # Teams refreshes again on the next look: stored once
        status, body = await world.send(refresh)
        assert status == 200
        assert "Approved" in json.dumps(body["value"])  # the viewer sees the truth at once
    status, _ = await world.send({**refresh, "replyToId": other_id})  # a second one, same place
    assert status == 200
    await world.settle()
    for found_id in (orphan_id, other_id):
        orphan = next(a for a in world.bf.activities(world.channel) if a.id == found_id)
        assert _verbs(orphan.card or {}) == []
        assert "Approved" in json.dumps(orphan.card)
    store = SqlStore(world.app[ENGINE])
    refs = await store.read_job(lambda conn: chat_store.card_refs(conn, request_id, "teams"))
    assert [r.message_id for r in refs].count(lost) == 1
    replies = [a for a in world.bf.activities(world.channel) if a.thread_id == orphan_id]
    assert [a.id for a in replies] == [orphan_id]  # the votes' replies are under the other card
    assert [a.id for a in world.bf.activities(world.channel) if a.thread_id == tracked.id][1:]

    # A manual refresh (the "Open" button of a list) or a tracked card adds nothing.
    manual = {**refresh, "value": {**refresh["value"], "trigger": "manual"}}
    status, _ = await world.send({**manual, "replyToId": "1700000009999"})
    assert status == 200
    again = await store.read_job(lambda conn: chat_store.card_refs(conn, request_id, "teams"))
    assert len(again) == len(refs)


async def test_a_card_someone_deleted_stays_deleted_and_the_job_carries_on(
    world: TeamsWorld,
) -> None:
    """``update_activity`` answers 404: like Slack's ``message_not_found``, not retried forever."""
    request_id = await world.create()
    await world.settle()
    (card,) = await world.cards_of(request_id, world.channel)
    world.bf.delete_by_user(card.id)
    alice = world.bf.personal_conversation_id("29:alice")
    status, _ = await world.click(cards.VERB_APPROVE, request_id, "29:alice", alice)
    assert status == 200
    await world.settle()
    async with SqlStore(world.app[ENGINE]).read() as tx:
        failed = await tx.conn.execute(
            select(chat_store.J.c.last_error).where(chat_store.J.c.last_error.is_not(None))
        )
        assert list(failed) == []
    (mine,) = await world.cards_of(request_id, alice)
    assert "1 of 2" in json.dumps(mine.card)  # the other cards were still updated


async def test_a_refresh_is_answered_even_when_its_card_cannot_be_stored(
    world: TeamsWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding a card again is a bonus: a database error there never fails the viewer's refresh."""
    request_id = await world.create()
    await world.settle()

    def broken(*args: object, **kwargs: object) -> None:
        raise OperationalError("INSERT INTO card_refs", {}, ConnectionError("connection lost"))

    monkeypatch.setattr(chat_store, "add_card_ref", broken)
    refresh = acts.invoke_action(
        cards.VERB_REFRESH,
        {"request_id": request_id},
        app_id=APP_ID,
        reply_to_id="1700000009999",
        trigger="automatic",
        **world.bf.sender_kwargs("29:carol"),
        **world.bf.conversation_kwargs(world.channel),
    )
    status, body = await world.send(refresh)
    assert status == 200
    assert body["statusCode"] == 200
    assert request_id in json.dumps(body["value"])
