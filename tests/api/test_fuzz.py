"""Hypothesis against a live server: no 5xx, nothing invalid accepted, nothing written when refused."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from countersign.core import InvalidRequest, RequestSpec, validate_spec
from countersign.policy import EXAMPLE_POLICY_PATH, load_policy
from countersign.server import ENGINE, SERVICE, create_app
from tests.api.conftest import settings_for


@dataclass
class Live:
    """A server running on its own event loop in a thread, for synchronous Hypothesis tests."""

    base: str
    token: str
    loop: asyncio.AbstractEventLoop
    app: Any

    def counts(self) -> tuple[int, int]:
        async def read() -> tuple[int, int]:
            async with self.app[ENGINE].connect() as conn:
                requests = (await conn.execute(text("SELECT count(*) FROM requests"))).scalar_one()
                # The expiry job may expire an earlier short-lived request meanwhile.
                ledger = (
                    await conn.execute(
                        text("SELECT count(*) FROM ledger WHERE event <> 'request.expired'")
                    )
                ).scalar_one()
            return int(requests), int(ledger)

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(10)

    def post(self, raw: bytes, content_type: str = "application/json") -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base + "/v1/requests",
            data=raw,
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": content_type},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            code, problem = exc.code, json.loads(exc.read())
            kind = exc.headers.get("Content-Type", "")
        assert kind.startswith("application/problem+json"), kind
        return code, problem


@pytest.fixture
def live(database_url: str) -> Iterator[Live]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    app = create_app(settings_for(database_url), load_policy(EXAMPLE_POLICY_PATH))
    server = TestServer(app, host="127.0.0.1", port=0)

    async def start() -> str:
        await server.start_server()
        _client, token, _ = await app[SERVICE].add_client("fuzzer", "owen@example.com")
        return token

    token = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield Live(str(server.make_url("")).rstrip("/"), token, loop, app)
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


# No NaN or Infinity: they are not JSON (the server refuses them as malformed, 400).
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
almost_valid = st.fixed_dictionaries(
    {
        "action": st.one_of(
            st.sampled_from(["db.export", "db.read", "deploy", "db.drop"]),
            st.text(max_size=20),
            json_values,
        ),
        "resource": st.one_of(
            st.sampled_from(["prod/customers", "staging/x"]), st.text(max_size=30), json_values
        ),
        "reason": st.one_of(st.just("because FIN-42"), st.text(max_size=30), json_values),
    },
    optional={
        "requested_by": st.one_of(st.just("dana@example.com"), st.text(max_size=20), json_values),
        "params": st.one_of(
            st.dictionaries(st.text(max_size=8), json_values, max_size=5), json_values
        ),
        "context": st.one_of(
            st.dictionaries(st.text(max_size=8), scalars, max_size=5), json_values
        ),
        "callback_url": st.one_of(
            st.just("https://93.184.216.34/hook"),
            st.just("http://127.0.0.1/x"),
            st.text(max_size=20),
        ),
        "ttl_seconds": st.one_of(st.integers(), json_values),
        "extra": json_values,
    },
)
valid = st.fixed_dictionaries(
    {
        "action": st.from_regex(r"\A[a-z0-9][a-z0-9._:-]{0,20}\Z"),
        "resource": st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t),
        "reason": st.text(min_size=1, max_size=40).filter(lambda t: t.strip() and "\x00" not in t),
    },
    optional={
        "requested_by": st.emails(),
        "params": st.dictionaries(st.text(max_size=8), json_values, max_size=5),
        "context": st.dictionaries(st.text(max_size=8), scalars, max_size=5),
        "ttl_seconds": st.integers(min_value=1, max_value=10**6),
    },
)
bodies = st.one_of(valid, almost_valid, json_values)


def _valid_for_core(body: Any) -> bool:
    if not isinstance(body, dict) or set(body) - {
        "action",
        "resource",
        "reason",
        "requested_by",
        "params",
        "context",
        "callback_url",
        "ttl_seconds",
    }:
        return False
    try:
        validate_spec(RequestSpec(**body))
    except (InvalidRequest, TypeError):
        return False
    return True


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies)
def test_fuzzed_bodies(live: Live, body: Any) -> None:
    before = live.counts()
    status, reply = live.post(json.dumps(body).encode())
    event(f"HTTP {status}")  # shown by --hypothesis-show-statistics: the mix must include 201s
    assert status < 500, reply
    valid = _valid_for_core(body)
    if valid and "callback_url" not in body:
        assert status == 201, f"refused a valid body: {body!r} -> {reply!r}"
    if status == 201:
        assert valid, f"accepted an invalid body: {body!r}"
        assert live.counts()[0] == before[0] + 1
    else:
        assert status in (400, 409, 413, 422), (status, reply)
        assert live.counts() == before, "a refused request wrote something"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=200))
def test_fuzzed_raw_bytes(live: Live, raw: bytes) -> None:
    before = live.counts()
    status, _reply = live.post(raw)
    assert status < 500
    if status != 201:
        assert live.counts() == before
