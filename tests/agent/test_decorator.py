"""``@require_approval`` against a real server, votes cast as Slack or Teams would cast them."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from countersign.agent import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalTimeout,
    AsyncClient,
    Client,
    Decision,
    ReceiptInvalid,
    require_approval,
)
from countersign.core.digest import params_sha256
from countersign.ports import HistoryQuery
from tests.agent.conftest import ISSUER, pending_id
from tests.api.conftest import Api


def _deployer(calls: list[tuple[Any, ...]], **options: Any) -> Any:
    @require_approval(
        action="deploy.release",
        resource=lambda service, **_: f"prod/{service}",
        reason=lambda service, version, **_: f"ship {service} {version}",
        **options,
    )
    def deploy(service: str, version: str, canary: bool = False) -> str:
        calls.append((service, version, canary))
        return f"deployed {service}@{version}"

    return deploy


def _async_deployer(calls: list[tuple[Any, ...]], **options: Any) -> Any:
    @require_approval(
        action="deploy.release",
        resource=lambda service, **_: f"prod/{service}",
        reason="ship it",
        **options,
    )
    async def deploy(service: str, version: str, canary: bool = False) -> str:
        calls.append((service, version, canary))
        return f"deployed {service}@{version}"

    return deploy


async def _vote(api: Api, choice: str, **extra: Any) -> str:
    request_id = await pending_id(api)
    await api.until_waiting()
    await api.service.cast_vote(request_id, "alice@example.com", "slack", choice, **extra)
    return request_id


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_approve_runs_once_with_the_arguments(api: Api, kind: str) -> None:
    calls: list[tuple[Any, ...]] = []
    if kind == "sync":
        task = asyncio.create_task(asyncio.to_thread(_deployer(calls), "api", "1.2.3"))
    else:
        task = asyncio.create_task(_async_deployer(calls)("api", version="1.2.3"))
    request_id = await _vote(api, "approve")
    assert await task == "deployed api@1.2.3"
    assert calls == [("api", "1.2.3", False)]
    stored = await api.service.get_request(request_id)
    assert stored.action == "deploy.release"
    assert stored.resource == "prod/api"
    assert stored.params == {"service": "api", "version": "1.2.3", "canary": False}


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_edit_runs_with_the_edited_arguments(api: Api, kind: str) -> None:
    calls: list[tuple[Any, ...]] = []
    if kind == "sync":
        task = asyncio.create_task(asyncio.to_thread(_deployer(calls), "api", "1.2.3"))
    else:
        task = asyncio.create_task(_async_deployer(calls)("api", "1.2.3"))
    edit = {"service": "api", "version": "1.2.2", "canary": True}
    await _vote(api, "approve", edited_params=edit)
    assert await task == "deployed api@1.2.2"
    assert calls == [("api", "1.2.2", True)]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_deny_raises_with_the_reasons(api: Api, kind: str) -> None:
    calls: list[tuple[Any, ...]] = []
    if kind == "sync":
        task = asyncio.create_task(asyncio.to_thread(_deployer(calls), "api", "1.2.3"))
    else:
        task = asyncio.create_task(_async_deployer(calls)("api", "1.2.3"))
    request_id = await _vote(api, "deny", comment="change freeze until Monday")
    with pytest.raises(ApprovalDenied) as denied:
        await task
    assert denied.value.reasons == ("change freeze until Monday",)
    assert denied.value.denied_by == ("alice@example.com",)
    assert denied.value.decision is not None and denied.value.decision.id == request_id
    assert "change freeze until Monday" in str(denied.value)
    assert calls == []


async def test_deny_can_return_a_message_instead(api: Api) -> None:
    calls: list[tuple[Any, ...]] = []
    task = asyncio.create_task(_async_deployer(calls, on_denied="message")("api", "1.2.3"))
    request_id = await _vote(api, "deny", comment="not during the incident")
    message = await task
    assert message == (
        f"Not run: {request_id} denied by alice@example.com: not during the incident"
    )
    assert calls == []


async def test_policy_decisions_need_no_vote(api: Api) -> None:
    @require_approval(action="deploy.status", resource="prod/api", reason="look")
    def status(service: str) -> str:
        return f"{service} is up"

    @require_approval(action="deploy.drop", resource="prod/api", reason="clean up")
    async def drop(service: str) -> str:
        raise AssertionError("must not run")

    assert await asyncio.to_thread(status, "api") == "api is up"
    with pytest.raises(ApprovalDenied) as denied:
        await drop("api")
    assert denied.value.denied_by == ("policy:no-drops",)


async def test_expiry_raises_its_own_error(api: Api) -> None:
    calls: list[tuple[Any, ...]] = []
    with pytest.raises(ApprovalExpired):
        await _async_deployer(calls, ttl_seconds=1, timeout=10)("api", "1.2.3")
    assert calls == []


async def test_timeout_raises_and_withdraws_the_request(api: Api) -> None:
    calls: list[tuple[Any, ...]] = []
    with pytest.raises(ApprovalTimeout) as timed_out:
        await asyncio.to_thread(_deployer(calls, timeout=1), "api", "1.2.3")
    assert calls == []
    decision = timed_out.value.decision
    assert decision is not None
    stored = await api.service.get_request(decision.id)
    assert stored.status.value == "cancelled"
    assert stored.decision_reason == "timed out waiting for approval"


async def test_unjsonable_arguments_are_refused_before_asking(api: Api) -> None:
    calls: list[tuple[Any, ...]] = []
    with pytest.raises(TypeError, match="arguments must be JSON"):
        await _async_deployer(calls)("api", object())
    assert await api.service.history(HistoryQuery(limit=1)) == []


async def test_methods_leave_self_out_of_params(api: Api) -> None:
    class Deployer:
        def __init__(self) -> None:
            self.done: list[str] = []

        @require_approval(action="deploy.status.check", resource="prod/api", reason="look")
        def check(self, service: str) -> str:
            self.done.append(service)
            return "ok"

    deployer = Deployer()
    assert await asyncio.to_thread(deployer.check, "api") == "ok"
    assert deployer.done == ["api"]
    request_id = await pending_id(api)
    assert (await api.service.get_request(request_id)).params == {"service": "api"}


# Receipts that must be refused: the function never runs.


class _Tampering(Client):
    """A client whose server (or a man in the middle) lies about the approval."""

    def __init__(self, change: Any) -> None:
        super().__init__()
        self.change = change

    def wait(self, request_id: str, timeout: float) -> Decision:
        return dataclasses.replace(super().wait(request_id, timeout), **self.change())


def _forged(claims: dict[str, Any], kid: str) -> str:
    return jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid})


async def test_forged_swapped_or_mismatched_receipts_are_refused(api: Api) -> None:
    client = Client()
    # A genuine receipt, but for another approved request (another action and params).
    other = await asyncio.to_thread(client.request, "deploy.status", "prod/api", "r", {"x": 1})
    assert other.approved and other.receipt
    kid = jwt.get_unverified_header(other.receipt)["kid"]
    genuine_claims = jwt.decode(other.receipt, options={"verify_signature": False})

    def forged_for_this() -> dict[str, Any]:
        claims = {
            **genuine_claims,
            "act": "deploy.release",
            "res": "prod/api",
            "params_sha256": params_sha256({"service": "api", "version": "1.2.3", "canary": False}),
        }
        return {"receipt": _forged(claims, kid)}

    lies = {
        "swapped": lambda: {"receipt": other.receipt},
        "forged": forged_for_this,
        "missing": lambda: {"receipt": None},
        "params": lambda: {
            "edited_params": {"service": "api", "version": "6.6.6", "canary": False}
        },
    }
    for count, (name, lie) in enumerate(lies.items(), start=2):
        calls: list[tuple[Any, ...]] = []
        deploy = _deployer(calls, client=_Tampering(lie))
        task = asyncio.create_task(asyncio.to_thread(deploy, "api", "1.2.3"))
        request_id = await pending_id(api, count)
        await api.until_waiting()
        await api.service.cast_vote(request_id, "alice@example.com", "slack", "approve")
        with pytest.raises(ReceiptInvalid):
            await task
        assert calls == [], name


async def test_pinned_issuer_is_checked(api: Api) -> None:
    ran: list[str] = []

    @require_approval(
        action="deploy.status", resource="prod/api", reason="r", issuer="https://evil.example"
    )
    async def wrong(service: str) -> None:
        ran.append(service)

    @require_approval(action="deploy.status", resource="prod/api", reason="r", issuer=ISSUER)
    async def right(service: str) -> None:
        ran.append(service)

    with pytest.raises(ReceiptInvalid):
        await wrong("api")
    await right("api")
    assert ran == ["api"]


async def test_client_kind_must_match_the_function(api: Api) -> None:
    with pytest.raises(TypeError, match="pass an AsyncClient"):

        @require_approval(action="deploy.x", resource="r", reason="r", client=Client())
        async def one() -> None: ...

    with pytest.raises(TypeError, match="pass a Client"):

        @require_approval(action="deploy.x", resource="r", reason="r", client=AsyncClient())
        def two() -> None: ...
