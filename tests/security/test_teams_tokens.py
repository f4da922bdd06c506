"""Teams: every activity at ``POST /api/messages`` must carry a valid Bot Framework JWT.

Each bad token is answered 401 and nothing happens: no vote, no ledger entry,
no row anywhere (not even the conversation or the sender's identity), and
nothing sent back to the Connector.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt

from cards import teams as cards
from countersign.server import ENGINE
from tests.fakes import teams_activities as acts
from tests.security.conftest import snapshot
from tests.teams.conftest import APP_ID, TeamsWorld
from tests.teams.conftest import world as world  # the fixture


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _unsigned(service_url: str, world: TeamsWorld) -> str:
    claims = {
        "serviceurl": service_url,
        "iss": world.bf.issuer,
        "aud": APP_ID,
        "nbf": int(time.time()),
        "exp": int(time.time()) + 3600,
    }
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def _hs256_with_public_key(service_url: str, world: TeamsWorld) -> str:
    # Algorithm confusion: HMAC "signed" with a published key's id as the secret.
    good = jwt.get_unverified_header(world.bf.sign_activity_token(service_url))
    claims = jwt.decode(
        world.bf.sign_activity_token(service_url), options={"verify_signature": False}
    )
    return jwt.encode(claims, "x" * 32, algorithm="HS256", headers={"kid": good["kid"]})


def _tokens(world: TeamsWorld, service_url: str) -> dict[str, str]:
    sign = world.bf.sign_activity_token
    return {
        "forged key": sign(service_url, key="rogue"),
        "unendorsed key (not for msteams)": sign(service_url, key="unendorsed"),
        "unknown kid": sign(service_url, kid="no-such-key"),
        "wrong audience": sign(service_url, app_id="00000000-0000-4000-8000-000000000bad"),
        "no audience": sign(service_url, extra_claims={"aud": None}),
        "wrong issuer": sign(service_url, issuer="https://evil.example/"),
        "expired (beyond the 5 min skew)": sign(service_url, expires_in=-3600),
        "not yet valid": sign(service_url, not_before=time.time() + 3600),
        "serviceurl mismatch": sign(service_url="https://elsewhere.example/"),
        "no serviceurl claim": sign(service_url, extra_claims={"serviceurl": None}),
        "alg none": _unsigned(service_url, world),
        "alg HS256": _hs256_with_public_key(service_url, world),
        "truncated signature": sign(service_url)[:-10],
    }


def _headers(world: TeamsWorld) -> dict[str, dict[str, str]]:
    plain = {"Content-Type": "application/json"}
    return {
        "missing Authorization": plain,
        "Bearer garbage": {**plain, "Authorization": "Bearer garbage"},
        "Bearer empty": {**plain, "Authorization": "Bearer "},
        "Basic scheme": {**plain, "Authorization": "Basic " + base64.b64encode(b"a:b").decode()},
        "the app password as bearer": {
            **plain,
            "Authorization": "Bearer teams-app-password-for-tests",
        },
        "an outbound (login) token": {
            **plain,
            "Authorization": "Bearer " + world.bf.issue_token(),
        },
    }


async def _vote_activity(world: TeamsWorld) -> tuple[str, dict[str, Any]]:
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
    return request_id, activity


async def test_every_bad_token_is_401_and_changes_nothing(world: TeamsWorld) -> None:
    request_id, activity = await _vote_activity(world)
    # A stranger's chat too: a valid token would record the conversation and identity.
    stranger = acts.message(
        "history",
        app_id=APP_ID,
        **world.bf.sender_kwargs("29:mallory"),
        **world.bf.conversation_kwargs(world.bf.personal_conversation_id("29:mallory")),
    )
    await world.settle()
    before_db = await snapshot(world.app[ENGINE])
    before_calls = len(world.bf.calls)
    failures: list[str] = []
    for sent in (activity, stranger):
        for case, token in _tokens(world, sent["serviceUrl"]).items():
            status, _ = await world.send(sent, token=token)
            if status != 401:
                failures.append(f"{sent['type']} / {case}: HTTP {status}")
        for case, headers in _headers(world).items():
            status, _ = await world.send(sent, raw_headers=headers)
            if status != 401:
                failures.append(f"{sent['type']} / {case}: HTTP {status}")
    assert failures == [], "\n".join(failures)
    assert (await world.request(request_id)).votes == ()
    assert await snapshot(world.app[ENGINE]) == before_db
    connector = [c for c in world.bf.calls[before_calls:] if c.kind not in ("openid", "jwks")]
    assert connector == [], "the bot answered a forged activity"


async def test_the_same_activity_with_a_good_token_is_taken(world: TeamsWorld) -> None:
    """The control: the activity is valid, so the 401s above are the tokens' doing."""
    request_id, activity = await _vote_activity(world)
    status, _ = await world.send(activity)
    assert status == 200
    assert [v.voter for v in (await world.request(request_id)).votes] == ["alice@example.com"]


async def test_a_good_token_does_not_cover_an_activity_for_another_service_url(
    world: TeamsWorld,
) -> None:
    """The token is bound to its ``serviceurl``: a body pointing replies elsewhere is refused."""
    request_id, activity = await _vote_activity(world)
    forged = {**activity, "serviceUrl": "https://attacker.example/"}
    status, _ = await world.send(forged, token=world.bf.sign_activity_token(activity["serviceUrl"]))
    assert status == 401
    assert (await world.request(request_id)).votes == ()
