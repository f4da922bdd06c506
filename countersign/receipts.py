"""Approval receipts: short-lived EdDSA JWTs bound to the exact approved action and params.

An executing system verifies a receipt offline with the public keys from
``/.well-known/jwks.json`` (or ``verify_receipt`` here) and runs the action only
if ``act``, ``res`` and ``params_sha256`` match what it is about to do.

Keys: Ed25519, generated on first start, stored with the private half sealed
by the server key, rotated with ``countersign keys rotate``; a retired key stays
in the JWKS until every receipt it signed has expired.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from ulid import ULID

from countersign.core.digest import params_sha256
from countersign.core.model import ApprovalRequest, Status
from countersign.ports import Clock, Sealer, SystemClock

__all__ = [
    "RECEIPTS",
    "RECEIPT_TTL",
    "Receipts",
    "SigningKey",
    "generate_key",
    "verify_receipt",
]

RECEIPT_TTL = timedelta(minutes=15)
ALGORITHM = "EdDSA"


@dataclass(frozen=True)
class SigningKey:
    """A key this process can publish and, unless retired, sign with."""

    kid: str
    public_jwk: Mapping[str, Any]
    private: Ed25519PrivateKey | None
    retired_at: datetime | None = None
    publish_until: datetime | None = None


def generate_key(sealer: Sealer) -> tuple[str, str, str]:
    """A new Ed25519 key: (kid, public JWK JSON, sealed private key PEM)."""
    private = Ed25519PrivateKey.generate()
    kid = f"key_{ULID()}"
    jwk = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    return kid, json.dumps(jwk, sort_keys=True), sealer.seal(pem)


def open_key(
    kid: str,
    public_jwk: str,
    sealed_private: str,
    sealer: Sealer,
    retired_at: datetime | None = None,
    publish_until: datetime | None = None,
) -> SigningKey:
    """A stored key made usable: the private half opened only while it may still sign."""
    private = None
    if retired_at is None:
        loaded = serialization.load_pem_private_key(sealer.open(sealed_private).encode(), None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"signing key {kid} is not Ed25519")
        private = loaded
    return SigningKey(kid, json.loads(public_jwk), private, retired_at, publish_until)


class Receipts:
    """Issues receipts with the newest active key and publishes the JWKS."""

    def __init__(
        self,
        issuer: str,
        keys: Sequence[SigningKey],
        ttl: timedelta = RECEIPT_TTL,
        clock: Clock | None = None,
    ) -> None:
        self.issuer = issuer
        self.ttl = ttl
        self.clock: Clock = clock or SystemClock()
        self.keys: tuple[SigningKey, ...] = ()
        self.replace_keys(keys)

    def replace_keys(self, keys: Sequence[SigningKey]) -> None:
        """Use a fresh set of keys (after a rotation, possibly by another process)."""
        if not any(k.private is not None for k in keys):
            raise ValueError("no active signing key")
        self.keys = tuple(keys)

    def issue(self, request: ApprovalRequest) -> str:
        """The receipt of an approved request."""
        if request.status is not Status.APPROVED or request.approved_params_sha256 is None:
            raise ValueError(f"request {request.id} is not approved")
        kid, private = next((k.kid, k.private) for k in reversed(self.keys) if k.private)
        assert private is not None
        now = self.clock.now()
        claims = {
            "iss": self.issuer,
            "sub": request.id,
            "act": request.action,
            "res": request.resource,
            "params_sha256": request.approved_params_sha256,
            "approvers": list(request.decided_by),
            "iat": int(now.timestamp()),
            "exp": int((now + self.ttl).timestamp()),
            "jti": str(ULID()),
        }
        return jwt.encode(claims, private, algorithm=ALGORITHM, headers={"kid": kid})

    def jwks(self) -> dict[str, Any]:
        """The public keys receipts can be checked with (retired ones until they lapse)."""
        now = self.clock.now()
        return {
            "keys": [
                dict(k.public_jwk)
                for k in self.keys
                if k.publish_until is None or k.publish_until > now
            ]
        }


def verify_receipt(
    token: str,
    jwks: Mapping[str, Any],
    *,
    issuer: str,
    action: str | None = None,
    resource: str | None = None,
    params: Mapping[str, Any] | None = None,
    leeway: int = 0,
) -> dict[str, Any]:
    """The receipt's claims if it is valid and matches; ``jwt.InvalidTokenError`` if not.

    Checks the signature against ``jwks``, ``iss``, ``exp``, and, when given,
    that the receipt is for this ``action``, ``resource`` and exact ``params``.
    """
    kid = jwt.get_unverified_header(token).get("kid")
    jwk = next((k for k in jwks.get("keys", []) if k.get("kid") == kid), None)
    if jwk is None:
        raise jwt.InvalidTokenError(f"unknown signing key {kid!r}")
    key = OKPAlgorithm.from_jwk(json.dumps(jwk))
    claims: dict[str, Any] = jwt.decode(
        token,
        key,  # type: ignore[arg-type]
        algorithms=[ALGORITHM],
        issuer=issuer,
        leeway=leeway,
        options={"require": ["exp", "iat", "iss", "sub", "params_sha256"]},
    )
    if action is not None and claims.get("act") != action:
        raise jwt.InvalidTokenError(f"receipt is for action {claims.get('act')!r}")
    if resource is not None and claims.get("res") != resource:
        raise jwt.InvalidTokenError(f"receipt is for resource {claims.get('res')!r}")
    if params is not None and claims.get("params_sha256") != params_sha256(params):
        raise jwt.InvalidTokenError("receipt was issued for different params")
    return claims


RECEIPTS = web.AppKey("receipts", Receipts)
