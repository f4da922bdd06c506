"""The approval core: states, votes, quorum and the rules that never bend.

Pure: no I/O, no framework, no database. Everything here is a value object or
a function over value objects, testable with a table of cases.
"""

from countersign.core.digest import canonical_json, params_sha256
from countersign.core.errors import (
    AlreadyDecided,
    AlreadyVoted,
    CountersignError,
    Expired,
    FieldError,
    IdempotencyConflict,
    InvalidEdit,
    InvalidRequest,
    NotAnApprover,
    NotFound,
    PolicyInvalid,
    PolicyProblem,
    SelfApproval,
    VoteRefused,
)
from countersign.core.identity import is_email, normalize_email
from countersign.core.model import (
    ApprovalRequest,
    Choice,
    JsonObject,
    RuleSnapshot,
    Status,
    Tally,
    Verdict,
    Vote,
)
from countersign.core.requests import RequestSpec, open_request, validate_spec
from countersign.core.voting import (
    Ballot,
    VoteResult,
    cancel,
    cast_vote,
    ensure_open,
    expire_if_due,
    is_due,
    self_role,
    tally,
)

__all__ = [
    "AlreadyDecided",
    "AlreadyVoted",
    "ApprovalRequest",
    "Ballot",
    "Choice",
    "CountersignError",
    "Expired",
    "FieldError",
    "IdempotencyConflict",
    "InvalidEdit",
    "InvalidRequest",
    "JsonObject",
    "NotAnApprover",
    "NotFound",
    "PolicyInvalid",
    "PolicyProblem",
    "RequestSpec",
    "RuleSnapshot",
    "SelfApproval",
    "Status",
    "Tally",
    "Verdict",
    "Vote",
    "VoteRefused",
    "VoteResult",
    "cancel",
    "canonical_json",
    "cast_vote",
    "ensure_open",
    "expire_if_due",
    "is_due",
    "is_email",
    "normalize_email",
    "open_request",
    "params_sha256",
    "self_role",
    "tally",
    "validate_spec",
]
