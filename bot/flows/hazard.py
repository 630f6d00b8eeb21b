"""/hazard: an officer reports a hazard found in a village; /hazards: their open hazards,
each closed by rectifying it (with an "after" photo) or handing it over to a department.

village → category → severity → description → photos (at least one) → location → summary.
Like every flow, the conversation is kept in PostgreSQL between messages. A hazard id that
arrives in a button is re-checked on the server at every press, and closing is one
conditional UPDATE, so a hazard is closed once however often the button is pressed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiogram import F, Router
from aiogram.filters import StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.methods import EditMessageReplyMarkup, SendMessage
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyKeyboardMarkup,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bot.filters import HasRole
from bot.flows import kit
from bot.flows.kit import AlbumAcks, FlowCb
from bot.i18n import Translator, all_labels
from bot.menus import command_or_button, main_menu
from bot.replies import Replies
from bot.settings import Settings
from bot.texts import shorten
from core.clock import Clock
from core.geo import far_from_centre, valid_point
from core.hazards import (
    HazardCategory,
    HazardStatus,
    Severity,
    reinspection_due,
)
from core.parsing import clean_text
from core.roles import Role
from storage import hazards, villages
from storage.hazards import RECTIFIED, HazardView
from storage.models import User

FLOW = "h"  # buttons of a report
CLOSE_FLOW = "hc"  # buttons of the conversation closing a hazard
STEPS = ("village", "category", "severity", "description", "photos", "location")
MAX_DESCRIPTION = 1000
MAX_NOTE = 1000
# Each listed hazard is a message of its own: more than a few at once runs into
# Telegram's per-chat limit.
LIST_LIMIT = 10
PREVIEW_CHARS = 80
FIX, HAND_OVER = "fix", "hand"


class Report(StatesGroup):
    village = State()
    category = State()
    severity = State()
    description = State()
    photos = State()
    location = State()
    summary = State()
    edit = State()


class Close(StatesGroup):
    after_photo = State()
    after_note = State()
    department = State()
    handover_note = State()


class HazardCb(CallbackData, prefix="hz"):
    """A button under a listed hazard. Who may use it is decided on the server at every press."""

    action: str
    hazard_id: int


def reference(hazard_id: int) -> str:
    return f"H{hazard_id:06d}"


def _cb(data: dict[str, Any], action: str, value: object = "", flow: str = FLOW) -> FlowCb:
    return FlowCb(flow=flow, draft=data["draft"], action=action, value=str(value))


def _when(moment: datetime, settings: Settings) -> str:
    return f"{moment.astimezone(settings.tz):%Y-%m-%d %H:%M}"


def departments(settings: Settings) -> list[str]:
    """The department codes offered for a hand-over, in the configured order (validated at
    start-up against the catalogue's departments)."""
    return list(dict.fromkeys(settings.department_codes))


# --- the report: prompts -------------------------------------------------------------------


def _prompt(
    step: str, data: dict[str, Any], t: Translator, settings: Settings
) -> tuple[str, InlineKeyboardMarkup | ReplyKeyboardMarkup]:
    head = kit.header(t, STEPS.index(step) + 1, len(STEPS))
    if step == "village":
        buttons = [kit.button(t, name, _cb(data, "village", vid)) for vid, name in data["choices"]]
        return f"{head}\n{t('hazard.ask_village')}", kit.inline(kit.chunks(buttons, 2))
    if step == "category":
        buttons = [
            kit.button(t, t(f"hazard_category.{c.value}"), _cb(data, "category", c.value))
            for c in HazardCategory
        ]
        return f"{head}\n{t('hazard.ask_category')}", kit.inline(kit.chunks(buttons, 2))
    if step == "severity":
        buttons = [
            kit.button(t, t(f"severity.{s.value}"), _cb(data, "severity", s.value))
            for s in Severity
        ]
        text = t("hazard.ask_severity", days=settings.hazard_reinspection_days)
        return f"{head}\n{text}", kit.inline([buttons])
    if step == "description":
        text = t("hazard.ask_description", limit=MAX_DESCRIPTION)
        return f"{head}\n{text}", kit.cancel_keyboard(t)
    if step == "photos":
        text = t("hazard.ask_photos", limit=kit.MAX_PHOTOS)
        if data.get("editing"):
            text += "\n" + t("hazard.photos_replaced")
        return f"{head}\n{text}", kit.photos_keyboard(t, optional=False)
    return f"{head}\n{t('hazard.ask_location')}", kit.location_keyboard(t)


async def _ask(
    message: Message,
    step: str,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
) -> None:
    await state.set_state(getattr(Report, step))
    text, keyboard = _prompt(step, await state.get_data(), t, settings)
    replies.add(message.answer(text, reply_markup=keyboard))


async def _advance(
    done: str,
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
) -> None:
    """After `done` was answered: the next step, or the summary when editing or at the end."""
    following = STEPS[STEPS.index(done) + 1 :]
    if (await state.get_data()).get("editing") or not following:
        await _show_summary(message, state, t, replies, settings)
    else:
        await _ask(message, following[0], state, t, replies, settings)


# --- the report: summary -------------------------------------------------------------------


def summary_text(data: dict[str, Any], t: Translator) -> str:
    if data.get("lat") is None:
        place = t("hazard.no_location")
    elif data.get("distance") is None:
        place = t("hazard.location_no_centre")
    else:
        place = t("hazard.location_distance", distance=data["distance"])
    return "\n".join(
        [
            t("hazard.summary_title"),
            t("hazard.field.village", value=data["village_name"]),
            t("hazard.field.category", value=t(f"hazard_category.{data['category']}")),
            t("hazard.field.severity", value=t(f"severity.{data['severity']}")),
            t("hazard.field.description", value=data["description"]),
            t("hazard.field.photos", value=len(data.get("photos", []))),
            t("hazard.field.location", value=place),
        ]
    )


async def _show_summary(
    message: Message, state: FSMContext, t: Translator, replies: Replies, settings: Settings
) -> None:
    if not (await state.get_data()).get("photos"):
        # Cannot happen through the steps; a report never goes in without its photo.
        await _ask(message, "photos", state, t, replies, settings)
        return
    await state.set_state(Report.summary)
    await state.update_data(editing=False)
    data = await state.get_data()
    kit.show_summary(message, replies, t, summary_text(data, t), lambda a: _cb(data, a))


# --- the report: start and buttons ---------------------------------------------------------


async def start(
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
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
        await _ask(message, "category", state, t, replies, settings)
    else:
        await _ask(message, "village", state, t, replies, settings)


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
        clock=clock,
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
    await _advance("village", message, state, t, replies, settings)


async def _pick_category(
    *,
    value: str,
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    **_: Any,
) -> None:
    if value not in {c.value for c in HazardCategory}:
        replies.add(message.answer(t("callback.stale")))
        return
    await state.update_data(category=value)
    await _advance("category", message, state, t, replies, settings)


async def _pick_severity(
    *,
    value: str,
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    **_: Any,
) -> None:
    if value not in {s.value for s in Severity}:
        replies.add(message.answer(t("callback.stale")))
        return
    await state.update_data(severity=value)
    await _advance("severity", message, state, t, replies, settings)


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
        edit_state=Report.edit,
        fields=[(t(f"hazard.edit.{s}"), _cb(data, "edit_field", s)) for s in fields],
    )


async def _edit_field(
    *,
    value: str,
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    settings: Settings,
    **_: Any,
) -> None:
    if value not in STEPS:
        replies.add(message.answer(t("callback.stale")))
        return
    # Photos are sent again rather than added to: a wrong photo could not be taken out.
    await state.update_data(editing=True)
    if value == "photos":
        await state.update_data(photos=[])
    await _ask(message, value, state, t, replies, settings)


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
    clock: Clock,
    data: dict[str, Any],
    **_: Any,
) -> None:
    assert user.officer_id is not None
    # Checked again at submit: the assignment may have ended since the village was chosen.
    village = await villages.assigned_village(
        session, officer_id=user.officer_id, village_id=data["village_id"]
    )
    if village is None:
        replies.add(message.answer(t("hazard.submit_invalid")))
        return
    now = clock()
    saved = await hazards.save_hazard(
        session,
        hazards.NewHazard(
            draft_id=data["draft"],
            officer_id=user.officer_id,
            village_id=data["village_id"],
            category=data["category"],
            severity=data["severity"],
            description=data["description"],
            latitude=data.get("lat"),
            longitude=data.get("lon"),
            distance_m=data.get("distance"),
            reported_by=user.id,
            reported_at=now,
            due_at=reinspection_due(
                now, Severity(data["severity"]), high_days=settings.hazard_reinspection_days
            ),
            photos=[(p[0], p[1]) for p in data["photos"]],
        ),
    )
    await state.clear()
    text = t("hazard.saved", ref=reference(saved.id), village=data["village_name"])
    if saved.due_at is not None:
        text += "\n" + t("hazard.due", due=_when(saved.due_at, settings))
    replies.add(message.edit_reply_markup(reply_markup=None))
    replies.add(message.answer(text, reply_markup=main_menu(Role.OFFICER, t)))


