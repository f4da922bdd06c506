"""The approval core, the policy and the service import no framework and no database."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = (
    "aiohttp",
    "slack_bolt",
    "slack_sdk",
    "botbuilder",
    "sqlalchemy",
    "sqlmodel",
    "asyncpg",
    "aiosqlite",
)
PURE = (
    "countersign.core",
    "countersign.policy",
    "countersign.service",
    "countersign.ports",
    "countersign.resource",
)


def test_core_imports_no_framework_or_database() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in PURE)
        + f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"pure modules pulled in: {out.stdout.strip()}"
