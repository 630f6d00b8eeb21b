"""Wiring: the Bot, the Dispatcher with its middlewares and routers."""

from __future__ import annotations

from aiogram import Bot, Dispatcher, F
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ChatType
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.flows.kit import AlbumAcks
from bot.handlers import get_routers
from bot.middlewares import UpdateTransaction, UserContext
from bot.settings import DEFAULT_API_URL, Settings
from core.clock import Clock, system_clock
from storage.fsm import PostgresStorage


def make_bot(settings: Settings) -> Bot:
    session = None
    if settings.telegram_api_url != DEFAULT_API_URL:
        session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    return Bot(settings.require_token(), session=session)


def build_dispatcher(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    *,
    clock: Clock = system_clock,
) -> Dispatcher:
    storage = PostgresStorage(sessions)
    # The FSM middleware is registered by hand so that it runs inside the update's
    # transaction (see bot.middlewares.UpdateTransaction).
    dp = Dispatcher(
        storage=storage, disable_fsm=True, settings=settings, clock=clock, albums=AlbumAcks()
    )
    dp.update.outer_middleware(
        UpdateTransaction(sessions, storage, default_locale=settings.default_locale)
    )
    dp.update.outer_middleware(dp.fsm)
    dp.update.outer_middleware(UserContext(settings.default_locale))
    dp.message.filter(F.chat.type == ChatType.PRIVATE)
    dp.include_routers(*get_routers())
    return dp
