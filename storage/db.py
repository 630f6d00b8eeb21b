"""Engine and sessions: one code path whether the server is external or embedded."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from weakref import WeakKeyDictionary

import asyncpg
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.util.concurrency import await_only, greenlet_spawn


def to_async_url(url: str) -> str:
    """Accept the operator's `postgresql://…` and give SQLAlchemy the asyncpg dialect."""
    parts = urlsplit(url)
    if parts.scheme in {"postgresql", "postgres"}:
        parts = parts._replace(scheme="postgresql+asyncpg")
    return urlunsplit(parts)


def is_transient(exc: BaseException) -> bool:
    """A failure of the surroundings (database or network away), not of the work itself:
    retrying later can succeed. Knows SQLAlchemy's errors and asyncpg's own (raised by the
    statements run on the driver's connection, see `driver_connection`)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        cause = exc.orig.__cause__ if exc.orig is not None else None
        if _transient_state(getattr(exc.orig, "sqlstate", None)) or _lost(cause):
            return True
    if isinstance(exc, asyncpg.PostgresError) and _transient_state(exc.sqlstate):
        return True
    if _lost(exc):
        return True
    return isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError)


def _transient_state(state: str | None) -> bool:
    # 08: connection lost; 57P0x: server shutting down or restarting; 53: out of
    # resources; 40001/40P01: serialisation failure or deadlock, which a retry resolves.
    state = state or ""
    return state.startswith(("08", "57P0", "53")) or state in {"40001", "40P01"}


def _lost(exc: BaseException | None) -> bool:
    return exc is not None and type(exc).__name__ in _LOST_CONNECTION


# asyncpg's own names for a connection that went away without an SQLSTATE.
_LOST_CONNECTION = {"ConnectionDoesNotExistError", "ConnectionResetError", "InterfaceError"}


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under `session`, inside the session's transaction (begun
    here when no statement has begun it yet), the session's pending changes flushed first
    as its autoflush would before a query.

    For the few fixed statements every update runs (storage.updates, storage.fsm): through
    the driver a statement costs about 60 µs of CPU here, through SQLAlchemy's execution
    layer about 160 µs. Row values come back as asyncpg decodes them, with SQLAlchemy's
    codecs for json and jsonb (JSON text in, Python values out). Relies on the asyncpg
    adapter's lazy BEGIN (`_transaction`, `_start_transaction`); SQLAlchemy is pinned below
    2.2 for this and for `_ping`, and tests/test_pipeline.py checks the atomicity.
    """
    await _flush_pending(session)  # as SQLAlchemy's autoflush would before a query of its own
    adapted, driver = await _raw(session)
    if adapted._transaction is None:
        await adapted._start_transaction()  # a no-op in autocommit
    return driver


async def _flush_pending(session: AsyncSession) -> None:
    """Write the session's pending ORM changes, if it has any (a flush of nothing still
    costs a pass into SQLAlchemy's synchronous layer)."""
    if session.new or session.dirty or session.deleted:
        await session.flush()


async def _raw(session: AsyncSession) -> tuple[Any, asyncpg.Connection]:
    """SQLAlchemy's asyncpg adapter under `session` and the driver's connection under it
    (one pass into SQLAlchemy's synchronous layer, where `session.connection()` and then
    `get_raw_connection()` would take two)."""
    fairy = await greenlet_spawn(_pooled, session.sync_session)
    driver: asyncpg.Connection = fairy.driver_connection
    return fairy.dbapi_connection, driver


def _pooled(session: Session) -> Any:
    return session.connection().connection


# The update's own transaction (bot.middlewares.UpdateTransaction) in as few round trips as
# PostgreSQL allows: its BEGIN goes out with the first statements, its COMMIT with the last.
# Statements sent together use PostgreSQL's simple protocol, which takes no parameters: their
# values are literals (`literal`), as psycopg2 always sends them.


class Begun:
    """A transaction begun by `begin_with`: the driver's connection for more statements in it
    (see `driver_connection`), and the status of the statements sent with the BEGIN.

    Stands for asyncpg's Transaction in SQLAlchemy's asyncpg adapter (its `_transaction`), so
    that the session ends it as usual, or `commit_with` does.
    """

    __slots__ = ("_adapted", "driver", "status")

    def __init__(self, adapted: Any, driver: asyncpg.Connection) -> None:
        self._adapted = adapted
        self.driver = driver
        self.status = ""

    async def commit(self) -> None:
        _committed(await self.driver.execute("COMMIT"))

    async def rollback(self) -> None:
        await self.driver.execute("ROLLBACK")

    async def commit_with(self, session: AsyncSession, statements: Sequence[str]) -> None:
        """Flush the session, then run `statements` (literals only, see above) and COMMIT in
        one round trip; the session's own commit or close then has nothing left to send."""
        await _flush_pending(session)
        if self._adapted._transaction is not self:
            raise RuntimeError("this transaction has ended")
        _committed(await self.driver.execute("; ".join([*statements, "COMMIT"])))
        self._adapted._transaction = None


