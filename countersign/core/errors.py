"""The one error tree of Countersign.

Every rule the approval core enforces fails with one of these; adapters map
them to HTTP statuses and private chat answers in one place each::

    CountersignError
    ├── NotFound                 no such request (or not visible to the caller)
    ├── InvalidRequest           a request body breaks a limit (field-level errors)
    ├── IdempotencyConflict      same Idempotency-Key, different body
    ├── PolicyInvalid            the policy file has problems (each with its line)
    ├── AlreadyDecided           the request is final (approved/denied/cancelled)
    │   └── Expired              ...because its time ran out
    └── VoteRefused              a vote broke a rule; the attempt is recorded
        ├── SelfApproval         the requester or the client's owner tried to approve
        ├── NotAnApprover        the voter is not named by the request's rule
        ├── AlreadyVoted         one vote per person
        └── InvalidEdit          "approve with changes" params are not acceptable

``code`` is a stable machine-readable name (used in the ledger, problem+json
``type`` and chat answers); ``str(error)`` is a sentence a person can read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AlreadyDecided",
    "AlreadyVoted",
    "CountersignError",
    "Expired",
    "FieldError",
    "IdempotencyConflict",
    "InvalidEdit",
    "InvalidRequest",
    "NotAnApprover",
    "NotFound",
    "PolicyInvalid",
    "PolicyProblem",
    "SelfApproval",
    "VoteRefused",
]


class CountersignError(Exception):
    """Base of every error Countersign raises on purpose."""

    code = "error"


class NotFound(CountersignError):
    """The request does not exist, or the caller may not see it."""

    code = "not_found"

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request {request_id} not found")
        self.request_id = request_id


@dataclass(frozen=True)
class FieldError:
    """One invalid field of a request body: where it is and what is wrong."""

    field: str
    message: str


class InvalidRequest(CountersignError):
    """A request body (or a vote's payload) is not acceptable."""

    code = "invalid_request"

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in self.errors))


class IdempotencyConflict(CountersignError):
    """An Idempotency-Key was reused with a different body."""

    code = "idempotency_conflict"

    def __init__(self, key: str, request_id: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was used for request {request_id} with a different body"
        )
        self.key = key
        self.request_id = request_id


@dataclass(frozen=True)
class PolicyProblem:
    """One problem in a policy file, with the 1-based line it is on (0 = whole file)."""

    line: int
    message: str
    source: str = "policy"

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


class PolicyInvalid(CountersignError):
    """The policy file cannot be used; ``problems`` lists every reason."""

    code = "policy_invalid"

    def __init__(self, problems: Sequence[PolicyProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class AlreadyDecided(CountersignError):
    """The request is final; nothing changes it any more."""

    code = "already_decided"

    def __init__(self, request_id: str, status: str) -> None:
        super().__init__(f"request {request_id} is already {status}")
        self.request_id = request_id
        self.status = status


class Expired(AlreadyDecided):
    """The request's time ran out before a decision (expiry denies by default)."""

    code = "expired"

    def __init__(self, request_id: str) -> None:
        super().__init__(request_id, "expired")
        self.args = (f"request {request_id} has expired",)


class VoteRefused(CountersignError):
    """A vote broke one of the approval rules; the attempt is recorded, nothing else changes."""

    code = "vote_refused"

    def __init__(self, request_id: str, voter: str, message: str) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.voter = voter


class SelfApproval(VoteRefused):
    """The human behind a request, or its client's owner, tried to approve it."""

    code = "self_approval"

    def __init__(self, request_id: str, voter: str, role: str) -> None:
        super().__init__(
            request_id,
            voter,
            f"{voter} is the {role} of request {request_id} and cannot approve it",
        )
        self.role = role


class NotAnApprover(VoteRefused):
    """The voter is not one of the approvers the matching rule names."""

    code = "not_an_approver"

    def __init__(self, request_id: str, voter: str, rule: str) -> None:
        super().__init__(
            request_id, voter, f"{voter} is not an approver of rule {rule!r} (request {request_id})"
        )
        self.rule = rule


class AlreadyVoted(VoteRefused):
    """The voter has voted on this request already; one vote per person."""

    code = "already_voted"

    def __init__(self, request_id: str, voter: str, previous: str) -> None:
        super().__init__(
            request_id, voter, f"{voter} already voted {previous} on request {request_id}"
        )
        self.previous = previous


class InvalidEdit(VoteRefused):
    """Edited params were given where they do not fit, or are not acceptable."""

    code = "invalid_edit"

    def __init__(self, request_id: str, voter: str, reason: str) -> None:
        super().__init__(request_id, voter, f"invalid edit on request {request_id}: {reason}")
        self.reason = reason
