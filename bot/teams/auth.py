"""Bot Framework authentication for Teams: inbound JWT checks and outbound tokens.

Inbound, botbuilder's ``ConfigurationBotFrameworkAuthentication`` validates
every activity's token (issuer, audience = our app id, signature against the
OpenID metadata keys endorsed for ``msteams``, ``serviceurl`` claim, expiry).
``TEAMS_OPENID_METADATA_URL`` and ``TEAMS_TOKEN_ISSUER`` switch it to those
endpoints (sovereign clouds, tests). Outbound, with ``TEAMS_LOGIN_URL`` set we
fetch client-credentials tokens from it ourselves: MSAL, which botbuilder uses
otherwise, refuses ``http://`` authorities and insists on Microsoft's instance
discovery.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from botbuilder.integration.aiohttp import ConfigurationBotFrameworkAuthentication
from botframework.connector.aio import ConnectorClient
from botframework.connector.auth import (
    AppCredentials,
    AuthenticateRequestResult,
    AuthenticationConstants,
    ClaimsIdentity,
    ConnectorFactory,
    PasswordServiceClientCredentialFactory,
    UserTokenClient,
)
from msrest.authentication import Authentication
from msrest.universal_http.requests import ClientRetryPolicy

from countersign.settings import Settings

__all__ = [
    "BOT_FRAMEWORK_SCOPE",
    "CachingAuthentication",
    "LoginCredentials",
    "authentication",
    "speed_up_retry_policy",
]

BOT_FRAMEWORK_SCOPE = "https://api.botframework.com"
_REFRESH_MARGIN_SECONDS = 300.0
# Connector clients kept (one per app id, service URL and audience: a handful).
_MAX_CLIENTS = 64
# Each connector call gives up after this long (msrest's default is 100 s); the
# chat job is retried then, well inside its lease.
CONNECTOR_TIMEOUT_SECONDS = 10


def speed_up_retry_policy() -> None:
    """Make msrest's ``ClientRetryPolicy.safe_codes`` a frozenset (same codes, O(1) lookups).

    Every activity builds connector clients, each building a ``ClientRetryPolicy``
    whose retry-code list is computed with ~500,000 list membership tests
    (~3.5 ms, PLATFORM-NOTES.md: 132 → 1,204 invokes/s on this machine). The set
    holds exactly the same codes, so the retry behaviour is unchanged; a test
    compares the computed ``status_forcelist`` before and after.
    """
    codes = ClientRetryPolicy.safe_codes
    if not isinstance(codes, frozenset):
        ClientRetryPolicy.safe_codes = frozenset(codes)  # type: ignore[assignment]


@dataclass(frozen=True)
class BotConfig:
    """The attributes ``ConfigurationBotFrameworkAuthentication`` reads (upper snake case)."""

    APP_ID: str
    APP_PASSWORD: str
    APP_TYPE: str
    APP_TENANTID: str | None
    TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL: str | None
    TO_BOT_FROM_CHANNEL_TOKEN_ISSUER: str | None
    TO_CHANNEL_FROM_BOT_LOGIN_URL: str | None


class LoginCredentials(AppCredentials):  # type: ignore[misc]
    """Client-credentials tokens from ``TEAMS_LOGIN_URL``, cached until near expiry.

    msrest asks for the token synchronously while signing a request; the fetch
    happens once an hour (and never logs the token or the password).
    """

    def __init__(self, app_id: str, password: str, login_url: str, scope: str) -> None:
        super().__init__(app_id=app_id, oauth_scope=scope)
        self._password = password
        self._login_url = login_url
        self._lock = threading.Lock()
        self._token: tuple[str, float] | None = None

    def get_access_token(self, force_refresh: bool = False) -> str:
        """A valid bearer token for outbound Bot Framework calls."""
        with self._lock:
            if self._token and not force_refresh and self._token[1] > time.time():
                return self._token[0]
            scope = self.oauth_scope.rstrip("/")
            answer = requests.post(
                self._login_url,
                data={
                    "grant_type": "client_credentials",
                    "client_id": self.microsoft_app_id,
                    "client_secret": self._password,
                    "scope": scope if scope.endswith("/.default") else f"{scope}/.default",
                },
                timeout=10,
            )
            if answer.status_code != 200:
                raise PermissionError(f"token endpoint answered {answer.status_code}")
            body = answer.json()
            expires = time.time() + float(body.get("expires_in", 3600)) - _REFRESH_MARGIN_SECONDS
            self._token = (str(body["access_token"]), expires)
            return self._token[0]


class LoginCredentialFactory(PasswordServiceClientCredentialFactory):  # type: ignore[misc]
    """Hands out ``LoginCredentials`` for our app id."""

    def __init__(self, app_id: str, password: str, login_url: str) -> None:
        super().__init__(app_id, password)
        self.login_url = login_url
        self._credentials: dict[str, LoginCredentials] = {}

    async def create_credentials(
        self, app_id: str, oauth_scope: str, login_endpoint: str, validate_authority: bool
    ) -> Authentication:
        """Credentials for ``app_id`` (ours only); one cached token per scope."""
        if not await self.is_valid_app_id(app_id):
            raise PermissionError("not this bot's app id")
        scope = oauth_scope or BOT_FRAMEWORK_SCOPE
        if scope not in self._credentials:
            self._credentials[scope] = LoginCredentials(
                app_id, self.password, self.login_url, scope
            )
        return self._credentials[scope]


def _app_id(claims_identity: ClaimsIdentity) -> str:
    """The bot's app id a turn acts as (the audience of a channel token; else the app id claim)."""
    found = claims_identity.get_claim_value(AuthenticationConstants.AUDIENCE_CLAIM)
    if found is None:
        found = claims_identity.get_claim_value(AuthenticationConstants.APP_ID_CLAIM)
    return str(found or "")


