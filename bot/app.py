"""Wiring: the Bot, the Dispatcher with its middlewares and routers."""

from __future__ import annotations

from aiogram import Bot, Dispatcher, F, methods
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ChatType
from aiogram.methods.base import Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.filters import run_filters_inline
from bot.flows.kit import AlbumAcks
from bot.handlers import get_routers
from bot.middlewares import UpdateTransaction, UserContext
from bot.session import BotSession
from bot.settings import DEFAULT_API_URL, Settings
from core.clock import Clock, system_clock
from storage.fsm import PostgresStorage

# aiogram parses every Bot API answer with the pydantic model Response[T], which pydantic
# caches only weakly: once garbage-collected, the next call rebuilds it (milliseconds each).
# Held here for the methods the bot calls, the models live as long as the process.
_RESPONSE_MODELS = [
    Response[method.__returning__]  # type: ignore[name-defined]
    for method in (
        methods.SendMessage,
        methods.SendPhoto,
        methods.SendDocument,
        methods.SendLocation,
        methods.SendMediaGroup,
        methods.EditMessageText,
        methods.EditMessageReplyMarkup,
        methods.AnswerCallbackQuery,
        methods.DeleteMessage,
        methods.SetMyCommands,
        methods.SetWebhook,
        methods.DeleteWebhook,
        methods.GetMe,
        methods.GetUpdates,
        methods.GetFile,
    )
]


def make_bot(settings: Settings) -> Bot:
    session = BotSession()
    if settings.telegram_api_url != DEFAULT_API_URL:
        session = BotSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
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
    transaction = UpdateTransaction(sessions, dp.fsm, default_locale=settings.default_locale)
    dp.update.outer_middleware(transaction)
    dp.update.outer_middleware(dp.fsm)
    dp.shutdown.register(transaction.sent.flush)
    dp.update.outer_middleware(UserContext(settings.default_locale))
    dp.message.filter(F.chat.type == ChatType.PRIVATE)
    dp.include_routers(*get_routers())
    run_filters_inline(dp)
    return dp