_BUTTONS: kit.Buttons = {
    "village": (frozenset({"village"}), _pick_village),
    "category": (frozenset({"category"}), _pick_category),
    "severity": (frozenset({"severity"}), _pick_severity),
    "submit": (frozenset({"summary"}), _submit),
    "edit": (frozenset({"summary"}), _edit),
    "edit_field": (frozenset({"edit"}), _edit_field),
    "cancel": (frozenset({"summary", "edit"}), _cancel),
}


# --- the report: answers by message --------------------------------------------------------


async def typed_description(
    message: Message, state: FSMContext, t: Translator, replies: Replies, settings: Settings
) -> None:
    text, problem = clean_text(message.text or "", max_len=MAX_DESCRIPTION)
    if problem is not None:
        replies.add(message.answer(t(f"flow.text_{problem}", limit=MAX_DESCRIPTION)))
        return
    assert text is not None
    if not kit.has_words(text):
        replies.add(message.answer(t("hazard.description_no_words")))
        return
    await state.update_data(description=text)
    await _advance("description", message, state, t, replies, settings)


async def photo(
    message: Message, state: FSMContext, t: Translator, replies: Replies, albums: AlbumAcks
) -> None:
    await kit.add_photo(message, state, t, replies, albums)


async def photos_done(
    message: Message, state: FSMContext, t: Translator, replies: Replies, settings: Settings
) -> None:
    if not (await state.get_data()).get("photos"):
        replies.add(message.answer(t("hazard.photo_required")))
        return
    await _advance("photos", message, state, t, replies, settings)


