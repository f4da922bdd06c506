"""Storage: tables, migrations, the hash-chained ledger and the one place that takes locks."""

from storage.engine import DEFAULT_DATABASE_URL, create_engine, normalize_database_url
from storage.repository import SqlStore, SqlTransaction

__all__ = [
    "DEFAULT_DATABASE_URL",
    "SqlStore",
    "SqlTransaction",
    "create_engine",
    "normalize_database_url",
]
