"""Supervisors' /team (every officer in their stations this month, least of the quota done
first, ten a page) and /digest (this week's digest now, built as the weekly job builds it)."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bot.filters import HasRole
from bot.i18n import Translator
from bot.menus import command_or_button, main_menu
from bot.replies import Replies
from bot.settings import Settings
from bot.texts import shorten
from core.clock import Clock
from core.roles import Role
from scheduler.digests import (
    behind_text,
    build_digest,
    month_label,
    pace_status,
    progress_text,
    week_so_far,
)
from storage import scores
from storage.models import User
from storage.villages import stations_in_scope

PAGE_SIZE = 10
_NAME = 30


class TeamPageCb(CallbackData, prefix="tm"):
    page: int


def _line(t: Translator, number: int, row: scores.TeamRow) -> str:
    member = row.standing.member
    head = t(
        "team.line",
        number=number,
        flag=t(f"team.flag.{pace_status(row)}"),
        name=shorten(member.name, _NAME),
        badge=member.badge,
        station=shorten(member.station_name, _NAME),
    )
    detail = t("team.detail", progress=progress_text(t, row), points=row.standing.points)
    lines = [head, f"   {detail}"]
    if row.behind:
        lines.append("   " + t("team.behind", counters=behind_text(t, row)))
    return "\n".join(lines)


def _page_buttons(t: Translator, page: int, pages: int) -> list[InlineKeyboardButton]:
    buttons = []
    if page > 0:
        buttons.append(
            InlineKeyboardButton(
                text=t("team.previous"), callback_data=TeamPageCb(page=page - 1).pack()
            )
        )
    if page + 1 < pages:
        buttons.append(
            InlineKeyboardButton(
                text=t("team.next"), callback_data=TeamPageCb(page=page + 1).pack()
            )
        )
    return buttons


async def _page(
    session: AsyncSession, user: User, t: Translator, settings: Settings, clock: Clock, page: int
) -> tuple[str, InlineKeyboardMarkup | None]:
    assert user.supervisor_id is not None
    today = clock().astimezone(settings.tz).date()
    rows = await scores.team(
        session,
        as_of=today,
        tz=settings.tz,
        table=settings.points,
        county_profile=settings.quota_profile,
        scope=await stations_in_scope(session, user.supervisor_id),
    )
    if not rows:
        return t("team.none"), None
    pages = -(-len(rows) // PAGE_SIZE)
    page = min(page, pages - 1)
    first = page * PAGE_SIZE
    head = [t("team.title", month=month_label(t, today), count=len(rows)), t("team.legend")]
    if pages > 1:
        head.append(t("team.page", page=page + 1, pages=pages))
    lines = [_line(t, first + i + 1, row) for i, row in enumerate(rows[first : first + PAGE_SIZE])]
    buttons = _page_buttons(t, page, pages)
    keyboard = InlineKeyboardMarkup(inline_keyboard=[buttons]) if buttons else None
    return "\n\n".join(["\n".join(head), *lines]), keyboard


async def show_team(
    message: Message,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    text, keyboard = await _page(session, user, t, settings, clock, 0)
    replies.add(message.answer(text, reply_markup=keyboard or main_menu(Role.SUPERVISOR, t)))


async def on_page(
    callback: CallbackQuery,
    callback_data: TeamPageCb,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    # The page is recomputed for the presser's own scope: a forged page number shows nothing
    # of anyone else's stations, and an out-of-range one shows the last page.
    if callback_data.page < 0 or not isinstance(callback.message, Message):
        replies.add(callback.answer(t("callback.stale"), show_alert=True))
        return
    text, keyboard = await _page(session, user, t, settings, clock, callback_data.page)
    replies.add(callback.answer())
    replies.add(callback.message.edit_text(text, reply_markup=keyboard))


async def show_digest(
    message: Message,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    assert user.supervisor_id is not None
    now = clock()
    digest = await build_digest(
        session,
        supervisor_id=user.supervisor_id,
        period=week_so_far(now.astimezone(settings.tz).date()),
        t=t,
        settings=settings,
        now=now,
    )
    menu = main_menu(Role.SUPERVISOR, t)
    for text in digest.texts:
        replies.add(message.answer(text, reply_markup=menu))
    replies.add(
        message.answer_photo(
            BufferedInputFile(digest.chart, filename="digest.png"), caption=digest.chart_caption
        ),
        message.answer_document(
            BufferedInputFile(digest.workbook, filename=digest.workbook_name),
            caption=digest.workbook_caption,
        ),
    )


def build_router() -> Router:
    router = Router(name="team")
    supervisor = HasRole(Role.SUPERVISOR)
    router.message.register(show_team, command_or_button("team"), supervisor, StateFilter(None))
    router.message.register(show_digest, command_or_button("digest"), supervisor, StateFilter(None))
    router.callback_query.register(on_page, TeamPageCb.filter(), supervisor)
    return router