def _committed(status: str) -> None:
    # PostgreSQL answers a COMMIT of a transaction that had failed with ROLLBACK.
    if status != "COMMIT":
        raise asyncpg.InFailedSQLTransactionError(f"transaction not committed: {status}")


async def begin_with(session: AsyncSession, statements: str) -> Begun:
    """Begin the session's transaction and run `statements` (literals only, see above) in
    the same round trip. Relies on the asyncpg adapter's `_transaction`, as
    `driver_connection` does."""
    adapted, driver = await _raw(session)
    level = adapted.isolation_level
    if adapted._transaction is not None or level == "autocommit":
        raise RuntimeError("begin_with() needs a session whose transaction has not begun")
    # As the adapter would begin it (asyncpg's Transaction.start).
    begin = "BEGIN" if level is None else f"BEGIN ISOLATION LEVEL {level.replace('_', ' ')}"
    begin += " READ ONLY" if adapted.readonly else ""
    begin += " DEFERRABLE" if adapted.deferrable else ""
    # From here on the session's rollback sends ROLLBACK, whatever happens to the BEGIN.
    began = adapted._transaction = Begun(adapted, driver)
    began.status = await began.driver.execute(f"{begin}; {statements}")
    return began


def literal(value: str | int | None) -> str:
    """`value` as an SQL literal. A string is dollar-quoted, with a tag chosen so that its
    first occurrence is the closing one: no character of the string is special."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    tag, n = "$q$", 0
    while (value + tag).find(tag) != len(value):
        n += 1
        tag = f"$q{n}$"
    return f"{tag}{value}{tag}"


@dataclass(frozen=True)
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    embedded: bool


def make_engine(url: str, *, pool_size: int) -> AsyncEngine:
    """An engine with at most `pool_size` connections, opened as needed and then kept.

    No overflow beyond `pool_size`: SQLAlchemy closes an overflow connection as soon as it
    comes back while the pool is full, so a load hovering around the pool's size opened and
    closed connections all the time (in the inbound benchmark, one per 55 updates), and each
    new one costs a backend started on the server, the connection handshake, the driver's
    type introspection, and every statement prepared again. A request for a connection when
    all are in use waits for one (up to 30 s, then the update fails and is delivered again).

    The most recently returned connection is handed out first (LIFO): under a light load the
    same few connections serve everything, with their statements already prepared (each
    connection prepares each statement once, after a round trip and a type introspection).
    """
    engine = create_async_engine(
        to_async_url(url),
        pool_size=pool_size,
        max_overflow=0,
        pool_use_lifo=True,
        pool_pre_ping=True,
        pool_recycle=1800,
    )
    # The pre-ping runs at every checkout: at most one round trip instead of three.
    setattr(engine.sync_engine.dialect, "do_ping", _ping)  # noqa: B010 (a method, for mypy)
    event.listen(engine.sync_engine, "checkin", _checked_in)
    return engine


# A connection back in the pool less than this many seconds ago is not pinged at checkout,
# unless the driver saw it close (a server restart closes it, and the event loop notices).
# Under load every update checks one out: a round trip saved each time. One that died
# unnoticed in that short while fails its update, which is delivered again.
PING_AFTER_IDLE = 5.0
_returned: WeakKeyDictionary[asyncpg.Connection, float] = WeakKeyDictionary()


def _checked_in(dbapi_connection: Any, record: Any) -> None:
    if dbapi_connection is not None:
        _returned[dbapi_connection._connection] = time.monotonic()


def _ping(dbapi_connection: Any) -> bool:
    """The pool's pre-ping: `;` alone, and none for a connection used a moment ago
    (`PING_AFTER_IDLE`). SQLAlchemy's asyncpg ping wraps it in BEGIN and ROLLBACK (three
    round trips) for PgBouncer's transaction pooling, which this project cannot use anyway
    (its advisory locks need session pooling). Errors are translated as SQLAlchemy's own
    ping does, so a dead connection is recognised and replaced."""
    driver: asyncpg.Connection = dbapi_connection._connection
    returned = _returned.get(driver)
    if (
        returned is not None
        and time.monotonic() - returned < PING_AFTER_IDLE
        and not driver.is_closed()
    ):
        return True
    try:
        await_only(driver.fetchrow(";"))
    except Exception as error:
        dbapi_connection._handle_exception(error)
    return True


@asynccontextmanager
async def open_database(
    url: str | None, data_dir: Path, *, pool_size: int
) -> AsyncIterator[Database]:
    """Connect to `url`, or start the embedded server under `data_dir` and stop it on exit."""
    embedded = None
    if url is None:
        from storage.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(data_dir / "postgres")
        url = await embedded.start()
    engine = make_engine(url, pool_size=pool_size)
    try:
        yield Database(
            engine=engine,
            sessions=async_sessionmaker(engine, expire_on_commit=False),
            embedded=embedded is not None,
        )
    finally:
        await engine.dispose()
        if embedded is not None:
            await embedded.stop()
