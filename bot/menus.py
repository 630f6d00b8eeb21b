"""Each role's main menu (reply keyboard) and command list, from one table."""

from __future__ import annotations

from aiogram import Bot
from aiogram.filters import Filter
from aiogram.methods import SetMyCommands
from aiogram.types import (
    BotCommand,
    BotCommandScopeChat,
    BotCommandScopeDefault,
    KeyboardButton,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)

from bot.filters import CommandOrText
from bot.i18n import LOCALES, Translator, all_labels
from core.roles import Role

# The commands each role has, in menu order. A menu button for a command is labelled by
# the catalogue entry `button.<command>`, its description in the command list `cmd.<command>`.
COMMANDS: dict[Role, tuple[str, ...]] = {
    Role.STRANGER: ("start", "help", "language"),
    Role.VILLAGER: ("request", "myrequests", "village", "help", "language", "cancel"),
    Role.OFFICER: (
        "visit",
        "hazard",
        "requests",
        "me",
        "hazards",
        "absence",
        "villages",
        "help",
        "language",
        "cancel",
    ),
    Role.SUPERVISOR: (
        "team",
        "overdue",
        "digest",
        "spotcheck",
        "requests",
        "absences",
        "scope",
        "help",
        "language",
        "cancel",
    ),
}
MENU_ROWS: dict[Role, tuple[tuple[str, ...], ...]] = {
    Role.STRANGER: (("help", "language"),),
    Role.VILLAGER: (("request", "myrequests"), ("village",), ("help", "language")),
    Role.OFFICER: (
        ("visit", "hazard"),
        ("requests", "me"),
        ("hazards", "absence"),
        ("villages",),
        ("help", "language"),
    ),
    Role.SUPERVISOR: (
        ("team", "overdue"),
        ("digest", "spotcheck"),
        ("requests", "absences"),
        ("scope", "help", "language"),
    ),
}


def main_menu(role: Role, t: Translator) -> ReplyKeyboardMarkup | ReplyKeyboardRemove:
    rows = MENU_ROWS[role]
    return ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text=t(f"button.{name}")) for name in row] for row in rows],
        resize_keyboard=True,
        is_persistent=True,
    )


def bot_commands(role: Role, t: Translator) -> list[BotCommand]:
    return [BotCommand(command=name, description=t(f"cmd.{name}")) for name in COMMANDS[role]]


def chat_commands(chat_id: int, role: Role, t: Translator) -> SetMyCommands:
    """The command list of one chat, in the user's language whatever their app's language."""
    return SetMyCommands(commands=bot_commands(role, t), scope=BotCommandScopeChat(chat_id=chat_id))


async def set_default_commands(bot: Bot, default_locale: str) -> None:
    """What a stranger sees: per supported app language, and the county default otherwise."""
    for locale in LOCALES:
        commands = bot_commands(Role.STRANGER, Translator(locale))
        await bot.set_my_commands(commands, scope=BotCommandScopeDefault(), language_code=locale)
    commands = bot_commands(Role.STRANGER, Translator(default_locale))
    await bot.set_my_commands(commands, scope=BotCommandScopeDefault())


def command_or_button(name: str) -> Filter:
    """`/name`, or a tap on the menu button for it in any language."""
    return CommandOrText(name, all_labels(f"button.{name}"))
