"""The REST API (CONTRACT.md "HTTP"): an aiohttp adapter that parses, calls the service, renders.

``countersign.server`` wires it: ``MIDDLEWARES`` on the application,
``api_context`` in its cleanup context, ``setup_api`` for the routes.
"""

from countersign.api.setup import MIDDLEWARES, api_context, release_waiters, setup_api

__all__ = ["MIDDLEWARES", "api_context", "release_waiters", "setup_api"]