async def shared_location(
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
) -> None:
    assert message.location is not None and user.officer_id is not None
    lat, lon = message.location.latitude, message.location.longitude
    if not valid_point(lat, lon):
        replies.add(message.answer(t("hazard.bad_location")))
        return
    data = await state.get_data()
    found = await villages.assigned_village(
        session, officer_id=user.officer_id, village_id=data["village_id"]
    )
    distance = None if found is None else kit.distance_to_centre(lat, lon, found[1], found[2])
    await state.update_data(lat=lat, lon=lon, distance=distance)
    if far_from_centre(distance, settings.location_radius_m):
        replies.add(
            message.answer(
                t("hazard.far_warning", distance=distance, radius=settings.location_radius_m)
            )
        )
    await _advance("location", message, state, t, replies, settings)


async def skip_location(
    message: Message, state: FSMContext, t: Translator, replies: Replies, settings: Settings
) -> None:
    await state.update_data(lat=None, lon=None, distance=None)
    await _advance("location", message, state, t, replies, settings)


async def wrong_input(
    message: Message, state: FSMContext, t: Translator, replies: Replies, settings: Settings
) -> None:
    """Anything a step cannot use: say what it wants, and ask again."""
    step = kit.step_of(await state.get_state())
    if step in ("village", "category", "severity", "summary", "edit"):
        replies.add(message.answer(t("flow.use_buttons")))
        return
    hint = {
        "description": t("hazard.bad_description"),
        "photos": t("hazard.bad_photo"),
        "location": t("hazard.bad_location"),
    }[step]
    replies.add(message.answer(hint))
    await _ask(message, step, state, t, replies, settings)


# --- /hazards: the open hazards ------------------------------------------------------------


def item_text(hazard: HazardView, t: Translator, settings: Settings, now: datetime) -> str:
    lines = [
        t(
            "hazard.item",
            ref=reference(hazard.id),
            village=hazard.village_name,
            category=t(f"hazard_category.{hazard.category}"),
            severity=t(f"severity.{hazard.severity}"),
            description=shorten(hazard.description, PREVIEW_CHARS),
            reported=f"{hazard.reported_at.astimezone(settings.tz):%Y-%m-%d}",
        )
    ]
    if hazard.due_at is not None:
        key = "hazard.item_overdue" if hazard.due_at < now else "hazard.item_due"
        lines.append(t(key, due=_when(hazard.due_at, settings)))
    return "\n".join(lines)


