"""Database URLs, and migrations that match the models and run both ways."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from storage import create_engine, normalize_database_url
from storage import engine as storage_engine
from storage.migrate import current_revision, head_revision, upgrade
from storage.tables import metadata

URLS = [
    ("sqlite:///./countersign.db", "sqlite+aiosqlite:///./countersign.db"),
    ("sqlite:////abs/path.db", "sqlite+aiosqlite:////abs/path.db"),
    ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ("postgres://u:p@db.example.com:5432/cs", "postgresql+asyncpg://u:p@db.example.com:5432/cs"),
    ("postgresql://u@h/cs?sslmode=require", "postgresql+asyncpg://u@h/cs?ssl=require"),
    ("postgresql+asyncpg://u@h/cs", "postgresql+asyncpg://u@h/cs"),
]


@pytest.mark.parametrize(("given", "expected"), URLS, ids=[u[0] for u in URLS])
def test_urls_are_normalised(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


@pytest.mark.parametrize("url", ["mysql://h/db", "postgresql+psycopg2://h/db", "redis://h"])
def test_unsupported_schemes_are_named(url: str) -> None:
    with pytest.raises(ValueError, match=url.split(":")[0].replace("+", r"\+")):
        normalize_database_url(url)


async def test_schema_matches_the_models(database_url: str) -> None:
    engine = create_engine(database_url)

    def diff(conn: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []
    assert await current_revision(engine) == head_revision()
    await engine.dispose()


async def test_downgrade_then_upgrade(database_url: str) -> None:
    from alembic import command

    from storage.migrate import alembic_config

    engine = create_engine(database_url)
    async with engine.connect() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "base"))
        await conn.commit()
    assert await current_revision(engine) is None
    await upgrade(engine)
    await upgrade(engine)  # idempotent
    async with engine.connect() as conn:
        head = (await conn.execute(text("SELECT seq, hash FROM ledger_head"))).one()
    assert tuple(head) == (0, "0" * 64)
    await engine.dispose()


@pytest.mark.postgres
async def test_an_idle_connection_killed_by_the_server_is_replaced(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server to lose")
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with create_engine(database_url).connect() as admin:
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        monkeypatch.setattr(storage_engine, "PING_AFTER_IDLE_SECONDS", 0.0)
        async with engine.connect() as conn:  # pinged, found dead, replaced
            assert (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() != pid
    finally:
        await engine.dispose()
