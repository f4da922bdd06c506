"""Callback secrets, receipts, signing keys and outbox delivery state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        sa.Column("private_key", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("publish_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kid"),
    )
    with op.batch_alter_table("api_clients") as batch_op:
        batch_op.add_column(sa.Column("callback_secret", sa.Text(), nullable=True))
    with op.batch_alter_table("requests") as batch_op:
        batch_op.add_column(sa.Column("receipt", sa.Text(), nullable=True))
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.add_column(sa.Column("dead_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_status", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_column("last_status")
        batch_op.drop_column("dead_at")
    with op.batch_alter_table("requests") as batch_op:
        batch_op.drop_column("receipt")
    with op.batch_alter_table("api_clients") as batch_op:
        batch_op.drop_column("callback_secret")
    op.drop_table("signing_keys")
