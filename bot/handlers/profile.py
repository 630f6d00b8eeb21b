"""Each role's own view: a villager's village, an officer's villages, a supervisor's scope."""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.filters import StateFilter
from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.filters import HasRole
from bot.i18n import Translator
from bot.menus import command_or_button, main_menu
from bot.replies import Replies
from core.roles import Role
from core.tokens import village_payload
from storage import villages
from storage.models import User


async def my_village(
    message: Message, session: AsyncSession, user: User, t: Translator, replies: Replies
) -> None:
    village = await villages.current_village(session, user.id)
    if village is None:
        text = t("village.none")
    else:
        officer = village.officer_name or t("join.no_officer")
        text = t(
            "village.info", village=village.name, station=village.station_name, officer=officer
        )
    replies.add(message.answer(text, reply_markup=main_menu(Role.VILLAGER, t)))


async def my_villages(
    message: Message, bot: Bot, session: AsyncSession, user: User, t: Translator, replies: Replies
) -> None:
    assert user.officer_id is not None
    listed = await villages.officer_villages(session, user.officer_id)
    if not listed:
        text = t("villages.none")
    else:
        me = await bot.me()
        lines = [t("villages.title")]
        for v in listed:
            link = f"https://t.me/{me.username}?start={village_payload(v.join_token)}"
            kind = t(f"assignment.{v.kind}")
            lines.append(t("villages.line", village=v.name, station=v.station_name, kind=kind))
            lines.append(t("villages.link", link=link))
        text = "\n".join(lines)
    replies.add(message.answer(text, reply_markup=main_menu(Role.OFFICER, t)))


async def my_scope(
    message: Message, session: AsyncSession, user: User, t: Translator, replies: Replies
) -> None:
    assert user.supervisor_id is not None
    scope = await villages.supervisor_scope(session, user.supervisor_id)
    names = (
        t("scope.county")
        if scope.county_wide
        else t("scope.separator").join(name for _, name in scope.stations)
    )
    text = t("scope.info", stations=names, villages=scope.villages, officers=scope.officers)
    replies.add(message.answer(text, reply_markup=main_menu(Role.SUPERVISOR, t)))


def build_router() -> Router:
    router = Router(name="profile")
    # Outside a flow only: in the middle of one, the fallback says to finish or /cancel.
    idle = StateFilter(None)
    router.message.register(my_village, command_or_button("village"), HasRole(Role.VILLAGER), idle)
    router.message.register(my_villages, command_or_button("villages"), HasRole(Role.OFFICER), idle)
    router.message.register(my_scope, command_or_button("scope"), HasRole(Role.SUPERVISOR), idle)
    return router
