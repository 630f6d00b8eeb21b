"""Supervisors' views of their stations: what is overdue (/overdue) and the absences
officers recorded (/absences). The team and the digests are in bot/handlers/team.py."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from aiogram import Router
from aiogram.filters import StateFilter
from aiogram.types import InlineKeyboardButton, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import request_ui
from bot.filters import HasRole
from bot.flows import kit
from bot.flows.hazard import reference as hazard_reference
from bot.i18n import Translator
from bot.menus import command_or_button, main_menu
from bot.replies import Replies
from bot.request_texts import LIST_PREVIEW, span, staff_label, when
from bot.request_ui import InboxCb
from bot.settings import Settings
from bot.texts import shorten, split_blocks
from core.clock import Clock
from core.quota import month_bounds
from core.roles import Role
from storage.absences import absences_in_scope
from storage.attention import OverdueHazard, OverdueRequest, overdue_hazards, overdue_requests
from storage.models import User
from storage.villages import stations_in_scope

Block = tuple[str, list[InlineKeyboardButton]]  # a text and the buttons that go with it


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


# --- /overdue ---------------------------------------------------------------------------------


def _request_block(t: Translator, item: OverdueRequest, now: datetime, tz: ZoneInfo) -> Block:
    request = item.request
    clocks = [
        t(
            "overdue.clock",
            clock=t(f"request_clock.{clock.value}"),
            late=span(t, now - item.due(clock)),
            due=when(item.due(clock), tz),
        )
        for clock in item.overdue
    ]
    text = t(
        "overdue.request",
        ref=request.ref,
        village=request.village_name,
        handler=staff_label(t, request),
        clocks="\n".join(clocks),
        text=shorten(request.body, LIST_PREVIEW),
    )
    # The inbox opens the card for a supervisor whose scope holds the request.
    button = InlineKeyboardButton(
        text=t("overdue.button", ref=request.ref),
        callback_data=InboxCb(action=request_ui.OPEN, request_id=request.id).pack(),
    )
    return text, [button]


def _hazard_block(t: Translator, hazard: OverdueHazard, now: datetime, tz: ZoneInfo) -> Block:
    text = t(
        "overdue.hazard",
        ref=hazard_reference(hazard.id),
        village=hazard.village_name,
        officer=t("staff.officer", name=hazard.officer_name, badge=hazard.officer_badge),
        category=t(f"hazard_category.{hazard.category}"),
        severity=t(f"severity.{hazard.severity}"),
        late=span(t, now - hazard.due_at),
        due=when(hazard.due_at, tz),
        text=shorten(hazard.description, LIST_PREVIEW),
    )
    return text, []


def _messages(blocks: Sequence[Block]) -> list[Block]:
    """The blocks cut into messages where split_blocks cuts them, each message with the
    buttons of the blocks it holds."""
    messages: list[Block] = []
    texts: list[str] = []
    buttons: list[InlineKeyboardButton] = []
    for text, own in blocks:
        if texts and len(split_blocks([*texts, text])) > 1:
            messages.append((split_blocks(texts)[0], buttons))
            texts, buttons = [], []
        texts.append(text)
        buttons = [*buttons, *own]
    messages.append((split_blocks(texts)[0], buttons))
    return messages


async def overdue(
    message: Message,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    """Requests past a deadline and hazards past their re-inspection date in the
    supervisor's scope, the longest overdue first."""
    assert user.supervisor_id is not None
    now, tz = clock(), settings.tz
    scope = await stations_in_scope(session, user.supervisor_id)
    requests = await overdue_requests(session, now=now, scope=scope, config=settings.deadlines)
    hazards = await overdue_hazards(session, now=now, scope=scope)
    menu = main_menu(Role.SUPERVISOR, t)
    if not requests and not hazards:
        replies.add(message.answer(t("overdue.none"), reply_markup=menu))
        return
    blocks: list[Block] = [(t("overdue.title", requests=len(requests), hazards=len(hazards)), [])]
    if requests:
        blocks.append((t("overdue.requests_title"), []))
        blocks += [_request_block(t, item, now, tz) for item in requests]
    if hazards:
        blocks.append((t("overdue.hazards_title"), []))
        blocks += [_hazard_block(t, hazard, now, tz) for hazard in hazards]
    for text, buttons in _messages(blocks):
        keyboard = kit.inline(kit.chunks(buttons, 3)) if buttons else menu
        replies.add(message.answer(text, reply_markup=keyboard))


def build_router() -> Router:
    router = Router(name="supervisor")
    router.message.register(
        overdue, command_or_button("overdue"), HasRole(Role.SUPERVISOR), StateFilter(None)
    )
    router.message.register(
        absences, command_or_button("absences"), HasRole(Role.SUPERVISOR), StateFilter(None)
    )
    return router
