"""``verify_receipt`` for executors: genuine receipts pass; tampered, expired, wrong ones do not."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from countersign.agent import Client, JwksCache, ReceiptInvalid, verify_receipt
from countersign.agent import receipts as agent_receipts
from countersign.core.digest import params_sha256
from tests.agent.conftest import ISSUER
from tests.api.conftest import Api

PARAMS = {"service": "api", "checks": ["health", "latency"]}


def _key(kid: str) -> tuple[Ed25519PrivateKey, dict[str, Any]]:
    private = Ed25519PrivateKey.generate()
    jwk = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "alg": "EdDSA", "use": "sig"})
    return private, jwk


def _receipt(private: Ed25519PrivateKey, kid: str, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "req_01TEST",
        "act": "deploy.status",
        "res": "prod/api",
        "params_sha256": params_sha256(PARAMS),
        "approvers": ["alice@example.com"],
        "iat": now,
        "exp": now + 900,
        "jti": "01TEST",
        **overrides,
    }
    return jwt.encode(claims, private, algorithm="EdDSA", headers={"kid": kid})


@pytest.fixture
def signer() -> tuple[Ed25519PrivateKey, dict[str, Any]]:
    """A signing key and its JWK, as the server would publish it."""
    return _key("key_test")


def test_a_genuine_receipt_passes(signer: tuple[Ed25519PrivateKey, dict[str, Any]]) -> None:
    private, jwk = signer
    token = _receipt(private, "key_test")
    for keys in ({"keys": [jwk]}, [jwk]):
        claims = verify_receipt(
            token,
            keys,
            "deploy.status",
            # Key order and spacing do not matter: the digest is of canonical JSON.
            {"checks": ["health", "latency"], "service": "api"},
            issuer=ISSUER,
            expected_resource="prod/api",
            expected_request_id="req_01TEST",
        )
        assert claims["approvers"] == ["alice@example.com"]


def _tamper(token: str, **changes: Any) -> str:
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    raw = json.dumps(claims).encode()
    return ".".join([head, base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), signature])


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("tampered", "Signature verification failed"),
        ("expired", "expired"),
        ("wrong params", "different params"),
        ("wrong action", "for action 'deploy.status'"),
        ("wrong resource", "for resource 'prod/api'"),
        ("wrong request", "for request 'req_01TEST'"),
        ("wrong key", "Signature verification failed"),
        ("unknown key", "unknown signing key"),
        ("wrong issuer", "issuer"),
        ("not a jwt", "not a JWT"),
        ("none", "no receipt"),
        ("alg none", "alg value is not allowed"),
    ],
)
def test_bad_receipts_are_refused(
    signer: tuple[Ed25519PrivateKey, dict[str, Any]], case: str, match: str
) -> None:
    private, jwk = signer
    token = _receipt(private, "key_test")
    keys: Any = {"keys": [jwk]}
    action, params = "deploy.status", dict(PARAMS)
    extra: dict[str, Any] = {}
    if case == "tampered":
        token = _tamper(token, params_sha256=params_sha256({"service": "db"}))
    elif case == "expired":
        token = _receipt(private, "key_test", iat=int(time.time()) - 1000, exp=int(time.time()) - 5)
    elif case == "wrong params":
        params["service"] = "db"
    elif case == "wrong action":
        action = "deploy.release"
    elif case == "wrong resource":
        extra["expected_resource"] = "prod/db"
    elif case == "wrong request":
        extra["expected_request_id"] = "req_02OTHER"
    elif case == "wrong key":
        keys = {"keys": [_key("key_test")[1]]}  # the same kid, other key material
    elif case == "unknown key":
        keys = {"keys": [_key("key_other")[1]]}
    elif case == "wrong issuer":
        extra["issuer"] = "https://evil.example"
    elif case == "not a jwt":
        token = "not-a-token"
    elif case == "none":
        token = ""
    elif case == "alg none":
        claims = jwt.decode(token, options={"verify_signature": False})
        token = jwt.encode(claims, None, "none", headers={"kid": "key_test"})
    with pytest.raises(ReceiptInvalid, match=match):
        verify_receipt(token, keys, action, params, **extra)
    assert issubclass(ReceiptInvalid, jwt.InvalidTokenError)


def test_expiry_leeway(signer: tuple[Ed25519PrivateKey, dict[str, Any]]) -> None:
    private, jwk = signer
    token = _receipt(private, "key_test", exp=int(time.time()) - 5)
    claims = verify_receipt(token, [jwk], "deploy.status", PARAMS, leeway=60)
    assert claims["sub"] == "req_01TEST"


async def test_server_receipts_verify_with_the_jwks_url(api: Api) -> None:
    client = Client()
    decided = await asyncio.to_thread(client.request, "deploy.status", "prod/api", "look", PARAMS)
    assert decided.approved and decided.receipt
    claims = await asyncio.to_thread(
        verify_receipt,
        decided.receipt,
        client.jwks_url,
        "deploy.status",
        PARAMS,
        issuer=ISSUER,
        expected_resource="prod/api",
        expected_request_id=decided.id,
    )
    assert claims["approvers"] == ["policy:status-reads"]
    with pytest.raises(ReceiptInvalid, match="different params"):
        await asyncio.to_thread(
            verify_receipt, decided.receipt, client.jwks_url, "deploy.status", {"service": "db"}
        )


async def test_jwks_is_cached_and_refetched_for_a_new_key(
    signer: tuple[Ed25519PrivateKey, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    private, jwk = signer
    published: list[dict[str, Any]] = [jwk]
    hits: list[int] = []

    async def jwks(_request: web.Request) -> web.Response:
        hits.append(1)
        return web.json_response({"keys": published})

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        url = str(server.make_url("/.well-known/jwks.json"))
        cache = JwksCache()

        def check(token: str) -> dict[str, Any]:
            return verify_receipt(token, url, "deploy.status", PARAMS, cache=cache)

        await asyncio.to_thread(check, _receipt(private, "key_test"))
        await asyncio.to_thread(check, _receipt(private, "key_test"))
        assert len(hits) == 1  # the second check used the cached keys
        rotated, rotated_jwk = _key("key_new")
        published.append(rotated_jwk)
        monkeypatch.setattr(agent_receipts, "REFRESH_AFTER", 0.0)
        await asyncio.to_thread(check, _receipt(rotated, "key_new"))
        assert len(hits) == 2  # an unknown kid fetched the keys again
        with pytest.raises(ReceiptInvalid, match="unknown signing key"):
            await asyncio.to_thread(check, _receipt(_key("key_forged")[0], "key_forged"))
    finally:
        await server.close()


def test_jwks_url_must_be_http() -> None:
    with pytest.raises(ReceiptInvalid, match="http"):
        verify_receipt(_receipt(_key("k")[0], "k"), "file:///etc/passwd", "a", {})
