"""Supervisors' views of their stations. (The team, overdue items and digests come with the
scheduler; absences are here because officers record them now.)"""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import StateFilter
from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.filters import HasRole
from bot.i18n import Translator
from bot.menus import command_or_button, main_menu
from bot.replies import Replies
from bot.settings import Settings
from bot.texts import split_blocks
from core.clock import Clock
from core.quota import month_bounds
from core.roles import Role
from storage.absences import absences_in_scope
from storage.models import User


async def absences(
    message: Message,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    assert user.supervisor_id is not None
    today = clock().astimezone(settings.tz).date()
    first, last = month_bounds(today)
    month = f"{today:%Y-%m}"
    found = await absences_in_scope(
        session, supervisor_id=user.supervisor_id, first=first, last=last
    )
    menu = main_menu(Role.SUPERVISOR, t)
    if not found:
        replies.add(message.answer(t("supervisor.absences_none", month=month), reply_markup=menu))
        return
    lines = [t("supervisor.absences_title", month=month, count=len(found))]
    lines += [
        t(
            "supervisor.absence_line",
            day=f"{a.day:%m-%d}",
            officer=a.officer_name,
            badge=a.officer_badge,
            village=a.village_name,
            station=a.station_name,
            reason=a.reason,
        )
        for a in found
    ]
    for text in split_blocks(lines, separator="\n"):
        replies.add(message.answer(text, reply_markup=menu))


def build_router() -> Router:
    router = Router(name="supervisor")
    router.message.register(
        absences, command_or_button("absences"), HasRole(Role.SUPERVISOR), StateFilter(None)
    )
    return router
