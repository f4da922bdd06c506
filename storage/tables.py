"""The database tables, as SQLModel classes (the schema; SQL lives in this package only)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

__all__ = [
    "ApiClientRow",
    "CardRefRow",
    "ChatIdentityRow",
    "ChatJobRow",
    "LedgerHeadRow",
    "LedgerPendingRow",
    "LedgerRow",
    "OutboxRow",
    "RequestRow",
    "SigningKeyRow",
    "TeamsConversationRow",
    "UTCDateTime",
    "VoteRow",
    "metadata",
]

metadata = SQLModel.metadata


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes (they are bugs); store UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite has no time zones: store naive UTC so text comparison orders correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Hand back aware UTC whatever the backend returned."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json() -> Any:
    return JSON().with_variant(JSONB(), "postgresql")


def _ts(*, nullable: bool = False, index: bool = False) -> Any:
    return Column(UTCDateTime(), nullable=nullable, index=index)


class RequestRow(SQLModel, table=True):
    """One approval request and its outcome (votes are in ``votes``)."""

    __tablename__ = "requests"
    __table_args__ = (
        UniqueConstraint("client", "idempotency_key", name="uq_requests_client_idem"),
        Index("ix_requests_status_expires", "status", "expires_at"),
        # History pages are newest first (by id) under one filter: with the id in the
        # index a page is an index range, not a sort of every matching row.
        Index("ix_requests_client_id", "client", "id"),
        Index("ix_requests_status_id", "status", "id"),
        Index("ix_requests_action_id", "action", "id"),
        Index("ix_requests_requested_by_lower_id", func.lower(text("requested_by")), "id"),
    )

    id: str = Field(sa_column=Column(String(40), primary_key=True))
    client: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    client_owner: str | None = Field(default=None, sa_column=Column(String(254)))
    requested_by: str | None = Field(default=None, sa_column=Column(String(254), index=True))
    action: str = Field(sa_column=Column(String(128), nullable=False, index=True))
    resource: str = Field(sa_column=Column(String(512), nullable=False))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    params: dict[str, Any] = Field(sa_column=Column(_json(), nullable=False))
    params_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    context: dict[str, Any] = Field(sa_column=Column(_json(), nullable=False))
    rule_name: str = Field(sa_column=Column(String(64), nullable=False))
    verdict: str = Field(sa_column=Column(String(32), nullable=False))
    approvers: list[str] = Field(sa_column=Column(_json(), nullable=False))
    quorum: int = Field(sa_column=Column(Integer, nullable=False))
    deny_quorum: int = Field(sa_column=Column(Integer, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    created_at: datetime = Field(sa_column=_ts())
    expires_at: datetime = Field(sa_column=_ts())
    decided_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    decided_by: list[str] = Field(sa_column=Column(_json(), nullable=False))
    decision_reason: str | None = Field(default=None, sa_column=Column(Text))
    approved_params: dict[str, Any] | None = Field(default=None, sa_column=Column(_json()))
    approved_params_sha256: str | None = Field(default=None, sa_column=Column(String(64)))
    callback_url: str | None = Field(default=None, sa_column=Column(Text))
    receipt: str | None = Field(default=None, sa_column=Column(Text))
    idempotency_key: str | None = Field(default=None, sa_column=Column(String(255)))
    body_sha256: str | None = Field(default=None, sa_column=Column(String(64)))


class VoteRow(SQLModel, table=True):
    """One person's vote on one request; the unique key makes 'one vote per person' hard."""

    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("request_id", "voter", name="uq_votes_request_voter"),)

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    request_id: str = Field(
        sa_column=Column(String(40), ForeignKey("requests.id"), nullable=False, index=True)
    )
    voter: str = Field(sa_column=Column(String(254), nullable=False, index=True))
    platform: str = Field(sa_column=Column(String(32), nullable=False))
    choice: str = Field(sa_column=Column(String(16), nullable=False))
    comment: str | None = Field(default=None, sa_column=Column(Text))
    edited_params: dict[str, Any] | None = Field(default=None, sa_column=Column(_json()))
    params_sha256: str | None = Field(default=None, sa_column=Column(String(64)))
    at: datetime = Field(sa_column=_ts())


class ApiClientRow(SQLModel, table=True):
    """An API client; only the SHA-256 of its bearer token is stored."""

    __tablename__ = "api_clients"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    name: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    owner: str | None = Field(default=None, sa_column=Column(String(254)))
    token_sha256: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    # Sealed with the server key (countersign.crypto): callbacks are signed with it.
    callback_secret: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(sa_column=_ts())
    revoked_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class CardRefRow(SQLModel, table=True):
    """A card posted for a request (Slack channel+ts, Teams conversation+activity id)."""

    __tablename__ = "card_refs"
    __table_args__ = (
        UniqueConstraint("platform", "destination", "message_id", name="uq_card_refs_message"),
    )

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    request_id: str = Field(
        sa_column=Column(String(40), ForeignKey("requests.id"), nullable=False, index=True)
    )
    platform: str = Field(sa_column=Column(String(16), nullable=False))
    destination: str = Field(sa_column=Column(String(255), nullable=False))
    message_id: str = Field(sa_column=Column(String(255), nullable=False))
    extra: dict[str, Any] = Field(sa_column=Column(_json(), nullable=False))
    created_at: datetime = Field(sa_column=_ts())


