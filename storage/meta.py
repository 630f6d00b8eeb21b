"""Facts the bot learns at run time and the command-line tools reuse."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import BotMeta

BOT_USERNAME = "bot_username"


async def get_meta(session: AsyncSession, key: str) -> str | None:
    return await session.scalar(select(BotMeta.value).where(BotMeta.key == key))


async def set_meta(session: AsyncSession, key: str, value: str) -> None:
    stmt = insert(BotMeta).values(key=key, value=value)
    await session.execute(
        stmt.on_conflict_do_update(index_elements=[BotMeta.key], set_={"value": value})
    )
