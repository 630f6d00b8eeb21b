"""aiogram FSM storage in PostgreSQL.

Inside an update's transaction (see `bind`) reads are cached and writes are buffered, then
written in that same transaction, with its COMMIT (`writes`): the conversation moves on
exactly when the update's other effects commit. Outside one, each call uses its own short
transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiogram.fsm.state import State
from aiogram.fsm.storage.base import BaseStorage, StateType, StorageKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.db import driver_connection, literal
from storage.models import User


@dataclass
class _Entry:
    state: str | None
    data: dict[str, Any]
    dirty: bool = False


@dataclass
class _UnitOfWork:
    db: asyncpg.Connection
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
    def bind(self, db: asyncpg.Connection) -> Iterator[None]:
        """Read and write conversations on `db` (the driver connection of the update's
        transaction, see storage.db.driver_connection) until the block ends."""
        token = _current.set(_UnitOfWork(db))
        try:
            yield
        finally:
            _current.reset(token)

    async def read_with_user(self, key: StorageKey | None, user_id: int) -> asyncpg.Record | None:
        """The users row of `user_id` (None when there is none), read in the same round trip
        as the conversation under `key`, which the bound unit of work then holds."""
        unit = _current.get()
        assert unit is not None, "read_with_user() outside bind()"
        if key is None:
            return await unit.db.fetchrow(_READ_USER, user_id)
        name = storage_key(key)
        row = await unit.db.fetchrow(_READ_BOTH, name, user_id)
        unit.entries[name] = _loaded(row["fsm_state"], row["fsm_data"])
        unit.keys[name] = key
        return row if row["id"] is not None else None

    def writes(self) -> list[str]:
        """The statements that write the buffered changes of the bound unit of work, to run
        in its transaction (with its COMMIT, see storage.db.commit_with); from here on the
        changes count as written."""
        unit = _current.get()
        assert unit is not None, "writes() outside bind()"
        statements = []
        for name, entry in unit.entries.items():
            if entry.dirty:
                statements.append(_write_statement(name, unit.keys[name], entry))
                entry.dirty = False
        return statements

    async def _entry(self, key: StorageKey) -> tuple[_Entry, _UnitOfWork | None]:
        unit = _current.get()
        name = storage_key(key)
        if unit is not None and name in unit.entries:
            return unit.entries[name], unit
        if unit is not None:
            entry = await _read(unit.db, name)
            unit.entries[name] = entry
            unit.keys[name] = key
            return entry, unit
        async with self._sessions() as session, session.begin():
            return await _read(await driver_connection(session), name), None

    async def _update(self, key: StorageKey, **changes: Any) -> None:
        entry, unit = await self._entry(key)
        for attr, value in changes.items():
            setattr(entry, attr, value)
        entry.dirty = True
        if unit is None:
            async with self._sessions() as session, session.begin():
                db = await driver_connection(session)
                await db.execute(_write_statement(storage_key(key), key, entry))

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


# Every update reads its conversation and most write it: the read goes through the driver
# (see storage.db.driver_connection), which costs less CPU than SQLAlchemy's layers; the
# write goes out with the update's COMMIT, hence literals.
_READ = "SELECT state, data FROM conversation_states WHERE key = $1"
_USER_COLUMNS = ", ".join(f"u.{column.name}" for column in User.__table__.columns)
_READ_USER = f"SELECT {_USER_COLUMNS} FROM users AS u WHERE u.id = $1"
_READ_BOTH = (
    f"SELECT c.state AS fsm_state, c.data AS fsm_data, {_USER_COLUMNS} "
    "FROM (SELECT) AS one "
    "LEFT JOIN conversation_states AS c ON c.key = $1 "
    "LEFT JOIN users AS u ON u.id = $2"
)
_DELETE = "DELETE FROM conversation_states WHERE key = {key}"
_UPSERT = (
    "INSERT INTO conversation_states (key, user_id, chat_id, state, data) "
    "VALUES ({key}, {user_id}, {chat_id}, {state}, {data}) "
    "ON CONFLICT (key) DO UPDATE "
    "SET state = excluded.state, data = excluded.data, updated_at = now()"
)


def _loaded(state: str | None, data: dict[str, Any] | None) -> _Entry:
    return _Entry(state=state, data=dict(data) if data else {})


async def _read(db: asyncpg.Connection, name: str) -> _Entry:
    row = await db.fetchrow(_READ, name)
    return _Entry(state=None, data={}) if row is None else _loaded(row["state"], row["data"])


def _write_statement(name: str, key: StorageKey, entry: _Entry) -> str:
    """The statement that writes (or deletes) one conversation."""
    if entry.state is None and not entry.data:
        return _DELETE.format(key=literal(name))
    return _UPSERT.format(
        key=literal(name),
        user_id=literal(key.user_id),
        chat_id=literal(key.chat_id),
        state=literal(entry.state),
        data=literal(json.dumps(entry.data)),
    )
