"""The connect-time resolver refuses what the destination check refuses."""

from __future__ import annotations

import pytest

from countersign.callbacks.resolver import PublicOnlyResolver


async def test_a_name_with_only_internal_addresses_does_not_resolve() -> None:
    resolver = PublicOnlyResolver()
    try:
        with pytest.raises(OSError, match="only to internal addresses"):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()
