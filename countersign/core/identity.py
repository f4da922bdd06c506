"""Who a person is: an e-mail address, compared case-insensitively.

One person on Slack and on Teams is one person because both platforms resolve
to the same address. Addresses are normalised once, on the way in.
"""

from __future__ import annotations

import re

__all__ = ["is_email", "normalize_email"]

# Deliberately plain: platforms hand us addresses from their directories, and
# policy authors type them. We reject what cannot be an address, not what an
# RFC 5322 parser would.
_EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+\.[^@\s<>()\[\],;:\"]+$")


def is_email(value: str) -> bool:
    """True when ``value`` looks like a deliverable e-mail address."""
    return len(value) <= 254 and _EMAIL.match(value.strip()) is not None


def normalize_email(value: str) -> str:
    """The identity key of an address: trimmed and lower-cased; ValueError if not an address."""
    candidate = value.strip()
    if not is_email(candidate):
        raise ValueError(f"not an e-mail address: {value!r}")
    return candidate.lower()
