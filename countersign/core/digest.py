"""Canonical JSON and the SHA-256 digests that bind approvals to exact params."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["canonical_json", "params_sha256"]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no whitespace and raw UTF-8: equal data gives equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def params_sha256(params: Any) -> str:
    """Hex SHA-256 of the canonical JSON of ``params`` (what receipts and votes bind to)."""
    return hashlib.sha256(canonical_json(params).encode("utf-8")).hexdigest()
