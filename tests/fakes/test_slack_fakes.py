"""The Slack fakes, driven by the real slack_sdk (and bolt) clients."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.fakes import slack_requests as sr
from tests.fakes.slack_api import FakeSlack, validate_blocks

TOKEN = "xoxb-test"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(token=TOKEN) as fake:
        yield fake


@pytest.fixture
def client(slack: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=slack.api_url, retry_handlers=[])


async def slack_error(call: Any) -> dict[str, Any]:
    """The response of a Web API call that must fail."""
    with pytest.raises(SlackApiError) as raised:
        await call
    data: dict[str, Any] = raised.value.response.data
    return data


# ------------------------------------------------------------------ chat


async def test_post_message_by_name_by_id_and_to_a_user(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    by_name = await client.chat_postMessage(channel="#approvals", text="one")
    by_id = await client.chat_postMessage(channel="C0APPROVALS", text="two")
    to_user = await client.chat_postMessage(channel="U0BOB", text="three")

    assert by_name["channel"] == by_id["channel"] == "C0APPROVALS"
    assert by_name["ts"] < by_id["ts"] < to_user["ts"]
    assert by_name["ts"] == "1700000000.000100"
    assert by_id["message"]["text"] == "two"
    opened = await client.conversations_open(users=["U0BOB"])
    assert to_user["channel"] == opened["channel"]["id"]
    assert to_user["channel"].startswith("D")
    again = await client.conversations_open(users="U0BOB")
    assert again["channel"]["id"] == opened["channel"]["id"]

    assert [m.text for m in slack.messages_in("C0APPROVALS")] == ["one", "two"]
    assert slack.messages[(to_user["channel"], to_user["ts"])].text == "three"
    assert [c.args["channel"] for c in slack.calls_to("chat.postMessage")] == [
        "#approvals",
        "C0APPROVALS",
        "U0BOB",
    ]
    assert all(c.token == TOKEN and c.ok for c in slack.calls)


async def test_post_message_errors(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.add_channel("C0ELSEWHERE", "elsewhere", is_member=False)
    assert (await slack_error(client.chat_postMessage(channel="#nope", text="x")))[
        "error"
    ] == "channel_not_found"
    assert (await slack_error(client.chat_postMessage(channel="C0ELSEWHERE", text="x")))[
        "error"
    ] == "not_in_channel"
    with pytest.warns(UserWarning, match="`text` argument is missing"):
        empty = await slack_error(client.chat_postMessage(channel="C0APPROVALS"))
    assert empty["error"] == "no_text"


async def test_thread_replies(slack: FakeSlack, client: AsyncWebClient) -> None:
    parent = await client.chat_postMessage(channel="C0APPROVALS", text="card")
    reply = await client.chat_postMessage(
        channel="C0APPROVALS", text="approved by alice", thread_ts=parent["ts"]
    )
    assert reply["message"]["thread_ts"] == parent["ts"]
    assert [m.text for m in slack.replies("C0APPROVALS", parent["ts"])] == ["approved by alice"]


async def test_history_pages_newest_first_with_metadata_on_request(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    meta = {"event_type": "card", "event_payload": {"id": "req_1"}}
    first = await client.chat_postMessage(channel="#approvals", text="one", metadata=meta)
    await client.chat_postMessage(channel="#approvals", text="reply", thread_ts=first["ts"])
    for text in ("two", "three"):
        await client.chat_postMessage(channel="#approvals", text=text)
    slack.add_message("C0APPROVALS", "by a person", user="U0ALICE")

    page = await client.conversations_history(channel="C0APPROVALS", limit=2)
    assert [m["text"] for m in page["messages"]] == ["by a person", "three"]
    assert page["has_more"] is True
    assert "bot_id" not in page["messages"][0]
    assert page["messages"][1]["bot_id"] == slack.bot_id
    rest = await client.conversations_history(
        channel="C0APPROVALS",
        limit=2,
        cursor=page["response_metadata"]["next_cursor"],
        include_all_metadata=True,
    )
    assert [m["text"] for m in rest["messages"]] == ["two", "one"]  # no thread replies
    assert rest["has_more"] is False
    assert rest["messages"][1]["metadata"] == meta
    plain = await client.conversations_history(channel="C0APPROVALS", oldest=first["ts"])
    assert "one" not in [m["text"] for m in plain["messages"]]  # oldest is exclusive
    assert all("metadata" not in m for m in plain["messages"])

    by_name = await slack_error(client.conversations_history(channel="#approvals"))
    assert by_name["error"] == "channel_not_found"
    slack.add_channel("C0OUTSIDE", "outside", is_member=False)
    outside = await slack_error(client.conversations_history(channel="C0OUTSIDE"))
    assert outside["error"] == "not_in_channel"
    bad = await slack_error(client.conversations_history(channel="C0APPROVALS", cursor="zz"))
    assert bad["error"] == "invalid_cursor"


async def test_metadata_must_have_a_type_and_a_payload(client: AsyncWebClient) -> None:
    for metadata in (
        {"event_type": "card"},
        {"event_payload": {}},
        {"event_type": 1, "event_payload": {}},
    ):
        failed = await slack_error(
            client.chat_postMessage(channel="#approvals", text="x", metadata=metadata)
        )
        assert failed["error"] == "invalid_metadata_schema"


async def test_conversations_list_pages_by_type(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.add_channel("G0SECRET", "secret", is_private=True)
    public = await client.conversations_list(limit=1)
    names = [c["name"] for c in public["channels"]]
    cursor = public["response_metadata"]["next_cursor"]
    while cursor:
        page = await client.conversations_list(limit=1, cursor=cursor)
        names += [c["name"] for c in page["channels"]]
        cursor = page["response_metadata"]["next_cursor"]
    assert sorted(names) == ["approvals", "general"]
    both = await client.conversations_list(types="public_channel,private_channel")
    assert {c["id"] for c in both["channels"]} == {"C0APPROVALS", "C0GENERAL", "G0SECRET"}


async def test_update_keeps_history(slack: FakeSlack, client: AsyncWebClient) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*pending*"}}]
    posted = await client.chat_postMessage(channel="#approvals", text="pending", blocks=blocks)
    final = [{"type": "section", "text": {"type": "mrkdwn", "text": "*approved*"}}]
    updated = await client.chat_update(
        channel=posted["channel"], ts=posted["ts"], text="approved", blocks=final
    )
    assert updated["ts"] == posted["ts"]
    assert updated["message"]["blocks"][0]["text"]["text"] == "*approved*"

    message = slack.messages[(posted["channel"], posted["ts"])]
    assert message.text == "approved"
    assert [s.text for s in message.history] == ["pending", "approved"]
    assert [s.via for s in message.updates] == ["chat.update"]
    assert message.blocks[0]["block_id"]  # Slack fills block_ids in

    missing = await slack_error(client.chat_update(channel="C0APPROVALS", ts="1.000001", text="x"))
    assert missing["error"] == "message_not_found"
    no_channel = await slack_error(client.chat_update(channel="C0NONE", ts=posted["ts"], text="x"))
    assert no_channel["error"] == "channel_not_found"


async def test_post_ephemeral(slack: FakeSlack, client: AsyncWebClient) -> None:
    answer = await client.chat_postEphemeral(channel="C0APPROVALS", user="U0ALICE", text="psst")
    assert answer["message_ts"]
    assert slack.ephemerals[0].user == "U0ALICE"
    assert slack.ephemerals[0].text == "psst"
    unknown = await slack_error(
        client.chat_postEphemeral(channel="C0APPROVALS", user="U0NOBODY", text="x")
    )
    assert unknown["error"] == "user_not_found"


# ------------------------------------------------------------------ limits


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def button(
    text: str = "Approve", *, value: str = "v", action_id: str = "approve"
) -> dict[str, Any]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "value": value,
        "action_id": action_id,
    }


def actions(*elements: dict[str, Any], block_id: str = "decision") -> dict[str, Any]:
    return {"type": "actions", "block_id": block_id, "elements": list(elements)}


def fields(count: int, length: int = 5) -> dict[str, Any]:
    return {
        "type": "section",
        "fields": [{"type": "mrkdwn", "text": "f" * length} for _ in range(count)],
    }


# name -> (blocks for a size n, the largest n Slack accepts)
MESSAGE_LIMITS: dict[str, tuple[Callable[[int], list[dict[str, Any]]], int]] = {
    "blocks per message": (lambda n: [section("x")] * n, 50),
    "section text": (lambda n: [section("x" * n)], 3000),
    "section field text": (lambda n: [fields(1, n)], 2000),
    "section fields": (lambda n: [fields(n)], 10),
    "header text": (
        lambda n: [{"type": "header", "text": {"type": "plain_text", "text": "h" * n}}],
        150,
    ),
    "button text": (lambda n: [actions(button("b" * n))], 75),
    "button value": (lambda n: [actions(button(value="v" * n))], 2000),
    "action_id": (lambda n: [actions(button(action_id="a" * n))], 255),
    "block_id": (lambda n: [{**section("x"), "block_id": "b" * n}], 255),
    "context elements": (
        lambda n: [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * n}],
        10,
    ),
    "actions elements": (
        lambda n: [actions(*(button(action_id=f"a{i}") for i in range(n)))],
        25,
    ),
}


@pytest.mark.parametrize("limit", sorted(MESSAGE_LIMITS))
async def test_block_limits_at_and_over(
    limit: str, slack: FakeSlack, client: AsyncWebClient
) -> None:
    build, most = MESSAGE_LIMITS[limit]
    await client.chat_postMessage(channel="C0APPROVALS", text="fits", blocks=build(most))

    over = await slack_error(
        client.chat_postMessage(channel="C0APPROVALS", text="over", blocks=build(most + 1))
    )
    assert over["error"] == "invalid_blocks"
    messages = over["response_metadata"]["messages"]
    assert messages
    assert all(m.startswith("[ERROR] ") and "[json-pointer:/blocks" in m for m in messages)
    assert len(slack.messages) == 1  # the refused one is not stored


async def test_limit_messages_say_what_and_where() -> None:
    assert validate_blocks([section("x" * 3001)]) == [
        "must be less than 3001 characters [json-pointer:/blocks/0/text/text]"
    ]
    assert validate_blocks([section("x"), actions(*[button()] * 2)]) == [
        "duplicate action_id 'approve' in one block [json-pointer:/blocks/1/elements/1/action_id]"
    ]
    assert validate_blocks([section("x")] * 51) == [
        "no more than 50 items allowed [json-pointer:/blocks]"
    ]


async def test_message_text_limit(slack: FakeSlack, client: AsyncWebClient) -> None:
    await client.chat_postMessage(channel="C0APPROVALS", text="t" * 40_000)
    too_long = await slack_error(client.chat_postMessage(channel="C0APPROVALS", text="t" * 40_001))
    assert too_long["error"] == "msg_too_long"
    posted = await client.chat_postMessage(channel="C0APPROVALS", text="short")
    update = client.chat_update(channel="C0APPROVALS", ts=posted["ts"], text="t" * 40_001)
    assert (await slack_error(update))["error"] == "msg_too_long"


async def test_message_text_truncation_mode() -> None:
    async with FakeSlack(token=TOKEN, long_text="truncate") as slack:
        client = AsyncWebClient(token=TOKEN, base_url=slack.api_url)
        posted = await client.chat_postMessage(channel="C0APPROVALS", text="t" * 40_001)
        assert posted["response_metadata"]["warnings"] == ["message_truncated"]
        assert len(slack.messages[(posted["channel"], posted["ts"])].text) == 40_000


async def test_duplicate_ids_rejected(slack: FakeSlack, client: AsyncWebClient) -> None:
    distinct = [actions(button(action_id="approve"), button(action_id="deny"))]
    await client.chat_postMessage(channel="C0APPROVALS", text="ok", blocks=distinct)
    same_action = [actions(button(action_id="approve"), button(action_id="approve"))]
    error = await slack_error(
        client.chat_postMessage(channel="C0APPROVALS", text="x", blocks=same_action)
    )
    assert error["error"] == "invalid_blocks"
    # the same action_id in two different blocks is fine
    two_blocks = [actions(button(), block_id="one"), actions(button(), block_id="two")]
    await client.chat_postMessage(channel="C0APPROVALS", text="ok", blocks=two_blocks)
    same_block = [{**section("a"), "block_id": "b"}, {**section("c"), "block_id": "b"}]
    error = await slack_error(
        client.chat_postMessage(channel="C0APPROVALS", text="x", blocks=same_block)
    )
    assert error["error"] == "invalid_blocks"
    assert "/blocks/1/block_id" in error["response_metadata"]["messages"][0]


def modal(**overrides: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "type": "modal",
        "callback_id": "deny_reason",
        "title": {"type": "plain_text", "text": "Deny request"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": "req_01",
        "blocks": [
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {"type": "plain_text_input", "action_id": "text"},
            }
        ],
    }
    view.update(overrides)
    return view


def text_input(**element: Any) -> list[dict[str, Any]]:
    return [
        {
            "type": "input",
            "block_id": "reason",
            "label": {"type": "plain_text", "text": "Reason"},
            "element": {"type": "plain_text_input", "action_id": "text", **element},
        }
    ]


VIEW_LIMITS: dict[str, tuple[Callable[[int], dict[str, Any]], int]] = {
    "blocks per modal": (lambda n: modal(blocks=[section("x")] * n), 100),
    "title": (lambda n: modal(title={"type": "plain_text", "text": "t" * n}), 24),
    "submit": (lambda n: modal(submit={"type": "plain_text", "text": "s" * n}), 24),
    "close": (lambda n: modal(close={"type": "plain_text", "text": "c" * n}), 24),
    "private_metadata": (lambda n: modal(private_metadata="m" * n), 3000),
    "callback_id": (lambda n: modal(callback_id="c" * n), 255),
    "initial_value": (lambda n: modal(blocks=text_input(initial_value="i" * n)), 3000),
    "max_length": (lambda n: modal(blocks=text_input(max_length=n)), 3000),
}


@pytest.mark.parametrize("limit", sorted(VIEW_LIMITS))
async def test_view_limits_at_and_over(limit: str, client: AsyncWebClient) -> None:
    build, most = VIEW_LIMITS[limit]
    opened = await client.views_open(trigger_id=sr.new_trigger_id(), view=build(most))
    assert opened["view"]["id"].startswith("V")

    over = await slack_error(
        client.views_open(trigger_id=sr.new_trigger_id(), view=build(most + 1))
    )
    assert over["error"] == "invalid_arguments"
    assert any("[json-pointer:/view" in m for m in over["response_metadata"]["messages"])


async def test_views_open(slack: FakeSlack, client: AsyncWebClient) -> None:
    trigger = sr.new_trigger_id()
    opened = await client.views_open(trigger_id=trigger, view=modal())
    view = opened["view"]
    assert view["callback_id"] == "deny_reason"
    assert view["private_metadata"] == "req_01"
    assert slack.views[view["id"]]["title"]["text"] == "Deny request"
    reused = await slack_error(client.views_open(trigger_id=trigger, view=modal()))
    assert reused["error"] == "exchanged_trigger_id"
    no_submit = {k: v for k, v in modal().items() if k != "submit"}
    refused = await slack_error(client.views_open(trigger_id=sr.new_trigger_id(), view=no_submit))
    assert refused["error"] == "invalid_arguments"


# ------------------------------------------------------------------ auth, users


async def test_bad_or_missing_token(slack: FakeSlack) -> None:
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=slack.api_url)
    assert (await slack_error(wrong.auth_test()))["error"] == "invalid_auth"
    missing = AsyncWebClient(base_url=slack.api_url)
    assert (await slack_error(missing.chat_postMessage(channel="C0APPROVALS", text="x")))[
        "error"
    ] == "not_authed"
    assert not slack.messages


async def test_auth_test(client: AsyncWebClient) -> None:
    me = await client.auth_test()
    assert (me["team_id"], me["user_id"], me["bot_id"]) == (sr.TEAM_ID, sr.BOT_USER_ID, sr.BOT_ID)
    assert me["url"].startswith("https://")


async def test_token_in_form_body_not_in_json_body(slack: FakeSlack) -> None:
    anonymous = AsyncWebClient(base_url=slack.api_url)
    form = await anonymous.api_call(
        "chat.postMessage", data={"token": TOKEN, "channel": "C0APPROVALS", "text": "form"}
    )
    assert form["ok"]
    assert slack.calls[-1].token == TOKEN
    assert "token" not in slack.calls[-1].args
    # With a JSON body the token must come in the Authorization header; and
    # Slack refuses tokens in query strings (for apps made since 2021).
    async with aiohttp.ClientSession() as session:
        body = {"token": TOKEN, "channel": "C0APPROVALS", "text": "json"}
        async with session.post(f"{slack.api_url}chat.postMessage", json=body) as answer:
            assert (await answer.json())["error"] == "not_authed"
        query = {"token": TOKEN, "channel": "C0APPROVALS", "text": "query"}
        async with session.post(f"{slack.api_url}chat.postMessage", params=query) as answer:
            assert (await answer.json())["error"] == "not_authed"
    assert [m.text for m in slack.messages_in("C0APPROVALS")] == ["form"]


async def test_form_encoded_blocks(slack: FakeSlack, client: AsyncWebClient) -> None:
    blocks = json.dumps([section("from a form")])
    await client.api_call(
        "chat.postMessage", data={"channel": "C0APPROVALS", "text": "x", "blocks": blocks}
    )
    assert slack.calls[-1].args["blocks"] == [section("from a form")]
    assert slack.messages_in("C0APPROVALS")[0].blocks[0]["text"]["text"] == "from a form"


async def test_users(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.add_user("U0CAROL", "Carol@Example.com", name="carol", tz="America/New_York")
    found = await client.users_lookupByEmail(email="carol@example.com")
    assert found["user"]["id"] == "U0CAROL"
    info = await client.users_info(user="U0CAROL")
    user = info["user"]
    assert user["profile"]["email"] == "Carol@Example.com"
    assert (user["real_name"], user["tz"], user["is_bot"]) == ("carol", "America/New_York", False)
    assert user["tz_offset"] in (-5 * 3600, -4 * 3600)
    bot = await client.users_info(user=sr.BOT_USER_ID)
    assert bot["user"]["is_bot"] is True

    nobody = await slack_error(client.users_lookupByEmail(email="nobody@example.com"))
    assert nobody["error"] == "users_not_found"
    unknown = await slack_error(client.users_info(user="U0NOBODY"))
    assert unknown["error"] == "user_not_found"
    assert (await slack_error(client.conversations_open(users="U0NOBODY")))[
        "error"
    ] == "user_not_found"


# ------------------------------------------------------------------ faults


async def test_rate_limit_retried_by_the_sdk_handler(slack: FakeSlack) -> None:
    patient = AsyncWebClient(
        token=TOKEN,
        base_url=slack.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=2)],
    )
    slack.rate_limit("chat.postMessage", times=1, retry_after=1)
    posted = await patient.chat_postMessage(channel="C0APPROVALS", text="eventually")
    assert posted["ok"]
    first, second = slack.calls_to("chat.postMessage")
    assert (first.status, first.error) == (429, "ratelimited")
    assert second.ok
    assert second.at - first.at >= 1  # it honoured Retry-After
    assert len(slack.messages) == 1


async def test_rate_limit_raised_without_handler(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.rate_limit("chat.update", times=2, retry_after=7)
    with pytest.raises(SlackApiError) as raised:
        await client.chat_update(channel="C0APPROVALS", ts="1.1", text="x")
    assert raised.value.response.status_code == 429
    assert raised.value.response.headers["Retry-After"] == "7"
    assert raised.value.response["error"] == "ratelimited"
    with pytest.raises(SlackApiError):
        await client.chat_update(channel="C0APPROVALS", ts="1.1", text="x")
    # spent: the next call reaches the method again
    assert (await slack_error(client.chat_update(channel="C0APPROVALS", ts="1.1", text="x")))[
        "error"
    ] == "message_not_found"


async def test_fail_and_hang(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.fail("auth.test", status=503)
    with pytest.raises(SlackApiError) as raised:
        await client.auth_test()
    assert raised.value.response.status_code == 503

    slack.fail("views.open", status=200, error="expired_trigger_id")
    expired = await slack_error(client.views_open(trigger_id="1.2.3", view=modal()))
    assert expired["error"] == "expired_trigger_id"

    slack.hang("auth.test", 0.3)
    started = time.monotonic()
    assert (await client.auth_test())["ok"]
    assert time.monotonic() - started >= 0.3

    slack.hang("auth.test", 30)
    impatient = AsyncWebClient(token=TOKEN, base_url=slack.api_url, timeout=1, retry_handlers=[])
    with pytest.raises(asyncio.TimeoutError):
        await impatient.auth_test()


async def test_stop_ends_a_hang_at_once() -> None:
    slack = await FakeSlack(token=TOKEN).start()
    client = AsyncWebClient(token=TOKEN, base_url=slack.api_url, retry_handlers=[])
    slack.hang("auth.test", 60)
    pending = asyncio.ensure_future(client.auth_test())
    await slack.wait_for("auth.test", timeout=2, answered=False)
    started = time.monotonic()
    await slack.stop()
    assert time.monotonic() - started < 1
    pending.cancel()
    with pytest.raises((asyncio.CancelledError, aiohttp.ClientError, SlackApiError)):
        await pending


# ------------------------------------------------------------------ wait_for


async def test_wait_for_a_background_call(slack: FakeSlack, client: AsyncWebClient) -> None:
    async def worker() -> None:
        await asyncio.sleep(0.05)
        await client.chat_postMessage(channel="C0APPROVALS", text="done")

    task = asyncio.create_task(worker())
    call = await slack.wait_for(lambda c: c.method == "chat.postMessage" and c.ok, timeout=2)
    assert call.args["text"] == "done"
    assert (await slack.wait_for("chat.postMessage")) is call  # already there: at once
    await task
    mark = len(slack.calls)
    later = asyncio.create_task(client.chat_postMessage(channel="C0APPROVALS", text="again"))
    newer = await slack.wait_for("chat.postMessage", since=mark)
    assert newer.args["text"] == "again"
    await later
    with pytest.raises(TimeoutError, match=r"chat\.postMessage"):
        await slack.wait_for("chat.update", timeout=0.1)


# ------------------------------------------------------------------ response_url


async def test_response_url(slack: FakeSlack, client: AsyncWebClient) -> None:
    card = await client.chat_postMessage(channel="C0APPROVALS", text="pending")
    url = slack.new_response_url(card["channel"], card["ts"], user="U0ALICE")
    assert url.startswith(slack.url + "/response/")
    hook = AsyncWebhookClient(url)

    said = await hook.send(text="only you see this")
    assert said.status_code == 200
    assert slack.ephemerals[-1].text == "only you see this"
    assert slack.ephemerals[-1].user == "U0ALICE"

    await hook.send(text="approved", blocks=[section("*approved*")], replace_original=True)
    message = slack.messages[(card["channel"], card["ts"])]
    assert message.text == "approved"
    assert [s.via for s in message.history] == ["chat.postMessage", "response_url"]

    await hook.send(text="for everyone", response_type="in_channel")
    assert [m.text for m in slack.messages_in("C0APPROVALS")] == ["approved", "for everyone"]

    await hook.send(delete_original=True)
    assert message.deleted

    assert [r.response_type for r in slack.responses] == [
        "ephemeral",
        "ephemeral",
        "in_channel",
        "ephemeral",
    ]
    assert slack.responses[1].body["replace_original"] is True
    assert all(r.status == 200 for r in slack.responses)

    bad = await hook.send(blocks=[section("x" * 3001)])
    assert (bad.status_code, bad.body) == (400, "invalid_blocks")
    gone = await AsyncWebhookClient(slack.url + "/response/unknown").send(text="x")
    assert gone.status_code == 404


# ------------------------------------------------------------------ signed requests

VERIFIER = SignatureVerifier(SECRET)


def test_sign_matches_the_sdk() -> None:
    body = b"payload=%7B%7D"
    assert sr.sign(SECRET, body, 1531420618) == VERIFIER.generate_signature(
        timestamp="1531420618", body=body
    )


@pytest.mark.parametrize(
    ("build", "fields"),
    [
        (sr.block_actions, {"action_id": "approve", "value": "req_01"}),
        (sr.view_submission, {"callback_id": "deny_reason", "values": {"r": {"t": "no"}}}),
        (sr.slash_command, {"text": "list"}),
    ],
)
def test_builders_are_signed_as_slack_signs(build: Any, fields: dict[str, Any]) -> None:
    body, headers = build(secret=SECRET, **fields)
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert VERIFIER.is_valid_request(body, headers)

    for broken in (
        {"stale": True},
        {"sign_with": "another-secret"},
        {"signature": "v0=" + "0" * 64},
        {"unsigned": True},
        {"no_timestamp": True},
    ):
        body, headers = build(secret=SECRET, signing=broken, **fields)
        assert not VERIFIER.is_valid_request(body, headers), broken


def test_retry_headers() -> None:
    body, headers = sr.slash_command(
        secret=SECRET, signing={"retry_num": 1, "retry_reason": "http_timeout"}
    )
    assert headers["X-Slack-Retry-Num"] == "1"
    assert headers["X-Slack-Retry-Reason"] == "http_timeout"
    assert VERIFIER.is_valid_request(body, headers)


def test_block_actions_shape() -> None:
    body, _ = sr.block_actions(
        secret=SECRET,
        action_id="approve",
        value="req_01",
        channel_id="C0X",
        message_ts="1700000000.000300",
        response_url="http://127.0.0.1:1/response/abc",
    )
    payload = sr.decode_payload(body)
    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == sr.DEFAULT_USER_ID
    assert payload["user"]["team_id"] == payload["team"]["id"] == sr.TEAM_ID
    assert payload["container"] == {
        "type": "message",
        "message_ts": "1700000000.000300",
        "channel_id": "C0X",
        "is_ephemeral": False,
    }
    assert payload["channel"]["id"] == "C0X"
    assert payload["message"]["ts"] == "1700000000.000300"
    assert payload["response_url"] == "http://127.0.0.1:1/response/abc"
    (action,) = payload["actions"]
    assert {k: action[k] for k in ("action_id", "block_id", "value", "type")} == {
        "action_id": "approve",
        "block_id": "decision",
        "value": "req_01",
        "type": "button",
    }
    assert payload["trigger_id"] and payload["api_app_id"] == sr.APP_ID and payload["token"]


def test_view_submission_and_slash_command_shape() -> None:
    body, _ = sr.view_submission(
        secret=SECRET,
        callback_id="deny_reason",
        private_metadata="req_01",
        values={"reason": {"text": "too risky"}},
    )
    view = sr.decode_payload(body)["view"]
    assert view["callback_id"] == "deny_reason"
    assert view["private_metadata"] == "req_01"
    assert view["state"]["values"] == {
        "reason": {"text": {"type": "plain_text_input", "value": "too risky"}}
    }
    assert view["blocks"][0]["block_id"] == "reason"

    body, _ = sr.slash_command(secret=SECRET, text="status req_01", user_id="U0BOB")
    form = sr.decode_form(body)
    assert form["command"] == "/countersign"
    assert (form["text"], form["user_id"], form["team_id"]) == (
        "status req_01",
        "U0BOB",
        sr.TEAM_ID,
    )
    assert form["response_url"] and form["trigger_id"] and form["channel_id"]


async def test_bolt_accepts_the_builders(slack: FakeSlack) -> None:
    """Bolt (signature check, parsing, ack) takes our requests as it takes Slack's."""
    app = AsyncApp(
        client=AsyncWebClient(token=TOKEN, base_url=slack.api_url),
        signing_secret=SECRET,
    )
    seen: list[str] = []

    @app.action("approve")
    async def on_approve(ack: Any, body: dict[str, Any]) -> None:
        seen.append(body["actions"][0]["value"])
        await ack()

    @app.view("deny_reason")
    async def on_deny(ack: Any, view: dict[str, Any]) -> None:
        seen.append(view["state"]["values"]["reason"]["text"]["value"])
        await ack()

    @app.command("/countersign")
    async def on_command(ack: Any, command: dict[str, Any]) -> None:
        seen.append(command["text"])
        await ack()

    requests = [
        sr.block_actions(secret=SECRET, action_id="approve", value="req_01"),
        sr.view_submission(
            secret=SECRET, callback_id="deny_reason", values={"reason": {"text": "no"}}
        ),
        sr.slash_command(secret=SECRET, text="list"),
    ]
    for body, headers in requests:
        response = await app.async_dispatch(
            AsyncBoltRequest(body=body.decode(), headers=dict(headers))
        )
        assert response.status == 200
    assert seen == ["req_01", "no", "list"]

    body, headers = sr.block_actions(
        secret=SECRET, action_id="approve", value="x", signing={"stale": True}
    )
    refused = await app.async_dispatch(AsyncBoltRequest(body=body.decode(), headers=headers))
    assert refused.status == 401
    assert seen == ["req_01", "no", "list"]
