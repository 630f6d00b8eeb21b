"""Engine and sessions: one code path whether the server is external or embedded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util.concurrency import await_only


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
    here when no statement has begun it yet).

    For the few fixed statements every update runs (storage.updates, storage.fsm): through
    the driver a statement costs about 60 µs of CPU here, through SQLAlchemy's execution
    layer about 160 µs. Row values come back as asyncpg decodes them, with SQLAlchemy's
    codecs for json and jsonb (JSON text in, Python values out). Relies on the asyncpg
    adapter's lazy BEGIN (`_transaction`, `_start_transaction`); SQLAlchemy is pinned below
    2.2 for this and for `_ping`, and tests/test_pipeline.py checks the atomicity.
    """
    connection = await session.connection()
    fairy = await connection.get_raw_connection()
    adapted: Any = fairy.dbapi_connection
    if adapted._transaction is None:
        await adapted._start_transaction()  # a no-op in autocommit
    driver: asyncpg.Connection = fairy.driver_connection
    return driver


@dataclass(frozen=True)
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    embedded: bool


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    engine = create_async_engine(
        to_async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
    )
    # The pre-ping runs at every checkout, twice per update: one round trip instead of three.
    setattr(engine.sync_engine.dialect, "do_ping", _ping)  # noqa: B010 (a method, for mypy)
    return engine


def _ping(dbapi_connection: Any) -> bool:
    """The pool's pre-ping: `;` alone. SQLAlchemy's asyncpg ping wraps it in BEGIN and
    ROLLBACK (three round trips) for PgBouncer's transaction pooling, which this project
    cannot use anyway (its advisory locks need session pooling). Errors are translated as
    SQLAlchemy's own ping does, so a dead connection is recognised and replaced."""
    try:
        await_only(dbapi_connection._connection.fetchrow(";"))
    except Exception as error:
        dbapi_connection._handle_exception(error)
    return True


@asynccontextmanager
async def open_database(
    url: str | None, data_dir: Path, *, pool_size: int = 10
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
