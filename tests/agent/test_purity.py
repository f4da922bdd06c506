"""The agent client path imports none of the server's database, chat or MCP dependencies."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = (
    "slack_bolt",
    "slack_sdk",
    "botbuilder",
    "sqlalchemy",
    "sqlmodel",
    "asyncpg",
    "aiosqlite",
    "mcp",  # only the gate needs the MCP SDK
)
CLIENT_PATH = (
    "countersign.agent",
    "countersign.agent.client",
    "countersign.agent.decorator",
    "countersign.agent.receipts",
    "countersign.agent.types",
)


def test_client_path_imports_no_server_dependency() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CLIENT_PATH)
        + f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the client path pulled in: {out.stdout.strip()}"
