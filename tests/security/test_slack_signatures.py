"""Slack: every request to ``POST /slack/events`` must carry a fresh, valid v0 signature.

Each broken variant is answered 401, and nothing happens: no vote, no ledger
entry, no row anywhere, no call to Slack (not even a user lookup).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from cards import slack as cards
from countersign.server import ENGINE
from tests.fakes import slack_requests as slack_req
from tests.security.conftest import snapshot
from tests.slack.conftest import SIGNING_SECRET, SlackWorld
from tests.slack.conftest import world as world  # the fixture

Headers = dict[str, str]
Breaker = Callable[[bytes, Headers], tuple[bytes, Headers]]


def _resign(body: bytes, timestamp: int, secret: str = SIGNING_SECRET) -> Headers:
    _, headers = slack_req.signed(body, secret, timestamp=timestamp)
    return headers


def _without(*names: str) -> Breaker:
    def breaker(body: bytes, headers: Headers) -> tuple[bytes, Headers]:
        return body, {k: v for k, v in headers.items() if k not in names}

    return breaker


def _wrong_secret(body: bytes, headers: Headers) -> tuple[bytes, Headers]:
    return body, _resign(body, int(time.time()), secret="not-the-signing-secret")


def _stale(body: bytes, headers: Headers) -> tuple[bytes, Headers]:
    return body, _resign(body, int(time.time()) - 5 * 60 - 30)  # valid signature, too old


def _from_the_future(body: bytes, headers: Headers) -> tuple[bytes, Headers]:
    return body, _resign(body, int(time.time()) + 5 * 60 + 30)


def _replayed_with_new_timestamp(body: bytes, headers: Headers) -> tuple[bytes, Headers]:
    # An attacker who captured a request an hour ago: old signature, fresh timestamp header.
    old = _resign(body, int(time.time()) - 3600)
    return body, {**old, "X-Slack-Request-Timestamp": str(int(time.time()))}


def _body_altered(body: bytes, headers: Headers) -> tuple[bytes, Headers]:
    # Signed for Bob, then the voter swapped for Carol (same length: Content-Length agrees).
    altered = body.replace(b"U0BOB", b"U0CAR").replace(b"%22bob%22", b"%22car%22")
    assert altered != body
    return altered, headers


def _appended(body: bytes, headers: Headers) -> tuple[bytes, Headers]:
    return body + b"&user_id=U0ALICE", headers


def _signature(value: str) -> Breaker:
    def breaker(body: bytes, headers: Headers) -> tuple[bytes, Headers]:
        return body, {**headers, "X-Slack-Signature": value}

    return breaker


def _timestamp(value: str) -> Breaker:
    def breaker(body: bytes, headers: Headers) -> tuple[bytes, Headers]:
        return body, {**headers, "X-Slack-Request-Timestamp": value}

    return breaker


BROKEN: dict[str, Breaker] = {
    "missing signature": _without("X-Slack-Signature"),
    "missing timestamp": _without("X-Slack-Request-Timestamp"),
    "missing both": _without("X-Slack-Signature", "X-Slack-Request-Timestamp"),
    "wrong secret": _wrong_secret,
    "stale (over 5 min old)": _stale,
    "timestamp over 5 min ahead": _from_the_future,
    "replayed: new timestamp, old signature": _replayed_with_new_timestamp,
    "body altered after signing": _body_altered,
    "body extended after signing": _appended,
    "empty signature": _signature(""),
    "v0= with nothing": _signature("v0="),
    "other scheme": _signature("v1=" + "0" * 64),
    "garbage signature": _signature("v0=" + "zz" * 32),
    "non-numeric timestamp": _timestamp("now"),
    "negative timestamp": _timestamp("-1"),
}


def _click(world: SlackWorld, request_id: str) -> tuple[bytes, Headers]:
    card = world.card(request_id)
    return slack_req.block_actions(
        secret=SIGNING_SECRET,
        action_id=cards.ACTION_APPROVE,
        value=request_id,
        user_id="U0BOB",
        user_name="bob",
        message_ts=card.ts,
        message=card.as_payload(),
        response_url=world.slack.new_response_url("C0APPROVALS", card.ts, "U0BOB"),
    )


def _command(world: SlackWorld, _request_id: str) -> tuple[bytes, Headers]:
    return slack_req.slash_command(
        secret=SIGNING_SECRET,
        text="history",
        user_id="U0BOB",
        user_name="bob",
        response_url=world.slack.new_response_url("C0APPROVALS", None, "U0BOB"),
    )


def _deny_modal(world: SlackWorld, request_id: str) -> tuple[bytes, Headers]:
    return slack_req.view_submission(
        secret=SIGNING_SECRET,
        callback_id=cards.CALLBACK_DENY,
        private_metadata=request_id,
        user_id="U0BOB",
        user_name="bob",
        values={"reason": {"reason": "forged denial"}},
    )


KINDS: dict[str, Callable[[SlackWorld, str], tuple[bytes, Headers]]] = {
    "button click": _click,
    "slash command": _command,
    "modal submission": _deny_modal,
}


async def _settled(world: SlackWorld) -> str:
    request_id = await world.create()
    await world.settle()
    world.card(request_id)
    return request_id


async def test_every_broken_signature_is_401_and_changes_nothing(world: SlackWorld) -> None:
    request_id = await _settled(world)
    before_db = await snapshot(world.app[ENGINE])
    before_calls = len(world.slack.calls)
    failures: list[str] = []
    for kind, build in KINDS.items():
        for case, breaker in BROKEN.items():
            body, headers = breaker(*build(world, request_id))
            status, text = await world.send(body, headers)
            if status != 401:
                failures.append(f"{kind} / {case}: HTTP {status} {text[:80]!r}")
    assert failures == [], "\n".join(failures)
    await world.settle()
    assert (await world.request(request_id)).votes == ()
    assert await snapshot(world.app[ENGINE]) == before_db
    assert world.slack.calls[before_calls:] == [], "Slack was called for a forged request"


async def test_the_same_request_correctly_signed_is_taken(world: SlackWorld) -> None:
    """The control: the builders above are valid when not broken (so the 401s mean something)."""
    request_id = await _settled(world)
    body, headers = _click(world, request_id)
    assert (await world.send(body, headers))[0] == 200
    await world.until_votes(request_id, 1)
    assert [v.voter for v in (await world.request(request_id)).votes] == ["bob@example.com"]


async def test_a_forged_retry_of_a_taken_body_is_not_waved_through(world: SlackWorld) -> None:
    """Retries of a body already taken are answered 200 unrun, but only when signed."""
    request_id = await _settled(world)
    body, headers = _command(world, request_id)
    assert (await world.send(body, headers))[0] == 200
    before_db = await snapshot(world.app[ENGINE])
    forged = {**headers, "X-Slack-Retry-Num": "1", "X-Slack-Signature": "v0=" + "0" * 64}
    assert (await world.send(body, forged))[0] == 401
    assert await snapshot(world.app[ENGINE]) == before_db


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
async def test_unsigned_bodies_of_any_type_are_401(world: SlackWorld, content_type: str) -> None:
    before_db = await snapshot(world.app[ENGINE])
    payload: Any = b'{"type":"url_verification","challenge":"x"}'
    status, _ = await world.send(payload, {"Content-Type": content_type})
    assert status == 401
    assert await snapshot(world.app[ENGINE]) == before_db
