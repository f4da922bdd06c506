"""Chat state, all its SQL: posted card references, chat jobs and known chat identities.

Chat jobs follow the callback outbox's pattern (see ``storage.outbox``): a job
row is written (a plain INSERT, so it rides in the writers' fast paths) by the
transaction that changed its request; a worker claims due rows for a lease
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL), does the chat work once per request
and kind outside any transaction, then deletes the rows it claimed or
reschedules them. A change that lands while a worker is busy adds a new row,
so it is never skipped; a burst of votes costs one card update.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.tables import CardRefRow, ChatIdentityRow, ChatJobRow, TeamsConversationRow

__all__ = [
    "MAX_ERROR_CHARS",
    "CardRef",
    "ChatJob",
    "J",
    "KnownPerson",
    "TeamsConversation",
    "add_card_ref",
    "card_refs",
    "claim_jobs",
    "enqueue_job",
    "find_teams_channel",
    "finish_job",
    "known_people",
    "pending_job_count",
    "personal_teams_conversation",
    "remember_identity",
    "retry_job",
    "save_teams_conversation",
    "set_card_extra",
    "set_card_message",
    "teams_conversations",
    "user_ids",
]

J = ChatJobRow.__table__  # type: ignore[attr-defined]
K = CardRefRow.__table__  # type: ignore[attr-defined]
I = ChatIdentityRow.__table__  # type: ignore[attr-defined]  # noqa: E741
T = TeamsConversationRow.__table__  # type: ignore[attr-defined]

MAX_ERROR_CHARS = 300
# The first key of the advisory locks taken while claiming chat jobs ("CHAT").
CLAIM_LOCK_SPACE = 0x43484154


@dataclass(frozen=True)
class CardRef:
    """One posted chat message of a request, and what we know about its last update."""

    id: int
    request_id: str
    platform: str
    destination: str
    message_id: str
    extra: Mapping[str, Any] = field(default_factory=dict)


def _insert(conn: AsyncConnection | Connection) -> Any:
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


@dataclass(frozen=True)
class ChatJob:
    """Claimed work for one request and kind: the rows it stands for, and which attempt."""

    ids: tuple[int, ...]
    request_id: str
    kind: str
    attempt: int


def enqueue_job(conn: Connection, request_id: str, kind: str, due_at: datetime) -> None:
    """Queue a ``kind`` job for a request, due at ``due_at``, in the caller's transaction."""
    conn.execute(J.insert().values(request_id=request_id, kind=kind, attempts=0, due_at=due_at))


def claim_jobs(conn: Connection, now: datetime, limit: int, lease: timedelta) -> list[ChatJob]:
    """Claim due rows until ``now + lease``, grouped per request and kind (commit at once).

    A request with a job claimed by anyone (and not yet done, within its lease) is
    skipped: the jobs of one request run one at a time across replicas, so an
    older render can never land after a newer one from another replica, and the
    requester's outcome message is sent once. On PostgreSQL two claims at the
    same moment are kept apart per request by a transaction-level advisory lock
    (a claim that cannot take it skips the request this round), taken only on
    the rows this claim picked.
    """
    busy = J.alias("busy")
    running = (
        select(busy.c.id)
        .where(busy.c.request_id == J.c.request_id, busy.c.claimed_until > now)
        .exists()
    )
    pick = (
        select(J.c.id)
        .where(J.c.done_at.is_(None), J.c.due_at <= now, ~running)
        .order_by(J.c.due_at, J.c.id)
        .limit(limit)
    )
    if conn.dialect.name != "postgresql":
        ids = list((conn.execute(pick)).scalars())  # one writer at a time: nothing to race
    else:
        candidates = conn.execute(
            pick.add_columns(J.c.request_id).with_for_update(skip_locked=True)
        ).all()
        free = _lock_free_requests(conn, {row.request_id for row in candidates}, now)
        ids = [row.id for row in candidates if row.request_id in free]
    if not ids:
        return []
    conn.execute(
        update(J)
        .where(J.c.id.in_(ids))
        .values(attempts=J.c.attempts + 1, due_at=now + lease, claimed_until=now + lease)
    )
    rows = conn.execute(
        select(J.c.id, J.c.request_id, J.c.kind, J.c.attempts).where(J.c.id.in_(ids))
    )
    groups: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        groups.setdefault((row.request_id, row.kind), []).append(row)
    return [
        ChatJob(
            ids=tuple(sorted(r.id for r in group)),
            request_id=request_id,
            kind=kind,
            attempt=max(r.attempts for r in group),
        )
        for (request_id, kind), group in groups.items()
    ]


