"""Database URLs and engines: the one place that knows SQLite from PostgreSQL."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["BEGIN_MODE", "DEFAULT_DATABASE_URL", "create_engine", "normalize_database_url"]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./countersign.db"

# Execution option read by the SQLite "begin" hook: "IMMEDIATE" takes the write
# lock at BEGIN, so two writers never both read a request and both decide it;
# "NONE" issues no BEGIN at all (one-statement reads).
BEGIN_MODE = "countersign_begin"

_SCHEMES = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def normalize_database_url(url: str) -> str:
    """The async SQLAlchemy URL for ``url``; ValueError naming the scheme if unsupported.

    ``postgres://`` and ``postgresql://`` (Heroku-style) become
    ``postgresql+asyncpg://``; their ``sslmode`` becomes asyncpg's ``ssl``.
    """
    parts = urlsplit(url.strip())
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(
            f"unsupported database scheme {parts.scheme!r}: use sqlite+aiosqlite:///PATH "
            "or postgresql+asyncpg://USER@HOST/DB (postgres:// is accepted)"
        )
    if scheme.startswith("sqlite"):
        # urlunsplit would fold "sqlite:////abs/path" into "sqlite://abs/path".
        return scheme + url.strip()[len(parts.scheme) :]
    pairs = [("ssl", v) if k == "sslmode" else (k, v) for k, v in parse_qsl(parts.query)]
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(pairs), parts.fragment))


def is_sqlite(engine: AsyncEngine) -> bool:
    """True for the SQLite backend."""
    return engine.dialect.name == "sqlite"


PG_POOL_SIZE = 20
PG_POOL_OVERFLOW = 10


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url`` set up for Countersign's transactions.

    SQLite: WAL, ``synchronous=NORMAL``, foreign keys on, a long busy timeout
    (several processes may share the file), and BEGIN issued by us so a write
    transaction can start ``IMMEDIATE``.
    PostgreSQL: a pooled connection idle for over ``PING_AFTER_IDLE_SECONDS``
    is pinged before use (``pool_pre_ping=True`` instead pings on every use).
    """
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, **kwargs)
        _configure_sqlite(engine.sync_engine)
        return engine
    # Enough pooled connections for a busy replica: an overflow connection is closed
    # when returned, and opening one costs more CPU than a whole request (the server
    # passes COUNTERSIGN_DATABASE_POOL_SIZE; these are for everything else).
    kwargs.setdefault("pool_size", PG_POOL_SIZE)
    kwargs.setdefault("max_overflow", PG_POOL_OVERFLOW)
    engine = create_async_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_idle_connections(engine.sync_engine)
    return engine


# A ping is a round trip, and the intake path checks out twice per request: pinging
# every checkout cost a sixth of its CPU. A connection used within the last second
# is as good as pinged; after a server restart the pool is invalidated by the first
# error anyway (SQLAlchemy drops every connection older than it).
PING_AFTER_IDLE_SECONDS = 1.0
_IDLE_SINCE = "countersign_idle_since"


def _ping_idle_connections(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)  # None: a new connection (info dies with it)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the driver's own error type: any failure means "dead"
            raise DisconnectionError(f"stale pooled connection: {exc}") from exc
        if not alive:
            raise DisconnectionError("stale pooled connection")


def sqlite_sync_engine(engine: AsyncEngine) -> Engine:
    """A blocking (``sqlite3``) engine on the same file as ``engine``, set up the same way."""
    sync = create_sync_engine(engine.url.set(drivername="sqlite+pysqlite"))
    _configure_sqlite(sync)
    return sync


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop the driver from issuing its own BEGIN; the "begin" hook below does.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(BEGIN_MODE, "DEFERRED")
        if mode == "NONE":
            # Single-statement reads run outside any transaction. (Not AUTOCOMMIT:
            # SQLAlchemy would reset the driver's isolation level on check-in and
            # undo "we issue BEGIN ourselves" for the connection's next user.)
            return
        if mode not in ("DEFERRED", "IMMEDIATE"):
            raise ValueError(f"bad SQLite begin mode {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")
