"""History indexes: each filter with the id, so a page is an index range.

Measured at 1,000,000 requests (bench/history.py): SQLite sorted every
matching row for a client / status / action filter (0.4-1.3 s a page), and
``requested_by`` is compared lower-cased, which its plain index cannot serve.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_requests_client_id", "requests", ["client", "id"])
    op.create_index("ix_requests_status_id", "requests", ["status", "id"])
    op.create_index("ix_requests_action_id", "requests", ["action", "id"])
    op.create_index(
        "ix_requests_requested_by_lower_id",
        "requests",
        [sa.text("lower(requested_by)"), "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_requests_requested_by_lower_id", table_name="requests")
    op.drop_index("ix_requests_action_id", table_name="requests")
    op.drop_index("ix_requests_status_id", table_name="requests")
    op.drop_index("ix_requests_client_id", table_name="requests")