class _CachingConnectorFactory(ConnectorFactory):  # type: ignore[misc]
    """Hands out one shared ``ConnectorClient`` per service URL and audience."""

    def __init__(
        self, inner: ConnectorFactory, app_id: str, clients: dict[tuple[str, str, str], Any]
    ) -> None:
        self._inner = inner
        self._app_id = app_id
        self._clients = clients

    async def create(self, service_url: str, audience: str | None = None) -> ConnectorClient:
        key = (self._app_id, service_url, audience or "")
        client = self._clients.get(key)
        if client is None:
            client = await self._inner.create(service_url, audience)
            client.config.connection.timeout = CONNECTOR_TIMEOUT_SECONDS
            if len(self._clients) >= _MAX_CLIENTS:
                self._clients.pop(next(iter(self._clients)))
            self._clients[key] = client
        return client


class CachingAuthentication(ConfigurationBotFrameworkAuthentication):  # type: ignore[misc]
    """botbuilder's authentication, with its outbound clients built once and shared.

    Stock ``CloudAdapter`` builds a new ``ConnectorClient`` (msrest pipeline,
    ``requests`` session, retry policy, credentials) and a ``UserTokenClient`` for
    every activity and every proactive turn: most of a card update's CPU, and no
    HTTP connection is ever reused. ``BotFrameworkAdapter`` cached its connector
    clients the same way. Token checks of inbound activities are unchanged: they
    run on every activity.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[tuple[str, str, str], Any] = {}
        self._user_token_clients: dict[str, UserTokenClient] = {}

    async def authenticate_request(
        self, activity: Any, auth_header: str
    ) -> AuthenticateRequestResult:
        """Validate the inbound token (as before); outbound clients come from the cache."""
        result = await super().authenticate_request(activity, auth_header)
        if result.connector_factory is not None:
            result.connector_factory = _CachingConnectorFactory(
                result.connector_factory, _app_id(result.claims_identity), self._clients
            )
        return result

    def create_connector_factory(self, claims_identity: ClaimsIdentity) -> ConnectorFactory:
        """The proactive-turn connector factory, sharing the cached clients."""
        inner = super().create_connector_factory(claims_identity)
        return _CachingConnectorFactory(inner, _app_id(claims_identity), self._clients)

    async def create_user_token_client(self, claims_identity: ClaimsIdentity) -> UserTokenClient:
        """One user-token client per app id (Countersign never asks for user tokens)."""
        key = _app_id(claims_identity)
        client = self._user_token_clients.get(key)
        if client is None:
            client = await super().create_user_token_client(claims_identity)
            self._user_token_clients[key] = client
        return client


def authentication(settings: Settings) -> Any:
    """The Bot Framework authentication for these settings (app id, overrides, login URL)."""
    config = BotConfig(
        APP_ID=settings.microsoft_app_id or "",
        APP_PASSWORD=settings.microsoft_app_password or "",
        APP_TYPE=settings.microsoft_app_type or "MultiTenant",
        APP_TENANTID=settings.microsoft_app_tenant_id,
        TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL=settings.teams_openid_metadata_url,
        TO_BOT_FROM_CHANNEL_TOKEN_ISSUER=settings.teams_token_issuer,
        TO_CHANNEL_FROM_BOT_LOGIN_URL=settings.teams_login_url,
    )
    factory = None
    if settings.teams_login_url and settings.microsoft_app_id:
        factory = LoginCredentialFactory(
            settings.microsoft_app_id,
            settings.microsoft_app_password or "",
            settings.teams_login_url,
        )
    return CachingAuthentication(config, credentials_factory=factory)
