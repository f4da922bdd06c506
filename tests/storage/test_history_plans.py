"""History pages are one index range read backwards: no sort of every matching row.

PERFORMANCE.md findings 1 and 2: at 1,000,000 requests SQLite sorted every row
matching a client, status or action filter (0.4-1.3 s a page), and the
``requested_by`` filter (compared lower-cased) could not use its index.
Migration 0006 added ``(client, id)``, ``(status, id)``, ``(action, id)`` and
``(lower(requested_by), id)``; these plans are what the fix rests on.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.dialects import sqlite

from countersign.core.model import Status
from countersign.ports import HistoryQuery
from storage.repository import history_statement

CASES = [
    (HistoryQuery(client="copilot"), "ix_requests_client_id"),
    (HistoryQuery(client="copilot", status=Status.APPROVED), None),
    (HistoryQuery(status=Status.DENIED), "ix_requests_status_id"),
    (HistoryQuery(action="deploy.web"), "ix_requests_action_id"),
    (HistoryQuery(requested_by="Dana@Example.com"), "ix_requests_requested_by_lower_id"),
    (HistoryQuery(), None),
    (HistoryQuery(client="copilot", cursor="req_01M7Z9"), "ix_requests_client_id"),
    # PERFORMANCE finding 3: a window in the past is a range of ids, not a walk from now.
    (
        HistoryQuery(
            since=datetime(2026, 10, 1, tzinfo=UTC), until=datetime(2026, 10, 2, tzinfo=UTC)
        ),
        "(id>? AND id<?)",
    ),
]


@pytest.mark.parametrize(("query", "index"), CASES)
def test_a_history_page_reads_an_index_range_without_sorting(
    query: HistoryQuery, index: str | None, sqlite_template: Path
) -> None:
    """On SQLite (PostgreSQL's plans depend on its statistics: bench/history.py shows them)."""
    sql = str(
        history_statement(query).compile(
            dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}
        )
    )
    with sqlite3.connect(sqlite_template) as conn:
        plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
    assert "TEMP B-TREE" not in plan, plan  # no sort of the matching rows
    if index is not None:
        assert index in plan, plan
