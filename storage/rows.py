"""Rows to domain objects and back, and the statements built once (shared by both paths)."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update

from countersign.core.model import ApprovalRequest, Choice, RuleSnapshot, Status, Verdict, Vote
from countersign.ports import ApiClient
from storage.tables import ApiClientRow, OutboxRow, RequestRow, VoteRow

__all__ = [
    "CLIENT_BY_TOKEN",
    "GET_REQUEST",
    "GET_REQUEST_LOCKED",
    "INSERT_VOTE",
    "VOTES_OF",
    "C",
    "O",
    "R",
    "V",
    "client_from_row",
    "insert_statement",
    "outcome_values",
    "request_from_row",
    "update_statement",
    "vote_from_row",
]

R = RequestRow.__table__  # type: ignore[attr-defined]
V = VoteRow.__table__  # type: ignore[attr-defined]
C = ApiClientRow.__table__  # type: ignore[attr-defined]
O = OutboxRow.__table__  # type: ignore[attr-defined]  # noqa: E741

# Statements built once: a statement built per call (``insert(R).values(**row)``)
# costs more CPU to build and to key for the compiled cache than to execute.
INSERT_VOTE = insert(V)
GET_REQUEST = select(R).where(R.c.id == bindparam("id"))
GET_REQUEST_LOCKED = GET_REQUEST.with_for_update()
VOTES_OF = select(V).where(V.c.request_id == bindparam("id")).order_by(V.c.id)


@cache
def insert_statement(table: Table) -> Any:
    """INSERT into ``table``, the columns named by the parameters."""
    return insert(table)


@cache
def update_statement(table: Table) -> Any:
    """UPDATE the row of ``table`` whose id is the ``row_key`` parameter."""
    return update(table).where(table.c.id == bindparam("row_key"))


CLIENT_BY_TOKEN = select(C).where(C.c.token_sha256 == bindparam("token"))


def vote_from_row(row: Any) -> Vote:
    """A vote row as a ``Vote``."""
    return Vote(
        voter=row.voter,
        platform=row.platform,
        choice=Choice(row.choice),
        at=row.at,
        comment=row.comment,
        edited_params=row.edited_params,
        params_sha256=row.params_sha256,
    )


def request_from_row(row: Any, votes: tuple[Vote, ...]) -> ApprovalRequest:
    """A request row and its votes as an ``ApprovalRequest``."""
    return ApprovalRequest(
        id=row.id,
        action=row.action,
        resource=row.resource,
        reason=row.reason,
        params=row.params,
        params_sha256=row.params_sha256,
        context=row.context,
        client=row.client,
        client_owner=row.client_owner,
        requested_by=row.requested_by,
        rule=RuleSnapshot(
            name=row.rule_name,
            verdict=Verdict(row.verdict),
            approvers=frozenset(row.approvers),
            quorum=row.quorum,
            deny_quorum=row.deny_quorum,
        ),
        status=Status(row.status),
        created_at=row.created_at,
        expires_at=row.expires_at,
        callback_url=row.callback_url,
        votes=votes,
        decided_at=row.decided_at,
        decided_by=tuple(row.decided_by),
        decision_reason=row.decision_reason,
        approved_params=row.approved_params,
        approved_params_sha256=row.approved_params_sha256,
        receipt=row.receipt,
    )


def outcome_values(request: ApprovalRequest) -> dict[str, Any]:
    """The decision columns of ``request``."""
    return {
        "status": request.status.value,
        "decided_at": request.decided_at,
        "decided_by": list(request.decided_by),
        "decision_reason": request.decision_reason,
        "approved_params": (
            dict(request.approved_params) if request.approved_params is not None else None
        ),
        "approved_params_sha256": request.approved_params_sha256,
        "receipt": request.receipt,
    }


def client_from_row(row: Any) -> ApiClient:
    """A client row as an ``ApiClient``."""
    return ApiClient(
        name=row.name, owner=row.owner, created_at=row.created_at, revoked_at=row.revoked_at
    )
