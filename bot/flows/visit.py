"""/visit: an officer's visit report, step by step, kept in PostgreSQL between messages.

village → date → hours → households → activities → location → photos → notes → summary.
Every answer is checked; a wrong one gets an explanation and the same step again. From the
summary any field can be edited, after which the summary comes back.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from aiogram import F, Router
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.filters import HasRole
from bot.flows import kit
from bot.flows.kit import AlbumAcks, FlowCb
from bot.i18n import Translator, all_labels
from bot.menus import command_or_button, main_menu
from bot.progress import days_left_text, progress_line
from bot.replies import Replies
from bot.settings import Settings
from core.activities import COUNTED, MAX_COUNT, ORDER, Activity
from core.clock import Clock
from core.geo import far_from_centre, valid_point
from core.parsing import (
    check_range,
    check_visit_date,
    clean_text,
    parse_count,
    parse_date,
    parse_hours,
)
from core.quota import profile
from core.roles import Role
from storage import villages, visits
from storage.models import User
from storage.overview import village_month

FLOW = "v"
STEPS = ("village", "date", "hours", "households", "activities", "location", "photos", "notes")
MIN_HOURS, MAX_HOURS = Decimal("0.5"), Decimal("12")
MAX_HOUSEHOLDS = 500
MAX_NOTES = 2000
HOUR_PICKS = ("1", "2", "3", "4", "6", "8")
HOUSEHOLD_PICKS = ("0", "1", "2", "3", "5", "10")
COUNT_PICKS = ("1", "2", "3", "5")


class Visit(StatesGroup):
    village = State()
    date = State()
    hours = State()
    households = State()
    activities = State()
    activity_count = State()
    location = State()
    photos = State()
    notes = State()
    summary = State()
    edit = State()


def _cb(data: dict[str, Any], action: str, value: object = "") -> FlowCb:
    return FlowCb(flow=FLOW, draft=data["draft"], action=action, value=str(value))


def _today(clock: Clock, settings: Settings) -> date:
    return clock().astimezone(settings.tz).date()


# --- prompts -------------------------------------------------------------------------------


def _prompt(step: str, data: dict[str, Any], t: Translator, settings: Settings, today: date) -> Any:
    """(text, keyboard) asking for `step`."""
    head = kit.header(t, STEPS.index(step) + 1, len(STEPS))
    if step == "village":
        buttons = [kit.button(t, name, _cb(data, "village", vid)) for vid, name in data["choices"]]
        return f"{head}\n{t('visit.ask_village')}", kit.inline(kit.chunks(buttons, 2))
    if step == "date":
        row = [
            kit.button(t, t("visit.today"), _cb(data, "date", today.isoformat())),
            kit.button(
                t, t("visit.yesterday"), _cb(data, "date", (today - timedelta(1)).isoformat())
            ),
        ]
        earlier = [
            kit.button(t, f"{d:%m-%d}", _cb(data, "date", d.isoformat()))
            for d in (today - timedelta(n) for n in range(2, settings.visit_backdate_days + 1))
        ]
        text = t("visit.ask_date", days=settings.visit_backdate_days)
        return f"{head}\n{text}", kit.inline([row, *kit.chunks(earlier, 4)])
    if step == "hours":
        picks = [kit.button(t, v, _cb(data, "hours", v)) for v in HOUR_PICKS]
        return f"{head}\n{t('visit.ask_hours')}", kit.inline([picks])
    if step == "households":
        picks = [kit.button(t, v, _cb(data, "households", v)) for v in HOUSEHOLD_PICKS]
        return f"{head}\n{t('visit.ask_households')}", kit.inline([picks])
    if step == "activities":
        return f"{head}\n{t('visit.ask_activities')}", _activity_keyboard(data, t)
    if step == "location":
        return f"{head}\n{t('visit.ask_location')}", kit.location_keyboard(t)
    if step == "photos":
        text = t("visit.ask_photos", limit=kit.MAX_PHOTOS)
        return f"{head}\n{text}", kit.photos_keyboard(t, optional=True)
    return f"{head}\n{t('visit.ask_notes', limit=MAX_NOTES)}", kit.skip_keyboard(t)


def _activity_keyboard(data: dict[str, Any], t: Translator) -> Any:
    chosen: dict[str, int | None] = data.get("activities", {})
    buttons = []
    for activity in ORDER:
        label = t(f"activity.{activity.value}")
        if activity.value in chosen:
            count = chosen[activity.value]
            label = f"✅ {label}" + (f" ×{count}" if count else "")
        buttons.append(kit.button(t, label, _cb(data, "act", activity.value)))
    done = kit.button(t, t("visit.activities_done"), _cb(data, "act_done"))
    return kit.inline([*kit.chunks(buttons, 2), [done]])


async def _ask(
    message: Message,
    step: str,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    today: date,
) -> None:
    await state.set_state(getattr(Visit, step))
    data = await state.get_data()
    text, keyboard = _prompt(step, data, t, settings, today)
    replies.add(message.answer(text, reply_markup=keyboard))


async def _advance(
    done: str,
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    today: date,
) -> None:
    """After `done` was answered: the next step, or the summary when editing."""
    data = await state.get_data()
    if data.get("editing"):
        await _show_summary(message, state, t, replies, settings)
        return
    following = STEPS[STEPS.index(done) + 1 :]
    if not following:
        await _show_summary(message, state, t, replies, settings)
        return
    await _ask(message, following[0], state, t, replies, settings, today)


# --- summary -------------------------------------------------------------------------------


def summary_text(data: dict[str, Any], t: Translator) -> str:
    activities = data.get("activities", {})
    listed = t("summary.separator").join(
        t(f"activity.{code}") + (f" ×{count}" if count else "")
        for code, count in sorted(activities.items(), key=lambda kv: ORDER.index(Activity(kv[0])))
    ) or t("summary.none")
    if data.get("lat") is None:
        place = t("visit.no_location")
    elif data.get("distance") is None:
        place = t("visit.location_no_centre")
    else:
        place = t("visit.location_distance", distance=data["distance"])
    lines = [
        t("visit.summary_title"),
        t("visit.field.village", value=data["village_name"]),
        t("visit.field.date", value=data["date"]),
        t("visit.field.hours", value=data["hours"]),
        t("visit.field.households", value=data["households"]),
        t("visit.field.activities", value=listed),
        t("visit.field.location", value=place),
        t("visit.field.photos", value=len(data.get("photos", []))),
        t("visit.field.notes", value=data.get("notes") or t("summary.none")),
    ]
    return "\n".join(lines)


async def _show_summary(
    message: Message, state: FSMContext, t: Translator, replies: Replies, settings: Settings
) -> None:
    await state.set_state(Visit.summary)
    await state.update_data(editing=False)
    data = await state.get_data()
    kit.show_summary(message, replies, t, summary_text(data, t), lambda a: _cb(data, a))


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
    today = _today(clock, settings)
    if len(listed) == 1:
        await state.update_data(village_id=listed[0].id, village_name=listed[0].name)
        await _ask(message, "date", state, t, replies, settings, today)
    else:
        await _ask(message, "village", state, t, replies, settings, today)


# --- answers by button ---------------------------------------------------------------------


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
    await kit.press(
        callback,
        callback_data,
        state,
        t,
        replies,
        _BUTTONS,
        session=session,
        user=user,
        settings=settings,
        today=_today(clock, settings),
    )


async def _pick_village(
    *,
    value: str,
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    today: date,
    data: dict[str, Any],
    **_: Any,
) -> None:
    assert user.officer_id is not None
    # The id comes from the client: it must be one of this officer's villages now.
    picked = await kit.picked_village(session, officer_id=user.officer_id, value=value)
    if picked is None:
        replies.add(message.answer(t("callback.stale")))
        return
    village_id, name, centre_lat, centre_lon = picked
    await state.update_data(village_id=village_id, village_name=name)
    if data.get("lat") is not None:
        await state.update_data(
            distance=kit.distance_to_centre(data["lat"], data["lon"], centre_lat, centre_lon)
        )
    await _advance("village", message, state, t, replies, settings, today)


async def _pick(
    *,
    value: str,
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    today: date,
    step: str,
    **_: Any,
) -> None:
    """A quick-pick button: the same as typing its value."""
    await _ACCEPT[step](value, message, state, t, replies, settings, today)


async def _toggle_activity(
    *,
    value: str,
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    data: dict[str, Any],
    **_: Any,
) -> None:
    if value not in {a.value for a in ORDER}:
        replies.add(message.answer(t("callback.stale")))
        return
    chosen: dict[str, int | None] = data.get("activities", {})
    if value in chosen:
        del chosen[value]
    elif Activity(value) in COUNTED:
        await state.update_data(pending_activity=value)
        await state.set_state(Visit.activity_count)
        picks = [kit.button(t, v, _cb(data, "count", v)) for v in COUNT_PICKS]
        unit = t(f"activity_unit.{value}")
        replies.add(
            message.answer(
                t("visit.ask_count", activity=t(f"activity.{value}"), unit=unit, limit=MAX_COUNT),
                reply_markup=kit.inline([picks]),
            )
        )
        return
    else:
        chosen[value] = None
    await state.update_data(activities=chosen)
    replies.add(
        message.edit_reply_markup(reply_markup=_activity_keyboard(await state.get_data(), t))
    )


async def _activities_done(
    *,
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    today: date,
    **_: Any,
) -> None:
    await _advance("activities", message, state, t, replies, settings, today)


async def _edit(
    *,
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    data: dict[str, Any],
    **_: Any,
) -> None:
    fields = [s for s in STEPS if s != "village" or len(data.get("choices", [])) > 1]
    await kit.offer_fields(
        message,
        state,
        t,
        replies,
        edit_state=Visit.edit,
        fields=[(t(f"visit.edit.{s}"), _cb(data, "edit_field", s)) for s in fields],
    )


async def _edit_field(
    *,
    value: str,
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    today: date,
    **_: Any,
) -> None:
    if value not in STEPS:
        replies.add(message.answer(t("callback.stale")))
        return
    await state.update_data(editing=True)
    await _ask(message, value, state, t, replies, settings, today)


_cancel = kit.cancel_draft(Role.OFFICER)


async def _submit(
    *,
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    today: date,
    data: dict[str, Any],
    **_: Any,
) -> None:
    assert user.officer_id is not None
    # Checked again at submit: the date or the assignment (save_visit) may no longer hold.
    day = date.fromisoformat(data["date"])
    problem = check_visit_date(day, today=today, backdate_days=settings.visit_backdate_days)
    if problem is not None:
        replies.add(message.answer(t("visit.submit_invalid")))
        return
    distance = data.get("distance")
    saved = await visits.save_visit(
        session,
        visits.NewVisit(
            draft_id=data["draft"],
            officer_id=user.officer_id,
            village_id=data["village_id"],
            visit_date=day,
            hours=Decimal(data["hours"]),
            households=int(data["households"]),
            activities={code: count or 1 for code, count in data.get("activities", {}).items()},
            latitude=data.get("lat"),
            longitude=data.get("lon"),
            distance_m=distance,
            far_from_village=far_from_centre(distance, settings.location_radius_m),
            notes=data.get("notes"),
            submitted_by=user.id,
            photos=[(p[0], p[1]) for p in data.get("photos", [])],
        ),
    )
    if saved is None:
        replies.add(message.answer(t("visit.submit_invalid")))
        return
    report_id, _created = saved
    await state.clear()
    quota, progress, _absences = await village_month(
        session,
        officer_id=user.officer_id,
        village_id=data["village_id"],
        day=day,
        county=profile(settings.quota_profile),
    )
    text = t("visit.saved", ref=f"V{report_id:06d}", village=data["village_name"])
    text += "\n" + progress_line(t, quota, progress) + t("quota.separator") + days_left_text(t, day)
    replies.add(message.edit_reply_markup(reply_markup=None))
    replies.add(message.answer(text, reply_markup=main_menu(Role.OFFICER, t)))


_BUTTONS: kit.Buttons = {
    "village": (frozenset({"village"}), _pick_village),
    "date": (frozenset({"date"}), _pick),
    "hours": (frozenset({"hours"}), _pick),
    "households": (frozenset({"households"}), _pick),
    "act": (frozenset({"activities"}), _toggle_activity),
    "count": (frozenset({"activity_count"}), _pick),
    "act_done": (frozenset({"activities"}), _activities_done),
    "submit": (frozenset({"summary"}), _submit),
    "edit": (frozenset({"summary"}), _edit),
    "edit_field": (frozenset({"edit"}), _edit_field),
    "cancel": (frozenset({"summary", "edit"}), _cancel),
}


# --- answers by message --------------------------------------------------------------------


async def _accept_date(
    text: str,
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    today: date,
) -> None:
    day = parse_date(text, today=today)
    if day is None:
        replies.add(message.answer(t("visit.bad_date")))
        return
    problem = check_visit_date(day, today=today, backdate_days=settings.visit_backdate_days)
    if problem is not None:
        replies.add(message.answer(t(f"visit.date_{problem}", days=settings.visit_backdate_days)))
        return
    await state.update_data(date=day.isoformat())
    await _advance("date", message, state, t, replies, settings, today)


async def _accept_hours(
    text: str,
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    today: date,
) -> None:
    hours = parse_hours(text)
    if hours is None or check_range(hours, MIN_HOURS, MAX_HOURS) is not None:
        replies.add(message.answer(t("visit.bad_hours", low=MIN_HOURS, high=MAX_HOURS)))
        return
    await state.update_data(hours=str(hours))
    await _advance("hours", message, state, t, replies, settings, today)


async def _accept_households(
    text: str,
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    today: date,
) -> None:
    count = parse_count(text)
    if count is None or check_range(count, 0, MAX_HOUSEHOLDS) is not None:
        replies.add(message.answer(t("visit.bad_households", high=MAX_HOUSEHOLDS)))
        return
    await state.update_data(households=count)
    await _advance("households", message, state, t, replies, settings, today)


async def _accept_count(
    text: str,
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    today: date,
) -> None:
    count = parse_count(text)
    if count is None or check_range(count, 1, MAX_COUNT) is not None:
        replies.add(message.answer(t("visit.bad_count", high=MAX_COUNT)))
        return
    data = await state.get_data()
    chosen = data.get("activities", {})
    chosen[data["pending_activity"]] = count
    await state.update_data(activities=chosen, pending_activity=None)
    await _ask(message, "activities", state, t, replies, settings, today)


_ACCEPT = {
    "date": _accept_date,
    "hours": _accept_hours,
    "households": _accept_households,
    "activity_count": _accept_count,
}


async def typed_answer(
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    """A typed date, number of hours, households or activity count."""
    step = kit.step_of(await state.get_state())
    await _ACCEPT[step](
        message.text or "", message, state, t, replies, settings, _today(clock, settings)
    )


async def shared_location(
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    assert message.location is not None and user.officer_id is not None
    lat, lon = message.location.latitude, message.location.longitude
    if not valid_point(lat, lon):  # a forged update; no distance can be measured to it
        replies.add(message.answer(t("visit.bad_location")))
        return
    data = await state.get_data()
    found = await villages.assigned_village(
        session, officer_id=user.officer_id, village_id=data["village_id"]
    )
    distance = None if found is None else kit.distance_to_centre(lat, lon, found[1], found[2])
    await state.update_data(lat=lat, lon=lon, distance=distance)
    if far_from_centre(distance, settings.location_radius_m):
        replies.add(message.answer(t("visit.far_warning", distance=distance)))
    await _advance("location", message, state, t, replies, settings, _today(clock, settings))


async def skip_location(
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    await state.update_data(lat=None, lon=None, distance=None)
    await _advance("location", message, state, t, replies, settings, _today(clock, settings))


async def photo(
    message: Message, state: FSMContext, t: Translator, replies: Replies, albums: AlbumAcks
) -> None:
    await kit.add_photo(message, state, t, replies, albums)


async def photos_done(
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    await _advance("photos", message, state, t, replies, settings, _today(clock, settings))


async def no_photos(
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    await state.update_data(photos=[])
    await _advance("photos", message, state, t, replies, settings, _today(clock, settings))


async def skip_notes(
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    await state.update_data(notes=None)
    await _advance("notes", message, state, t, replies, settings, _today(clock, settings))


async def typed_notes(
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    notes, problem = clean_text(message.text or "", max_len=MAX_NOTES)
    if problem is not None:
        replies.add(message.answer(t(f"flow.text_{problem}", limit=MAX_NOTES)))
        return
    await state.update_data(notes=notes)
    await _advance("notes", message, state, t, replies, settings, _today(clock, settings))


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
    if step == "activity_count":
        replies.add(message.answer(t("visit.bad_count", high=MAX_COUNT)))
        return
    if step in ("summary", "edit", "village", "activities"):
        replies.add(message.answer(t("flow.use_buttons")))
        return
    hint = {
        "date": t("visit.bad_date"),
        "hours": t("visit.bad_hours", low=MIN_HOURS, high=MAX_HOURS),
        "households": t("visit.bad_households", high=MAX_HOUSEHOLDS),
        "location": t("visit.bad_location"),
        "photos": t("visit.bad_photo"),
        "notes": t("visit.bad_notes"),
    }[step]
    replies.add(message.answer(hint))
    await _ask(message, step, state, t, replies, settings, _today(clock, settings))


def build_router() -> Router:
    router = Router(name="visit")
    router.message.register(
        start, command_or_button("visit"), HasRole(Role.OFFICER), StateFilter(None)
    )
    router.callback_query.register(on_button, FlowCb.filter(F.flow == FLOW), HasRole(Role.OFFICER))
    text = F.text & ~F.text.startswith("/")
    router.message.register(
        typed_answer,
        StateFilter(Visit.date, Visit.hours, Visit.households, Visit.activity_count),
        text,
    )
    router.message.register(shared_location, Visit.location, F.location)
    router.message.register(skip_location, Visit.location, F.text.in_(all_labels("flow.skip")))
    router.message.register(photo, Visit.photos, F.photo)
    router.message.register(photos_done, Visit.photos, F.text.in_(all_labels("flow.photos_done")))
    router.message.register(no_photos, Visit.photos, F.text.in_(all_labels("flow.no_photos")))
    router.message.register(skip_notes, Visit.notes, F.text.in_(all_labels("flow.skip")))
    router.message.register(typed_notes, Visit.notes, text)
    router.message.register(
        wrong_input, StateFilter(*Visit.__all_states__), ~F.text.startswith("/")
    )
    return router
