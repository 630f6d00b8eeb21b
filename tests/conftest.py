"""A fresh PostgreSQL database per test run (DATABASE_URL's server, else the embedded one),
migrated once, with every table emptied after each test."""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from storage.db import make_engine, to_async_url
from storage.embedded import EmbeddedPostgres
from storage.migrate import upgrade
from storage.models import Base

if TYPE_CHECKING:
    from tests.botapi import BotApiServer
    from tests.factories import Directory
    from tests.harness import Chat


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _asyncpg_dsn(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql"))


@pytest.fixture(scope="session")
async def server_url() -> AsyncIterator[str]:
    """A URL of some database on the server the tests may create databases on."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    with tempfile.TemporaryDirectory(prefix="vb-pg-") as tmp:
        embedded = EmbeddedPostgres(Path(tmp) / "pg")
        url = await embedded.start()
        try:
            yield url
        finally:
            await embedded.stop()


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """A database created for this run and dropped after it; already migrated."""
    name = f"vb_test_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(_asyncpg_dsn(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = to_async_url(_with_database(server_url, name))
    engine = make_engine(url, pool_size=4)
    await upgrade(engine)
    await engine.dispose()
    try:
        yield url
    finally:
        admin = await asyncpg.connect(_asyncpg_dsn(server_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url, pool_size=10)
    yield engine
    await engine.dispose()


TABLES = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)


@pytest.fixture
async def sessions(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory on the run's database; every table is emptied after the test."""
    yield async_sessionmaker(engine, expire_on_commit=False)
    await empty_tables(engine)


async def empty_tables(engine: AsyncEngine, attempts: int = 5) -> None:
    """TRUNCATE every table. A bot process a test module keeps running may hold a lock on
    one table while waiting for another that TRUNCATE took first (its delivery worker's
    claim reads outbox_messages, then outbox_chats); PostgreSQL then aborts one of the two
    as a deadlock, and when it is this one, it tries again."""
    for attempt in range(attempts):
        try:
            async with engine.begin() as conn:
                await conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
            return
        except DBAPIError as exc:
            deadlock = getattr(exc.orig, "sqlstate", None) == "40P01"
            if not deadlock or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.1)


@pytest.fixture
def tmp_data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vb-data-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="session")
async def botapi() -> AsyncIterator[BotApiServer]:
    from tests.botapi import BotApiServer

    server = BotApiServer(bot_username="village_beat_bot")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[BotApiServer]:
    """A Bot API test server of the module's own, for a bot process that outlives one test."""
    from tests.botapi import BotApiServer

    async with BotApiServer(bot_username="village_beat_bot") as server:
        yield server


@pytest.fixture
async def chat(
    botapi: BotApiServer, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[Chat]:
    """The real Dispatcher in this process, its Bot talking HTTP to the test server."""
    from tests.harness import running_chat

    async with running_chat(botapi, sessions) as chat:
        yield chat


@pytest.fixture
async def directory(sessions: async_sessionmaker[AsyncSession]) -> Directory:
    """Two stations, three villages, two officers (see tests.factories)."""
    from tests.factories import seed_directory

    async with sessions() as s, s.begin():
        return await seed_directory(s)


@pytest.fixture
def db_env(
    database_url: str, tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> dict[str, str]:
    """Settings for commands on the test database (emptied after the test via `sessions`)."""
    return {
        "DATABASE_URL": database_url,
        "BOT_USERNAME": "village_beat_bot",
        "DATA_DIR": str(tmp_path),
    }
