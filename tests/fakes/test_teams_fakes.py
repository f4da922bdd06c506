"""The Teams fakes speak Bot Framework: proven through the real botbuilder SDK.

(a) a stock ``CloudAdapter`` with ``ConfigurationBotFrameworkAuthentication``
pointed at the fake issuer accepts activities signed by ``FakeBotFramework``
and refuses forged ones; (b) botbuilder's ``ConnectorClient`` with a token
from the fake login endpoint creates conversations, sends, replies, updates
and reads members; (c) limits and faults answer the way Teams does.

What stock botbuilder 4.17.1 answers for each bad token is pinned per case
(``REJECTIONS``): 401 where the SDK raises ``PermissionError``, 500 where a
PyJWT error or a bare ``Exception`` escapes ``CloudAdapter.process``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
import requests
from aiohttp import web
from botbuilder.core import InvokeResponse, TurnContext
from botbuilder.core.teams import TeamsActivityHandler, TeamsInfo
from botbuilder.integration.aiohttp import (
    CloudAdapter,
    ConfigurationBotFrameworkAuthentication,
)
from botbuilder.schema import (
    Activity,
    AdaptiveCardInvokeResponse,
    Attachment,
    ChannelAccount,
    ConversationParameters,
)
from botbuilder.schema.teams import TeamInfo, TeamsChannelAccount
from botframework.connector.aio import ConnectorClient
from botframework.connector.auth import (
    AppCredentials,
    JwtTokenExtractor,
    PasswordServiceClientCredentialFactory,
)
from botframework.connector.models import ErrorResponseException
from msrest.authentication import Authentication, BasicTokenAuthentication

from . import teams_activities as ta
from .teams_api import (
    APP_ID,
    APP_PASSWORD,
    BOT_FRAMEWORK_SCOPE,
    MAX_MESSAGE_BYTES,
    FakeBotFramework,
)

SCOPE = BOT_FRAMEWORK_SCOPE + "/.default"
CARD = {
    "type": "AdaptiveCard",
    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
    "version": "1.5",
    "body": [{"type": "TextBlock", "text": "Deploy api to prod?"}],
    "actions": [{"type": "Action.Execute", "title": "Approve", "verb": "approve", "data": {}}],
}


def card_attachment(card: dict[str, Any] = CARD) -> Attachment:
    return Attachment(content_type=ta.ADAPTIVE_CARD_CONTENT_TYPE, content=card)


# --------------------------------------------------------------------------- a bot on the SDK


class FakeLoginCredentials(AppCredentials):
    """Client-credentials tokens from the fake's login URL (MSAL refuses http:// authorities)."""

    def __init__(self, app_id: str, password: str, login_url: str, scope: str) -> None:
        super().__init__(app_id=app_id, oauth_scope=scope)
        self._password = password
        self._login_url = login_url
        self._token: tuple[str, float] | None = None

    def get_access_token(self, force_refresh: bool = False) -> str:
        if self._token and not force_refresh and self._token[1] > time.time() + 60:
            return self._token[0]
        scope = self.oauth_scope if self.oauth_scope.endswith("/.default") else SCOPE
        answer = requests.post(
            self._login_url,
            data={
                "grant_type": "client_credentials",
                "client_id": self.microsoft_app_id,
                "client_secret": self._password,
                "scope": scope,
            },
            timeout=5,
        )
        answer.raise_for_status()
        body = answer.json()
        self._token = (body["access_token"], time.time() + body["expires_in"])
        return self._token[0]


class FakeLoginCredentialFactory(PasswordServiceClientCredentialFactory):
    def __init__(self, app_id: str, password: str, login_url: str) -> None:
        super().__init__(app_id, password)
        self.login_url = login_url

    async def create_credentials(
        self, app_id: str, oauth_scope: str, login_endpoint: str, validate_authority: bool
    ) -> Authentication:
        assert await self.is_valid_app_id(app_id)
        return FakeLoginCredentials(app_id, self.password, self.login_url, oauth_scope or SCOPE)


