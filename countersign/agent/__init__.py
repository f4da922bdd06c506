"""For agent authors: clients, ``@require_approval`` and receipt checks.

Importable without the server's database and chat dependencies. The MCP gate
lives in ``countersign.agent.mcp_gate`` (it needs the MCP SDK) and is not
imported here.
"""

from countersign.agent.client import ApiError, AsyncClient, Client
from countersign.agent.decorator import require_approval
from countersign.agent.receipts import JwksCache, fetch_jwks, verify_receipt
from countersign.agent.types import (
    ApprovalCancelled,
    ApprovalDenied,
    ApprovalError,
    ApprovalExpired,
    ApprovalTimeout,
    Decision,
    ReceiptInvalid,
    Vote,
)

__all__ = [
    "ApiError",
    "ApprovalCancelled",
    "ApprovalDenied",
    "ApprovalError",
    "ApprovalExpired",
    "ApprovalTimeout",
    "AsyncClient",
    "Client",
    "Decision",
    "JwksCache",
    "ReceiptInvalid",
    "Vote",
    "fetch_jwks",
    "require_approval",
    "verify_receipt",
]
