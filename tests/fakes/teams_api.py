"""A fake of the Bot Framework as Microsoft Teams uses it, served in a background thread.

    async with FakeBotFramework(app_id=APP_ID, app_password=APP_PASSWORD) as bf:
        user = bf.add_user("29:alice", "alice@example.com", "Alice")
        activity = teams_activities.message(
            "hi", app_id=bf.app_id, **bf.sender_kwargs(user.id),
            conversation_id=bf.personal_conversation_id(user.id), service_url=bf.service_url,
        )
        token = bf.sign_activity_token(activity["serviceUrl"])
        # POST activity to the bot with teams_activities.headers(token), then:
        reply = await bf.wait_for("reply")

One aiohttp server on 127.0.0.1 (random port) plays three Microsoft services:

* **The channel's token issuer** (``login.botframework.com``): OpenID metadata
  at ``openid_metadata_url`` and its keys at ``jwks_url`` (RSA, ``kid``,
  ``x5t``, ``x5c``, ``endorsements: ["msteams"]``). ``sign_activity_token``
  signs an inbound activity's token the way the Connector does: RS256,
  header ``kid``/``x5t``, claims ``serviceurl``, ``nbf``, ``exp``, ``iss``,
  ``aud`` (the bot's app id) and nothing else (a ``ver`` claim plus an
  ``appid`` unlike ``aud`` would make botbuilder treat it as a skill token).
  A ``rogue`` key that the JWKS does not publish forges tokens; an
  ``unendorsed`` key is published but endorsed for ``webchat`` only.
* **The login endpoint** (``login.microsoftonline.com``): ``login_url`` takes
  a client-credentials grant and answers like Entra ID, with ``invalid_client``
  (401) for a wrong id or secret.
* **The Connector** (``smba.trafficmanager.net/teams/``): ``service_url``
  serves the v3 REST routes botbuilder's ``ConnectorClient`` calls. Each call
  needs ``Authorization: Bearer`` with an unexpired token from the login
  endpoint issued for ``https://api.botframework.com/.default``, else 401.
  Messages over ``max_message_bytes`` (the payload measured in UTF-16, as
  Teams documents it; 40 KB by default) get 413 ``MessageSizeTooBig``.

It runs in its own thread and event loop because botbuilder fetches OpenID
metadata and keys with blocking ``requests`` calls from the bot's event loop:
a server on that same loop could never answer. botbuilder caches those per URL
for a day in ``JwtTokenExtractor.metadataCache``; the fake removes its own URL
from that cache when it starts and stops (ports get reused).

State (users, teams, conversations, activities with their update history,
calls) lives behind one lock, and the query methods return copies, so tests
read it from any thread. Faults (``rate_limit``, ``fail``, ``hang``) apply to
a route kind (see ``ROUTE_KINDS``), or ``"connector"`` for every Connector
route, or ``"*"`` for all.

Error bodies: the Connector answers ``{"error": {"code", "message"}}`` (what
botbuilder deserializes into ``ErrorResponse``), except 401, which is ASP.NET's
``{"message": "Authorization has been denied for this request."}``; the login
endpoint answers OAuth errors (``{"error": "invalid_client", ...}``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import json
import secrets
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import parse_qsl

import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from .teams_activities import (
    ADAPTIVE_CARD_CONTENT_TYPE,
    DEFAULT_TENANT_ID,
    ConversationType,
    new_activity_id,
)

JSON = dict[str, Any]
T = TypeVar("T")

APP_ID = "3f2d8c71-0b6e-4a59-9d1c-7e4f5a6b8c90"
APP_PASSWORD = "fake-client-secret"  # a test fixture, not a secret
# The audience of Connector tokens; the bot asks for "<this>/.default".
BOT_FRAMEWORK_SCOPE = "https://api.botframework.com"
# `.test` is reserved (RFC 2606): a bot configured for Microsoft's issuer
# rejects the fake's tokens before fetching anything.
FAKE_ISSUER = "https://api.botframework.test"
MAX_MESSAGE_BYTES = 40 * 1024  # Teams: 40 KB, the payload encoded as UTF-16

CONNECTOR_KINDS = frozenset(
    {
        "create_conversation",
        "send",
        "reply",
        "update",
        "delete",
        "get_members",
        "get_member",
        "get_paged_members",
        "team_details",
        "team_channels",
    }
)
ROUTE_KINDS = CONNECTOR_KINDS | {"login", "openid", "jwks"}
_FAULT_TARGETS = ROUTE_KINDS | {"connector", "*"}

UNAUTHORIZED_BODY = {"message": "Authorization has been denied for this request."}


# --------------------------------------------------------------------------- keys


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64int(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True)
class SigningKey:
    """An RSA key with a self-signed certificate; ``kid`` = ``x5t`` = its SHA-1 thumbprint."""

    name: str
    private_key: rsa.RSAPrivateKey
    kid: str
    x5t: str
    x5c: str

    def jwk(self, endorsements: Iterable[str]) -> JSON:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.x5t,
            "n": _b64int(numbers.n),
            "e": _b64int(numbers.e),
            "x5c": [self.x5c],
            "endorsements": list(endorsements),
        }


def _make_key(name: str) -> SigningKey:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fake-botframework-{name}")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(private_key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    thumbprint = _b64url(hashlib.sha1(der).digest())
    return SigningKey(name, private_key, thumbprint, thumbprint, base64.b64encode(der).decode())


# RSA key generation costs ~50 ms: one set per process, shared by every fake.
_KEYS: dict[str, SigningKey] = {}
_KEYS_LOCK = threading.Lock()


def signing_key(name: Literal["channel", "webchat", "rogue", "login"]) -> SigningKey:
    """The process-wide key of that name (made on first use)."""
    with _KEYS_LOCK:
        if name not in _KEYS:
            _KEYS[name] = _make_key(name)
        return _KEYS[name]


# --------------------------------------------------------------------------- records


@dataclass
class Call:
    """One request as it arrived; ``status``/``response`` are set once answered."""

    method: str
    path: str
    kind: str
    json: Any
    at: float  # time.time() on arrival
    headers: dict[str, str]
    token: str | None = None  # the Connector token presented, once accepted
    status: int | None = None
    response: Any = None

    @property
    def error_code(self) -> str | None:
        error = self.response.get("error") if isinstance(self.response, dict) else None
        return error.get("code") if isinstance(error, dict) else error

    def __repr__(self) -> str:  # short: assertion messages list many calls
        outcome = "pending" if self.status is None else str(self.status)
        return f"Call({self.kind}: {self.method} {self.path} → {outcome})"


@dataclass(frozen=True)
class ActivityState:
    """What an activity showed from ``at`` on, and which call put it there."""

    text: str | None
    attachments: list[JSON]
    activity: JSON
    at: float
    via: str  # send / reply / create_conversation / update


@dataclass
class StoredActivity:
    """An activity the bot posted, as the conversation shows it now."""

    id: str
    conversation_id: str  # the base id (without ";messageid=")
    thread_id: str | None  # channels: the thread's root post id
    reply_to_id: str | None
    type: str
    text: str | None
    attachments: list[JSON]
    activity: JSON
    created_at: float
    deleted: bool = False
    history: list[ActivityState] = field(default_factory=list)

    @property
    def updates(self) -> list[ActivityState]:
        """Every state after the first (one per accepted update)."""
        return self.history[1:]

    @property
    def card(self) -> JSON | None:
        """The content of the first Adaptive Card attachment, if any."""
        for attachment in self.attachments:
            if attachment.get("contentType") == ADAPTIVE_CARD_CONTENT_TYPE:
                content = attachment.get("content")
                return content if isinstance(content, dict) else None
        return None


@dataclass
class User:
    """A member of the fake tenant directory (a Teams user with the app installed)."""

    id: str  # "29:..."
    email: str
    name: str
    aad_object_id: str
    upn: str
    tenant_id: str
    bot_installed: bool = True

    def as_member(self) -> JSON:
        """The ``TeamsChannelAccount`` the Connector returns for this user."""
        given, _, surname = self.name.partition(" ")
        return {
            "id": self.id,
            "name": self.name,
            "aadObjectId": self.aad_object_id,
            "givenName": given,
            "surname": surname or None,
            "email": self.email,
            "userPrincipalName": self.upn,
            "tenantId": self.tenant_id,
            "userRole": "user",
        }


@dataclass
class Conversation:
    id: str
    conversation_type: ConversationType
    tenant_id: str | None
    members: list[str] | None  # user ids; None: everyone in the tenant
    team_id: str | None = None
    name: str | None = None


@dataclass
class Team:
    id: str  # the General channel's id
    name: str
    aad_group_id: str
    tenant_id: str
    channels: dict[str, str | None] = field(default_factory=dict)  # id -> name (General: None)


@dataclass
class IssuedToken:
    token: str
    client_id: str
    scope: str
    audience: str
    issued_at: float
    expires_at: float
    revoked: bool = False


@dataclass
class _Fault:
    action: Literal["rate_limit", "fail", "hang"]
    times: int
    status: int = 500
    retry_after: float = 1
    seconds: float = 0.0
    code: str | None = None


class ConnectorError(Exception):
    """Raised inside a handler: answer ``status`` with an error body."""

    def __init__(
        self,
        status: int,
        code: str = "",
        message: str = "",
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.body = body if body is not None else {"error": {"code": code, "message": message}}
        self.headers = headers or {}


def _oauth_error(status: int, error: str, code: int, description: str) -> ConnectorError:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return ConnectorError(
        status,
        body={
            "error": error,
            "error_description": f"AADSTS{code}: {description}",
            "error_codes": [code],
            "timestamp": now,
            "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
        },
    )


def _guess_type(conversation_id: str) -> ConversationType:
    if "@thread.tacv2" in conversation_id or "@thread.skype" in conversation_id:
        return "channel"
    if conversation_id.startswith("19:"):
        return "groupChat"
    return "personal"


Handler = Callable[[web.Request, Any, bytes], tuple[int, Any]]


# --------------------------------------------------------------------------- the fake


class FakeBotFramework:
    """The fake Bot Framework (issuer, login, Teams Connector). See the module docstring.

    ``strict_conversations``: by default a Connector call on an unknown
    conversation id creates it (members: the whole tenant), so tests may
    invent ids; ``True`` answers 404 ``ConversationNotFound`` instead.
    """

    def __init__(
        self,
        app_id: str = APP_ID,
        app_password: str = APP_PASSWORD,
        *,
        tenant_id: str = DEFAULT_TENANT_ID,
        issuer: str = FAKE_ISSUER,
        endorsements: Iterable[str] = ("msteams",),
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        token_lifetime: int = 3600,
        strict_conversations: bool = False,
    ) -> None:
        self.app_id = app_id
        self.app_password = app_password
        self.tenant_id = tenant_id
        self.issuer = issuer
        self.endorsements = list(endorsements)
        self.max_message_bytes = max_message_bytes
        self.token_lifetime = token_lifetime
        self.strict_conversations = strict_conversations

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._calls: list[Call] = []
        self._users: dict[str, User] = {}
        self._teams: dict[str, Team] = {}
        self._conversations: dict[str, Conversation] = {}
        self._personal: dict[str, str] = {}  # user id -> conversation id
        self._activities: dict[str, StoredActivity] = {}
        self._order: list[str] = []  # activity ids, oldest first
        self._tokens: dict[str, IssuedToken] = {}
        self._faults: dict[str, deque[_Fault]] = {}

        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._port = 0

    # ------------------------------------------------------------------ URLs

    @property
    def base_url(self) -> str:
        assert self._port, "FakeBotFramework is not started"
        return f"http://127.0.0.1:{self._port}"

    @property
    def openid_metadata_url(self) -> str:
        return f"{self.base_url}/v1/.well-known/openidconfiguration"

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/v1/.well-known/keys"

    @property
    def login_url(self) -> str:
        """The token endpoint (any tenant segment works; this is the multi-tenant one)."""
        return f"{self.base_url}/botframework.com/oauth2/v2.0/token"

    @property
    def service_url(self) -> str:
        return f"{self.base_url}/teams/"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start the server thread; blocks until it listens (a few ms, plus key making once)."""
        if self._thread is not None:
            return self
        for name in ("channel", "webchat", "rogue", "login"):
            signing_key(name)
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name="FakeBotFramework", daemon=True
        )
        self._thread.start()
        if not ready.wait(10) or failure:
            self._thread = None
            raise RuntimeError("FakeBotFramework did not start") from (
                failure[0] if failure else None
            )
        self._forget_sdk_cache()
        return self

    def stop(self) -> None:
        """Stop the server (hung requests are cut short) and join its thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        with contextlib.suppress(Exception):
            future.result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._forget_sdk_cache()
        self._thread = None
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve_start())
        except BaseException as error:
            failure.append(error)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve_start(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        route = self._route
        app.router.add_get("/v1/.well-known/openidconfiguration", route("openid", self._openid))
        app.router.add_get("/v1/.well-known/keys", route("jwks", self._jwks))
        app.router.add_post("/{tenant}/oauth2/v2.0/token", route("login", self._login))
        v3 = "/teams/v3/conversations"
        app.router.add_post(v3, route("create_conversation", self._create_conversation))
        app.router.add_post(v3 + "/{cid}/activities", route("send", self._send))
        app.router.add_post(v3 + "/{cid}/activities/{aid}", route("reply", self._reply))
        app.router.add_put(v3 + "/{cid}/activities/{aid}", route("update", self._update))
        app.router.add_delete(v3 + "/{cid}/activities/{aid}", route("delete", self._delete))
        app.router.add_get(v3 + "/{cid}/members", route("get_members", self._get_members))
        app.router.add_get(v3 + "/{cid}/members/{mid}", route("get_member", self._get_member))
        app.router.add_get(
            v3 + "/{cid}/pagedmembers", route("get_paged_members", self._get_paged_members)
        )
        app.router.add_get("/teams/v3/teams/{tid}", route("team_details", self._team_details))
        app.router.add_get(
            "/teams/v3/teams/{tid}/conversations", route("team_channels", self._team_channels)
        )
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def _forget_sdk_cache(self) -> None:
        try:
            from botframework.connector.auth.jwt_token_extractor import JwtTokenExtractor
        except ImportError:  # botbuilder not installed: nothing cached
            return
        JwtTokenExtractor.metadataCache.pop(self.openid_metadata_url, None)

    # ------------------------------------------------------------------ directory

    def add_user(
        self,
        user_id: str,
        email: str,
        name: str,
        *,
        aad_object_id: str | None = None,
        upn: str | None = None,
        tenant_id: str | None = None,
        bot_installed: bool = True,
    ) -> User:
        """Add a user to the tenant directory (every team's roster too)."""
        user = User(
            id=user_id,
            email=email,
            name=name,
            aad_object_id=aad_object_id or str(uuid.uuid4()),
            upn=upn or email,
            tenant_id=tenant_id or self.tenant_id,
            bot_installed=bot_installed,
        )
        with self._lock:
            self._users[user_id] = user
        return copy.deepcopy(user)

    def user(self, user_id: str) -> User:
        with self._lock:
            return copy.deepcopy(self._users[user_id])

    def add_channel(self, team_name: str, channel_name: str = "General") -> str:
        """Add a channel (and its team, on first use); returns the channel's conversation id.

        The General channel's id is the team id, as in Teams.
        """
        with self._lock:
            team = next((t for t in self._teams.values() if t.name == team_name), None)
            if team is None:
                team = Team(
                    id=f"19:{secrets.token_hex(16)}@thread.tacv2",
                    name=team_name,
                    aad_group_id=str(uuid.uuid4()),
                    tenant_id=self.tenant_id,
                )
                team.channels[team.id] = None
                self._teams[team.id] = team
                self._conversations[team.id] = Conversation(
                    team.id, "channel", self.tenant_id, None, team_id=team.id, name=None
                )
            if channel_name == "General":
                return team.id
            for channel_id, name in team.channels.items():
                if name == channel_name:
                    return channel_id
            channel_id = f"19:{secrets.token_hex(16)}@thread.tacv2"
            team.channels[channel_id] = channel_name
            self._conversations[channel_id] = Conversation(
                channel_id, "channel", self.tenant_id, None, team_id=team.id, name=channel_name
            )
            return channel_id

    def add_group_chat(self, member_ids: Iterable[str], *, name: str | None = None) -> str:
        """A group chat among these users; returns its conversation id."""
        conversation_id = f"19:{secrets.token_hex(16)}@thread.v2"
        with self._lock:
            self._conversations[conversation_id] = Conversation(
                conversation_id, "groupChat", self.tenant_id, list(member_ids), name=name
            )
        return conversation_id

    def personal_conversation_id(self, user_id: str) -> str:
        """The bot's 1:1 chat with a user (made on first use; the same id as create_conversation)."""
        with self._lock:
            if user_id not in self._personal:
                conversation_id = "a:1" + secrets.token_urlsafe(60)
                user = self._users.get(user_id)
                tenant = user.tenant_id if user else self.tenant_id
                self._personal[user_id] = conversation_id
                self._conversations[conversation_id] = Conversation(
                    conversation_id, "personal", tenant, [user_id]
                )
            return self._personal[user_id]

    def conversation(self, conversation_id: str) -> Conversation:
        with self._lock:
            return copy.deepcopy(self._conversations[conversation_id.split(";messageid=")[0]])

    def team(self, team_id: str) -> Team:
        with self._lock:
            return copy.deepcopy(self._teams[team_id])

    def sender_kwargs(self, user_id: str) -> JSON:
        """``from_id``/``from_name``/``aad_object_id``/``tenant_id`` for teams_activities builders."""
        user = self.user(user_id)
        return {
            "from_id": user.id,
            "from_name": user.name,
            "aad_object_id": user.aad_object_id,
            "tenant_id": user.tenant_id,
        }

    def conversation_kwargs(self, conversation_id: str) -> JSON:
        """``conversation_id``/``conversation_type`` (+ team) and ``service_url`` for builders."""
        conversation = self.conversation(conversation_id)
        kwargs: JSON = {
            "conversation_id": conversation.id,
            "conversation_type": conversation.conversation_type,
            "service_url": self.service_url,
        }
        if conversation.team_id:
            kwargs["team_id"] = conversation.team_id
            kwargs["team_name"] = self.team(conversation.team_id).name
        return kwargs

    # ------------------------------------------------------------------ tokens

    def sign_activity_token(
        self,
        service_url: str,
        *,
        app_id: str | None = None,
        issuer: str | None = None,
        key: Literal["good", "rogue", "unendorsed"] = "good",
        expires_in: float = 3600,
        not_before: float | datetime | None = None,
        kid: str | None = None,
        channel_id: str = "msteams",
        extra_claims: JSON | None = None,
    ) -> str:
        """A Connector → bot token for an activity whose ``serviceUrl`` is ``service_url``.

        ``key``: ``good`` signs with the published key endorsed for
        ``channel_id``; ``unendorsed`` with a published key that is not;
        ``rogue`` with a key the JWKS lacks (header ``kid`` still names the
        good key unless ``kid`` is given). botbuilder allows 5 minutes of clock
        skew, so an expired token needs ``expires_in`` below -300.
        ``extra_claims`` are added; a value of ``None`` removes that claim.
        """
        now = int(time.time())
        if not_before is None:
            nbf = now
        elif isinstance(not_before, datetime):
            nbf = int(not_before.timestamp())
        else:
            nbf = int(not_before)
        claims: JSON = {
            "serviceurl": service_url,
            "nbf": nbf,
            "exp": now + int(expires_in),
            "iss": self.issuer if issuer is None else issuer,
            "aud": self.app_id if app_id is None else app_id,
        }
        for name, value in (extra_claims or {}).items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        wanted = key != "unendorsed"
        found = [k for k, endorsed in self._published_keys() if (channel_id in endorsed) == wanted]
        if not found:
            raise ValueError(f"no published key suits key={key!r} for channel {channel_id!r}")
        signer = signing_key("rogue") if key == "rogue" else found[0]
        headers = {"kid": kid or found[0].kid, "x5t": signer.x5t, "typ": "JWT"}
        return jwt.encode(claims, signer.private_key, algorithm="RS256", headers=headers)

    def _published_keys(self) -> list[tuple[SigningKey, list[str]]]:
        return [(signing_key("channel"), self.endorsements), (signing_key("webchat"), ["webchat"])]

    def issue_token(self, scope: str = BOT_FRAMEWORK_SCOPE + "/.default") -> str:
        """What the login endpoint would answer the bot, without the HTTP round trip."""
        with self._lock:
            return self._issue(self.app_id, scope).token

    @property
    def issued_tokens(self) -> list[IssuedToken]:
        with self._lock:
            return copy.deepcopy(list(self._tokens.values()))

    def revoke_tokens(self) -> None:
        """Every token issued so far stops working (the Connector answers 401)."""
        with self._lock:
            for issued in self._tokens.values():
                issued.revoked = True

    def _issue(self, client_id: str, scope: str) -> IssuedToken:
        now = time.time()
        audience = scope.removesuffix("/.default")
        claims = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + self.token_lifetime),
            "appid": client_id,
            "appidacr": "1",
            "idtyp": "app",
            "tid": self.tenant_id,
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, client_id)),
            "ver": "1.0",
            "jti": secrets.token_urlsafe(16),
        }
        key = signing_key("login")
        token = jwt.encode(
            claims, key.private_key, algorithm="RS256", headers={"kid": key.kid, "x5t": key.x5t}
        )
        issued = IssuedToken(token, client_id, scope, audience, now, now + self.token_lifetime)
        self._tokens[token] = issued
        return issued

    # ------------------------------------------------------------------ faults

    def rate_limit(self, route_kind: str, times: int = 1, retry_after: float = 1) -> None:
        """The next ``times`` calls of that kind get 429 with ``Retry-After``."""
        self._add_fault(
            route_kind, _Fault("rate_limit", times, status=429, retry_after=retry_after)
        )

    def fail(
        self, route_kind: str, status: int = 500, times: int = 1, code: str | None = None
    ) -> None:
        """The next ``times`` calls of that kind answer ``status`` with an error body."""
        self._add_fault(route_kind, _Fault("fail", times, status=status, code=code))

    def hang(self, route_kind: str, seconds: float, times: int = 1) -> None:
        """The next ``times`` calls of that kind are answered (normally) only after ``seconds``."""
        self._add_fault(route_kind, _Fault("hang", times, seconds=seconds))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add_fault(self, route_kind: str, fault: _Fault) -> None:
        if route_kind not in _FAULT_TARGETS:
            raise ValueError(f"unknown route kind {route_kind!r}; one of {sorted(_FAULT_TARGETS)}")
        if fault.times > 0:
            with self._lock:
                self._faults.setdefault(route_kind, deque()).append(fault)

    def _take_fault(self, kind: str) -> _Fault | None:
        targets = [kind, "connector", "*"] if kind in CONNECTOR_KINDS else [kind, "*"]
        with self._lock:
            for target in targets:
                queue = self._faults.get(target)
                if queue:
                    fault = queue[0]
                    fault.times -= 1
                    if fault.times <= 0:
                        queue.popleft()
                    return fault
        return None

    async def _apply_fault(self, kind: str) -> None:
        fault = self._take_fault(kind)
        if fault is None:
            return
        if fault.action == "hang":
            assert self._stopping is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), fault.seconds)
            return
        if kind == "login":
            error = "temporarily_unavailable" if fault.status != 429 else "too_many_requests"
            raised = _oauth_error(fault.status, error, 50196, "The server is busy.")
        elif fault.action == "rate_limit":
            raised = ConnectorError(
                429, fault.code or "TooManyRequests", "Too many requests; retry later."
            )
        else:
            raised = ConnectorError(
                fault.status, fault.code or "ServiceError", f"Injected failure ({fault.status})."
            )
        if fault.action == "rate_limit":
            raised.headers["Retry-After"] = f"{fault.retry_after:g}"
        raise raised

    # ------------------------------------------------------------------ queries

    @property
    def calls(self) -> list[Call]:
        """Every request so far, in arrival order (a copy of the list; live Call objects)."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, route_kind: str) -> list[Call]:
        return [call for call in self.calls if call.kind == route_kind]

    def activities(
        self, conversation_id: str, *, include_deleted: bool = False
    ) -> list[StoredActivity]:
        """The activities the bot posted in a conversation (any thread), oldest first."""
        base = conversation_id.split(";messageid=")[0]
        with self._lock:
            found = [self._activities[a] for a in self._order]
            return [
                copy.deepcopy(a)
                for a in found
                if a.conversation_id == base and (include_deleted or not a.deleted)
            ]

    def activity(self, activity_id: str) -> StoredActivity:
        with self._lock:
            return copy.deepcopy(self._activities[activity_id])

    def delete_by_user(self, activity_id: str) -> None:
        """Someone deletes the message in Teams (the bot's later updates get 404)."""
        with self._lock:
            self._activities[activity_id].deleted = True

    async def wait_for(
        self,
        predicate: str | Callable[[Call], bool],
        timeout: float = 5,  # noqa: ASYNC109 (callers give each wait its own deadline)
        *,
        answered: bool = True,
        since: int = 0,
    ) -> Call:
        """The first call (from ``calls[since:]``) of that route kind, or that satisfies a test.

        Only answered calls count unless ``answered=False``. Safe from any
        event loop: the fake's thread wakes the waiter. Raises ``TimeoutError``
        listing the calls seen.
        """
        test: Callable[[Call], bool] = (
            (lambda call: call.kind == predicate) if isinstance(predicate, str) else predicate
        )

        def found() -> Call | None:
            with self._lock:
                ready = [c for c in self._calls[since:] if c.status is not None or not answered]
            return next((c for c in ready if test(c)), None)

        return await self._wait(found, timeout, "matching call")

    async def wait_until(
        self,
        condition: Callable[[], T],
        timeout: float = 5,  # noqa: ASYNC109
    ) -> T:
        """Wait until ``condition()`` (re-checked after each request) is truthy; return it."""
        return await self._wait(condition, timeout, "condition")

    def wait_until_sync(self, condition: Callable[[], T], timeout: float = 5) -> T:
        """``wait_until`` for synchronous code."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (result := condition()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(self._timeout_message("condition", timeout))
                self._changed.wait(left)
            return result

    async def _wait(self, found: Callable[[], T | None], seconds: float, what: str) -> T:
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._async_waiters.append(waiter)
        try:
            async with asyncio.timeout(seconds):
                while True:
                    waiter[1].clear()
                    if result := found():
                        return result
                    await waiter[1].wait()
        except TimeoutError:
            raise TimeoutError(self._timeout_message(what, seconds)) from None
        finally:
            with self._lock:
                self._async_waiters.remove(waiter)

    def _timeout_message(self, what: str, timeout: float) -> str:
        seen = ", ".join(repr(c) for c in self.calls) or "nothing"
        return f"no {what} at the fake Bot Framework within {timeout}s; saw: {seen}"

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()
            waiters = list(self._async_waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(event.set)

    # ------------------------------------------------------------------ HTTP plumbing

    def _route(self, kind: str, handler: Handler) -> Callable[[web.Request], Any]:
        async def serve(request: web.Request) -> web.Response:
            return await self._serve(request, kind, handler)

        return serve

    async def _serve(self, request: web.Request, kind: str, handler: Handler) -> web.Response:
        raw = await request.read()
        body: Any = None
        bad_json = False
        if kind == "login":
            body = dict(parse_qsl(raw.decode("utf-8", "replace")))
            shown: Any = {k: ("***" if k == "client_secret" else v) for k, v in body.items()}
        else:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                bad_json = True
            shown = copy.deepcopy(body)
        call = Call(
            method=request.method,
            path=request.path,
            kind=kind,
            json=shown,
            at=time.time(),
            headers=dict(request.headers),
        )
        with self._lock:
            self._calls.append(call)
        self._notify()
        headers: dict[str, str] = {}
        try:
            if kind in CONNECTOR_KINDS:
                call.token = self._authorize(request)
            await self._apply_fault(kind)
            if bad_json:
                raise ConnectorError(400, "BadSyntax", "The request body is not valid JSON.")
            with self._lock:
                status, payload = handler(request, body, raw)
        except ConnectorError as error:
            status, payload, headers = error.status, error.body, error.headers
        except Exception as error:  # a bug in the fake: say so instead of a bare 500
            status = 500
            payload = {"error": {"code": "FakeError", "message": f"fake failed: {error!r}"}}
        with self._lock:
            call.status, call.response = status, copy.deepcopy(payload)
        self._notify()
        return web.json_response(payload, status=status, headers=headers)

    def _authorize(self, request: web.Request) -> str:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        with self._lock:
            issued = self._tokens.get(token) if scheme == "Bearer" else None
            if (
                issued is None
                or issued.revoked
                or issued.expires_at <= time.time()
                or issued.audience != BOT_FRAMEWORK_SCOPE
            ):
                raise ConnectorError(401, body=UNAUTHORIZED_BODY)
        return token

    def _conversation_for(self, raw_id: str) -> tuple[Conversation, str | None]:
        base, _, thread = raw_id.partition(";messageid=")
        conversation = self._conversations.get(base)
        if conversation is None:
            if self.strict_conversations:
                raise ConnectorError(404, "ConversationNotFound", "Conversation not found.")
            conversation = Conversation(base, _guess_type(base), None, None)
            self._conversations[base] = conversation
        return conversation, thread or None

    def _find_user(self, member_id: str) -> User | None:
        wanted = member_id.lower()
        for user in self._users.values():
            if wanted in (user.id.lower(), user.aad_object_id.lower(), user.upn.lower()):
                return user
        return None

    def _members(self, conversation: Conversation) -> list[User]:
        if conversation.members is not None:
            return [self._users[u] for u in conversation.members if u in self._users]
        tenant = conversation.tenant_id
        return [u for u in self._users.values() if tenant is None or u.tenant_id == tenant]

    def _check_activity(self, body: Any, raw: bytes) -> JSON:
        if not isinstance(body, dict) or not body.get("type"):
            raise ConnectorError(400, "BadArgument", "Activity must have a 'type'.")
        size = len(raw.decode("utf-8", "replace").encode("utf-16-le"))
        if size > self.max_message_bytes:
            raise ConnectorError(
                413,
                "MessageSizeTooBig",
                f"Message size too big: {size} bytes as UTF-16, limit {self.max_message_bytes}.",
            )
        return body

    def _post(
        self,
        conversation: Conversation,
        thread: str | None,
        body: JSON,
        reply_to_id: str | None,
        via: str,
    ) -> StoredActivity:
        activity_id = new_activity_id()
        shown = copy.deepcopy(body)
        shown["id"] = activity_id
        if conversation.conversation_type == "channel":
            thread = thread or reply_to_id or activity_id
        attachments = list(shown.get("attachments") or [])
        now = time.time()
        stored = StoredActivity(
            id=activity_id,
            conversation_id=conversation.id,
            thread_id=thread,
            reply_to_id=reply_to_id,
            type=shown["type"],
            text=shown.get("text"),
            attachments=attachments,
            activity=shown,
            created_at=now,
        )
        stored.history.append(ActivityState(stored.text, attachments, shown, now, via))
        self._activities[activity_id] = stored
        self._order.append(activity_id)
        return stored

    # ------------------------------------------------------------------ issuer and login

    def _openid(self, request: web.Request, body: Any, raw: bytes) -> tuple[int, Any]:
        return 200, {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.base_url}/v1/.well-known/invalid",
            "jwks_uri": self.jwks_url,
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        }

    def _jwks(self, request: web.Request, body: Any, raw: bytes) -> tuple[int, Any]:
        return 200, {"keys": [key.jwk(endorsed) for key, endorsed in self._published_keys()]}

    def _login(self, request: web.Request, form: JSON, raw: bytes) -> tuple[int, Any]:
        if form.get("grant_type") != "client_credentials":
            raise _oauth_error(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
            )
        client_id = form.get("client_id", "")
        if client_id != self.app_id:
            raise _oauth_error(
                401,
                "invalid_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory.",
            )
        if not secrets.compare_digest(form.get("client_secret", ""), self.app_password):
            raise _oauth_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        scope = form.get("scope", "")
        if not scope:
            raise _oauth_error(
                400, "invalid_request", 900144, "The request body must contain 'scope'."
            )
        if not scope.endswith("/.default"):
            raise _oauth_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. "
                "Client credential flows must have a scope value with /.default suffixed.",
            )
        issued = self._issue(client_id, scope)
        return 200, {
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "ext_expires_in": self.token_lifetime,
            "access_token": issued.token,
        }

    # ------------------------------------------------------------------ Connector

    def _create_conversation(self, request: web.Request, body: Any, raw: bytes) -> tuple[int, Any]:
        if not isinstance(body, dict):
            raise ConnectorError(400, "BadSyntax", "Incorrect conversation creation parameters")
        channel_data = body.get("channelData") or {}
        # botbuilder serializes ConversationParameters.tenant_id as "tenantID".
        tenant = (
            body.get("tenantId")
            or body.get("tenantID")
            or (channel_data.get("tenant") or {}).get("id")
        )
        activity = body.get("activity")
        if activity is not None:
            self._check_activity(activity, json.dumps(activity).encode())
        channel_id = (channel_data.get("channel") or {}).get("id") or channel_data.get(
            "teamsChannelId"
        )
        if channel_id:  # a new thread in a channel
            if activity is None:
                raise ConnectorError(400, "BadArgument", "A channel thread needs an activity.")
            conversation, _ = self._conversation_for(channel_id)
            stored = self._post(conversation, None, activity, None, "create_conversation")
            return 201, {"id": f"{conversation.id};messageid={stored.id}", "activityId": stored.id}
        members = body.get("members") or []
        if body.get("isGroup") or len(members) != 1 or not tenant:
            raise ConnectorError(400, "BadSyntax", "Incorrect conversation creation parameters")
        user = self._find_user(str(members[0].get("id", "")))
        if user is None:
            raise ConnectorError(404, "NotFound", "The user was not found in the directory.")
        if user.tenant_id != tenant:
            raise ConnectorError(403, "Forbidden", "The user belongs to another tenant.")
        if not user.bot_installed:
            raise ConnectorError(
                403, "BotNotInConversationRoster", "The bot is not part of the conversation roster."
            )
        conversation, _ = self._conversation_for(self.personal_conversation_id(user.id))
        answer: JSON = {"id": conversation.id}
        if activity is not None:
            answer["activityId"] = self._post(
                conversation, None, activity, None, "create_conversation"
            ).id
        return 201, answer

    def _send(self, request: web.Request, body: Any, raw: bytes) -> tuple[int, Any]:
        conversation, thread = self._conversation_for(request.match_info["cid"])
        activity = self._check_activity(body, raw)
        return 201, {"id": self._post(conversation, thread, activity, thread, "send").id}

    def _reply(self, request: web.Request, body: Any, raw: bytes) -> tuple[int, Any]:
        conversation, thread = self._conversation_for(request.match_info["cid"])
        activity = self._check_activity(body, raw)
        reply_to = request.match_info["aid"]
        return 201, {"id": self._post(conversation, thread, activity, reply_to, "reply").id}

    def _existing(self, request: web.Request) -> StoredActivity:
        conversation, _ = self._conversation_for(request.match_info["cid"])
        stored = self._activities.get(request.match_info["aid"])
        if stored is None or stored.deleted or stored.conversation_id != conversation.id:
            raise ConnectorError(404, "ActivityNotFound", "The activity was not found.")
        return stored

    def _update(self, request: web.Request, body: Any, raw: bytes) -> tuple[int, Any]:
        stored = self._existing(request)
        activity = copy.deepcopy(self._check_activity(body, raw))
        activity["id"] = stored.id
        stored.text = activity.get("text")
        stored.attachments = list(activity.get("attachments") or [])
        stored.activity = activity
        stored.history.append(
            ActivityState(stored.text, stored.attachments, activity, time.time(), "update")
        )
        return 200, {"id": stored.id}

    def _delete(self, request: web.Request, body: Any, raw: bytes) -> tuple[int, Any]:
        self._existing(request).deleted = True
        return 200, {}

    def _member_of(self, request: web.Request) -> User:
        conversation, _ = self._conversation_for(request.match_info["cid"])
        user = self._find_user(request.match_info["mid"])
        if user is None or user not in self._members(conversation):
            raise ConnectorError(
                404, "MemberNotFoundInConversation", "The member was not found in the conversation."
            )
        return user

    def _get_member(self, request: web.Request, body: Any, raw: bytes) -> tuple[int, Any]:
        return 200, self._member_of(request).as_member()

    def _get_members(self, request: web.Request, body: Any, raw: bytes) -> tuple[int, Any]:
        conversation, _ = self._conversation_for(request.match_info["cid"])
        return 200, [u.as_member() for u in self._members(conversation)]

    def _get_paged_members(self, request: web.Request, body: Any, raw: bytes) -> tuple[int, Any]:
        conversation, _ = self._conversation_for(request.match_info["cid"])
        members = self._members(conversation)
        try:
            size = max(1, min(int(request.query.get("pageSize", 200)), 500))
            start = int(request.query.get("continuationToken") or 0)
        except ValueError:
            raise ConnectorError(400, "BadArgument", "Bad paging parameters.") from None
        page = members[start : start + size]
        more = start + size < len(members)
        return 200, {
            "members": [u.as_member() for u in page],
            "continuationToken": str(start + size) if more else None,
        }

    def _team_for(self, request: web.Request) -> Team:
        team = self._teams.get(request.match_info["tid"])
        if team is None:
            raise ConnectorError(404, "NotFound", "The team was not found.")
        return team

    def _team_details(self, request: web.Request, body: Any, raw: bytes) -> tuple[int, Any]:
        team = self._team_for(request)
        return 200, {
            "id": team.id,
            "name": team.name,
            "aadGroupId": team.aad_group_id,
            "channelCount": len(team.channels),
            "memberCount": len([u for u in self._users.values() if u.tenant_id == team.tenant_id]),
            "type": "standard",
        }

    def _team_channels(self, request: web.Request, body: Any, raw: bytes) -> tuple[int, Any]:
        team = self._team_for(request)
        return 200, {"conversations": [{"id": c, "name": n} for c, n in team.channels.items()]}
