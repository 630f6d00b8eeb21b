"""The update pipeline: one transaction per update, deduplicated and serialised per user."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.dispatcher.middlewares.user_context import EVENT_CONTEXT_KEY, EventContext
from aiogram.types import TelegramObject, Update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.i18n import Translator, pick_locale
from bot.replies import Replies
from core.roles import Role
from storage.fsm import PostgresStorage
from storage.updates import claim_update
from storage.users import TelegramProfile, touch_user

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class KeyedLocks:
    """In-process FIFO locks per key, dropped when nobody waits, so memory stays flat."""

    def __init__(self) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: int) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class UpdateTransaction(BaseMiddleware):
    """Apply an update at most once, in one transaction with the conversation state.

    Registered before the FSM middleware, so state is read inside the transaction and
    after the per-user lock. Answers go out only after commit (see bot.replies). An
    exception rolls everything back and propagates, so the update is delivered again.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], storage: PostgresStorage):
        self._sessions = sessions
        self._storage = storage
        self._locks = KeyedLocks()

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        context: EventContext = data[EVENT_CONTEXT_KEY]
        serial_key = context.user_id or context.chat_id
        replies = Replies()
        async with self._locks.hold(serial_key or 0):
            async with self._sessions() as session, session.begin():
                if not await claim_update(session, event.update_id, serial_key=serial_key):
                    return UNHANDLED
                data["session"] = session
                data["replies"] = replies
                with self._storage.bind(session):
                    result = await handler(event, data)
                    await self._storage.flush()
            bot: Bot = data["bot"]
            await replies.send(bot)
        return result


class UserContext(BaseMiddleware):
    """The sender's account, role and language for every handler."""

    def __init__(self, default_locale: str) -> None:
        self._default_locale = default_locale

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        sender = data.get("event_from_user")
        if sender is None or sender.is_bot:
            return await handler(event, data)
        profile = TelegramProfile(
            id=sender.id,
            first_name=sender.first_name,
            last_name=sender.last_name,
            username=sender.username,
            language_code=sender.language_code,
        )
        user = await touch_user(data["session"], profile)
        data["user"] = user
        data["role"] = Role(user.role)
        data["t"] = Translator(pick_locale(user.locale, user.language_code, self._default_locale))
        return await handler(event, data)
