"""Raw HTTP/1.1 over a socket: bytes no client library would agree to send."""

from __future__ import annotations

import asyncio

from tests.api.conftest import Api


async def send_raw(api: Api, head: bytes, body: bytes = b"") -> tuple[int, bytes, bytes]:
    """Send ``head`` (request line and headers, up to the blank line) and ``body``.

    Returns the status, the response's raw header block and its body.
    """
    host, port = api.server.host, api.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    headers, _, payload = data.partition(b"\r\n\r\n")
    status = int(headers.split(b" ", 2)[1])
    return status, headers, payload


def request_head(
    method: str, path: str, headers: list[bytes], body: bytes = b""
) -> tuple[bytes, bytes]:
    """A request's head with ``headers`` (each ``b"Name: value"``, sent as given)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: countersign.test", b"Connection: close"]
    lines += headers
    if body:
        lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n", body
