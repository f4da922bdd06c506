"""A TCP proxy that breaks the first create: forwarded (so it happens) but never answered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

CREATE = b"POST /v1/requests "


async def _read_message(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 message with a Content-Length body (all the API sends and receives)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return head + (await reader.readexactly(length) if length else b"")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, OSError):
        writer.close()


@dataclass
class BlipProxy:
    """Counts what it did; ``mode`` is ``drop`` (cut after the server answered) or ``503``."""

    target_port: int
    mode: str = "drop"
    port: int = 0
    broken: int = 0
    creates: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection."""
        try:
            request = await _read_message(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )
        if request.startswith(CREATE):
            self.creates += 1
            if not self.broken:
                self.broken += 1
                if self.mode == "503":
                    writer.write(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                        b"Connection: close\r\n\r\n"
                    )
                    await writer.drain()
                else:
                    upstream_writer.write(request)
                    await upstream_writer.drain()
                    await _read_message(upstream_reader)  # the server created it and answered
                    writer.transport.abort()  # ... but the client never hears it
                upstream_writer.close()
                writer.close()
                return
        upstream_writer.write(request)
        await upstream_writer.drain()
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))


@asynccontextmanager
async def blip_proxy(target_port: int, mode: str = "drop") -> AsyncIterator[BlipProxy]:
    """A running ``BlipProxy`` in front of 127.0.0.1:``target_port``."""
    proxy = BlipProxy(target_port, mode)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        proxy.tasks.add(task)
        try:
            await proxy.handle(reader, writer)
        finally:
            proxy.tasks.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()
        for task in list(proxy.tasks):
            task.cancel()
        await server.wait_closed()
