"""Changes committed by other processes, from PostgreSQL ``LISTEN``.

Every changing transaction does ``pg_notify(CHANGES_CHANNEL, request_id)``
(see ``storage.repository``); PostgreSQL delivers it on commit to every
listening connection. This feed keeps one dedicated asyncpg connection (not
one from the engine's pool: a pooled connection would be handed to queries),
calls ``on_change(request_id)`` for each notification, and reconnects with
exponential back-off when the connection drops. After every (re)connect it
calls ``on_gap()``: notifications sent while nobody listened are lost, so
whoever waits must re-read.

A silently dead connection (no FIN, e.g. a NAT timeout) is found by a ping
every ``ping_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
from sqlalchemy.engine import URL

from storage.repository import CHANGES_CHANNEL

__all__ = ["APPLICATION_NAME", "ChangeFeed", "listen_dsn"]

log = logging.getLogger("countersign.changefeed")

# Shown in pg_stat_activity, so operators (and tests) can tell this connection apart.
APPLICATION_NAME = "countersign-listen"

# SQLAlchemy-only URL options that asyncpg would take for server settings.
_DIALECT_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func")


def listen_dsn(url: URL) -> str:
    """A plain ``postgresql://`` DSN for asyncpg from the engine's URL (password kept)."""
    query = {k: v for k, v in url.query.items() if k not in _DIALECT_ONLY}
    if "ssl" in query:  # normalize_database_url turned sslmode into the dialect's "ssl"
        query["sslmode"] = query.pop("ssl")
    plain = url.set(drivername="postgresql", query=query)
    return plain.render_as_string(hide_password=False)


class ChangeFeed:
    """One LISTEN connection on ``CHANGES_CHANNEL``, kept open until cancelled."""

    def __init__(
        self,
        dsn: str,
        on_change: Callable[[str], None],
        on_gap: Callable[[], None],
        *,
        ping_seconds: float = 30.0,
        min_backoff: float = 0.1,
        max_backoff: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self._on_change = on_change
        self._on_gap = on_gap
        self._ping_seconds = ping_seconds
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self.connected = asyncio.Event()
        self.connects = 0

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self._on_change(str(payload))

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with back-off."""
        backoff = self._min_backoff
        while True:
            try:
                conn = await asyncpg.connect(
                    self._dsn, timeout=10, server_settings={"application_name": APPLICATION_NAME}
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure to connect: wait and try again
                log.warning("change feed: cannot connect (%s); retry in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            backoff = self._min_backoff
            try:
                await self._listen(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection broke mid-way; reconnect
                log.warning("change feed: connection lost (%s)", exc)
            finally:
                self.connected.clear()
                await _close(conn)
            log.info("change feed: reconnecting in %.1fs", backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _listen(self, conn: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(CHANGES_CHANNEL, self._notified)
        self.connects += 1
        self.connected.set()
        log.info("change feed: listening on %s", CHANGES_CHANNEL)
        self._on_gap()
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self._ping_seconds)
                break
            await conn.execute("SELECT 1", timeout=5)
        log.warning("change feed: connection closed by the server")


async def _close(conn: asyncpg.Connection) -> None:
    if conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.close(), 2)
    except Exception:  # a broken socket cannot say goodbye; drop it
        conn.terminate()
