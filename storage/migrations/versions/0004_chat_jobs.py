"""Chat jobs: durable card updates, reminders and escalations.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chat_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_chat_jobs_due", "chat_jobs", ["done_at", "due_at"])
    op.create_index("ix_chat_jobs_request_id", "chat_jobs", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_chat_jobs_request_id", table_name="chat_jobs")
    op.drop_index("ix_chat_jobs_due", table_name="chat_jobs")
    op.drop_table("chat_jobs")
