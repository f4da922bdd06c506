"""The ports the service talks through: a store with transactions, and a clock.

Storage implements ``Store`` (see ``storage.repository``); tests and adapters
can hand the service any object of this shape. No SQL or framework here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from countersign.core.model import ApprovalRequest, Status, Vote

__all__ = [
    "ApiClient",
    "ChangeListener",
    "Clock",
    "DuplicateKey",
    "HistoryQuery",
    "ReceiptIssuer",
    "Sealer",
    "Store",
    "SystemClock",
    "Transaction",
]


class DuplicateKey(Exception):
    """A concurrent writer inserted the same unique key first (the caller retries or reads)."""


@dataclass(frozen=True)
class ApiClient:
    """An API client: its name, the human who owns it, and whether it is revoked."""

    name: str
    owner: str | None
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class HistoryQuery:
    """Filters for history, newest first; ``cursor`` is the last id of the previous page."""

    status: Status | None = None
    action: str | None = None
    resource: str | None = None
    requested_by: str | None = None
    approver: str | None = None
    client: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    cursor: str | None = None


class Transaction(Protocol):
    """One database transaction: everything done through it commits or rolls back together."""

    async def get_request(self, request_id: str, *, lock: bool = False) -> ApprovalRequest | None:
        """A request with its votes; ``lock`` serialises writers of that request until commit."""
        ...

    async def find_idempotent(
        self, client: str, key: str
    ) -> tuple[ApprovalRequest, str | None] | None:
        """The request a client created under an Idempotency-Key, and its body digest."""
        ...

    async def insert_request(
        self,
        request: ApprovalRequest,
        *,
        idempotency_key: str | None = None,
        body_sha256: str | None = None,
    ) -> None:
        """Store a new request (``DuplicateKey`` if its idempotency key is taken)."""
        ...

    async def save_outcome(self, request: ApprovalRequest) -> None:
        """Store a request's status and decision fields."""
        ...

    async def insert_vote(self, request_id: str, vote: Vote) -> None:
        """Store one vote (``DuplicateKey`` if that person has voted already)."""
        ...

    async def append_ledger(
        self,
        event: str,
        *,
        at: datetime,
        request_id: str | None = None,
        actor: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one event to the hash-chained ledger."""
        ...

    async def enqueue_callback(
        self, *, delivery_id: str, request_id: str, event: str, url: str, payload: str, at: datetime
    ) -> None:
        """Put one callback delivery in the outbox."""
        ...

    async def enqueue_chat(self, request_id: str, kind: str, due_at: datetime) -> None:
        """Arm the request's ``kind`` chat job (``sync`` cards, ``remind``, ``escalate``)."""
        ...

    async def save_approvers(self, request_id: str, approvers: frozenset[str]) -> None:
        """Replace the request's eligible approvers (escalation adds people)."""
        ...

    async def due_request_ids(self, now: datetime, limit: int) -> list[str]:
        """Ids of pending requests whose time has run out."""
        ...

    async def final_request_ids(self, request_ids: Sequence[str]) -> set[str]:
        """Those of ``request_ids`` that are no longer pending."""
        ...

    async def history(self, query: HistoryQuery) -> list[ApprovalRequest]:
        """Requests matching ``query``, newest first, at most ``query.limit``."""
        ...

    async def add_client(
        self, client: ApiClient, token_sha256: str, sealed_callback_secret: str | None
    ) -> None:
        """Store a new API client (``DuplicateKey`` if the name is taken)."""
        ...

    async def sealed_callback_secret(self, name: str) -> str | None:
        """The sealed callback secret of client ``name`` (None if it has none)."""
        ...

    async def notify_change(self, request_id: str) -> None:
        """Tell other processes, on commit, that this request changed."""
        ...

    async def list_clients(self) -> list[ApiClient]:
        """Every client, by name."""
        ...

    async def revoke_client(self, name: str, at: datetime) -> bool:
        """Mark a client revoked; False when there is no such active client."""
        ...


class ReceiptIssuer(Protocol):
    """Signs the receipt an approved request carries (see ``countersign.receipts``)."""

    def issue(self, request: ApprovalRequest) -> str:
        """A signed receipt bound to the request's approved action and params."""
        ...


class Sealer(Protocol):
    """Encrypts secrets at rest (see ``countersign.crypto.SecretBox``)."""

    def seal(self, plaintext: str) -> str:
        """The sealed form of ``plaintext``."""
        ...

    def open(self, sealed: str) -> str:
        """The plaintext of a sealed value."""
        ...


class ChangeListener(Protocol):
    """Told, after commit, that a request changed (waiters, the callback worker, cards)."""

    def request_changed(self, request: ApprovalRequest) -> None:
        """Called once per committed change, in this process."""
        ...


class Store(Protocol):
    """Opens transactions: ``write()`` for changes, ``read()`` for queries."""

    def write(self) -> AbstractAsyncContextManager[Transaction]:
        """A write transaction (serialised with other writers where the backend needs it)."""
        ...

    def read(self) -> AbstractAsyncContextManager[Transaction]:
        """A read-only transaction."""
        ...

    async def request_by_id(self, request_id: str) -> ApprovalRequest | None:
        """One request with its votes, in one consistent read (no lock)."""
        ...

    async def client_by_token(self, token_sha256: str) -> ApiClient | None:
        """The client whose token hashes to ``token_sha256`` (revoked or not), in one statement."""
        ...


class Clock(Protocol):
    """Tells the time (tests move it by hand)."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        return datetime.now(UTC)
