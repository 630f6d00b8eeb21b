"""What every role has: /help, /cancel (from any step), /language."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.fsm.context import FSMContext
from aiogram.methods import SendMessage
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.callbacks import LanguageCb
from bot.filters import CommandOrText
from bot.i18n import LANGUAGE_NAMES, LOCALES, Translator, all_labels
from bot.menus import COMMANDS, chat_commands, command_or_button, main_menu
from bot.replies import Replies
from core.roles import Role
from storage.models import User
from storage.users import set_locale


def help_text(role: Role, t: Translator) -> str:
    lines = [t(f"help.intro.{role.value}"), ""]
    lines += [f"/{name} — {t(f'cmd.{name}')}" for name in COMMANDS[role]]
    return "\n".join(lines)


async def cancel(
    message: Message, state: FSMContext, role: Role, t: Translator, replies: Replies
) -> None:
    had_flow = await state.get_state() is not None
    await state.clear()
    text = t("cancel.done") if had_flow else t("cancel.nothing")
    replies.add(message.answer(text, reply_markup=main_menu(role, t)))


async def show_help(message: Message, role: Role, t: Translator, replies: Replies) -> None:
    replies.add(message.answer(help_text(role, t), reply_markup=main_menu(role, t)))


async def choose_language(message: Message, t: Translator, replies: Replies) -> None:
    buttons = [
        InlineKeyboardButton(text=LANGUAGE_NAMES[code], callback_data=LanguageCb(code=code).pack())
        for code in LOCALES
    ]
    replies.add(
        message.answer(
            t("language.choose"), reply_markup=InlineKeyboardMarkup(inline_keyboard=[buttons])
        )
    )


async def set_language(
    callback: CallbackQuery,
    callback_data: LanguageCb,
    session: AsyncSession,
    user: User,
    role: Role,
    replies: Replies,
) -> None:
    await set_locale(session, user, callback_data.code)
    t = Translator(callback_data.code)
    replies.add(callback.answer(t("language.set")))
    if isinstance(callback.message, Message):
        replies.add(callback.message.edit_reply_markup(reply_markup=None))
    replies.add(
        SendMessage(chat_id=user.id, text=t("language.set"), reply_markup=main_menu(role, t)),
        chat_commands(user.id, role, t),
    )


def build_router() -> Router:
    router = Router(name="common")
    router.message.register(cancel, CommandOrText("cancel", all_labels("flow.cancel")))
    router.message.register(show_help, command_or_button("help"))
    router.message.register(choose_language, command_or_button("language"))
    router.callback_query.register(set_language, LanguageCb.filter(F.code.in_(LOCALES)))
    return router
