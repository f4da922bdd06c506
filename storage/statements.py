"""How a transaction reaches the database: directly, or through a backend's own writer."""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import Table
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.rows import insert_statement, update_statement

__all__ = ["Direct", "Statements"]


class Statements(Protocol):
    """How a transaction reaches the database (Direct, PostgresWrite, WriteStatements)."""

    dialect: str

    async def run(self, statement: Any, params: Any = None) -> Result[Any]:
        """Execute now; the rows are already fetched."""
        ...

    async def run_each(self, statements: list[tuple[Any, Any]]) -> list[Result[Any]]:
        """Execute several statements now, in order (one writer job on SQLite)."""
        ...

    async def insert(self, table: Table, values: dict[str, Any]) -> None:
        """Insert a row nobody reads back here (possibly later, before COMMIT)."""
        ...

    async def update(self, table: Table, key: str, values: dict[str, Any]) -> None:
        """Update the row whose id is ``key`` (possibly later, before COMMIT)."""
        ...

    async def savepoint(self, statement: Any, params: Any) -> None:
        """Execute now in a savepoint: ``IntegrityError`` undoes this statement only."""
        ...


class Direct:
    """``Statements`` over an open ``AsyncConnection``: everything at once, in order."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name

    async def run(self, statement: Any, params: Any = None) -> Result[Any]:
        result: Result[Any] = await self.conn.execute(statement, params)
        return result

    async def run_each(self, statements: list[tuple[Any, Any]]) -> list[Result[Any]]:
        return [await self.run(statement, params) for statement, params in statements]

    async def insert(self, table: Table, values: dict[str, Any]) -> None:
        await self.conn.execute(insert_statement(table), values)

    async def update(self, table: Table, key: str, values: dict[str, Any]) -> None:
        await self.conn.execute(update_statement(table), {"row_key": key, **values})

    async def savepoint(self, statement: Any, params: Any) -> None:
        async with self.conn.begin_nested():
            await self.conn.execute(statement, params)
