"""A DNS resolver for callback sessions that never hands out an internal address.

``check_callback_url`` resolves the host before each attempt, but aiohttp
resolves it again to connect, and a hostile DNS server can answer differently
the second time (DNS rebinding). This resolver applies the same rule at connect
time. IP-literal URLs skip resolvers; the check has already covered them.
"""

from __future__ import annotations

import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from countersign.callbacks.guard import is_public_address

__all__ = ["PublicOnlyResolver"]


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver, minus internal addresses: a name may change after it was checked."""

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The public addresses of ``host``; OSError when it has none."""
        found = await self._inner.resolve(host, port, family)
        public = [result for result in found if is_public_address(result["host"])]
        if not public:
            raise OSError(f"host {host!r} resolves only to internal addresses")
        return public

    async def close(self) -> None:
        """Release the inner resolver."""
        await self._inner.close()