def _item_keyboard(hazard: HazardView, t: Translator) -> InlineKeyboardMarkup:
    return kit.inline(
        [
            [
                InlineKeyboardButton(
                    text=t("hazard.rectified_button"),
                    callback_data=HazardCb(action=FIX, hazard_id=hazard.id).pack(),
                ),
                InlineKeyboardButton(
                    text=t("hazard.hand_over_button"),
                    callback_data=HazardCb(action=HAND_OVER, hazard_id=hazard.id).pack(),
                ),
            ]
        ]
    )


async def list_open(
    message: Message,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    assert user.officer_id is not None
    total = await hazards.count_open(session, officer_id=user.officer_id)
    if total == 0:
        replies.add(message.answer(t("hazard.none"), reply_markup=main_menu(Role.OFFICER, t)))
        return
    listed = await hazards.open_hazards(session, officer_id=user.officer_id, limit=LIST_LIMIT)
    now = clock()
    replies.add(message.answer(t("hazard.list_title", count=total)))
    for hazard in listed:
        replies.add(
            message.answer(
                item_text(hazard, t, settings, now), reply_markup=_item_keyboard(hazard, t)
            )
        )
    if total > len(listed):
        replies.add(message.answer(t("hazard.list_more", shown=len(listed), total=total)))


# --- closing a hazard: rectified, or handed over -------------------------------------------

_CLOSE_STATES = frozenset(s.state for s in Close.__all_states__)


async def on_hazard_button(
    callback: CallbackQuery,
    callback_data: HazardCb,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
) -> None:
    assert user.officer_id is not None
    current = await state.get_state()
    if current is not None and current not in _CLOSE_STATES:
        # Another flow is under way; its draft is not thrown away by a stray tap.
        replies.add(callback.answer(t("fallback.in_flow"), show_alert=True))
        return
    # The id comes from the client: the hazard must be one this officer may close.
    found = await hazards.hazard_for(
        session, hazard_id=callback_data.hazard_id, officer_id=user.officer_id
    )
    if found is None or callback_data.action not in (FIX, HAND_OVER):
        replies.add(callback.answer(t("callback.stale"), show_alert=True))
        return
    ref = reference(found.id)
    if found.status != HazardStatus.OPEN:
        status = t(f"hazard_status.{found.status}")
        replies.add(
            callback.answer(t("hazard.already_closed", ref=ref, status=status), show_alert=True)
        )
        return
    replies.add(callback.answer())
    data: dict[str, Any] = {
        "draft": kit.new_draft_id(CLOSE_FLOW),
        "hazard_id": found.id,
        "listed": callback.message.message_id if callback.message else None,
    }
    keyboard: InlineKeyboardMarkup | ReplyKeyboardMarkup
    if callback_data.action == FIX:
        await state.set_state(Close.after_photo)
        await state.set_data(data)
        text, keyboard = t("hazard.ask_after_photo", ref=ref), kit.cancel_keyboard(t)
    else:
        data["departments"] = departments(settings)
        await state.set_state(Close.department)
        await state.set_data(data)
        buttons = [
            kit.button(t, t(f"department.{code}"), _cb(data, "dept", i, flow=CLOSE_FLOW))
            for i, code in enumerate(data["departments"])
        ]
        text, keyboard = t("hazard.ask_department", ref=ref), kit.inline(kit.chunks(buttons, 2))
    # The listing may be too old to answer as a reply; a plain message always works.
    replies.add(SendMessage(chat_id=user.id, text=text, reply_markup=keyboard))


async def on_department(
    callback: CallbackQuery,
    callback_data: FlowCb,
    state: FSMContext,
    t: Translator,
    replies: Replies,
) -> None:
    data = await kit.live_draft(callback, callback_data, state, t, replies)
    if data is None or not isinstance(callback.message, Message):
        return
    offered: list[str] = data.get("departments", [])
    value = callback_data.value
    if (
        callback_data.action != "dept"
        or await state.get_state() != Close.department.state
        or (index := kit.button_id(value)) is None
        or index >= len(offered)
    ):
        replies.add(callback.answer(t("callback.stale"), show_alert=True))
        return
    code = offered[index]
    await state.update_data(department=code)
    await state.set_state(Close.handover_note)
    replies.add(callback.answer(t(f"department.{code}")))
    replies.add(callback.message.edit_reply_markup(reply_markup=None))
    replies.add(
        callback.message.answer(
            t("hazard.ask_handover_note", limit=MAX_NOTE), reply_markup=kit.cancel_keyboard(t)
        )
    )


async def after_photo(
    message: Message, state: FSMContext, session: AsyncSession, t: Translator, replies: Replies
) -> None:
    file_id, unique_id = kit.photo_ids(message)
    data = await state.get_data()
    if await hazards.is_evidence_photo(
        session, hazard_id=data["hazard_id"], file_unique_id=unique_id
    ):
        replies.add(message.answer(t("hazard.after_same_photo")))
        return
    await state.update_data(after=[file_id, unique_id], after_album=message.media_group_id)
    await state.set_state(Close.after_note)
    replies.add(
        message.answer(
            t("hazard.ask_after_note", limit=MAX_NOTE), reply_markup=kit.skip_keyboard(t)
        )
    )


async def _finish(
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    clock: Clock,
    *,
    how: str,
    note: str | None,
) -> None:
    assert user.officer_id is not None
    data = await state.get_data()
    await state.clear()
    ref, menu = reference(data["hazard_id"]), main_menu(Role.OFFICER, t)
    # Checked again in the UPDATE itself: still open, and still this officer's to close.
    closed = await hazards.close_hazard(
        session,
        hazard_id=data["hazard_id"],
        officer_id=user.officer_id,
        how=how,
        note=note,
        after_photo=(data["after"][0], data["after"][1]) if how == RECTIFIED else None,
        now=clock(),
    )
    if not closed:
        replies.add(message.answer(t("hazard.not_open", ref=ref), reply_markup=menu))
        return
    if data.get("listed"):
        replies.add(
            EditMessageReplyMarkup(
                chat_id=message.chat.id, message_id=data["listed"], reply_markup=None
            )
        )
    if how == RECTIFIED:
        text = t("hazard.rectified_done", ref=ref)
    else:
        text = t("hazard.handed_over_done", ref=ref, department=t(f"department.{how}"))
    replies.add(message.answer(text, reply_markup=menu))


async def skip_after_note(
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    clock: Clock,
) -> None:
    await _finish(message, state, session, user, t, replies, clock, how=RECTIFIED, note=None)


async def typed_note(
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    clock: Clock,
) -> None:
    """The rectification note (optional) or the hand-over note (required)."""
    note, problem = clean_text(message.text or "", max_len=MAX_NOTE)
    if problem is not None:
        replies.add(message.answer(t(f"flow.text_{problem}", limit=MAX_NOTE)))
        return
    if await state.get_state() == Close.after_note.state:
        how = RECTIFIED
    else:
        how = (await state.get_data())["department"]
    await _finish(message, state, session, user, t, replies, clock, how=how, note=note)


async def wrong_close_input(
    message: Message, state: FSMContext, t: Translator, replies: Replies
) -> None:
    step = kit.step_of(await state.get_state())
    album = message.media_group_id
    if step == "after_note" and album and album == (await state.get_data()).get("after_album"):
        return  # the rest of the album the after photo came in: one photo is kept
    hint = {
        "after_photo": "hazard.after_photo_needed",
        "department": "flow.use_buttons",
    }.get(step, "hazard.note_text_only")
    replies.add(message.answer(t(hint)))


def build_router() -> Router:
    router = Router(name="hazard")
    officer = HasRole(Role.OFFICER)
    router.message.register(start, command_or_button("hazard"), officer, StateFilter(None))
    router.message.register(list_open, command_or_button("hazards"), officer, StateFilter(None))
    router.callback_query.register(on_button, FlowCb.filter(F.flow == FLOW), officer)
    router.callback_query.register(on_department, FlowCb.filter(F.flow == CLOSE_FLOW), officer)
    router.callback_query.register(on_hazard_button, HazardCb.filter(), officer)

    text = F.text & ~F.text.startswith("/")
    router.message.register(typed_description, Report.description, text)
    router.message.register(photo, Report.photos, F.photo)
    router.message.register(photos_done, Report.photos, F.text.in_(all_labels("flow.photos_done")))
    router.message.register(shared_location, Report.location, F.location)
    router.message.register(skip_location, Report.location, F.text.in_(all_labels("flow.skip")))
    router.message.register(
        wrong_input, StateFilter(*Report.__all_states__), ~F.text.startswith("/")
    )

    router.message.register(after_photo, Close.after_photo, F.photo)
    router.message.register(skip_after_note, Close.after_note, F.text.in_(all_labels("flow.skip")))
    router.message.register(typed_note, StateFilter(Close.after_note, Close.handover_note), text)
    router.message.register(
        wrong_close_input, StateFilter(*Close.__all_states__), ~F.text.startswith("/")
    )
    return router
