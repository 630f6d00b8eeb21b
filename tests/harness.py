"""Drive the real Dispatcher in-process, with a real Bot talking HTTP to the test server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiogram import Bot, Dispatcher
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Update
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import build_dispatcher
from bot.session import BotSession
from bot.settings import Settings
from core.clock import system_clock
from scheduler.outbox import OutboxWorker
from tests.botapi import DEFAULT_TOKEN, BotApiServer, SimUser


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def _no_listener() -> Any:
    raise AssertionError("Chat.deliver runs single passes; nothing listens")


class Chat:
    """One bot instance and helpers to talk to it as simulated users."""

    def __init__(
        self,
        server: BotApiServer,
        bot: Bot,
        dp: Dispatcher,
        clock: FixedClock,
        tz: ZoneInfo,
        sessions: async_sessionmaker[AsyncSession],
    ) -> None:
        self.server, self.bot, self.dp, self.clock, self.tz = server, bot, dp, clock, tz
        # The real delivery worker, at test speed, on the real clock (the outbox's due times
        # come from the database's clock).
        self.outbox = OutboxWorker(
            bot, sessions, _no_listener, clock=system_clock, global_rate=1000, chat_rate=30
        )

    async def deliver(self) -> int:
        """Send everything the outbox holds now, as the delivery worker would; how many."""
        sent = 0
        while claimed := await self.outbox.run_once():
            sent += claimed
        return sent

    def today(self) -> date:
        """The county's date on the bot's clock (not the UTC date, which differs at night)."""
        return self.clock().astimezone(self.tz).date()

    async def feed(self, update: dict[str, Any]) -> Any:
        return await self.dp.feed_update(
            self.bot, Update.model_validate(update, context={"bot": self.bot})
        )

    async def say(self, user: SimUser, text: str) -> dict[str, Any]:
        update = await self.server.send_text(user, text)
        await self.feed(update)
        return update

    async def click(self, user: SimUser, label: str, **kwargs: Any) -> dict[str, Any]:
        update = await self.server.click(user, label, **kwargs)
        await self.feed(update)
        return update

    async def send(self, update: dict[str, Any]) -> dict[str, Any]:
        await self.feed(update)
        return update

    def last_text(self, user: SimUser) -> str:
        return self.server.last_message_to(user).text or ""

    def texts(self, user: SimUser) -> list[str]:
        return [m.text or m.caption or "" for m in self.server.messages_to(user)]

    def keyboard_labels(self, user: SimUser) -> list[str]:
        """The labels of the reply keyboard last sent to the user."""
        for message in reversed(self.server.messages_to(user)):
            markup = message.reply_markup or {}
            if "keyboard" in markup:
                return [b["text"] for row in markup["keyboard"] for b in row]
            if markup.get("remove_keyboard"):
                return []
        return []


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"bot_token": SecretStr(DEFAULT_TOKEN), "default_locale": "zh"}
    values.update(overrides)
    return Settings(_env_file=None, **values)


@asynccontextmanager
async def running_chat(
    server: BotApiServer, sessions: async_sessionmaker[AsyncSession], **settings: Any
) -> AsyncIterator[Chat]:
    await server.reset()
    clock = FixedClock(datetime.now(UTC))
    bot = Bot(DEFAULT_TOKEN, session=BotSession(api=TelegramAPIServer.from_base(server.url)))
    values = make_settings(**settings)
    dp = build_dispatcher(values, sessions, clock=clock)
    try:
        yield Chat(server, bot, dp, clock, values.tz, sessions)
    finally:
        await bot.session.close()
