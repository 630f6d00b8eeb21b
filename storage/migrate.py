"""Apply Alembic migrations programmatically, serialised by an advisory lock."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import locks

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(connection: Connection | None = None):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def _upgrade(connection: Connection) -> None:
    from alembic import command

    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": locks.MIGRATIONS})
    command.upgrade(_config(connection), "head")


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        exists = await conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        if not exists:
            return None
        revision = await conn.scalar(text("SELECT version_num FROM alembic_version"))
        return str(revision) if revision is not None else None


async def upgrade(engine: AsyncEngine) -> bool:
    """Bring the schema to head. Returns True when something was applied."""
    if await current_revision(engine) == head_revision():
        return False
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
    return True
