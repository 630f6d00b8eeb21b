"""Engine and sessions: one code path whether the server is external or embedded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
    retrying later can succeed."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        state = getattr(exc.orig, "sqlstate", None) or ""
        # 08: connection lost; 57P0x: server shutting down or restarting; 53: out of
        # resources; 40001/40P01: serialisation failure or deadlock, which a retry resolves.
        if state.startswith(("08", "57P0", "53")) or state in {"40001", "40P01"}:
            return True
        cause = exc.orig.__cause__ if exc.orig is not None else None
        if cause is not None and type(cause).__name__ in _LOST_CONNECTION:
            return True
    return isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError)


# asyncpg's own names for a connection that went away without an SQLSTATE.
_LOST_CONNECTION = {"ConnectionDoesNotExistError", "ConnectionResetError", "InterfaceError"}


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
