"""REST API bearer tokens: only a live client's token or the admin token gets in.

Every refusal is 401 (with ``WWW-Authenticate``), never echoes the token, and
writes nothing. Comparisons are constant-time: the admin token through
``hmac.compare_digest``, client tokens as a lookup of their SHA-256.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import inspect
import json
import textwrap
from typing import Any

import pytest
from sqlalchemy import text

from countersign.api import auth
from countersign.server import ENGINE
from countersign.service import ApprovalService
from tests.api.conftest import ADMIN_TOKEN, EXPORT, Api
from tests.api.conftest import api as api  # the fixture
from tests.security._http import request_head, send_raw
from tests.security.conftest import snapshot


def _bad_authorizations(token: str) -> dict[str, str | None]:
    return {
        "no header": None,
        "empty header": "",
        "Bearer and nothing": "Bearer",
        "Bearer and spaces": "Bearer    ",
        "wrong token": "Bearer cs_" + "A" * 43,
        "token with a byte missing": f"Bearer {token[:-1]}",
        "token with a byte added": f"Bearer {token}x",
        "token upper-cased": f"Bearer {token.upper()}",
        "two tokens": f"Bearer {token} {token}",
        "Basic scheme": f"Basic {token}",
        "no scheme": token,
        "token's SHA-256 (as stored)": f"Bearer {hashlib.sha256(token.encode()).hexdigest()}",
        "admin token truncated": f"Bearer {ADMIN_TOKEN[:-1]}",
        "admin token extended": f"Bearer {ADMIN_TOKEN}0",
    }


async def _everything_refused(api: Api, authorization: str | None, request_id: str) -> list[str]:
    headers = {} if authorization is None else {"Authorization": authorization}
    wrong: list[str] = []
    for method, path, body in (
        ("POST", "/v1/requests", EXPORT),
        ("GET", "/v1/requests", None),
        ("GET", f"/v1/requests/{request_id}", None),
        ("GET", f"/v1/requests/{request_id}/wait?timeout=0", None),
        ("POST", f"/v1/requests/{request_id}/cancel", {}),
    ):
        reply = await api.call(method, path, headers=headers, json=body)
        if reply.status != 401:
            wrong.append(f"{method} {path}: {reply.status}")
            continue
        reply.problem(401)
        assert reply.headers["WWW-Authenticate"].startswith('Bearer realm="countersign"')
        shown = json.dumps(reply.body) + str(dict(reply.headers))
        if authorization and len(authorization) > 12:
            assert authorization.split()[-1] not in shown, "the token was echoed"
    return wrong


async def test_wrong_empty_and_malformed_tokens_are_401_and_write_nothing(api: Api) -> None:
    token = await api.client()
    request_id = await api.create(token)
    before = await snapshot(api.app[ENGINE])
    failures: list[str] = []
    for case, authorization in _bad_authorizations(token).items():
        failures += [
            f"{case}: {w}" for w in await _everything_refused(api, authorization, request_id)
        ]
    assert failures == [], "\n".join(failures)
    assert await snapshot(api.app[ENGINE]) == before


@pytest.mark.parametrize(
    "raw",
    [b"Bearer \xff\xfe", b"Bearer caf\xc3\xa9", b"Bearer cs_\x80\x81"],
    ids=["not UTF-8", "non-ASCII UTF-8", "high bytes"],
)
async def test_tokens_that_are_not_ascii_are_401_not_500(api: Api, raw: bytes) -> None:
    await api.client()
    before = await snapshot(api.app[ENGINE])
    status, _, body = await send_raw(
        api, *request_head("GET", "/v1/requests", [b"Authorization: " + raw])
    )
    assert status == 401, body
    assert await snapshot(api.app[ENGINE]) == before


async def test_a_revoked_token_is_refused_at_once(api: Api) -> None:
    token = await api.client()
    request_id = await api.create(token)
    assert (await api.call("GET", f"/v1/requests/{request_id}", token)).status == 200
    await api.service.revoke_client("copilot")
    before = await snapshot(api.app[ENGINE])
    assert await _everything_refused(api, f"Bearer {token}", request_id) == []
    assert await snapshot(api.app[ENGINE]) == before
    status = (await api.service.get_request(request_id)).status
    assert status.value == "pending", "a revoked client cancelled its request"


async def test_the_admin_token_reads_but_creates_and_cancels_nothing(api: Api) -> None:
    token = await api.client()
    request_id = await api.create(token)
    assert (await api.call("GET", f"/v1/requests/{request_id}", ADMIN_TOKEN)).status == 200
    assert (await api.call("GET", "/v1/requests", ADMIN_TOKEN)).status == 200
    before = await snapshot(api.app[ENGINE])
    reply = await api.call("POST", "/v1/requests", ADMIN_TOKEN, json=EXPORT)
    assert reply.problem(403)["type"].endswith("/forbidden")
    reply = await api.call("POST", f"/v1/requests/{request_id}/cancel", ADMIN_TOKEN, json={})
    assert reply.problem(403)["type"].endswith("/forbidden")
    assert await snapshot(api.app[ENGINE]) == before


async def test_another_clients_token_sees_nothing_of_ours(api: Api) -> None:
    ours = await api.client("ours")
    theirs = await api.client("theirs")
    request_id = await api.create(ours)
    before = await snapshot(api.app[ENGINE])
    assert (await api.call("GET", f"/v1/requests/{request_id}", theirs)).status == 404
    reply = await api.call("POST", f"/v1/requests/{request_id}/cancel", theirs, json={})
    assert reply.status == 404
    assert (await api.call("GET", "/v1/requests", theirs)).body["items"] == []
    assert await snapshot(api.app[ENGINE]) == before


async def test_the_admin_check_goes_through_compare_digest(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Any, Any]] = []
    original = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((a, b))
        return original(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    await api.client()
    assert (await api.call("GET", "/v1/requests", "not-the-admin-token")).status == 401
    assert (await api.call("GET", "/v1/requests", ADMIN_TOKEN)).status == 200
    assert len(seen) == 2
    assert seen[1] == (ADMIN_TOKEN.encode(), ADMIN_TOKEN.encode())


async def test_client_tokens_are_stored_and_found_only_by_their_sha256(api: Api) -> None:
    token = await api.client()
    async with api.app[ENGINE].connect() as conn:
        rows = (await conn.execute(text("SELECT * FROM api_clients"))).mappings().all()
    assert len(rows) == 1
    assert rows[0]["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in json.dumps([{k: str(v) for k, v in row.items()} for row in rows])


def _compares(source: str) -> list[str]:
    """Every ``==`` / ``!=`` in ``source`` whose operands mention a token."""
    found = []
    for node in ast.walk(ast.parse(textwrap.dedent(source))):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
        ):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            attrs = {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            if any("token" in name for name in names | attrs):
                found.append(ast.unparse(node))
    return found


def test_no_token_is_compared_with_a_plain_equality() -> None:
    """Source check: the admin token meets ``hmac.compare_digest``; client tokens are hashed
    and looked up (an index lookup on a SHA-256 leaks nothing useful about the token)."""
    admin = inspect.getsource(auth.authenticate)
    assert "hmac.compare_digest(" in admin
    lookup = inspect.getsource(ApprovalService.authenticate)
    assert "client_by_token(token_sha256(token))" in lookup
    for source in (inspect.getsource(auth), lookup):
        assert _compares(source) == []
