"""What the chat benchmarks share: ports, percentiles, server processes, a client token."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def wait_up(url: str) -> None:
    """Return once something answers HTTP at ``url`` (any status)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url + "/"):
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server at {url} did not come up")


@contextlib.asynccontextmanager
async def process(
    argv: list[str], env: dict[str, str], url: str, log: Path
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A server subprocess (yielded), up before the block and stopped after it.

    Its output goes to ``log``: an unread pipe fills up and blocks the server mid-run.
    """
    with log.open("w") as sink:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        try:
            await wait_up(url)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def server_env(**settings: str) -> dict[str, str]:
    """This environment without any Countersign, Slack or Teams setting, plus ``settings``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COUNTERSIGN_", "SLACK_", "MICROSOFT_", "TEAMS_"))
    }
    env.update(settings)
    return env


def client_token(env: dict[str, str], name: str = "bench") -> str:
    """A new API client's token (``countersign clients add``), before anything is timed."""
    out = subprocess.run(
        [sys.executable, "-m", "countersign", "clients", "add", name],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return next(line.split()[1] for line in out.splitlines() if line.startswith("token:"))
