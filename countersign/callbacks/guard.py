"""Where callbacks may go: never to loopback, private, link-local or other internal
addresses (server-side request forgery), unless the operator allows it with
``COUNTERSIGN_ALLOW_PRIVATE_CALLBACKS=1``.

Checked when a request is created (so the client hears at once) and again before
every delivery (DNS can change between the two).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

__all__ = ["check_callback_url", "is_public_address"]


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_callback_url(url: str, *, allow_private: bool) -> str | None:
    """None when ``url`` may be called back; otherwise the reason it may not."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:  # unbalanced brackets, port out of range
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http or https URL with a host"
    if parts.username or parts.password:
        return "must not carry credentials"
    if allow_private:
        return None
    host = parts.hostname
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return f"host {host!r} does not resolve ({exc})"
    for info in infos:
        address = str(info[4][0])
        if not is_public_address(address):
            return (
                f"host {host!r} resolves to {address}, an internal address "
                "(set COUNTERSIGN_ALLOW_PRIVATE_CALLBACKS=1 to allow)"
            )
    return None
