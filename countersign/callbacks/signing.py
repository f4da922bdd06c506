"""The ``Countersign-Signature`` header: how callbacks are signed, and how receivers check them.

The header is ``t=<unix seconds>,v1=<hex HMAC-SHA256>``, the HMAC keyed with the
client's callback secret (the ``whsec_…`` string, as UTF-8) over
``"<t>.<raw body>"``. A receiver should::

    from countersign.callbacks.signing import verify_signature

    ok = verify_signature(
        secret, request.headers["Countersign-Signature"], await request.read(),
        now=int(time.time()),
    )

then de-duplicate on ``Countersign-Delivery``. Verify the raw bytes as received:
parsing and re-serialising the JSON changes them. The timestamp bounds replays
to ``tolerance`` seconds; several ``v1=`` values may appear (any one matching
is enough), so a secret can be rolled over by signing with both for a while.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["SIGNATURE_SCHEME", "signature_header", "signature_v1", "verify_signature"]

SIGNATURE_SCHEME = "v1"


def signature_v1(secret: str, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Countersign-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={int(timestamp)},{SIGNATURE_SCHEME}={signature_v1(secret, body, timestamp)}"


def _parse(header: str) -> tuple[int, list[str]] | None:
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return None
        if key == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                return None
            timestamp = int(value)
        elif key == SIGNATURE_SCHEME:
            candidates.append(value)
        # Other keys (future schemes) are ignored, as receivers of v1 should.
    if timestamp is None or not candidates:
        return None
    return timestamp, candidates


def verify_signature(
    secret: str, header: str, body: bytes, *, now: int, tolerance: int = 300
) -> bool:
    """True when ``header`` signs ``body`` with ``secret``, dated within ``tolerance`` of ``now``.

    Rejects malformed headers, timestamps more than ``tolerance`` seconds away
    from ``now`` (either way: old ones are replays, future ones are forged or a
    skewed clock), and signatures that do not match. Compares in constant time.
    """
    parsed = _parse(header)
    if parsed is None:
        return False
    timestamp, candidates = parsed
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature_v1(secret, body, timestamp).encode("ascii")
    matched = False
    for candidate in candidates:
        # Check every candidate, so the time taken does not say which one matched.
        if hmac.compare_digest(expected, candidate.encode("utf-8")):
            matched = True
    return matched