class ChatIdentityRow(SQLModel, table=True):
    """A chat user resolved to an e-mail address (the identity every rule compares)."""

    __tablename__ = "chat_identities"

    platform: str = Field(sa_column=Column(String(16), primary_key=True))
    user_id: str = Field(sa_column=Column(String(255), primary_key=True))
    email: str = Field(sa_column=Column(String(254), nullable=False, index=True))
    display_name: str | None = Field(default=None, sa_column=Column(String(255)))
    updated_at: datetime = Field(sa_column=_ts())


class LedgerRow(SQLModel, table=True):
    """One hash-chained ledger entry; ``at`` and ``data`` are stored as the exact hashed text."""

    __tablename__ = "ledger"

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    at: str = Field(sa_column=Column(String(32), nullable=False))
    event: str = Field(sa_column=Column(String(64), nullable=False))
    request_id: str | None = Field(default=None, sa_column=Column(String(40), index=True))
    actor: str | None = Field(default=None, sa_column=Column(String(254)))
    data: str = Field(sa_column=Column(Text, nullable=False))
    prev_hash: str = Field(sa_column=Column(String(64), nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False))


class LedgerHeadRow(SQLModel, table=True):
    """The single row naming the ledger's last entry; locking it orders all appends."""

    __tablename__ = "ledger_head"

    id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False))


class LedgerPendingRow(SQLModel, table=True):
    """PostgreSQL: one transaction's unchained ledger entries, chained by a trigger at COMMIT."""

    __tablename__ = "ledger_pending"

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    entries: list[dict[str, Any]] = Field(sa_column=Column(_json(), nullable=False))


class SigningKeyRow(SQLModel, table=True):
    """A receipt signing key (Ed25519); the private half is sealed with the server key."""

    __tablename__ = "signing_keys"

    kid: str = Field(sa_column=Column(String(64), primary_key=True))
    public_jwk: str = Field(sa_column=Column(Text, nullable=False))
    private_key: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=_ts())
    # Set on rotation: no new receipts after it; published until its receipts expire.
    retired_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    publish_until: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class OutboxRow(SQLModel, table=True):
    """A callback waiting to be delivered; written in the transaction that decided."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "delivered_at", "next_attempt_at"),)

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    delivery_id: str = Field(sa_column=Column(String(40), nullable=False, unique=True))
    request_id: str = Field(
        sa_column=Column(String(40), ForeignKey("requests.id"), nullable=False, index=True)
    )
    event: str = Field(sa_column=Column(String(64), nullable=False))
    url: str = Field(sa_column=Column(Text, nullable=False))
    payload: str = Field(sa_column=Column(Text, nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    next_attempt_at: datetime = Field(sa_column=_ts())
    delivered_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    dead_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    last_status: int | None = Field(default=None, sa_column=Column(Integer))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(sa_column=_ts())


class ChatJobRow(SQLModel, table=True):
    """Chat work for a request: bring its cards up to date, remind, or escalate.

    One row per change, written (a plain INSERT) by the transaction that made
    the change, so no change is lost to a crash. The worker runs the due rows
    of one request and kind once, however many there are, then deletes them.
    ``claimed_until`` is set on the rows a worker runs now (its lease): no other
    worker claims a job of the same request until it is done or the lease ran out.
    """

    __tablename__ = "chat_jobs"
    __table_args__ = (Index("ix_chat_jobs_due", "done_at", "due_at"),)

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    request_id: str = Field(
        sa_column=Column(String(40), ForeignKey("requests.id"), nullable=False, index=True)
    )
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    due_at: datetime = Field(sa_column=_ts())
    done_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    claimed_until: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class TeamsConversationRow(SQLModel, table=True):
    """A Teams conversation the bot is in (a channel, a group chat, or a personal chat).

    Stored when the app is installed or messaged, so cards can be posted to it
    later (proactive messages need the service URL and the conversation id).
    """

    __tablename__ = "teams_conversations"

    id: str = Field(sa_column=Column(String(255), primary_key=True))
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    service_url: str = Field(sa_column=Column(Text, nullable=False))
    tenant_id: str | None = Field(default=None, sa_column=Column(String(64)))
    team_id: str | None = Field(default=None, sa_column=Column(String(255)))
    team_name: str | None = Field(default=None, sa_column=Column(String(255)))
    channel_name: str | None = Field(default=None, sa_column=Column(String(255)))
    user_id: str | None = Field(default=None, sa_column=Column(String(255)))
    user_email: str | None = Field(default=None, sa_column=Column(String(254), index=True))
    reference: dict[str, Any] = Field(sa_column=Column(_json(), nullable=False))
    updated_at: datetime = Field(sa_column=_ts())
