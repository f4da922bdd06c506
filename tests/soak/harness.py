"""The soak's moving parts: server processes, the callback receiver, the fakes, faults.

Everything listens on 127.0.0.1. The fake Slack runs on the test's event loop,
the fake Bot Framework in its own thread (see ``tests.fakes.teams_api``); the
three ``countersign serve`` processes reach both over loopback HTTP.
"""

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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from countersign.callbacks.signing import verify_signature

SERVER_SECRET = "soak-server-key-0123456789abcdef"
PUBLIC_URL = "https://countersign.soak.example.com"
SLACK_TOKEN = "xoxb-countersign-soak"
SLACK_SECRET = "slack-signing-secret-for-the-soak"
TEAMS_APP_ID = "00000000-0000-4000-8000-00000000504b"
TEAMS_APP_PASSWORD = "teams-app-password-for-the-soak"  # a test fixture, not a secret
SLACK_CHANNEL = "C0APPROVALS"  # the fake Slack's #approvals
TEAMS_TEAM = "Soak"
REQUESTER = "dana@example.com"  # the human behind every request; never an approver

# Ten approvers, the same people on both platforms (same e-mail address).
APPROVERS = [f"approver{i:02d}@example.com" for i in range(10)]
SLACK_IDS = {email: f"U0SOAK{i:02d}" for i, email in enumerate(APPROVERS)}
TEAMS_IDS = {email: f"29:soak{i:02d}" for i, email in enumerate(APPROVERS)}

POLICY = """
groups:
  soak: [{approvers}]
rules:
  - name: soak-deploy
    match: {{action: "deploy.*"}}
    approvers: [group:soak]
    quorum: 2
    ttl: 30m
    notify:
      slack: ["#approvals"]
      teams: ["{team}/General"]
"""


def write_policy(directory: Path) -> Path:
    path = directory / "countersign.yaml"
    path.write_text(POLICY.format(approvers=", ".join(APPROVERS), team=TEAMS_TEAM))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- servers


class Server:
    """One ``countersign serve`` process; its output goes to a log file (never a pipe)."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.env = env
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.up = False
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"server-{self.name}.log"

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} at {time.time():.3f} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "countersign", "serve", "--port", str(self.port)],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def ready(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.proc is not None and self.proc.poll() is None, (
                    f"server {self.name} exited; see {self.log_path}"
                )
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(self.url + "/readyz") as resp:
                        if resp.status == 200:
                            self.up = True
                            return
                await asyncio.sleep(0.1)
        raise AssertionError(f"server {self.name} not ready within {within} s")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, in-flight work simply stops."""
        self.up = False
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=20)

    def stop(self) -> None:
        self.up = False
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def server_env(
    database_url: str, policy: Path, slack_api_url: str, bf: Any, pool_size: int = 6
) -> dict[str, str]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COUNTERSIGN_", "SLACK_", "MICROSOFT_", "TEAMS_"))
    }
    environ.update(
        COUNTERSIGN_DATABASE_URL=database_url,
        COUNTERSIGN_SECRET_KEY=SERVER_SECRET,
        COUNTERSIGN_PUBLIC_URL=PUBLIC_URL,
        COUNTERSIGN_ALLOW_PRIVATE_CALLBACKS="1",
        COUNTERSIGN_POLICY=str(policy),
        COUNTERSIGN_CALLBACK_LEASE_SECONDS="21",
        COUNTERSIGN_DATABASE_POOL_SIZE=str(pool_size),
        SLACK_BOT_TOKEN=SLACK_TOKEN,
        SLACK_SIGNING_SECRET=SLACK_SECRET,
        SLACK_API_URL=slack_api_url,
        MICROSOFT_APP_ID=TEAMS_APP_ID,
        MICROSOFT_APP_PASSWORD=TEAMS_APP_PASSWORD,
        TEAMS_OPENID_METADATA_URL=bf.openid_metadata_url,
        TEAMS_TOKEN_ISSUER=bf.issuer,
        TEAMS_LOGIN_URL=bf.login_url,
        PYTHONUNBUFFERED="1",
    )
    return environ


# --------------------------------------------------------------------------- callbacks


@dataclass
class Delivery:
    """One POST the receiver saw."""

    delivery_id: str
    request_id: str
    outcome: str | None
    signature_ok: bool
    answered: int | None  # the status sent back; None: connection dropped


@dataclass
class CallbackReceiver:
    """Checks ``Countersign-Signature``, dedupes on ``Countersign-Delivery``, flaps when told.

    ``mode``: ``ok`` (200), ``error`` (500) or ``drop`` (the connection is closed
    without an answer).
    """

    secret: str
    mode: str = "ok"
    seen: list[Delivery] = field(default_factory=list)
    base: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return self.base + "/hook"

    async def _hook(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        ok = verify_signature(
            self.secret,
            request.headers.get("Countersign-Signature", ""),
            body,
            now=int(time.time()),
        )
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        decision = payload.get("decision") or {}
        seen = Delivery(
            request.headers.get("Countersign-Delivery", ""),
            str(payload.get("id", "")),
            decision.get("outcome") if isinstance(decision, dict) else None,
            ok,
            None,
        )
        self.seen.append(seen)
        if self.mode == "drop":
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError("dropped on purpose")
        status = 500 if self.mode == "error" else 200
        seen.answered = status
        return web.Response(status=status, text="ok" if status == 200 else "no")

    def delivered(self) -> dict[str, set[str]]:
        """Request id -> the delivery ids acknowledged with 200."""
        found: dict[str, set[str]] = {}
        for d in self.seen:
            if d.answered == 200:
                found.setdefault(d.request_id, set()).add(d.delivery_id)
        return found

    def duplicates(self) -> int:
        """Deliveries acknowledged more than once (at-least-once allows it)."""
        counts = Counter(d.delivery_id for d in self.seen if d.answered == 200)
        return sum(n - 1 for n in counts.values() if n > 1)


# --------------------------------------------------------------------------- PostgreSQL


async def terminate_backends(admin_dsn: str, database: str) -> int:
    """Drop every connection to ``database`` (what a failover or a DBA would do)."""
    conn = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await conn.close()
    return sum(1 for r in rows if r["done"])
