"""Hostile bodies and headers on the REST API: a clear 4xx, never a 500, and nothing written."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from countersign.api.inputs import MAX_JSON_DEPTH
from countersign.server import ENGINE
from tests.api.conftest import EXPORT, Api
from tests.api.conftest import api as api  # the fixture
from tests.security._http import request_head, send_raw
from tests.security.conftest import snapshot

JSON = "application/json"


def _with(field: str, raw_value: bytes) -> bytes:
    """EXPORT with ``field`` set to ``raw_value`` exactly as written."""
    rest = json.dumps({k: v for k, v in EXPORT.items() if k != field})
    return b'{"' + field.encode() + b'": ' + raw_value + b", " + rest[1:].encode()


def _nested(depth: int) -> dict[str, Any]:
    node: Any = 1
    for _ in range(depth):
        node = {"n": node}
    return node  # type: ignore[no-any-return]


async def _chunks() -> AsyncIterator[bytes]:
    for _ in range(80):
        yield b" " * 1024


# (raw body, content type, status, problem code)
BODIES: dict[str, tuple[Any, str | None, int, str]] = {
    "over 64 KiB": (b" " * (64 * 1024 + 1), JSON, 413, "payload_too_large"),
    "over 64 KiB, reason": (
        json.dumps({**EXPORT, "reason": "x" * 70_000}).encode(),
        JSON,
        413,
        "payload_too_large",
    ),
    "10,000 nested objects": (
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        JSON,
        400,
        "malformed_json",
    ),
    "10,000 nested arrays": (b"[" * 10_000 + b"]" * 10_000, JSON, 400, "malformed_json"),
    "params nested 900 deep": (
        _with("params", json.dumps(_nested(900)).encode()),
        JSON,
        400,
        "malformed_json",
    ),
    f"params nested past {MAX_JSON_DEPTH}": (
        _with("params", json.dumps(_nested(MAX_JSON_DEPTH)).encode()),
        JSON,
        400,
        "malformed_json",
    ),
    "1e400 (infinite as a float)": (_with("params", b'{"x": 1e400}'), JSON, 400, "malformed_json"),
    "-1e400": (_with("params", b'{"x": -1e400}'), JSON, 400, "malformed_json"),
    "NaN": (_with("params", b'{"x": NaN}'), JSON, 400, "malformed_json"),
    "Infinity": (_with("params", b'{"x": Infinity}'), JSON, 400, "malformed_json"),
    "5,000-digit integer": (
        _with("params", b'{"x": ' + b"9" * 5000 + b"}"),
        JSON,
        400,
        "malformed_json",
    ),
    "huge ttl": (_with("ttl_seconds", b"9" * 100), JSON, 422, "invalid_request"),
    "duplicate top-level key": (
        _with("action", b'"db.read", "action": "db.export"'),
        JSON,
        400,
        "malformed_json",
    ),
    "duplicate key in params": (
        _with("params", b'{"rows": 1, "rows": 999999}'),
        JSON,
        400,
        "malformed_json",
    ),
    "invalid UTF-8": (_with("reason", b'"caf\xe9 \xff"'), JSON, 400, "malformed_json"),
    "UTF-16": (json.dumps(EXPORT).encode("utf-16"), JSON, 400, "malformed_json"),
    "UTF-8 with a BOM": (
        b"\xef\xbb\xbf" + json.dumps(EXPORT).encode(),
        JSON,
        400,
        "malformed_json",
    ),
    "lone surrogate in reason": (_with("reason", b'"x\\ud800y"'), JSON, 400, "malformed_json"),
    "lone surrogate in context": (
        _with("context", b'{"k": "\\udfff"}'),
        JSON,
        400,
        "malformed_json",
    ),
    "lone surrogate as a params key": (
        _with("params", b'{"\\udc00": 1}'),
        JSON,
        400,
        "malformed_json",
    ),
    "lone surrogate in requested_by": (
        _with("requested_by", b'"a\\ud800@example.com"'),
        JSON,
        400,
        "malformed_json",
    ),
    "NUL in reason": (_with("reason", b'"a\\u0000b"'), JSON, 422, "invalid_request"),
    "text/plain": (json.dumps(EXPORT).encode(), "text/plain", 415, "unsupported_media_type"),
    "form-encoded": (
        json.dumps(EXPORT).encode(),
        "application/x-www-form-urlencoded",
        415,
        "unsupported_media_type",
    ),
    "no content type": (json.dumps(EXPORT).encode(), None, 415, "unsupported_media_type"),
    "multipart": (
        json.dumps(EXPORT).encode(),
        "multipart/form-data; boundary=x",
        415,
        "unsupported_media_type",
    ),
    "not JSON at all": (b"action=db.export", JSON, 400, "malformed_json"),
    "a JSON string": (b'"hello"', JSON, 422, "invalid_request"),
}


async def test_hostile_bodies_get_a_clear_4xx_and_write_nothing(api: Api) -> None:
    token = await api.client()
    before = await snapshot(api.app[ENGINE])
    failures: list[str] = []
    for case, (raw, content_type, status, code) in BODIES.items():
        headers = {"Content-Type": content_type} if content_type else {}
        if content_type is None:  # aiohttp would add application/octet-stream: send it raw
            auth = f"Authorization: Bearer {token}".encode()
            got, _, body = await send_raw(api, *request_head("POST", "/v1/requests", [auth], raw))
            reply_code = json.loads(body)["type"].rpartition("/")[2]
        else:
            reply = await api.call("POST", "/v1/requests", token, data=raw, headers=headers)
            got = reply.status
            reply_code = (
                reply.body["type"].rpartition("/")[2] if isinstance(reply.body, dict) else "?"
            )
            if got < 500 and got == status:
                reply.problem(status)
        if (got, reply_code) != (status, code):
            failures.append(f"{case}: {got} {reply_code}, expected {status} {code}")
    assert failures == [], "\n".join(failures)
    assert await snapshot(api.app[ENGINE]) == before
    assert (await api.call("GET", "/healthz")).status == 200


async def test_a_chunked_body_over_64_kib_is_413(api: Api) -> None:
    token = await api.client()
    before = await snapshot(api.app[ENGINE])
    reply = await api.call(
        "POST", "/v1/requests", token, data=_chunks(), headers={"Content-Type": JSON}
    )
    assert reply.problem(413)["type"].endswith("/payload_too_large")
    assert await snapshot(api.app[ENGINE]) == before


async def test_the_limits_leave_ordinary_bodies_alone(api: Api) -> None:
    token = await api.client()
    deep = _nested(MAX_JSON_DEPTH - 2)  # the body and params take a level each
    for body, content_type in (
        ({**EXPORT, "params": deep}, JSON),
        ({**EXPORT, "params": {"x": 1.5e300, "big": 10**40}}, JSON),
        ({**EXPORT, "reason": "café 漢字 👍"}, "application/json; charset=utf-8"),
        (EXPORT, "application/vnd.countersign+json"),
    ):
        raw = json.dumps(body, ensure_ascii=False).encode()
        reply = await api.call(
            "POST", "/v1/requests", token, data=raw, headers={"Content-Type": content_type}
        )
        assert reply.status == 201, (content_type, reply.body)


async def test_a_cancel_body_is_held_to_the_same_rules(api: Api) -> None:
    token = await api.client()
    request_id = await api.create(token)
    before = await snapshot(api.app[ENGINE])
    for raw, content_type, status in (
        (b'{"reason": "a", "reason": "b"}', JSON, 400),
        (b'{"reason": "x"}', "text/plain", 415),
        (b'{"reason": "\\ud800"}', JSON, 400),
    ):
        reply = await api.call(
            "POST",
            f"/v1/requests/{request_id}/cancel",
            token,
            data=raw,
            headers={"Content-Type": content_type},
        )
        reply.problem(status)
    assert await snapshot(api.app[ENGINE]) == before


# -- headers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b"Idempotency-Key: a\rInjected: yes",
        b"Idempotency-Key: a\nInjected: yes",
        b"Idempotency-Key: a\r\n Injected: yes",  # obsolete line folding
        b"Idempotency-Key: a\x00b",
    ],
    ids=["bare CR", "bare LF", "folded line", "NUL"],
)
async def test_cr_lf_and_nul_in_a_header_are_refused_by_the_parser(api: Api, header: bytes) -> None:
    token = await api.client()
    before = await snapshot(api.app[ENGINE])
    body = json.dumps(EXPORT).encode()
    headers = [f"Authorization: Bearer {token}".encode(), b"Content-Type: application/json", header]
    status, head, _ = await send_raw(api, *request_head("POST", "/v1/requests", headers, body))
    assert status == 400
    assert b"Injected" not in head
    assert await snapshot(api.app[ENGINE]) == before


@pytest.mark.parametrize(
    ("value", "status"),
    [(b"\xff\xfe-not-utf-8", 422), (b"key\x7fdel", 400), (b"%0d%0aInjected:%20yes", 201)],
    ids=["not UTF-8", "DEL", "percent-encoded CRLF"],
)
async def test_idempotency_keys_are_checked_and_never_reflected(
    api: Api, value: bytes, status: int
) -> None:
    token = await api.client()
    before = await snapshot(api.app[ENGINE])
    body = json.dumps(EXPORT).encode()
    headers = [
        f"Authorization: Bearer {token}".encode(),
        b"Content-Type: application/json",
        b"Idempotency-Key: " + value,
    ]
    got, head, _ = await send_raw(api, *request_head("POST", "/v1/requests", headers, body))
    assert got == status
    assert b"Injected" not in head
    assert value not in head
    if status != 201:
        assert await snapshot(api.app[ENGINE]) == before


async def test_location_is_built_from_the_public_url_and_the_id_only(api: Api) -> None:
    token = await api.client()
    reply = await api.call(
        "POST",
        "/v1/requests",
        token,
        json={**EXPORT, "resource": "prod/x\r\nSet-Cookie: a=b", "reason": "r\r\nX: y"},
        headers={"Idempotency-Key": "k%0d%0aX-Injected:1", "Host": "evil.example"},
    )
    assert reply.status == 201, reply.body
    location = reply.headers["Location"]
    assert re.fullmatch(r"https://countersign\.example\.com/v1/requests/req_[0-9A-Z]{26}", location)
    assert "Set-Cookie" not in reply.headers
    assert "X-Injected" not in reply.headers


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/\r\nX-Injected: 1",
        "https://exa\nmple.com/hook",
        "https://example.com/\thook",
        "https://example.com/a b",
        "https://example.com:443\n/",
        "https://example.com/\x00",
        "https://example.com/\x85",
    ],
    ids=["CRLF header", "LF in host", "tab", "space", "LF after port", "NUL", "NEL"],
)
async def test_callback_urls_with_control_characters_are_refused(api: Api, url: str) -> None:
    """``urlsplit`` drops tabs and newlines: the URL it checked would not be the one sent."""
    token = await api.client()
    before = await snapshot(api.app[ENGINE])
    reply = await api.call("POST", "/v1/requests", token, json={**EXPORT, "callback_url": url})
    assert reply.fields() == {"callback_url"}
    assert await snapshot(api.app[ENGINE]) == before
