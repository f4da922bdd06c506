"""Receipt checks for executors: fetch and cache a JWKS, verify a receipt against the action.

An executor that is not the requester gets a receipt with the work and runs it
only if ``verify_receipt`` accepts it for exactly the action and params it is
about to execute.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import jwt

from countersign.agent.types import ReceiptInvalid
from countersign.receipts import verify_receipt as _verify

__all__ = ["JwksCache", "fetch_jwks", "verify_receipt"]

JWKS_TTL = 300.0  # keys change only on rotation, which keeps old keys published
REFRESH_AFTER = 1.0  # an unknown kid (a fresh rotation) refetches, at most once a second

Keys = str | Mapping[str, Any] | Sequence[Mapping[str, Any]]


class JwksCache:
    """JWKS documents by URL, refreshed after ``ttl`` seconds or on an unknown key id."""

    def __init__(self, ttl: float = JWKS_TTL, timeout: float = 10.0) -> None:
        self.ttl = ttl
        self.timeout = timeout
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, dict[str, Any]]] = {}

    def get(self, url: str, *, kid: str | None = None) -> dict[str, Any]:
        """The JWKS at ``url``; refetched when stale or when it lacks ``kid`` (rotation)."""
        with self._lock:
            entry = self._entries.get(url)
        now = time.monotonic()
        if entry is not None:
            fetched_at, jwks = entry
            fresh = now - fetched_at < self.ttl
            knows_kid = kid is None or any(k.get("kid") == kid for k in jwks.get("keys", []))
            if fresh and (knows_kid or now - fetched_at < REFRESH_AFTER):
                return jwks
        jwks = fetch_jwks(url, timeout=self.timeout)
        self.put(url, jwks)
        return jwks

    def put(self, url: str, jwks: Mapping[str, Any]) -> None:
        """Remember ``jwks`` as fetched from ``url`` now."""
        with self._lock:
            self._entries[url] = (time.monotonic(), dict(jwks))

    def clear(self) -> None:
        """Forget every cached document."""
        with self._lock:
            self._entries.clear()


DEFAULT_CACHE = JwksCache()


def fetch_jwks(url: str, *, timeout: float = 10.0) -> dict[str, Any]:
    """The JWKS document at ``url`` (no authentication: it is public)."""
    if not url.startswith(("http://", "https://")):
        raise ReceiptInvalid(f"JWKS URL must be http(s): {url!r}")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            body = json.loads(resp.read())
    except (OSError, ValueError) as exc:
        raise ReceiptInvalid(f"cannot fetch the JWKS at {url}: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        raise ReceiptInvalid(f"{url} is not a JWKS document")
    return body


def _as_jwks(keys: Keys, kid: str | None, cache: JwksCache) -> Mapping[str, Any]:
    if isinstance(keys, str):
        return cache.get(keys, kid=kid)
    if isinstance(keys, Mapping):
        return keys
    return {"keys": list(keys)}


def verify_receipt(
    token: str,
    jwks_url_or_keys: Keys,
    expected_action: str,
    expected_params: Mapping[str, Any],
    *,
    issuer: str | None = None,
    expected_resource: str | None = None,
    expected_request_id: str | None = None,
    leeway: int = 0,
    cache: JwksCache | None = None,
) -> dict[str, Any]:
    """The receipt's claims if it is genuine, unexpired and for exactly this action and params.

    ``jwks_url_or_keys`` is the server's ``/.well-known/jwks.json`` URL (fetched
    and cached), a JWKS document, or a list of JWKs. ``issuer`` pins ``iss`` (the
    server's public URL); without it the trusted keys alone vouch for the
    receipt. Raises ``ReceiptInvalid`` (a ``jwt.InvalidTokenError``) otherwise.
    """
    if not token:
        raise ReceiptInvalid("no receipt")
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise ReceiptInvalid(f"receipt is not a JWT: {exc}") from exc
    kid = header.get("kid")
    jwks = _as_jwks(jwks_url_or_keys, kid if isinstance(kid, str) else None, cache or DEFAULT_CACHE)
    # No pinned issuer: accept the token's own, since only the trusted keys can have signed it.
    expected_issuer = issuer if issuer is not None else str(unverified.get("iss", ""))
    try:
        claims = _verify(
            token,
            jwks,
            issuer=expected_issuer,
            action=expected_action,
            resource=expected_resource,
            params=expected_params,
            leeway=leeway,
        )
    except jwt.InvalidTokenError as exc:
        raise ReceiptInvalid(f"receipt refused: {exc}") from exc
    except (ValueError, TypeError) as exc:  # a malformed JWK in the document
        raise ReceiptInvalid(f"receipt refused: unusable key: {exc}") from exc
    if expected_request_id is not None and claims.get("sub") != expected_request_id:
        raise ReceiptInvalid(f"receipt is for request {claims.get('sub')!r}")
    return claims
