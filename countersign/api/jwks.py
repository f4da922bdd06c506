"""``GET /.well-known/jwks.json``: the public keys that verify approval receipts."""

from __future__ import annotations

from aiohttp import web

from countersign.receipts import RECEIPTS

__all__ = ["jwks_handler"]


async def jwks_handler(request: web.Request) -> web.Response:
    """The JWKS of the receipt keys, retired ones included until their receipts lapse."""
    # Verifiers may cache it briefly; five minutes bounds how long a new key goes unseen,
    # and a rotated-out key stays published longer than that.
    return web.json_response(
        request.app[RECEIPTS].jwks(), headers={"Cache-Control": "public, max-age=300"}
    )
