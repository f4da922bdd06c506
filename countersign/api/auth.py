"""Who is calling: ``Authorization: Bearer <token>`` as a client or as the admin.

A client token is looked up (by its SHA-256) on every call, so a revoked
client is refused at once. The admin token is ``COUNTERSIGN_ADMIN_TOKEN``,
compared in constant time; with it unset there is no admin. Tokens are never
logged or echoed.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from countersign.api.keys import SERVICE, SETTINGS
from countersign.api.problems import ApiProblem
from countersign.ports import ApiClient

__all__ = ["Principal", "authenticate", "require_client"]

_CHALLENGE = 'Bearer realm="countersign"'


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: one API client, or the admin (``client`` is None)."""

    client: ApiClient | None

    @property
    def is_admin(self) -> bool:
        """The admin sees every client's requests."""
        return self.client is None

    @property
    def scope(self) -> str | None:
        """The client whose requests this caller may see; None for all of them."""
        return None if self.client is None else self.client.name


def _unauthorized(detail: str, *, invalid: bool) -> ApiProblem:
    # RFC 6750: no error code when credentials are missing, invalid_token when wrong.
    challenge = f'{_CHALLENGE}, error="invalid_token"' if invalid else _CHALLENGE
    return ApiProblem(
        401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": challenge}
    )


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization")
    if header is None:
        raise _unauthorized("send Authorization: Bearer <token>", invalid=False)
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("the Authorization header must be Bearer <token>", invalid=True)
    if not token.isascii():  # bytes that are not UTF-8 arrive as surrogates; no token has them
        raise _unauthorized("the token is not valid (unknown or revoked)", invalid=True)
    return token


async def authenticate(request: web.Request) -> Principal:
    """The caller of ``request``; ``ApiProblem`` 401 when the token is missing or not valid."""
    token = _bearer(request)
    admin_token = request.app[SETTINGS].admin_token
    if admin_token and hmac.compare_digest(token.encode("ascii"), admin_token.encode("utf-8")):
        return Principal(client=None)
    client = await request.app[SERVICE].authenticate(token)
    if client is None:
        raise _unauthorized("the token is not valid (unknown or revoked)", invalid=True)
    return Principal(client=client)


def require_client(principal: Principal, doing: str) -> ApiClient:
    """The caller's client; ``ApiProblem`` 403 for the admin, who acts for no client."""
    if principal.client is None:
        raise ApiProblem(
            403,
            "forbidden",
            "Forbidden",
            f"the admin token cannot {doing}; use the token of an API client",
        )
    return principal.client
