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
from sqlalchemy import Text, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.updates import KEEP_SQL


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

    async def flush(self, *, answers: tuple[int, list[dict[str, Any]]] | None = None) -> bool:
        """Write the buffered changes of the bound unit of work into its session.

        `answers` (update id, answers) may ride along in the statement that writes the
        conversation, as `storage.updates.keep_answers` would store them: one round trip fewer
        for most updates. True when they were stored; else the caller stores them.
        """
        unit = _current.get()
        assert unit is not None, "flush() outside bind()"
        dirty = [name for name, entry in unit.entries.items() if entry.dirty]
        for name in dirty:
            entry = unit.entries[name]
            keep = answers if name == dirty[-1] else None
            await _write(unit.session, name, unit.keys[name], entry, keep=keep)
            entry.dirty = False
        return answers is not None and bool(dirty)

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


# Prebuilt text statements: every update reads its conversation and most write it, and
# building and compiling the ORM equivalents each time cost more CPU than the round trips.
_READ = text("SELECT state, data FROM conversation_states WHERE key = :key").columns(
    state=Text, data=JSONB
)
_DELETE_SQL = "DELETE FROM conversation_states WHERE key = :key"
_UPSERT_SQL = (
    "INSERT INTO conversation_states (key, user_id, chat_id, state, data) "
    "VALUES (:key, :user_id, :chat_id, :state, :data) "
    "ON CONFLICT (key) DO UPDATE "
    "SET state = excluded.state, data = excluded.data, updated_at = now()"
)
_DATA = bindparam("data", type_=JSONB)
_ANSWERS = bindparam("answers", type_=JSONB)
_DELETE = text(_DELETE_SQL)
_UPSERT = text(_UPSERT_SQL).bindparams(_DATA)
# The same, with the update's answers stored in the same statement (a data-modifying WITH
# runs exactly once whether or not it is read).
_DELETE_KEEP = text(f"WITH state AS ({_DELETE_SQL}) {KEEP_SQL}").bindparams(_ANSWERS)
_UPSERT_KEEP = text(f"WITH state AS ({_UPSERT_SQL}) {KEEP_SQL}").bindparams(_DATA, _ANSWERS)


async def _read(session: AsyncSession, name: str) -> _Entry:
    row = (await session.execute(_READ, {"key": name})).first()
    return _Entry(state=None, data={}) if row is None else _Entry(row.state, dict(row.data))


async def _write(
    session: AsyncSession,
    name: str,
    key: StorageKey,
    entry: _Entry,
    *,
    keep: tuple[int, list[dict[str, Any]]] | None = None,
) -> None:
    """Write (or delete) one conversation; and store `keep`'s answers alongside, if given."""
    extra = {} if keep is None else {"update_id": keep[0], "answers": keep[1]}
    if entry.state is None and not entry.data:
        delete = _DELETE if keep is None else _DELETE_KEEP
        await session.execute(delete, {"key": name, **extra})
        return
    params = {
        "key": name,
        "user_id": key.user_id,
        "chat_id": key.chat_id,
        "state": entry.state,
        "data": entry.data,
    }
    await session.execute(_UPSERT if keep is None else _UPSERT_KEEP, {**params, **extra})
