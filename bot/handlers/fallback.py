"""Whatever no other handler took: a hint, never silence; stale or forged buttons do nothing."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import StateFilter
from aiogram.types import CallbackQuery, Message

from bot.i18n import Translator
from bot.menus import main_menu
from bot.replies import Replies
from core.roles import Role


async def not_understood(message: Message, role: Role, t: Translator, replies: Replies) -> None:
    key = "fallback.stranger" if role == Role.STRANGER else "fallback.unknown"
    replies.add(message.answer(t(key), reply_markup=main_menu(role, t)))


async def unknown_command_in_flow(message: Message, t: Translator, replies: Replies) -> None:
    replies.add(message.answer(t("fallback.in_flow")))


async def stale_button(callback: CallbackQuery, t: Translator, replies: Replies) -> None:
    replies.add(callback.answer(t("callback.stale"), show_alert=True))


def build_router() -> Router:
    router = Router(name="fallback")
    router.message.register(not_understood, StateFilter(None))
    router.message.register(unknown_command_in_flow, F.text.startswith("/"))
    router.callback_query.register(stale_button)
    return router