def _lock_free_requests(conn: Connection, request_ids: set[str], now: datetime) -> set[str]:
    """The requests of ``request_ids`` this claim may run: their advisory lock, then not busy.

    Two statements, in this order: once the lock is ours, a claim that held it
    before has committed, so the second statement (a new snapshot) sees its
    ``claimed_until``. The locks go with the transaction.
    """
    if not request_ids:
        return set()
    locked = list(
        conn.execute(
            text(
                "SELECT r FROM unnest(CAST(:ids AS text[])) AS r"
                " WHERE pg_try_advisory_xact_lock(:space, hashtext(r))"
            ),
            {"ids": sorted(request_ids), "space": CLAIM_LOCK_SPACE},
        ).scalars()
    )
    if not locked:
        return set()
    busy = conn.execute(
        select(J.c.request_id).where(J.c.request_id.in_(locked), J.c.claimed_until > now).distinct()
    ).scalars()
    return set(locked) - set(busy)


def finish_job(conn: Connection, job: ChatJob) -> None:
    """The job's work is done: delete the rows it stood for."""
    conn.execute(J.delete().where(J.c.id.in_(job.ids)))


def retry_job(conn: Connection, job: ChatJob, at: datetime, error: str) -> None:
    """Reschedule a failed job's rows for ``at`` (the request is free for other jobs)."""
    conn.execute(
        update(J)
        .where(J.c.id.in_(job.ids), J.c.done_at.is_(None))
        .values(due_at=at, claimed_until=None, last_error=error[:MAX_ERROR_CHARS])
    )


async def pending_job_count(conn: AsyncConnection) -> int:
    """Jobs not done yet (a gauge for ``/metrics``)."""
    return int(
        (
            await conn.execute(select(func.count()).select_from(J).where(J.c.done_at.is_(None)))
        ).scalar_one()
    )


def _ref(row: Any) -> CardRef:
    return CardRef(
        row.id, row.request_id, row.platform, row.destination, row.message_id, row.extra or {}
    )


def card_refs(conn: Connection, request_id: str, platform: str) -> list[CardRef]:
    """The messages posted for a request on one platform, oldest first (``SqlStore.read_job``)."""
    query = select(K).where(K.c.request_id == request_id, K.c.platform == platform)
    return [_ref(row) for row in conn.execute(query.order_by(K.c.id))]


def add_card_ref(
    conn: Connection,
    *,
    request_id: str,
    platform: str,
    destination: str,
    message_id: str,
    extra: Mapping[str, Any],
    now: datetime,
) -> CardRef:
    """Remember a posted message so it can be updated later."""
    result = conn.execute(
        K.insert()
        .values(
            request_id=request_id,
            platform=platform,
            destination=destination,
            message_id=message_id,
            extra=dict(extra),
            created_at=now,
        )
        .returning(K.c.id)
    )
    return CardRef(result.scalar_one(), request_id, platform, destination, message_id, extra)


def set_card_message(
    conn: Connection, ref: CardRef, message_id: str, extra: Mapping[str, Any]
) -> CardRef:
    """The message a stored intent (a card being posted) turned out to be."""
    conn.execute(update(K).where(K.c.id == ref.id).values(message_id=message_id, extra=dict(extra)))
    return CardRef(ref.id, ref.request_id, ref.platform, ref.destination, message_id, extra)


def set_card_extra(conn: Connection, ref_id: int, extra: Mapping[str, Any]) -> None:
    """Replace what we remember about a posted message (its last rendered state, replies)."""
    conn.execute(update(K).where(K.c.id == ref_id).values(extra=dict(extra)))


def remember_identity(
    conn: Connection,
    *,
    platform: str,
    user_id: str,
    email: str,
    display_name: str | None,
    now: datetime,
) -> None:
    """Store (or refresh) which e-mail address a chat user has."""
    stmt = _insert(conn)(I).values(
        platform=platform,
        user_id=user_id,
        email=email,
        display_name=display_name,
        updated_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[I.c.platform, I.c.user_id],
        set_={"email": email, "display_name": display_name, "updated_at": now},
    )
    conn.execute(stmt)


