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

__all__ = ["check_callback_url", "has_unsafe_characters", "is_public_address"]

# IPv6 prefixes that carry an IPv4 address in their last 32 bits: NAT64 (RFC 6052)
# and the deprecated IPv4-compatible form. The IPv4 address inside is what counts.
_EMBEDDING_V4 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::/96"))
# Local-use NAT64 (RFC 8215): translated by a gateway inside the network.
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")


def has_unsafe_characters(url: str) -> bool:
    """True when ``url`` holds whitespace or control characters.

    ``urlsplit`` silently drops tabs and newlines, so the URL it checks is not
    the one a client library would send; such a URL is refused outright.
    """
    return any(c.isspace() or ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in url)


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address (IPv4 inside IPv6 judged as IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_site_local or ip in _LOCAL_NAT64:
            return False
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif any(ip in net for net in _EMBEDDING_V4):
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.is_global and not ip.is_multicast


async def check_callback_url(url: str, *, allow_private: bool) -> str | None:
    """None when ``url`` may be called back; otherwise the reason it may not."""
    if has_unsafe_characters(url):
        return "must not contain whitespace or control characters"
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
