"""Long-polls: released by the deciding vote (here or on another server), or by the clock."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import asyncpg
import pytest

from countersign.api.changefeed import APPLICATION_NAME
from countersign.policy import EXAMPLE_POLICY_PATH, load_policy
from countersign.server import CHANGE_FEED, WAITERS
from countersign.service import ApprovalService
from storage import SqlStore, create_engine
from tests.api.conftest import Api, Reply, running

# What CONTRACT promises is "within milliseconds"; the brief's budget is 50 ms.
# Asserted loosely (1 s) so a loaded CI box does not flake; the figures are printed.
RELEASE_BUDGET = 1.0


async def _released_after_vote(
    waiting: Api, token: str, request_id: str, vote: Any
) -> tuple[Reply, float]:
    """Start a long-poll on ``waiting``, cast the deciding vote, time the release."""
    poll = asyncio.create_task(
        waiting.call("GET", f"/v1/requests/{request_id}/wait?timeout=20", token)
    )
    await waiting.until_waiting()
    await vote()
    voted = time.perf_counter()
    reply = await poll
    return reply, time.perf_counter() - voted


async def test_wait_is_released_by_the_deciding_vote(api: Api, database_url: str) -> None:
    token = await api.client()
    figures = []
    for n in range(5):
        request_id = await api.create(
            token, {"action": "deploy", "resource": f"web-{n}", "reason": "ship"}
        )

        async def vote(request_id: str = request_id) -> None:
            await api.service.cast_vote(request_id, "alice@example.com", "slack", "approve")

        reply, released = await _released_after_vote(api, token, request_id, vote)
        assert reply.status == 200 and reply.body["status"] == "approved"
        assert released < RELEASE_BUDGET
        figures.append(released * 1000)
    backend = database_url.split(":")[0]
    print(
        f"\n[wait release, same process, {backend}] ms after cast_vote returned: "
        f"median {statistics.median(figures):.1f}, max {max(figures):.1f}"
    )
    assert len(api.app[WAITERS]) == 0


async def test_a_vote_that_does_not_decide_keeps_waiting(api: Api) -> None:
    token = await api.client()
    request_id = await api.create(token)  # prod-export: two approvals
    poll = asyncio.create_task(api.call("GET", f"/v1/requests/{request_id}/wait?timeout=10", token))
    await api.until_waiting()
    await api.service.cast_vote(request_id, "alice@example.com", "slack", "approve")
    await asyncio.sleep(0.2)
    assert not poll.done()
    await api.service.cast_vote(request_id, "bob@example.com", "slack", "approve")
    reply = await asyncio.wait_for(poll, RELEASE_BUDGET)
    assert reply.body["status"] == "approved"
    assert reply.body["quorum"]["approvals"] == 2


async def test_wait_times_out_with_the_pending_request(api: Api) -> None:
    token = await api.client()
    request_id = await api.create(token)
    started = time.perf_counter()
    reply = await api.call("GET", f"/v1/requests/{request_id}/wait?timeout=0.4", token)
    elapsed = time.perf_counter() - started
    assert reply.status == 200 and reply.body["status"] == "pending"
    assert 0.4 <= elapsed < 1.4


async def test_wait_on_a_final_request_answers_at_once(api: Api) -> None:
    token = await api.client()
    request_id = await api.create(token, {"action": "db.read", "resource": "x", "reason": "r"})
    started = time.perf_counter()
    reply = await api.call("GET", f"/v1/requests/{request_id}/wait?timeout=30", token)
    assert reply.body["status"] == "approved"
    assert time.perf_counter() - started < 0.5


async def test_wait_is_released_by_expiry(api: Api) -> None:
    token = await api.client()
    request_id = await api.create(token, ttl_seconds=1)
    reply = await api.call("GET", f"/v1/requests/{request_id}/wait?timeout=10", token)
    assert reply.body["status"] == "expired"


async def test_wait_timeout_must_be_0_to_60(api: Api) -> None:
    token = await api.client()
    request_id = await api.create(token)
    for value in ("61", "-1", "soon", "nan", "inf"):
        reply = await api.call("GET", f"/v1/requests/{request_id}/wait?timeout={value}", token)
        assert reply.fields() == {"timeout"}, value
    zero = await api.call("GET", f"/v1/requests/{request_id}/wait?timeout=0", token)
    assert zero.status == 200 and zero.body["status"] == "pending"


async def test_shutdown_answers_open_long_polls(database_url: str) -> None:
    async with running(database_url) as api:
        token = await api.client()
        request_id = await api.create(token)
        poll = asyncio.create_task(
            api.call("GET", f"/v1/requests/{request_id}/wait?timeout=60", token)
        )
        await api.until_waiting()
        started = time.perf_counter()
        closing = asyncio.create_task(api.server.close())
        reply = await asyncio.wait_for(poll, 5)
        await closing
    assert reply.status == 200 and reply.body["status"] == "pending"
    assert time.perf_counter() - started < 5


ONLY_POSTGRES = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
ONLY_SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@ONLY_POSTGRES
async def test_a_vote_on_another_server_releases_the_waiter(database_url: str) -> None:
    async with running(database_url) as a, running(database_url) as b:
        await asyncio.wait_for(a.app[CHANGE_FEED].connected.wait(), 5)
        token = await a.client()
        figures = []
        for n in range(5):
            request_id = await a.create(
                token, {"action": "deploy", "resource": f"web-{n}", "reason": "ship"}
            )

            async def vote(request_id: str = request_id) -> None:
                # Server B's own service and engine: A hears of it only through NOTIFY.
                await b.service.cast_vote(request_id, "alice@example.com", "slack", "approve")

            reply, released = await _released_after_vote(a, token, request_id, vote)
            assert reply.body["status"] == "approved"
            assert released < RELEASE_BUDGET  # the safety-net re-read is 5 s away
            figures.append(released * 1000)
    print(
        "\n[wait release, other server via NOTIFY, postgresql] ms after cast_vote returned: "
        f"median {statistics.median(figures):.1f}, max {max(figures):.1f}"
    )


@ONLY_POSTGRES
async def test_the_change_feed_reconnects_and_loses_nothing(database_url: str) -> None:
    engine = create_engine(database_url)
    other = ApprovalService(SqlStore(engine), load_policy(EXAMPLE_POLICY_PATH))
    try:
        async with running(database_url) as api:
            feed = api.app[CHANGE_FEED]
            await asyncio.wait_for(feed.connected.wait(), 5)
            token = await api.client()
            request_id = await api.create(
                token, {"action": "deploy", "resource": "web", "reason": "ship"}
            )
            poll = asyncio.create_task(
                api.call("GET", f"/v1/requests/{request_id}/wait?timeout=20", token)
            )
            await api.until_waiting()
            # Kill the LISTEN connection server-side, then decide while it is down.
            admin = await asyncpg.connect(database_url.replace("+asyncpg", ""))
            try:
                killed = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = $1 AND datname = current_database()",
                    APPLICATION_NAME,
                )
            finally:
                await admin.close()
            assert killed == 1
            await other.cast_vote(request_id, "alice@example.com", "slack", "approve")
            voted = time.perf_counter()
            reply = await asyncio.wait_for(poll, 5)
            released = time.perf_counter() - voted
            assert reply.body["status"] == "approved"
            assert released < 2.0  # the reconnect (not the 5 s re-read) released it
            assert feed.connects >= 2
            print(f"\n[wait release across a feed reconnect] {released * 1000:.0f} ms")
    finally:
        await engine.dispose()


@ONLY_SQLITE
async def test_two_servers_on_one_sqlite_file_fall_back_to_rereading(database_url: str) -> None:
    async with running(database_url) as a, running(database_url) as b:
        token = await a.client()
        request_id = await a.create(token, {"action": "deploy", "resource": "w", "reason": "r"})

        async def vote() -> None:
            await b.service.cast_vote(request_id, "alice@example.com", "slack", "approve")

        reply, released = await _released_after_vote(a, token, request_id, vote)
        assert reply.body["status"] == "approved"
        recheck = a.app[WAITERS].recheck_seconds
        assert released <= recheck + 1.0
