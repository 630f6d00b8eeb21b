"""aiogram FSM storage in PostgreSQL.

Inside an update's transaction (see `bind`) reads are cached and writes are buffered, then
written by `flush` in that same transaction: the conversation moves on exactly when the
update's other effects commit. Outside one, each call uses its own short transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from aiogram.fsm.state import State
from aiogram.fsm.storage.base import BaseStorage, StateType, StorageKey
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import ConversationState


@dataclass
class _Entry:
    state: str | None
    data: dict[str, Any]
    dirty: bool = False


@dataclass
class _UnitOfWork:
    session: AsyncSession
    entries: dict[str, _Entry] = field(default_factory=dict)
    keys: dict[str, StorageKey] = field(default_factory=dict)


_current: ContextVar[_UnitOfWork | None] = ContextVar("fsm_unit_of_work", default=None)


def storage_key(key: StorageKey) -> str:
    parts = [key.bot_id, key.chat_id, key.user_id, key.thread_id or "", key.destiny]
    if key.business_connection_id:
        parts.append(key.business_connection_id)
    return ":".join(str(p) for p in parts)


def _state_name(state: StateType) -> str | None:
    return state.state if isinstance(state, State) else state


class PostgresStorage(BaseStorage):
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @contextmanager
    def bind(self, session: AsyncSession) -> Iterator[None]:
        token = _current.set(_UnitOfWork(session))
        try:
            yield
        finally:
            _current.reset(token)

    async def flush(self) -> None:
        """Write the buffered changes of the bound unit of work into its session."""
        unit = _current.get()
        assert unit is not None, "flush() outside bind()"
        for name, entry in unit.entries.items():
            if entry.dirty:
                await _write(unit.session, name, unit.keys[name], entry)
                entry.dirty = False

    async def _entry(self, key: StorageKey) -> tuple[_Entry, _UnitOfWork | None]:
        unit = _current.get()
        name = storage_key(key)
        if unit is not None and name in unit.entries:
            return unit.entries[name], unit
        if unit is not None:
            entry = await _read(unit.session, name)
            unit.entries[name] = entry
            unit.keys[name] = key
            return entry, unit
        async with self._sessions() as session:
            return await _read(session, name), None

    async def _update(self, key: StorageKey, **changes: Any) -> None:
        entry, unit = await self._entry(key)
        for attr, value in changes.items():
            setattr(entry, attr, value)
        entry.dirty = True
        if unit is None:
            async with self._sessions() as session, session.begin():
                await _write(session, storage_key(key), key, entry)

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        await self._update(key, state=_state_name(state))

    async def get_state(self, key: StorageKey) -> str | None:
        entry, _ = await self._entry(key)
        return entry.state

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        if not isinstance(data, dict):
            raise TypeError(f"Data must be a dict, not {type(data).__name__}")
        await self._update(key, data=dict(data))

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        entry, _ = await self._entry(key)
        return dict(entry.data)

    async def close(self) -> None:
        return None


async def _read(session: AsyncSession, name: str) -> _Entry:
    row = (
        await session.execute(
            select(ConversationState.state, ConversationState.data).where(
                ConversationState.key == name
            )
        )
    ).first()
    return _Entry(state=None, data={}) if row is None else _Entry(row.state, dict(row.data))


async def _write(session: AsyncSession, name: str, key: StorageKey, entry: _Entry) -> None:
    if entry.state is None and not entry.data:
        await session.execute(delete(ConversationState).where(ConversationState.key == name))
        return
    stmt = insert(ConversationState).values(
        key=name, user_id=key.user_id, chat_id=key.chat_id, state=entry.state, data=entry.data
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[ConversationState.key],
            set_={
                "state": stmt.excluded.state,
                "data": stmt.excluded.data,
                "updated_at": func.now(),
            },
        )
    )
