"""Shared fixtures: real SQLite files and real PostgreSQL databases, migrated.

PostgreSQL comes from ``COUNTERSIGN_TEST_POSTGRES_URL`` (default: the local
server, user ``postgres``, database ``test``). Each test gets a fresh database
copied from a migrated template. Without a reachable server the PostgreSQL
cases skip, saying why; under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from countersign.crypto import SecretBox
from countersign.policy import EXAMPLE_POLICY_PATH, Policy, load_policy
from countersign.service import ApprovalService
from storage import SqlStore, create_engine
from storage.migrate import upgrade

PG_URL = os.environ.get(
    "COUNTERSIGN_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _raw_pg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(_raw_pg_dsn(PG_URL), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pg_reason() -> str | None:
    async def probe() -> None:
        conn = await asyncpg.connect(_raw_pg_dsn(PG_URL), timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:  # any failure means "not here"
        return f"PostgreSQL not reachable at {PG_URL} ({type(exc).__name__}: {exc})"
    return None


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """Name of a migrated template database (fails under CI when PostgreSQL is missing)."""
    reason = _pg_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true requires PostgreSQL: {reason}")
        pytest.skip(reason)
    name = f"cs_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))

    async def migrate() -> None:
        engine = create_engine(_with_database(PG_URL, name))
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    yield name
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file to copy per test."""
    path = tmp_path_factory.mktemp("tpl") / "template.db"

    async def migrate() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database on each backend: SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "countersign.db"
        shutil.copy(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    template_name: str = request.getfixturevalue("pg_template")
    name = f"cs_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"'))
    yield _with_database(PG_URL, name)
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    """A ``SqlStore`` on the fresh database."""
    engine = create_engine(database_url)
    yield SqlStore(engine)
    await engine.dispose()


@dataclass
class ManualClock:
    """A clock that only moves when told to."""

    current: datetime

    def now(self) -> datetime:
        """The current (fixed) time."""
        return self.current

    def advance(self, **delta: float) -> None:
        """Move forward by ``timedelta(**delta)``."""
        self.current += timedelta(**delta)


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock at 2026-11-21 10:00 UTC."""
    return ManualClock(datetime(2026, 11, 21, 10, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def example_policy() -> Policy:
    """The bundled example policy."""
    return load_policy(EXAMPLE_POLICY_PATH)


@pytest.fixture
def service(store: SqlStore, example_policy: Policy, clock: ManualClock) -> ApprovalService:
    """The service on a fresh database, the example policy and a manual clock."""
    return ApprovalService(
        store, example_policy, clock, sealer=SecretBox("test-server-key-0123456789")
    )
