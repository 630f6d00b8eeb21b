"""Update deduplication and the PostgreSQL FSM storage."""

from __future__ import annotations

import asyncio

from aiogram.fsm.storage.base import StorageKey
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.fsm import PostgresStorage
from storage.models import ConversationState
from storage.updates import claim_update

KEY = StorageKey(bot_id=1, chat_id=42, user_id=42)


async def test_update_is_claimed_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s, s.begin():
        assert await claim_update(s, 10, serial_key=42) is True
    async with sessions() as s, s.begin():
        assert await claim_update(s, 10, serial_key=42) is False
        assert await claim_update(s, 11, serial_key=None) is True


async def test_rolled_back_claim_can_be_retried(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s, s.begin():
        assert await claim_update(s, 20, serial_key=42)
        await s.rollback()
    async with sessions() as s, s.begin():
        assert await claim_update(s, 20, serial_key=42) is True


async def test_concurrent_redelivery_waits_for_the_original(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    order: list[str] = []

    async def original() -> None:
        async with sessions() as s, s.begin():
            assert await claim_update(s, 30, serial_key=7)
            await asyncio.sleep(0.3)
            order.append("original committed")

    async def redelivery() -> None:
        await asyncio.sleep(0.05)
        async with sessions() as s, s.begin():
            claimed = await claim_update(s, 30, serial_key=7)
            order.append(f"redelivery claimed={claimed}")

    await asyncio.gather(original(), redelivery())
    assert order == ["original committed", "redelivery claimed=False"]


async def test_storage_outside_a_transaction(sessions: async_sessionmaker[AsyncSession]) -> None:
    storage = PostgresStorage(sessions)
    assert await storage.get_state(KEY) is None
    await storage.set_state(KEY, "Flow:step")
    await storage.set_data(KEY, {"village_id": 3, "note": "张庄 🚓"})
    fresh = PostgresStorage(sessions)
    assert await fresh.get_state(KEY) == "Flow:step"
    assert await fresh.get_data(KEY) == {"village_id": 3, "note": "张庄 🚓"}
    await fresh.set_state(KEY, None)
    await fresh.set_data(KEY, {})
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(ConversationState)) == 0


async def test_bound_writes_commit_with_the_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    storage = PostgresStorage(sessions)
    async with sessions() as s, s.begin():
        with storage.bind(s):
            await storage.set_state(KEY, "Flow:one")
            await storage.set_data(KEY, {"a": 1})
            assert await storage.get_state(KEY) == "Flow:one"
            await storage.flush()
        await s.rollback()
    assert await storage.get_state(KEY) is None  # rolled back with everything else

    async with sessions() as s, s.begin():
        with storage.bind(s):
            await storage.set_state(KEY, "Flow:two")
            await storage.update_data(KEY, {"b": 2})
            await storage.flush()
    assert await storage.get_state(KEY) == "Flow:two"
    assert await storage.get_data(KEY) == {"b": 2}


async def test_get_data_returns_a_copy(sessions: async_sessionmaker[AsyncSession]) -> None:
    storage = PostgresStorage(sessions)
    async with sessions() as s, s.begin():
        with storage.bind(s):
            await storage.set_data(KEY, {"items": 1})
            data = await storage.get_data(KEY)
            data["items"] = 99
            assert await storage.get_data(KEY) == {"items": 1}
            await storage.flush()
