"""The soak's database: a fresh, migrated PostgreSQL database of its own (no SQLite run)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import PG_URL, _pg_admin, _with_database


@pytest.fixture
def soak_database(pg_template: str) -> Iterator[tuple[str, str]]:
    """``(url, name)`` of a new database copied from the migrated template; dropped after.

    ``pg_template`` skips when PostgreSQL is absent, and fails instead under CI=true.
    """
    name = f"cs_soak_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    try:
        yield _with_database(PG_URL, name), name
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
