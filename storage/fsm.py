"""aiogram FSM storage in PostgreSQL.

Inside an update's transaction (see `bind`) reads are cached and writes are buffered, then
written in that same transaction, with its COMMIT (`writes`): the conversation moves on
exactly when the update's other effects commit. Outside one, each call uses its own short
transaction.

The storage also remembers, for the last senders it served, their account and conversation
as its last update left them (`condition_seen`, `use_seen`): the next update's claim tests
in its own round trip that the database still holds exactly that, and only if not are they
read again. A stale memory thus costs a read, never a wrong answer.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
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
    # What `writes` wrote: (state, data as JSON text) by key, None for a deleted conversation.
    written: dict[str, tuple[str | None, str] | None] = field(default_factory=dict)


# How many senders the storage remembers (see the module's docstring), the most recent ones:
# a conversation is a burst of updates, so a few thousand cover everyone talking at once.
SENDERS_SEEN = 4096
# Seconds an account row read is trusted for at most, even unchanged: its version is the
# transaction id that wrote it (xmin), which wraps around after 2**32 transactions.
SEEN_FOR = 600.0


@dataclass(frozen=True, slots=True)
class _Seen:
    """A sender as the database held them after their last update in this process."""

    user: asyncpg.Record | None  # their users row with its version (user_version); None: none
    key: str  # their conversation's storage key
    state: str | None
    data: str | None  # the conversation's data as JSON, keys in jsonb's order; None: no row
    read_at: float  # when the users row was read (time.monotonic)


_current: ContextVar[_UnitOfWork | None] = ContextVar("fsm_unit_of_work", default=None)


def storage_key(key: StorageKey) -> str:
    name = f"{key.bot_id}:{key.chat_id}:{key.user_id}:{key.thread_id or ''}:{key.destiny}"
    if key.business_connection_id:
        name += f":{key.business_connection_id}"
    return name


def _state_name(state: StateType) -> str | None:
    return state.state if isinstance(state, State) else state


class PostgresStorage(BaseStorage):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        senders_seen: int = SENDERS_SEEN,
        seen_for: float = SEEN_FOR,
    ) -> None:
        self._sessions = sessions
        self._seen: OrderedDict[int, _Seen] = OrderedDict()
        self._senders_seen = senders_seen
        self._seen_for = seen_for
        self.seen_used = 0  # updates served from what was seen (for tests and benchmarks)

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
        as the conversation under `key`, which the bound unit of work then holds; both are
        remembered (`condition_seen`)."""
        unit = _current.get()
        assert unit is not None, "read_with_user() outside bind()"
        if key is None:
            return await unit.db.fetchrow(_READ_USER, user_id)
        name = storage_key(key)
        row = await unit.db.fetchrow(_READ_BOTH, name, user_id)
        unit.entries[name] = _loaded(row["fsm_state"], row["fsm_data"])
        unit.keys[name] = key
        user = row if row["id"] is not None else None
        data = None if row["fsm_data"] is None else json.dumps(row["fsm_data"])
        self._remember(user_id, _Seen(user, name, row["fsm_state"], data, time.monotonic()))
        return user

    def condition_seen(self, key: StorageKey, user_id: int) -> str | None:
        """SQL (literals only) true when the database holds `user_id`'s account and the
        conversation under `key` just as this storage last saw them; None when it has not
        seen them. For the update's claim (storage.updates.claim_update): when it held,
        `use_seen` stands for `read_with_user`."""
        seen = self._seen.get(user_id)
        if seen is None or seen.key != storage_key(key):
            return None
        if time.monotonic() - seen.read_at > self._seen_for:
            return None
        uid = literal(user_id)
        if seen.user is None:
            user = f"NOT EXISTS (SELECT FROM users WHERE id = {uid})"
        else:
            # xmin: the transaction that wrote the row's current version; any change to the
            # row, by anyone, makes a new version.
            version = literal(str(seen.user["user_version"]))
            user = f"EXISTS (SELECT FROM users WHERE id = {uid} AND xmin = {version}::xid)"
        if seen.data is None:
            conversation = (
                f"NOT EXISTS (SELECT FROM conversation_states WHERE key = {literal(seen.key)})"
            )
        else:
            conversation = (
                f"EXISTS (SELECT FROM conversation_states WHERE key = {literal(seen.key)}"
                f" AND state IS NOT DISTINCT FROM {literal(seen.state)}"
                f" AND data = {literal(seen.data)}::jsonb)"
            )
        return f"{user} AND {conversation}"

    def use_seen(self, key: StorageKey, user_id: int) -> asyncpg.Record | None:
        """What `read_with_user` would read, as last seen: for an update whose claim found
        `condition_seen` to hold."""
        unit = _current.get()
        assert unit is not None, "use_seen() outside bind()"
        seen = self._seen[user_id]
        self._seen.move_to_end(user_id)
        data = None if seen.data is None else json.loads(seen.data)
        unit.entries[seen.key] = _loaded(seen.state, data)
        unit.keys[seen.key] = key
        self.seen_used += 1
        return seen.user

    def committed(self) -> None:
        """The bound unit's writes committed: remember the conversations as they now are."""
        unit = _current.get()
        assert unit is not None, "committed() outside bind()"
        for name, written in unit.written.items():
            user_id = unit.keys[name].user_id
            seen = self._seen.get(user_id)
            if seen is not None and seen.key == name:
                state, data = (None, None) if written is None else written
                self._remember(user_id, _Seen(seen.user, name, state, data, seen.read_at))
        unit.written.clear()

    def _remember(self, user_id: int, seen: _Seen) -> None:
        self._seen[user_id] = seen
        self._seen.move_to_end(user_id)
        if len(self._seen) > self._senders_seen:
            self._seen.popitem(last=False)

    def writes(self) -> list[str]:
        """The statements that write the buffered changes of the bound unit of work, to run
        in its transaction (with its COMMIT, see storage.db.commit_with); from here on the
        changes count as written."""
        unit = _current.get()
        assert unit is not None, "writes() outside bind()"
        statements = []
        for name, entry in unit.entries.items():
            if entry.dirty:
                statement, unit.written[name] = _write(name, unit.keys[name], entry)
                statements.append(statement)
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
                await db.execute(_write(storage_key(key), key, entry)[0])

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
_USER_COLUMNS = ", ".join(
    [*(f"u.{column.name}" for column in User.__table__.columns), "u.xmin AS user_version"]
)
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


def _write(name: str, key: StorageKey, entry: _Entry) -> tuple[str, tuple[str | None, str] | None]:
    """The statement that writes (or deletes) one conversation, and what it leaves: its state
    and data as JSON (keys in jsonb's order), or None when it deletes it."""
    if entry.state is None and not entry.data:
        return _DELETE.format(key=literal(name)), None
    data = jsonb_text(entry.data)
    statement = _UPSERT.format(
        key=literal(name),
        user_id=literal(key.user_id),
        chat_id=literal(key.chat_id),
        state=literal(entry.state),
        data=literal(data),
    )
    return statement, (entry.state, data)


def jsonb_text(value: Any) -> str:
    """`value` as JSON with every object's keys in the order jsonb keeps them (shorter first,
    then bytewise), so that it reads back as PostgreSQL would give it back."""
    return json.dumps(_jsonb_order(json.loads(json.dumps(value))))


def _jsonb_order(value: Any) -> Any:
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        return {k: _jsonb_order(value[k]) for k in keys}
    if isinstance(value, list):
        return [_jsonb_order(item) for item in value]
    return value
