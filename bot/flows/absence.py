"""/absence: an officer reports that a village day cannot happen, and why.

village → day → reason → summary with Submit / Cancel. The programme's rule: a day missed is
reported to the programme office and made up (需向活动办报备, 挤出时间补上); an absence is
not a visit, it only softens the pace expected so far this month.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from aiogram import F, Router
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardMarkup,
    Message,
    ReplyKeyboardMarkup,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bot.filters import HasRole
from bot.flows import kit
from bot.flows.kit import FlowCb
from bot.i18n import Translator
from bot.menus import command_or_button, main_menu
from bot.progress import progress_line
from bot.replies import Replies
from bot.settings import Settings
from core.clock import Clock
from core.days import MAX_DAYS_AHEAD, check_coming_day, coming_days, parse_coming_date
from core.parsing import clean_text, parse_date
from core.quota import profile
from core.roles import Role
from storage import absences, villages
from storage.models import User
from storage.overview import village_month

FLOW = "a"
STEPS = ("village", "day", "reason")
MAX_REASON = 500
BUTTON_DAYS = 7  # today and the next seven days have buttons; other days are typed


class Absence(StatesGroup):
    village = State()
    day = State()
    reason = State()
    summary = State()


def _cb(data: dict[str, Any], action: str, value: object = "") -> FlowCb:
    return FlowCb(flow=FLOW, draft=data["draft"], action=action, value=str(value))


def _today(clock: Clock, settings: Settings) -> date:
    return clock().astimezone(settings.tz).date()


def _weekday(t: Translator, day: date) -> str:
    return t(f"absence.weekday.{day.weekday()}")


def day_label(t: Translator, day: date) -> str:
    return t("absence.day_label", date=day.isoformat(), weekday=_weekday(t, day))


def _last_day(today: date) -> str:
    return f"{today + timedelta(days=MAX_DAYS_AHEAD):%m-%d}"


# --- prompts -------------------------------------------------------------------------------


def _day_keyboard(data: dict[str, Any], t: Translator, today: date) -> InlineKeyboardMarkup:
    buttons = []
    for n, day in enumerate(coming_days(today, BUTTON_DAYS)):
        weekday = _weekday(t, day)
        if n == 0:
            label = t("absence.today", weekday=weekday)
        elif n == 1:
            label = t("absence.tomorrow", weekday=weekday)
        else:
            label = t("absence.day_button", date=f"{day:%m-%d}", weekday=weekday)
        buttons.append(kit.button(t, label, _cb(data, "day", day.isoformat())))
    return kit.inline([buttons[:2], *kit.chunks(buttons[2:], 3)])


async def _ask(
    message: Message,
    step: str,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    today: date,
) -> None:
    await state.set_state(getattr(Absence, step))
    data = await state.get_data()
    head = kit.header(t, STEPS.index(step) + 1, len(STEPS))
    keyboard: InlineKeyboardMarkup | ReplyKeyboardMarkup
    if step == "village":
        buttons = [kit.button(t, name, _cb(data, "village", vid)) for vid, name in data["choices"]]
        text, keyboard = t("absence.ask_village"), kit.inline(kit.chunks(buttons, 2))
    elif step == "day":
        text = t("absence.ask_day", last=_last_day(today))
        keyboard = _day_keyboard(data, t, today)
    else:
        text, keyboard = t("absence.ask_reason", limit=MAX_REASON), kit.cancel_keyboard(t)
    prompt = f"{head}\n{text}"  # both parts from the catalogue
    replies.add(message.answer(prompt, reply_markup=keyboard))


def summary_text(data: dict[str, Any], t: Translator) -> str:
    return "\n".join(
        [
            t("absence.summary_title"),
            t("absence.field.village", value=data["village_name"]),
            t("absence.field.day", value=day_label(t, date.fromisoformat(data["day"]))),
            t("absence.field.reason", value=data["reason"]),
        ]
    )


async def _show_summary(
    message: Message, state: FSMContext, t: Translator, replies: Replies
) -> None:
    await state.set_state(Absence.summary)
    data = await state.get_data()
    kit.show_summary(
        message, replies, t, summary_text(data, t), lambda a: _cb(data, a), editable=False
    )


# --- start ---------------------------------------------------------------------------------


async def start(
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    assert user.officer_id is not None
    listed = await villages.officer_villages(session, user.officer_id)
    if not listed:
        replies.add(message.answer(t("villages.none")))
        return
    await state.set_data(
        {"draft": kit.new_draft_id(FLOW), "choices": [[v.id, v.name] for v in listed]}
    )
    if len(listed) == 1:
        await state.update_data(village_id=listed[0].id, village_name=listed[0].name)
        await _ask(message, "day", state, t, replies, _today(clock, settings))
    else:
        await _ask(message, "village", state, t, replies, _today(clock, settings))


# --- steps ---------------------------------------------------------------------------------


async def _already_reported(
    session: AsyncSession, *, officer_id: int, village_id: int, day: date
) -> bool:
    reported = await absences.absences_in(session, officer_id=officer_id, first=day, last=day)
    return any(a.village_id == village_id for a in reported)


async def _accept_day(
    day: date | None,
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    today: date,
) -> None:
    assert user.officer_id is not None
    if day is None:
        replies.add(message.answer(t("absence.bad_day")))
        return
    problem = check_coming_day(day, today=today)
    if problem is not None:
        text = t(f"absence.day_{problem}", days=MAX_DAYS_AHEAD, last=_last_day(today))
        replies.add(message.answer(text))
        return
    data = await state.get_data()
    if await _already_reported(
        session, officer_id=user.officer_id, village_id=data["village_id"], day=day
    ):
        text = t("absence.day_taken", village=data["village_name"], day=day_label(t, day))
        replies.add(message.answer(text))
        return
    await state.update_data(day=day.isoformat())
    if data.get("reason"):  # the day was asked again at submit: the rest is known
        await _show_summary(message, state, t, replies)
    else:
        await _ask(message, "reason", state, t, replies, today)


async def typed_day(
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    today = _today(clock, settings)
    text = message.text or ""
    # "昨天" or a full past date is a date all right, just not one that can still be missed.
    day = parse_coming_date(text, today=today) or parse_date(text, today=today)
    await _accept_day(day, message, state, session, user, t, replies, today)


async def typed_reason(
    message: Message, state: FSMContext, t: Translator, replies: Replies
) -> None:
    reason, problem = clean_text(message.text or "", max_len=MAX_REASON)
    if problem is not None:
        replies.add(message.answer(t(f"flow.text_{problem}", limit=MAX_REASON)))
        return
    await state.update_data(reason=reason)
    await _show_summary(message, state, t, replies)


async def wrong_input(
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    """Anything a step cannot use: say what it wants, and ask again."""
    step = kit.step_of(await state.get_state())
    if step not in ("day", "reason"):
        replies.add(message.answer(t("flow.use_buttons")))
        return
    replies.add(message.answer(t(f"absence.bad_{step}")))
    await _ask(message, step, state, t, replies, _today(clock, settings))


# --- buttons -------------------------------------------------------------------------------


async def on_button(
    callback: CallbackQuery,
    callback_data: FlowCb,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    data = await kit.live_draft(callback, callback_data, state, t, replies)
    if data is None or not isinstance(callback.message, Message):
        return
    current = kit.step_of(await state.get_state())
    if _BUTTONS.get(callback_data.action) != current:
        replies.add(callback.answer(t("callback.stale"), show_alert=True))
        return
    replies.add(callback.answer())
    message, value, today = callback.message, callback_data.value, _today(clock, settings)
    assert user.officer_id is not None
    if callback_data.action == "village":
        # The id comes from the client: it must be one of this officer's villages now.
        village_id = kit.button_id(value) or -1
        found = await villages.assigned_village(
            session, officer_id=user.officer_id, village_id=village_id
        )
        if found is None:
            replies.add(message.answer(t("callback.stale")))
            return
        await state.update_data(village_id=village_id, village_name=found[0])
        await _ask(message, "day", state, t, replies, today)
    elif callback_data.action == "day":
        try:
            day = date.fromisoformat(value)
        except ValueError:
            replies.add(message.answer(t("callback.stale")))
            return
        await _accept_day(day, message, state, session, user, t, replies, today)
    elif callback_data.action == "submit":
        await _submit(message, state, session, user, t, replies, settings, today, data)
    else:
        await state.clear()
        replies.add(message.edit_reply_markup(reply_markup=None))
        replies.add(message.answer(t("cancel.done"), reply_markup=main_menu(Role.OFFICER, t)))


# The step each button belongs to; pressed at any other step it is stale.
_BUTTONS = {"village": "village", "day": "day", "submit": "summary", "cancel": "summary"}


async def _submit(
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    today: date,
    data: dict[str, Any],
) -> None:
    assert user.officer_id is not None
    # Checked again at submit: the assignment, the date or another report may have changed.
    village = await villages.assigned_village(
        session, officer_id=user.officer_id, village_id=data["village_id"]
    )
    if village is None:
        await state.clear()
        replies.add(message.edit_reply_markup(reply_markup=None))
        text = t("absence.village_gone", village=data["village_name"])
        replies.add(message.answer(text, reply_markup=main_menu(Role.OFFICER, t)))
        return
    day = date.fromisoformat(data["day"])
    taken = await _already_reported(
        session, officer_id=user.officer_id, village_id=data["village_id"], day=day
    )
    if taken or check_coming_day(day, today=today) is not None:
        replies.add(message.edit_reply_markup(reply_markup=None))
        replies.add(message.answer(t("absence.day_changed")))
        await _ask(message, "day", state, t, replies, today)
        return
    absence_id, _created = await absences.save_absence(
        session,
        draft_id=data["draft"],
        officer_id=user.officer_id,
        village_id=data["village_id"],
        day=day,
        reason=data["reason"],
    )
    await state.clear()
    quota, progress, _absent = await village_month(
        session,
        officer_id=user.officer_id,
        village_id=data["village_id"],
        day=day,
        county=profile(settings.quota_profile),
    )
    month = t("absence.month", year=day.year, month=day.month)
    text = "\n".join(
        [
            t("absence.saved", ref=f"A{absence_id:06d}", village=village[0], day=day_label(t, day)),
            t("absence.make_up"),
            t("absence.progress", month=month, progress=progress_line(t, quota, progress)),
        ]
    )
    replies.add(message.edit_reply_markup(reply_markup=None))
    replies.add(message.answer(text, reply_markup=main_menu(Role.OFFICER, t)))


def build_router() -> Router:
    router = Router(name="absence")
    officer = HasRole(Role.OFFICER)
    router.message.register(start, command_or_button("absence"), officer, StateFilter(None))
    router.callback_query.register(on_button, FlowCb.filter(F.flow == FLOW), officer)
    text = F.text & ~F.text.startswith("/")
    router.message.register(typed_day, Absence.day, text, officer)
    router.message.register(typed_reason, Absence.reason, text, officer)
    router.message.register(
        wrong_input, StateFilter(*Absence.__all_states__), ~F.text.startswith("/"), officer
    )
    return router
