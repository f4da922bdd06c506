"""A callback worker in a process of its own, for the crash test.

    python -m tests.callbacks._worker_process DATABASE_URL LEASE_SECONDS CONCURRENCY

Runs until killed. Built the way the server builds it: an engine, the service
(with the tests' server key, to open callback secrets) and a ``CallbackWorker``.
"""

from __future__ import annotations

import asyncio
import sys

from countersign.callbacks.worker import CallbackWorker
from countersign.crypto import SecretBox
from countersign.metrics import Metrics
from countersign.policy import EXAMPLE_POLICY_PATH, load_policy
from countersign.service import ApprovalService
from storage import SqlStore, create_engine

SERVER_KEY = "test-server-key-0123456789"  # the one tests/conftest.py seals with


async def _run(url: str, lease: float, concurrency: int) -> None:
    engine = create_engine(url)
    service = ApprovalService(
        SqlStore(engine), load_policy(EXAMPLE_POLICY_PATH), sealer=SecretBox(SERVER_KEY)
    )
    worker = CallbackWorker(
        engine,
        service,
        Metrics(),
        allow_private=True,
        poll_interval=0.1,
        lease=lease,
        timeout=lease / 3,
        batch_size=concurrency,
        concurrency=concurrency,
    )
    try:
        await worker.run()
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(_run(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
