"""Receipts: bound to the approved action and params, verifiable offline, rotatable."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from sqlalchemy import text

from countersign.core import RequestSpec, Status, params_sha256
from countersign.crypto import SecretBox
from countersign.keyring import load_receipts, refresh_receipts, rotate_receipt_key
from countersign.policy import Policy
from countersign.receipts import verify_receipt
from countersign.service import ApprovalService
from storage import SqlStore
from tests.conftest import ManualClock

ISSUER = "https://countersign.example.com"
BOX = SecretBox("test-server-key-0123456789")
EXPORT = {
    "action": "db.export",
    "resource": "prod/customers",
    "reason": "churn analysis",
    "requested_by": "dana@example.com",
    "params": {"table": "customers", "rows": 120000},
}


async def _approved(service: ApprovalService, edit: dict[str, object] | None = None) -> str:
    client, _, _ = await service.add_client(f"bot{id(edit)}", None)
    request = (await service.create_request(client, RequestSpec(**EXPORT))).request
    await service.cast_vote(request.id, "alice@example.com", "slack", "approve", edited_params=edit)
    result = await service.cast_vote(
        request.id, "bob@example.com", "teams", "approve", edited_params=edit
    )
    assert result.request.status is Status.APPROVED
    stored = await service.get_request(request.id)
    assert stored.receipt is not None
    assert stored.receipt == result.request.receipt
    return stored.receipt


async def test_receipt_binds_to_the_approved_request(
    store: SqlStore, example_policy: Policy, clock: ManualClock
) -> None:
    receipts = await load_receipts(store.engine, BOX, ISSUER, clock=clock)
    service = ApprovalService(store, example_policy, clock, receipts=receipts, sealer=BOX)
    token = await _approved(service)
    claims = verify_receipt(
        token,
        receipts.jwks(),
        issuer=ISSUER,
        action="db.export",
        resource="prod/customers",
        params=EXPORT["params"],
        leeway=10**9,
    )
    assert claims["approvers"] == ["alice@example.com", "bob@example.com"]
    assert claims["params_sha256"] == params_sha256(EXPORT["params"])
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert claims["sub"].startswith("req_")
    with pytest.raises(jwt.InvalidTokenError):
        verify_receipt(
            token,
            receipts.jwks(),
            issuer=ISSUER,
            params={"table": "customers", "rows": 1},
            leeway=10**9,
        )
    with pytest.raises(jwt.InvalidTokenError):
        verify_receipt(token, receipts.jwks(), issuer=ISSUER, action="db.drop", leeway=10**9)
    with pytest.raises(jwt.InvalidTokenError):
        verify_receipt(token, receipts.jwks(), issuer="https://evil.example.com", leeway=10**9)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(jwt.InvalidTokenError):
        verify_receipt(forged, receipts.jwks(), issuer=ISSUER, leeway=10**9)


async def test_receipt_of_an_edit_binds_to_the_edit(
    store: SqlStore, example_policy: Policy, clock: ManualClock
) -> None:
    receipts = await load_receipts(store.engine, BOX, ISSUER, clock=clock)
    service = ApprovalService(store, example_policy, clock, receipts=receipts, sealer=BOX)
    smaller = {"table": "customers", "rows": 500}
    token = await _approved(service, smaller)
    verify_receipt(token, receipts.jwks(), issuer=ISSUER, params=smaller, leeway=10**9)
    with pytest.raises(jwt.InvalidTokenError, match="different params"):
        verify_receipt(token, receipts.jwks(), issuer=ISSUER, params=EXPORT["params"], leeway=10**9)


async def test_receipts_expire(store: SqlStore, example_policy: Policy, clock: ManualClock) -> None:
    clock.current = datetime.now(UTC) - timedelta(hours=1)  # issued an hour ago, for 30 s
    receipts = await load_receipts(
        store.engine, BOX, ISSUER, clock=clock, ttl=timedelta(seconds=30)
    )
    token = await _approved(
        ApprovalService(store, example_policy, clock, receipts=receipts, sealer=BOX)
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 30
    with pytest.raises(jwt.ExpiredSignatureError):
        verify_receipt(token, receipts.jwks(), issuer=ISSUER)


async def test_keys_are_created_once_and_sealed(store: SqlStore, clock: ManualClock) -> None:
    first, second = await asyncio.gather(
        load_receipts(store.engine, BOX, ISSUER, clock=clock),
        load_receipts(store.engine, BOX, ISSUER, clock=clock),
    )
    assert [k["kid"] for k in first.jwks()["keys"]] == [k["kid"] for k in second.jwks()["keys"]]
    assert len(first.jwks()["keys"]) == 1
    async with store.engine.connect() as conn:
        sealed = (await conn.execute(text("SELECT private_key FROM signing_keys"))).scalar_one()
    assert "PRIVATE KEY" not in sealed
    assert "d" not in first.jwks()["keys"][0]  # the JWKS never carries the private part


async def test_rotation_keeps_old_receipts_verifiable_until_they_lapse(
    store: SqlStore, example_policy: Policy, clock: ManualClock
) -> None:
    receipts = await load_receipts(store.engine, BOX, ISSUER, clock=clock)
    service = ApprovalService(store, example_policy, clock, receipts=receipts, sealer=BOX)
    old_token = await _approved(service)
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    new_kid = await rotate_receipt_key(store.engine, BOX, clock.now())
    await refresh_receipts(receipts, store.engine, BOX)
    assert {k["kid"] for k in receipts.jwks()["keys"]} == {old_kid, new_kid}
    new_token = await _approved(service, {"rows": 1})
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    verify_receipt(old_token, receipts.jwks(), issuer=ISSUER, leeway=10**9)
    clock.advance(minutes=21)  # past 15 min receipts + 5 min margin
    assert {k["kid"] for k in receipts.jwks()["keys"]} == {new_kid}
    with pytest.raises(jwt.InvalidTokenError, match="unknown signing key"):
        verify_receipt(old_token, receipts.jwks(), issuer=ISSUER, leeway=10**9)


async def test_the_readme_recipe_verifies_offline(
    store: SqlStore, example_policy: Policy, clock: ManualClock
) -> None:
    receipts = await load_receipts(store.engine, BOX, ISSUER, clock=clock)
    receipt = await _approved(
        ApprovalService(store, example_policy, clock, receipts=receipts, sealer=BOX)
    )
    jwks_json = json.dumps(receipts.jwks())
    params = EXPORT["params"]
    # --- README recipe, verbatim apart from the JWKS source and leeway (the clock is fixed) ---
    import hashlib

    key = jwt.PyJWKSet.from_json(jwks_json)[jwt.get_unverified_header(receipt)["kid"]]
    claims = jwt.decode(receipt, key, algorithms=["EdDSA"], issuer=ISSUER, leeway=10**9)
    digest = hashlib.sha256(
        json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    assert (
        claims["act"] == "db.export"
        and claims["res"] == "prod/customers"
        and claims["params_sha256"] == digest
    )
