"""Real ``countersign serve`` processes: replicas on one database, and a crash mid-delivery."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from countersign.core import RequestSpec
from countersign.crypto import SecretBox
from countersign.keyring import load_receipts
from countersign.policy import EXAMPLE_POLICY_PATH, load_policy
from countersign.receipts import verify_receipt
from countersign.service import ApprovalService
from storage import SqlStore, create_engine
from storage import ledger as chain
from storage.migrate import upgrade
from tests.callbacks._receiver import Receiver, eventually

ROOT = Path(__file__).resolve().parents[2]
SECRET = "replica-test-server-key-0123456789"
PUBLIC = "https://countersign.example.com"
EXPORT = {
    "action": "db.export",
    "resource": "prod/customers",
    "reason": "replica test",
    "requested_by": "dana@example.com",
    "params": {"rows": 120000},
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One ``countersign serve`` process."""

    def __init__(self, database_url: str, **env: str) -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERSIGN_")}
        environ.update(
            COUNTERSIGN_DATABASE_URL=database_url,
            COUNTERSIGN_SECRET_KEY=SECRET,
            COUNTERSIGN_PUBLIC_URL=PUBLIC,
            COUNTERSIGN_ALLOW_PRIVATE_CALLBACKS="1",
            **env,
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "countersign", "serve", "--port", str(self.port)],
            cwd=ROOT,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.url + "/readyz") as resp:
                        if resp.status == 200:
                            return
                assert self.proc.poll() is None, "the server exited"
                await asyncio.sleep(0.05)
        raise AssertionError("server did not become ready")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=20)


@contextlib.contextmanager
def servers(database_url: str, count: int, **env: str) -> Iterator[list[Server]]:
    started = [Server(database_url, **env) for _ in range(count)]
    try:
        yield started
    finally:
        for server in started:
            server.stop()


@contextlib.asynccontextmanager
async def voter(database_url: str) -> AsyncIterator[ApprovalService]:
    """This test process as one more replica: its own engine and service on the database."""
    engine = create_engine(database_url)
    box = SecretBox(SECRET)
    try:
        await upgrade(engine)
        receipts = await load_receipts(engine, box, PUBLIC)
        yield ApprovalService(
            SqlStore(engine), load_policy(EXAMPLE_POLICY_PATH), sealer=box, receipts=receipts
        )
    finally:
        await engine.dispose()


async def _receiver(secret: str | None) -> Receiver:
    receiver = Receiver(secret=secret)
    await receiver.start()
    return receiver


@pytest.mark.postgres
async def test_three_replicas_waiters_and_exactly_once_callbacks(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("replicas share PostgreSQL")
    async with voter(database_url) as service:
        _client, token, secret = await service.add_client("agent", "owen@example.com")
        receiver = await _receiver(secret)
        with servers(database_url, 3) as (a, b, c):
            await asyncio.gather(a.ready(), b.ready(), c.ready())
            headers = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession(headers=headers) as http:
                ids = []
                for i in range(100):
                    server = (a, b, c)[i % 3]
                    body = {**EXPORT, "resource": f"prod/t{i}", "callback_url": receiver.url()}
                    async with http.post(server.url + "/v1/requests", json=body) as resp:
                        assert resp.status == 201
                        ids.append((await resp.json())["id"])

                # A waiter on A; the deciding vote lands on another process (this one).
                wait = asyncio.create_task(
                    http.get(f"{a.url}/v1/requests/{ids[0]}/wait?timeout=30")
                )
                await asyncio.sleep(0.3)
                await service.cast_vote(ids[0], "alice@example.com", "slack", "approve")
                await service.cast_vote(ids[0], "carol@example.com", "teams", "approve")
                decided = time.perf_counter()
                resp = await wait
                released_ms = (time.perf_counter() - decided) * 1000
                body = await resp.json()
                assert body["status"] == "approved"
                assert released_ms < 1000, released_ms

                for request_id in ids[1:]:
                    await service.cast_vote(request_id, "bob@example.com", "slack", "approve")
                    await service.cast_vote(request_id, "erin@example.com", "teams", "approve")

                await eventually(lambda: len(receiver.delivered()) >= 100, within=60)
                await asyncio.sleep(1.5)  # would-be duplicates get a chance to show up
                async with http.get(f"{b.url}/.well-known/jwks.json") as resp:
                    jwks = await resp.json()
        await receiver.close()
        deliveries = receiver.received
        assert len(deliveries) == 100, (
            "exactly one delivery per decision while the receiver is healthy"
        )
        assert len({d.delivery_id for d in deliveries}) == 100
        assert all(d.signature_ok for d in deliveries)
        payloads = [json.loads(d.body) for d in deliveries]
        assert sorted(p["id"] for p in payloads) == sorted(ids)
        missing = [(p["id"], p["decision"]) for p in payloads if not p["receipt"]]
        assert not missing, missing
        for p in payloads:
            verify_receipt(p["receipt"], jwks, issuer=PUBLIC, params=EXPORT["params"])
        async with service.store.engine.connect() as conn:  # type: ignore[attr-defined]
            report = await chain.verify(conn)
        assert report.ok, report.problem


async def test_server_killed_mid_delivery_delivers_after_restart(database_url: str) -> None:
    async with voter(database_url) as service:
        client, _token, secret = await service.add_client("agent", None)
        receiver = await _receiver(secret)
        hang = asyncio.Event()

        async def stall(_seen: object) -> int:
            await hang.wait()
            return 200

        receiver.respond = stall
        lease = {"COUNTERSIGN_CALLBACK_LEASE_SECONDS": "21"}
        with servers(database_url, 1, **lease) as (first,):
            await first.ready()
            ids = []
            for i in range(5):
                spec = RequestSpec(
                    **{
                        **EXPORT,
                        "action": "db.read",
                        "resource": f"prod/{i}",
                        "callback_url": receiver.url(),
                    }
                )
                ids.append((await service.create_request(client, spec)).request.id)  # auto-allowed
            await eventually(lambda: len(receiver.received) >= 1, within=20)
            first.stop(signal.SIGKILL)  # mid-delivery: the receiver has not answered
        # Nothing is sent after the kill; let the receiver register what was already on the wire.
        await asyncio.sleep(0.5)
        in_flight = {r.delivery_id for r in receiver.received}
        receiver.respond = None  # the receiver recovers
        hang.set()
        with servers(database_url, 1, **lease) as (second,):
            await second.ready()
            await eventually(
                lambda: len({r.delivery_id for r in receiver.delivered()}) == 5, within=60
            )
        await receiver.close()
        delivered = receiver.delivered()
        assert {json.loads(r.body)["id"] for r in delivered} == set(ids)
        per_delivery: dict[str, int] = {}
        for r in delivered:
            per_delivery[r.delivery_id] = per_delivery.get(r.delivery_id, 0) + 1
        duplicated = {d for d, n in per_delivery.items() if n > 1}
        assert duplicated <= in_flight, "only the delivery in flight may arrive twice"
        assert all(r.signature_ok for r in receiver.received)
