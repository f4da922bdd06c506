"""Concurrent votes from several processes: exact counts, one decision, a chain that verifies."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
from collections import Counter
from typing import Any

from sqlalchemy import text

from countersign.core import RequestSpec, Status, tally
from countersign.policy import parse_policy
from countersign.ports import HistoryQuery
from countersign.service import ApprovalService
from storage import SqlStore, create_engine
from storage import ledger as chain
from tests.storage import _vote_worker

VOTERS = [f"v{i:02d}@example.com" for i in range(50)]
POLICY = f"""
groups:
  crowd: [{", ".join(VOTERS)}]
rules:
  - name: crowd
    match: {{action: "crowd.*"}}
    approvers: [group:crowd]
    quorum: 3
  - name: trio
    match: {{action: "trio.*"}}
    approvers: [{", ".join(VOTERS[:3])}]
    quorum: 2
  - name: mixed
    match: {{action: "mixed.*"}}
    approvers: [group:crowd]
    quorum: 3
    deny_quorum: 2
"""


def _create(url: str, action: str, count: int) -> list[str]:
    async def run() -> list[str]:
        engine = create_engine(url)
        service = ApprovalService(SqlStore(engine), parse_policy(POLICY))
        client, _, _ = await service.add_client("load-bot", "owner@example.com")
        ids = []
        for i in range(count):
            spec = RequestSpec(
                action=action,
                resource=f"r/{i}",
                reason="concurrency test",
                callback_url="https://agent.example.com/hook",
            )
            ids.append((await service.create_request(client, spec)).request.id)
        await engine.dispose()
        return ids

    return asyncio.run(run())


def _vote_from_processes(
    url: str, per_process: list[list[tuple[str, str, str]]]
) -> list[tuple[str, str, str]]:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_vote_worker.run, args=(url, POLICY, ballots, start, out))
        for ballots in per_process
    ]
    for p in procs:
        p.start()
    start.set()
    outcomes: list[tuple[str, str, str]] = []
    for _ in procs:
        outcomes.extend(out.get(timeout=120))
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return outcomes


def _inspect(url: str) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        engine = create_engine(url)
        async with engine.connect() as conn:
            votes = (await conn.execute(text("SELECT request_id, voter FROM votes"))).all()
            events = (await conn.execute(text("SELECT event, request_id, data FROM ledger"))).all()
            outbox = (await conn.execute(text("SELECT request_id, payload FROM outbox"))).all()
            report = await chain.verify(conn)
        service = ApprovalService(SqlStore(engine), parse_policy(POLICY))
        async with service.store.read() as tx:
            requests = await tx.history(HistoryQuery(limit=1000))
        await engine.dispose()
        return {
            "votes": votes,
            "events": events,
            "outbox": outbox,
            "report": report,
            "requests": requests,
        }

    return asyncio.run(run())


def test_fifty_voters_three_processes_one_request(database_url: str) -> None:
    (request_id,) = _create(database_url, "crowd.export", 1)
    ballots = [(request_id, v, "approve") for v in VOTERS]
    outcomes = _vote_from_processes(database_url, [ballots[0::3], ballots[1::3], ballots[2::3]])

    codes = Counter(code for _, _, code in outcomes)
    assert codes == {"counted": 2, "decided": 1, "already_decided": 47}
    seen = _inspect(database_url)
    assert len(seen["votes"]) == 3
    (request,) = seen["requests"]
    assert request.status is Status.APPROVED
    assert set(request.decided_by) == {
        v for _, v, code in outcomes if code in ("counted", "decided")
    }
    events = Counter(e.event for e in seen["events"])
    assert events["request.decided"] == 1
    assert events["vote.cast"] == 3
    assert events["vote.refused"] == 47
    assert len(seen["outbox"]) == 1
    assert seen["report"].ok, seen["report"].problem
    assert seen["report"].checked == len(seen["events"])


def test_hundred_requests_voted_at_once(database_url: str) -> None:
    ids = _create(database_url, "trio.deploy", 100)
    per_process = []
    for p in range(3):
        ballots = [(rid, VOTERS[p], "approve") for rid in ids]
        random.Random(p).shuffle(ballots)
        per_process.append(ballots)
    outcomes = _vote_from_processes(database_url, per_process)

    by_request: dict[str, Counter[str]] = {}
    for rid, _, code in outcomes:
        by_request.setdefault(rid, Counter())[code] += 1
    assert all(c == {"counted": 1, "decided": 1, "already_decided": 1} for c in by_request.values())
    seen = _inspect(database_url)
    assert len(seen["votes"]) == 200
    assert all(r.status is Status.APPROVED and len(r.votes) == 2 for r in seen["requests"])
    decided = [e.request_id for e in seen["events"] if e.event == "request.decided"]
    assert sorted(decided) == sorted(ids)  # exactly one decision each
    assert sorted(o.request_id for o in seen["outbox"]) == sorted(ids)  # one callback each
    assert all(json.loads(o.payload)["status"] == "approved" for o in seen["outbox"])
    assert seen["report"].ok, seen["report"].problem
    assert (
        seen["report"].checked == 1 + 100 * 6
    )  # client + (created, policy, 2 votes, decided, refused)


def test_approvals_and_denials_racing(database_url: str) -> None:
    ids = _create(database_url, "mixed.change", 10)
    rng = random.Random(7)
    ballots = [(rid, v, rng.choice(["approve", "deny"])) for rid in ids for v in VOTERS[:12]]
    rng.shuffle(ballots)
    outcomes = _vote_from_processes(database_url, [ballots[i::4] for i in range(4)])

    seen = _inspect(database_url)
    for request in seen["requests"]:
        counted = tally(request.votes)
        if request.status is Status.APPROVED:
            assert counted.approvals == 3 and len(counted.denials) < 2
        else:
            assert request.status is Status.DENIED
            assert len(counted.denials) == 2 and counted.approvals < 3
        accepted = {
            v for rid, v, code in outcomes if rid == request.id and code in ("counted", "decided")
        }
        assert accepted == {v.voter for v in request.votes}  # no vote lost, none invented
        assert sum(1 for rid, _, code in outcomes if rid == request.id and code == "decided") == 1
    decisions = Counter(e.request_id for e in seen["events"] if e.event == "request.decided")
    assert set(decisions.values()) == {1}
    assert len(decisions) == 10
    assert seen["report"].ok, seen["report"].problem


async def test_a_clashing_idempotency_key_is_a_duplicate_at_commit(store: SqlStore) -> None:
    # SQLite defers the INSERT to the COMMIT's job: the clash must still be DuplicateKey.
    service = ApprovalService(store, parse_policy(POLICY))
    client, _, _ = await service.add_client("idem-bot", None)
    spec = RequestSpec(action="trio.x", resource="r/1", reason="same key, same body")
    results = await asyncio.gather(
        *(service.create_request(client, spec, idempotency_key="k1") for _ in range(8))
    )
    assert sum(r.created for r in results) == 1
    assert len({r.request.id for r in results}) == 1
    async with store.engine.connect() as conn:
        assert (await chain.verify(conn)).ok


async def test_creates_committed_together_are_each_whole(store: SqlStore) -> None:
    # PostgreSQL commits concurrent creates as one batch; a clash in it must not fail the rest.
    service = ApprovalService(store, parse_policy(POLICY))
    client, _, _ = await service.add_client("batch-bot", None)

    def spec(i: int) -> RequestSpec:
        return RequestSpec(action="trio.x", resource=f"r/{i}", reason="batched")

    keys = ["same", "same", None, None, "a", "b", None, "same"]
    results = await asyncio.gather(
        *(
            service.create_request(client, spec(0 if k == "same" else i), idempotency_key=k)
            for i, k in enumerate(keys)
        )
    )
    ids = {r.request.id for r in results}
    assert len(ids) == 6  # three "same" share one request
    assert sum(r.created for r in results) == 6
    async with store.engine.connect() as conn:
        report = await chain.verify(conn)
        count = (await conn.execute(text("SELECT count(*) FROM requests"))).scalar_one()
        per_request = (
            await conn.execute(text("SELECT request_id, count(*) FROM ledger GROUP BY request_id"))
        ).all()
    assert report.ok and count == 6
    assert {rid: n for rid, n in per_request if rid is not None} == dict.fromkeys(ids, 2)
