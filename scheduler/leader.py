"""One scheduling process at a time: the holder of a PostgreSQL session-level advisory lock,
taken on a connection of its own.

The lock lives exactly as long as that connection. A leader killed outright (SIGKILL, power
cut) loses its connection and so the lock; the others try for it every `retry_interval`
seconds and one takes over. The server's TCP keepalives (set on the connection) notice a
leader whose host vanished without closing its socket within about 20 s. The leader watches
its connection (closed at once, or failing a check every `check_interval` seconds) and stops
scheduling the moment it is lost, before anyone else can take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import locks

log = logging.getLogger(__name__)

Connect = Callable[[], Awaitable[Any]]  # gives a new asyncpg connection
Elected = Callable[[], Awaitable[None]]
Deposed = Callable[[bool], Awaitable[None]]  # True: a clean stop, False: the lock was lost

SCHEDULER_LOCK = locks.SCHEDULER  # see storage.locks
APPLICATION_NAME = "villagebeat scheduler"
# The server drops a silent client after 5 s idle + 3 probes 5 s apart.
_KEEPALIVES = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}


def connector(engine: AsyncEngine) -> Connect:
    """New asyncpg connections to the engine's database, for holding the lock."""
    dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def connect() -> Any:
        return await asyncpg.connect(
            dsn, timeout=10, server_settings={"application_name": APPLICATION_NAME, **_KEEPALIVES}
        )

    return connect


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


class Leader:
    """Competes for the scheduler lock until `stop`; `elected` runs when this process gets
    it, `deposed` when it stops or loses it."""

    def __init__(
        self,
        connect: Connect,
        *,
        key: int = SCHEDULER_LOCK,
        retry_interval: float = 5.0,
        check_interval: float = 5.0,
        check_timeout: float = 5.0,
    ) -> None:
        self._connect = connect
        self.key = key
        self.retry_interval = retry_interval
        self.check_interval = check_interval
        self.check_timeout = check_timeout
        self.leading = False
        self.pid: int | None = None  # the lock connection's server process, while connected
        self._standing_by = False

    async def run(self, stop: asyncio.Event, elected: Elected, deposed: Deposed) -> None:
        while not stop.is_set():
            try:
                conn = await self._connect()
            except Exception as exc:
                log.warning("cannot connect for the scheduler lock (%s); retrying", exc)
                await _sleep(stop, self.retry_interval)
                continue
            self.pid = conn.get_server_pid()
            released = False
            try:
                if await self._acquire(conn, stop):
                    released = await self._lead(conn, stop, elected, deposed)
            except Exception as exc:  # the connection failed while standing by
                if not stop.is_set():
                    log.warning("scheduler lock connection failed (%s); retrying", exc)
            finally:
                self.pid = None
                if not released:
                    conn.terminate()
            await _sleep(stop, self.retry_interval)

    async def _acquire(self, conn: Any, stop: asyncio.Event) -> bool:
        while not stop.is_set():
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
                return True
            if not self._standing_by:
                log.info(
                    "standing by: another process holds the scheduler lock (trying every %gs)",
                    self.retry_interval,
                )
                self._standing_by = True
            await _sleep(stop, self.retry_interval)
        return False

    async def _lead(
        self, conn: Any, stop: asyncio.Event, elected: Elected, deposed: Deposed
    ) -> bool:
        """Schedule while the lock is held. True when the lock was released cleanly."""
        lost = asyncio.Event()

        def closed(_: Any) -> None:
            lost.set()

        conn.add_termination_listener(closed)
        self.leading, self._standing_by = True, False
        log.info("this process is the scheduler leader now (lock held by backend %s)", self.pid)
        reason: str | None
        try:
            try:
                await elected()
            except Exception:
                log.exception("the scheduler failed to start")
                reason = "the scheduler failed to start"
            else:
                reason = await self._hold(conn, stop, lost)
        finally:
            self.leading = False
            await deposed(stop.is_set())
        if reason is not None:
            log.warning("lost the scheduler lock (%s); stopped scheduling", reason)
            return False
        try:
            async with asyncio.timeout(self.check_timeout):
                await conn.execute("SELECT pg_advisory_unlock($1)", self.key)
                await conn.close()
        except Exception as exc:  # closing the connection releases the lock just the same
            log.warning("could not release the scheduler lock cleanly (%s)", exc)
            return False
        log.info("released the scheduler lock")
        return True

    async def _hold(self, conn: Any, stop: asyncio.Event, lost: asyncio.Event) -> str | None:
        """Until `stop` (None) or the lock's connection is lost (why)."""
        while True:
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())}
            try:
                await asyncio.wait(
                    waiters, timeout=self.check_interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if stop.is_set():
                return None
            if lost.is_set() or conn.is_closed():
                return "its connection was closed"
            try:
                async with asyncio.timeout(self.check_timeout):
                    await conn.fetchval("SELECT 1")
            except Exception as exc:
                return f"connection check failed: {exc!r}"