@dataclass
class BotConfig:
    """The attributes ConfigurationBotFrameworkAuthentication reads (upper snake case)."""

    APP_ID: str
    APP_PASSWORD: str
    TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL: str
    TO_BOT_FROM_CHANNEL_TOKEN_ISSUER: str
    TO_CHANNEL_FROM_BOT_LOGIN_URL: str
    TO_CHANNEL_FROM_BOT_OAUTH_SCOPE: str = BOT_FRAMEWORK_SCOPE


class RecordingBot(TeamsActivityHandler):
    """Echoes messages, answers Action.Execute with a card, records every event."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        text = TurnContext.remove_recipient_mention(turn_context.activity)
        self.seen.append(("message", text.strip()))
        member = await TeamsInfo.get_member(turn_context, turn_context.activity.from_property.id)
        self.seen.append(("member", member))
        await turn_context.send_activity(f"echo: {text.strip()}")

    async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse:
        # PLATFORM-NOTES: answer adaptiveCard/action here, with the msrest model as body.
        value = turn_context.activity.value
        self.seen.append(("invoke", (turn_context.activity.name, value)))
        body = AdaptiveCardInvokeResponse(
            status_code=200, type=ta.ADAPTIVE_CARD_CONTENT_TYPE, value=CARD
        )
        return InvokeResponse(status=200, body=body)

    async def on_installation_update_add(self, turn_context: TurnContext) -> None:
        self.seen.append(("installed", turn_context.activity.conversation.conversation_type))

    async def on_teams_members_added(
        self,
        teams_members_added: list[TeamsChannelAccount],
        team_info: TeamInfo,
        turn_context: TurnContext,
    ) -> None:
        self.seen.append(("members_added", ([m.id for m in teams_members_added], team_info)))


@dataclass
class BotServer:
    url: str
    bot: RecordingBot
    http: aiohttp.ClientSession
    bf: FakeBotFramework
    errors: list[BaseException] = field(default_factory=list)

    async def post(self, activity: dict[str, Any], token: str | None) -> tuple[int, Any]:
        headers = ta.headers(token) if token else {"Content-Type": "application/json"}
        async with self.http.post(self.url, json=activity, headers=headers) as answer:
            body = await answer.json() if answer.content_type == "application/json" else None
            return answer.status, body


@pytest.fixture
async def bf() -> AsyncIterator[FakeBotFramework]:
    async with FakeBotFramework(app_id=APP_ID, app_password=APP_PASSWORD) as fake:
        fake.add_user("29:alice", "alice@example.com", "Alice Adams")
        fake.add_user("29:bob", "bob@example.com", "Bob Brown")
        yield fake


@pytest.fixture
async def bot_server(bf: FakeBotFramework) -> AsyncIterator[BotServer]:
    config = BotConfig(
        APP_ID=bf.app_id,
        APP_PASSWORD=bf.app_password,
        TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL=bf.openid_metadata_url,
        TO_BOT_FROM_CHANNEL_TOKEN_ISSUER=bf.issuer,
        TO_CHANNEL_FROM_BOT_LOGIN_URL=bf.login_url,
    )
    auth = ConfigurationBotFrameworkAuthentication(
        config,
        credentials_factory=FakeLoginCredentialFactory(bf.app_id, bf.app_password, bf.login_url),
    )
    adapter = CloudAdapter(auth)
    bot = RecordingBot()

    async def messages(request: web.Request) -> web.StreamResponse:
        response = await adapter.process(request, bot)
        assert response is not None
        return response

    app = web.Application()
    app.router.add_post("/api/messages", messages)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    async with aiohttp.ClientSession() as http:
        yield BotServer(f"http://{host}:{port}/api/messages", bot, http, bf)
    await runner.cleanup()


def personal_message(bf: FakeBotFramework, text: str = "hello") -> dict[str, Any]:
    return ta.message(
        text,
        app_id=bf.app_id,
        **bf.sender_kwargs("29:alice"),
        **bf.conversation_kwargs(bf.personal_conversation_id("29:alice")),
    )


# --------------------------------------------------------------------------- (a) inbound auth


async def test_signed_message_is_accepted_and_the_bot_replies_through_the_connector(
    bot_server: BotServer, bf: FakeBotFramework
) -> None:
    activity = personal_message(bf)
    status, _ = await bot_server.post(activity, bf.sign_activity_token(activity["serviceUrl"]))

    assert status == 201  # CloudAdapter: no invoke response → 201
    assert bot_server.bot.seen[0] == ("message", "hello")
    member = bot_server.bot.seen[1][1]
    assert isinstance(member, TeamsChannelAccount)
    assert (member.email, member.user_principal_name) == ("alice@example.com", "alice@example.com")

    reply = await bf.wait_for("reply")
    assert reply.status == 201
    conversation = bf.personal_conversation_id("29:alice")
    [posted] = bf.activities(conversation)
    assert posted.text == "echo: hello"
    assert posted.reply_to_id == activity["id"]
    assert posted.activity["recipient"]["id"] == "29:alice"
    # The bot got its Connector token from the fake login endpoint, once.
    [login] = bf.calls_to("login")
    assert login.json["client_secret"] == "***" and login.json["scope"] == SCOPE
    assert reply.token == bf.issued_tokens[0].token
    # The SDK fetched the OpenID metadata and then the keys (blocking requests).
    assert [c.kind for c in bf.calls[:2]] == ["openid", "jwks"]


async def test_token_claims_and_keys_match_what_botbuilder_reads(bf: FakeBotFramework) -> None:
    token = bf.sign_activity_token("https://svc.example/")
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == "RS256" and header["kid"] == header["x5t"]
    assert set(claims) == {"serviceurl", "nbf", "exp", "iss", "aud"}
    assert (claims["aud"], claims["iss"], claims["serviceurl"]) == (
        APP_ID,
        bf.issuer,
        "https://svc.example/",
    )
    metadata = (await asyncio.to_thread(requests.get, bf.openid_metadata_url, timeout=5)).json()
    assert metadata["issuer"] == bf.issuer and metadata["jwks_uri"] == bf.jwks_url
    assert metadata["id_token_signing_alg_values_supported"] == ["RS256"]
    keys = (await asyncio.to_thread(requests.get, bf.jwks_url, timeout=5)).json()["keys"]
    [teams_key] = [k for k in keys if k["kid"] == header["kid"]]
    assert teams_key["endorsements"] == ["msteams"]
    public = jwt.PyJWK(teams_key).key
    assert jwt.decode(token, public, algorithms=["RS256"], audience=APP_ID)["aud"] == APP_ID
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            bf.sign_activity_token("x", key="rogue"), public, algorithms=["RS256"], audience=APP_ID
        )
    # extra_claims adds, None removes.
    odd = bf.sign_activity_token("x", extra_claims={"serviceurl": None, "tid": "t"})
    assert "serviceurl" not in jwt.decode(odd, options={"verify_signature": False})


# What stock CloudAdapter (botbuilder 4.17.1) answers for each bad token, as observed:
# 401 when the SDK raises PermissionError; 500 when another exception escapes process().
REJECTIONS: dict[str, tuple[dict[str, Any], int]] = {
    # Signature check fails: jwt.InvalidSignatureError escapes → 500.
    "forged key, real kid": ({"key": "rogue"}, 500),
    # _OpenIdMetadata._find indexes an empty list → IndexError → 500.
    "forged key, unknown kid": ({"key": "rogue", "kid": "not-published"}, 500),
    # Key published but not endorsed for msteams: bare Exception → 500.
    "key not endorsed for msteams": ({"key": "unendorsed"}, 500),
    # aud is not our app id: PermissionError("Invalid AppId passed on token") → 401.
    "wrong audience": ({"app_id": "another-bot"}, 401),
    # Issuer not allowed: the extractor returns None, "Identity missing" → 401.
    "wrong issuer": ({"issuer": "https://evil.example"}, 401),
    # Beyond the 5 minutes of allowed skew: jwt.ExpiredSignatureError → 500.
    "expired": ({"expires_in": -400}, 500),
    # nbf in the future: jwt.ImmatureSignatureError → 500.
    "not yet valid": ({"not_before": time.time() + 3600}, 500),
    # serviceurl claim differs from activity.serviceUrl: PermissionError → 401.
    "serviceurl mismatch": ({"service_url": "https://smba.trafficmanager.net/evil/"}, 401),
    # No serviceurl claim at all: PermissionError("'serviceurl' claim missing") → 401.
    "serviceurl missing": ({"extra_claims": {"serviceurl": None}}, 401),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
async def test_bad_tokens_are_not_accepted(
    bot_server: BotServer, bf: FakeBotFramework, case: str
) -> None:
    options, observed = REJECTIONS[case]
    options = dict(options)
    activity = personal_message(bf)
    service_url = options.pop("service_url", activity["serviceUrl"])
    token = bf.sign_activity_token(service_url, **options)

    status, _ = await bot_server.post(activity, token)

    assert status != 201 and status >= 400, "a bad token must not be accepted"
    assert status == observed, f"{case}: stock CloudAdapter answered {status}"
    assert bot_server.bot.seen == []
    assert bf.calls_to("reply") == [] and bf.calls_to("login") == []


async def test_missing_or_malformed_authorization_is_not_accepted(
    bot_server: BotServer, bf: FakeBotFramework
) -> None:
    activity = personal_message(bf)
    # No header: CloudAdapter passes "" (not None), the channel validation returns
    # no identity and the SDK dereferences it (AttributeError) → 500, not 401.
    assert (await bot_server.post(activity, None))[0] == 500
    observed = {}
    for header in ("Basic abc", "Bearer", "Bearer not-a-jwt"):
        async with bot_server.http.post(
            bot_server.url, json=activity, headers={"Authorization": header}
        ) as answer:
            observed[header] = answer.status
    # "Basic": no identity → PermissionError → 401. "Bearer" alone: no identity,
    # then dereferenced → 500. Not a JWT: jwt.DecodeError → 500.
    assert observed == {"Basic abc": 401, "Bearer": 500, "Bearer not-a-jwt": 500}
    assert bot_server.bot.seen == []


async def test_invoke_install_and_team_events_parse_in_the_sdk(
    bot_server: BotServer, bf: FakeBotFramework
) -> None:
    channel = bf.add_channel("Platform", "approvals")
    team_id = bf.conversation(channel).team_id
    sender = bf.sender_kwargs("29:bob")
    where = bf.conversation_kwargs(channel)

    invoke = ta.invoke_action(
        "approve", {"request_id": "req_1"}, app_id=bf.app_id, reply_to_id="1700000000001",
        **sender, **where,
    )  # fmt: skip
    status, body = await bot_server.post(invoke, bf.sign_activity_token(bf.service_url))
    assert status == 200
    assert body["statusCode"] == 200 and body["type"] == ta.ADAPTIVE_CARD_CONTENT_TYPE
    name, value = bot_server.bot.seen[-1][1]
    assert name == "adaptiveCard/action"
    assert value["action"] == {
        "type": "Action.Execute",
        "verb": "approve",
        "data": {"request_id": "req_1"},
    }
    assert value["trigger"] == "manual"
    assert invoke["conversation"]["id"] == f"{channel};messageid=1700000000001"

    install = ta.installation_update("add", app_id=bf.app_id, **sender, **where)
    assert (await bot_server.post(install, bf.sign_activity_token(bf.service_url)))[0] == 201
    assert bot_server.bot.seen[-1] == ("installed", "channel")

    added = ta.conversation_update(app_id=bf.app_id, **sender, **bf.conversation_kwargs(team_id))
    assert (await bot_server.post(added, bf.sign_activity_token(bf.service_url)))[0] == 201
    kind, (member_ids, team_info) = bot_server.bot.seen[-1]
    assert kind == "members_added" and member_ids == [f"28:{bf.app_id}"]
    assert (team_info.id, team_info.name) == (team_id, "Platform")

    mention = ta.message("approve req_1", app_id=bf.app_id, **sender, **where)
    assert mention["text"] == "<at>Countersign</at> approve req_1"
    assert (await bot_server.post(mention, bf.sign_activity_token(bf.service_url)))[0] == 201
    assert ("message", "approve req_1") in bot_server.bot.seen
    reply = bf.activities(channel)[-1]
    assert reply.thread_id == mention["id"] and reply.text == "echo: approve req_1"


# --------------------------------------------------------------------------- (b) outbound


def login(bf: FakeBotFramework, **form: str) -> requests.Response:
    data = {
        "grant_type": "client_credentials",
        "client_id": bf.app_id,
        "client_secret": bf.app_password,
        "scope": SCOPE,
    }
    data.update(form)
    return requests.post(bf.login_url, data=data, timeout=5)


@pytest.fixture
async def connector(bf: FakeBotFramework) -> AsyncIterator[ConnectorClient]:
    answer = await asyncio.to_thread(login, bf)
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    async with ConnectorClient(BasicTokenAuthentication(body), base_url=bf.service_url) as client:
        yield client


async def test_login_endpoint_answers_like_entra_id(bf: FakeBotFramework) -> None:
    wrong_secret = await asyncio.to_thread(login, bf, client_secret="nope")
    assert wrong_secret.status_code == 401 and wrong_secret.json()["error"] == "invalid_client"
    wrong_id = await asyncio.to_thread(login, bf, client_id="someone-else")
    assert wrong_id.status_code == 401 and wrong_id.json()["error"] == "invalid_client"
    grant = await asyncio.to_thread(login, bf, grant_type="password")
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
    scope = await asyncio.to_thread(login, bf, scope=BOT_FRAMEWORK_SCOPE)
    assert scope.status_code == 400 and scope.json()["error"] == "invalid_scope"
    assert bf.issued_tokens == []

    good = await asyncio.to_thread(login, bf)
    token = good.json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == BOT_FRAMEWORK_SCOPE and claims["appid"] == APP_ID
    assert [t.token for t in bf.issued_tokens] == [token]


async def test_connector_client_creates_sends_updates_and_reads_members(
    bf: FakeBotFramework, connector: ConnectorClient
) -> None:
    conversations = connector.conversations
    created = await conversations.create_conversation(
        ConversationParameters(
            bot=ChannelAccount(id=f"28:{bf.app_id}"),
            members=[ChannelAccount(id="29:alice")],
            channel_data={"tenant": {"id": bf.tenant_id}},
            tenant_id=bf.tenant_id,
            is_group=False,
        )
    )
    assert created.id == bf.personal_conversation_id("29:alice")

    sent = await conversations.send_to_conversation(
        created.id, Activity(type="message", attachments=[card_attachment()])
    )
    changed = {**CARD, "body": [{"type": "TextBlock", "text": "Approved by Alice"}]}
    updated = await conversations.update_activity(
        created.id,
        sent.id,
        Activity(type="message", id=sent.id, attachments=[card_attachment(changed)]),
    )
    assert updated.id == sent.id
    replied = await conversations.reply_to_activity(
        created.id, sent.id, Activity(type="message", text="Recorded.", reply_to_id=sent.id)
    )

    first, second = bf.activities(created.id)
    assert (first.id, second.id) == (sent.id, replied.id)
    assert first.card == changed and first.history[0].attachments[0]["content"] == CARD
    assert [u.via for u in first.updates] == ["update"]
    assert second.reply_to_id == sent.id and second.text == "Recorded."

    member = await conversations.get_conversation_member(created.id, "29:alice", raw=True)
    teams_member = TeamsChannelAccount().deserialize(member.response.json())
    assert (teams_member.name, teams_member.email, teams_member.tenant_id) == (
        "Alice Adams",
        "alice@example.com",
        bf.tenant_id,
    )
    assert teams_member.aad_object_id == bf.user("29:alice").aad_object_id
    # Teams also finds a member by AAD object id.
    by_aad = await conversations.get_conversation_member(created.id, teams_member.aad_object_id)
    assert by_aad.id == "29:alice"
    members = await conversations.get_conversation_members(created.id)
    assert [m.id for m in members] == ["29:alice"]

    with pytest.raises(ErrorResponseException) as unknown:
        await conversations.get_conversation_member(created.id, "29:bob")
    assert unknown.value.response.status_code == 404
    assert unknown.value.error.error.code == "MemberNotFoundInConversation"
    with pytest.raises(ErrorResponseException) as missing:
        await conversations.update_activity(created.id, "404", Activity(type="message", text="x"))
    assert missing.value.response.status_code == 404
    assert missing.value.error.error.code == "ActivityNotFound"


async def test_channel_threads_and_team_routes(
    bf: FakeBotFramework, connector: ConnectorClient
) -> None:
    channel = bf.add_channel("Platform", "approvals")
    team_id = bf.conversation(channel).team_id
    thread = await connector.conversations.create_conversation(
        ConversationParameters(
            is_group=True,
            channel_data={"channel": {"id": channel}, "tenant": {"id": bf.tenant_id}},
            activity=Activity(type="message", attachments=[card_attachment()]),
        )
    )
    assert thread.id == f"{channel};messageid={thread.activity_id}"
    reply = await connector.conversations.send_to_conversation(
        thread.id, Activity(type="message", text="in thread")
    )
    root, in_thread = bf.activities(channel)
    assert root.thread_id == root.id == thread.activity_id and root.card == CARD
    assert (in_thread.id, in_thread.thread_id) == (reply.id, root.id)

    paged = await connector.conversations.get_conversation_paged_members(thread.id, page_size=1)
    assert len(paged.members) == 1 and paged.continuation_token == "1"
    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {bf.issue_token()}"}
    ) as http:
        async with http.get(f"{bf.service_url}v3/teams/{team_id}") as answer:
            assert (await answer.json())["name"] == "Platform"
        async with http.get(f"{bf.service_url}v3/teams/{team_id}/conversations") as answer:
            names = {c["name"] for c in (await answer.json())["conversations"]}
            assert names == {None, "approvals"}


async def test_connector_requires_a_token_from_the_login_endpoint(bf: FakeBotFramework) -> None:
    conversation = bf.personal_conversation_id("29:alice")
    for credentials in (
        BasicTokenAuthentication({"access_token": "made-up"}),
        BasicTokenAuthentication({"access_token": bf.sign_activity_token(bf.service_url)}),
    ):
        async with ConnectorClient(credentials, base_url=bf.service_url) as client:
            with pytest.raises(ErrorResponseException) as denied:
                await client.conversations.send_to_conversation(
                    conversation, Activity(type="message")
                )
        assert denied.value.response.status_code == 401
    assert bf.activities(conversation) == []

    credentials = BasicTokenAuthentication({"access_token": bf.issue_token()})
    async with ConnectorClient(credentials, base_url=bf.service_url) as client:
        send = client.conversations.send_to_conversation
        await send(conversation, Activity(type="message", text="ok"))
        bf.revoke_tokens()
        with pytest.raises(ErrorResponseException) as revoked:
            await send(conversation, Activity(type="message"))
    assert revoked.value.response.status_code == 401
    assert [c.status for c in bf.calls_to("send")] == [401, 401, 201, 401]


async def test_create_conversation_refuses_what_teams_refuses(
    bf: FakeBotFramework, connector: ConnectorClient
) -> None:
    bf.add_user("29:carol", "carol@example.com", "Carol", bot_installed=False)

    async def create(member: str, tenant: str | None) -> int:
        try:
            await connector.conversations.create_conversation(
                ConversationParameters(members=[ChannelAccount(id=member)], tenant_id=tenant)
            )
        except ErrorResponseException as error:
            return error.response.status_code
        return 201

    assert await create("29:alice", None) == 400  # Teams needs the tenant id
    assert await create("29:nobody", bf.tenant_id) == 404
    assert await create("29:carol", bf.tenant_id) == 403  # app not installed for her
    assert await create("29:alice", "another-tenant") == 403
    assert await create("29:alice", bf.tenant_id) == 201


# --------------------------------------------------------------------------- (c) limits and faults


async def test_message_over_the_size_limit_is_413(
    bf: FakeBotFramework, connector: ConnectorClient
) -> None:
    conversation = bf.personal_conversation_id("29:alice")
    # The limit counts the payload as UTF-16: ~20,000 ASCII characters.
    big = {**CARD, "body": [{"type": "TextBlock", "text": "x" * (MAX_MESSAGE_BYTES // 2)}]}
    with pytest.raises(ErrorResponseException) as too_big:
        await connector.conversations.send_to_conversation(
            conversation, Activity(type="message", attachments=[card_attachment(big)])
        )
    assert too_big.value.response.status_code == 413
    assert too_big.value.error.error.code == "MessageSizeTooBig"
    small = {**CARD, "body": [{"type": "TextBlock", "text": "x" * (MAX_MESSAGE_BYTES // 2 - 1000)}]}
    sent = await connector.conversations.send_to_conversation(
        conversation, Activity(type="message", attachments=[card_attachment(small)])
    )
    with pytest.raises(ErrorResponseException) as update_too_big:
        await connector.conversations.update_activity(
            conversation, sent.id, Activity(type="message", attachments=[card_attachment(big)])
        )
    assert update_too_big.value.response.status_code == 413
    assert bf.activity(sent.id).updates == []


async def test_rate_limit_answers_429_with_retry_after_and_msrest_does_not_retry(
    bf: FakeBotFramework, connector: ConnectorClient
) -> None:
    conversation = bf.personal_conversation_id("29:alice")
    bf.rate_limit("send", times=1, retry_after=2)
    with pytest.raises(ErrorResponseException) as limited:
        await connector.conversations.send_to_conversation(conversation, Activity(type="message"))
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "2"
    assert len(bf.calls_to("send")) == 1  # msrest treats 429 as final: the bot must back off
    await connector.conversations.send_to_conversation(conversation, Activity(type="message"))
    assert [c.status for c in bf.calls_to("send")] == [429, 201]


async def test_fail_and_msrest_retries_of_server_errors(
    bf: FakeBotFramework, connector: ConnectorClient
) -> None:
    conversation = bf.personal_conversation_id("29:alice")
    # A 503 on GET is retried inside msrest (urllib3 Retry, first retry immediate).
    bf.fail("get_member", status=503, times=1)
    member = await connector.conversations.get_conversation_member(conversation, "29:alice")
    assert member.id == "29:alice"
    assert [c.status for c in bf.calls_to("get_member")] == [503, 200]
    # A POST is not retried (urllib3 2 ignores msrest's method_whitelist): one call, one error.
    bf.fail("connector", status=502, times=1, code="BadGateway")
    with pytest.raises(ErrorResponseException) as failed:
        await connector.conversations.send_to_conversation(conversation, Activity(type="message"))
    assert failed.value.response.status_code == 502
    assert failed.value.error.error.code == "BadGateway"
    assert [c.status for c in bf.calls_to("send")] == [502]
    with pytest.raises(ValueError):
        bf.fail("sned")


async def test_hang_delays_the_answer_and_stop_cuts_it_short(bf: FakeBotFramework) -> None:
    conversation = bf.personal_conversation_id("29:alice")
    bf.hang("send", seconds=30)
    headers = {"Authorization": f"Bearer {bf.issue_token()}"}
    url = f"{bf.service_url}v3/conversations/{conversation}/activities"
    async with aiohttp.ClientSession(headers=headers) as http:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await http.post(url, json={"type": "message", "text": "slow"})
        hung = await bf.wait_for("send", answered=False)
        assert hung.status is None
        async with http.post(url, json={"type": "message", "text": "fast"}) as answer:
            assert answer.status == 201
    started = time.monotonic()
    await asyncio.to_thread(bf.stop)
    assert time.monotonic() - started < 3


async def test_login_faults_and_wait_for_from_another_thread(bf: FakeBotFramework) -> None:
    bf.rate_limit("login", retry_after=5)
    limited = await asyncio.to_thread(login, bf)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "5"
    assert limited.json()["error"] == "too_many_requests"

    since = len(bf.calls)
    later = asyncio.get_running_loop().run_in_executor(None, lambda: (time.sleep(0.1), login(bf)))
    call = await bf.wait_for("login", since=since)
    assert call.status == 200
    await later
    assert bf.wait_until_sync(lambda: bf.issued_tokens, timeout=1)
    with pytest.raises(TimeoutError, match="saw: Call"):
        await bf.wait_for("delete", timeout=0.05)


def test_sync_use_and_sdk_cache_hygiene() -> None:
    with FakeBotFramework() as bf:
        url = bf.openid_metadata_url
        assert requests.get(url, timeout=5).json()["jwks_uri"] == bf.jwks_url
        JwtTokenExtractor.get_open_id_metadata(url)
        assert url in JwtTokenExtractor.metadataCache
    assert url not in JwtTokenExtractor.metadataCache
