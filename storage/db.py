"""Engine and sessions: one code path whether the server is external or embedded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def to_async_url(url: str) -> str:
    """Accept the operator's `postgresql://…` and give SQLAlchemy the asyncpg dialect."""
    parts = urlsplit(url)
    if parts.scheme in {"postgresql", "postgres"}:
        parts = parts._replace(scheme="postgresql+asyncpg")
    return urlunsplit(parts)


@dataclass(frozen=True)
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    embedded: bool


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        to_async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


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