@dataclass(frozen=True)
class KnownPerson:
    """A chat user we have resolved: their id on the platform and display name, if any."""

    user_id: str
    display_name: str | None


async def known_people(
    conn: AsyncConnection, platform: str, emails: Iterable[str]
) -> dict[str, KnownPerson]:
    """E-mail → the chat user we know on ``platform`` (the newest, if several)."""
    wanted = sorted(set(emails))
    if not wanted:
        return {}
    rows = await conn.execute(
        select(I.c.email, I.c.user_id, I.c.display_name)
        .where(I.c.platform == platform, I.c.email.in_(wanted))
        .order_by(I.c.updated_at)
    )
    return {row.email: KnownPerson(row.user_id, row.display_name) for row in rows}


async def user_ids(conn: AsyncConnection, platform: str, emails: Iterable[str]) -> dict[str, str]:
    """E-mail → chat user id for the people we know on ``platform`` (newest wins)."""
    known = await known_people(conn, platform, emails)
    return {email: person.user_id for email, person in known.items()}


@dataclass(frozen=True)
class TeamsConversation:
    """A stored Teams conversation: where to post, and the reference to post with."""

    id: str
    kind: str
    service_url: str
    tenant_id: str | None
    team_id: str | None
    team_name: str | None
    channel_name: str | None
    user_id: str | None
    user_email: str | None
    reference: Mapping[str, Any]


def _conversation(row: Any) -> TeamsConversation:
    return TeamsConversation(
        row.id,
        row.kind,
        row.service_url,
        row.tenant_id,
        row.team_id,
        row.team_name,
        row.channel_name,
        row.user_id,
        row.user_email,
        row.reference,
    )


def save_teams_conversation(
    conn: Connection, conversation: TeamsConversation, now: datetime
) -> None:
    """Store (or refresh) a conversation; known names and e-mail are kept when not given."""
    values = {
        "id": conversation.id,
        "kind": conversation.kind,
        "service_url": conversation.service_url,
        "tenant_id": conversation.tenant_id,
        "team_id": conversation.team_id,
        "team_name": conversation.team_name,
        "channel_name": conversation.channel_name,
        "user_id": conversation.user_id,
        "user_email": conversation.user_email,
        "reference": dict(conversation.reference),
        "updated_at": now,
    }
    stmt = _insert(conn)(T).values(**values)
    keep = {"team_name", "channel_name", "user_email", "team_id", "user_id", "tenant_id"}
    stmt = stmt.on_conflict_do_update(
        index_elements=[T.c.id],
        set_={
            key: (
                func.coalesce(stmt.excluded[key], T.c[key]) if key in keep else stmt.excluded[key]
            )
            for key in values
            if key != "id"
        },
    )
    conn.execute(stmt)


async def teams_conversations(conn: AsyncConnection) -> list[TeamsConversation]:
    """Every stored conversation, teams and channels first."""
    rows = await conn.execute(select(T).order_by(T.c.kind, T.c.team_name, T.c.channel_name, T.c.id))
    return [_conversation(row) for row in rows]


async def find_teams_channel(conn: AsyncConnection, target: str) -> TeamsConversation | None:
    """A channel by ``Team/Channel`` (names, case-insensitive) or by conversation id."""
    row = (await conn.execute(select(T).where(T.c.id == target))).first()
    if row is not None:
        return _conversation(row)
    team, sep, channel = target.partition("/")
    if not sep:
        return None
    rows = await conn.execute(
        select(T).where(
            T.c.kind == "channel",
            func.lower(T.c.team_name) == team.strip().lower(),
            func.lower(T.c.channel_name) == channel.strip().lower(),
        )
    )
    found = rows.first()
    return _conversation(found) if found is not None else None


async def personal_teams_conversation(
    conn: AsyncConnection, email: str
) -> TeamsConversation | None:
    """The newest personal chat of the bot with the person at ``email``."""
    row = (
        await conn.execute(
            select(T)
            .where(T.c.kind == "personal", T.c.user_email == email)
            .order_by(T.c.updated_at.desc())
            .limit(1)
        )
    ).first()
    return _conversation(row) if row is not None else None
