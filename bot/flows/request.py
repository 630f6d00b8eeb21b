"""/request: a villager's request to their village's officer; /myrequests and the villager's
side of a request (adding messages, rating, "not solved").

category → text → photos (optional) → location (optional) → name or anonymous → summary.
The draft is kept in PostgreSQL between messages; the limits (open requests, messages a
minute) and the village are checked again at Submit, and a draft is stored once however
often Submit is pressed. Every request id a button carries is re-checked on the server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiogram import F, Router
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.methods import SendMessage
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bot import request_ui
from bot.filters import HasRole
from bot.flows import kit
from bot.flows.kit import AlbumAcks, FlowCb
from bot.i18n import Translator, all_labels
from bot.menus import command_or_button, main_menu
from bot.replies import Replies
from bot.request_texts import handler_label, list_line, villager_card
from bot.request_ui import MyRequestCb, MyRequestPageCb
from bot.settings import Settings
from core.clock import Clock
from core.geo import valid_point
from core.parsing import clean_text
from core.requests import (
    Actor,
    Event,
    Refusal,
    RequestCategory,
    Routed,
    TransitionError,
    may_open_request,
    message_allowed,
    next_message_at,
    validate_rating,
)
from core.roles import Role
from storage import requests as store
from storage import villages
from storage.models import User
from storage.requests import RequestView

FLOW = "r"
STEPS = ("category", "text", "photos", "location", "anonymous")
MAX_TEXT = 2000
PAGE = 5  # requests per page of /myrequests

REFUSALS = {
    Refusal.ALREADY_RATED: "request_flow.refused_already_rated",
    Refusal.NOT_RESOLVED: "request_flow.refused_not_resolved",
    Refusal.FINISHED: "request_flow.refused_finished",
}


class Draft(StatesGroup):
    category = State()
    text = State()
    photos = State()
    location = State()
    anonymous = State()
    summary = State()
    edit = State()


class Follow(StatesGroup):
    message = State()  # one message added to an open request


def _cb(data: dict[str, Any], action: str, value: object = "") -> FlowCb:
    return FlowCb(flow=FLOW, draft=data["draft"], action=action, value=str(value))


# --- checks shared by the start and Submit -------------------------------------------------


async def _too_many_open(
    session: AsyncSession, user: User, t: Translator, settings: Settings
) -> str | None:
    """The refusal when the villager has as many open requests as allowed, naming them."""
    count = await store.open_count(session, villager_id=user.id)
    if may_open_request(count, settings.limits):
        return None
    listed, _ = await store.villager_requests(session, villager_id=user.id, limit=count)
    refs = t("summary.separator").join(r.ref for r in listed if r.is_open)
    return t("request_flow.too_many_open", count=count, refs=refs)


async def _too_fast(
    session: AsyncSession, user: User, t: Translator, settings: Settings, now: datetime
) -> str | None:
    """The refusal when the villager sent as many messages this minute as allowed."""
    recent = await store.recent_messages(session, villager_id=user.id, now=now)
    if message_allowed(recent, now, settings.limits):
        return None
    at = next_message_at(recent, now, settings.limits).astimezone(settings.tz)
    return t("request_flow.wait_until", time=f"{at:%H:%M:%S}")


# --- the draft: prompts --------------------------------------------------------------------


def _prompt(
    step: str, data: dict[str, Any], t: Translator
) -> tuple[str, InlineKeyboardMarkup | ReplyKeyboardMarkup]:
    head = kit.header(t, STEPS.index(step) + 1, len(STEPS))
    if step == "category":
        buttons = [
            kit.button(t, t(f"request_category.{c.value}"), _cb(data, "category", c.value))
            for c in RequestCategory
        ]
        return f"{head}\n{t('request_flow.ask_category')}", kit.inline(kit.chunks(buttons, 1))
    if step == "text":
        text = t("request_flow.ask_text", limit=MAX_TEXT)
        return f"{head}\n{text}", kit.cancel_keyboard(t)
    if step == "photos":
        text = t("request_flow.ask_photos", limit=kit.MAX_PHOTOS)
        if data.get("editing"):
            text += "\n" + t("request_flow.photos_replaced")
        return f"{head}\n{text}", kit.photos_keyboard(t, optional=True)
    if step == "location":
        return f"{head}\n{t('request_flow.ask_location')}", kit.location_keyboard(t)
    buttons = [
        kit.button(t, t("request_flow.with_name"), _cb(data, "anonymous", 0)),
        kit.button(t, t("request_flow.anonymous"), _cb(data, "anonymous", 1)),
    ]
    return f"{head}\n{t('request_flow.ask_anonymous')}", kit.inline(kit.chunks(buttons, 1))


async def _ask(
    message: Message, step: str, state: FSMContext, t: Translator, replies: Replies
) -> None:
    await state.set_state(getattr(Draft, step))
    text, keyboard = _prompt(step, await state.get_data(), t)
    replies.add(message.answer(text, reply_markup=keyboard))


async def _advance(
    done: str, message: Message, state: FSMContext, t: Translator, replies: Replies
) -> None:
    """After `done` was answered: the next step, or the summary when editing or at the end."""
    following = STEPS[STEPS.index(done) + 1 :]
    if (await state.get_data()).get("editing") or not following:
        await _show_summary(message, state, t, replies)
    else:
        await _ask(message, following[0], state, t, replies)


def summary_text(data: dict[str, Any], t: Translator) -> str:
    photos = len(data.get("photos", []))
    return "\n".join(
        [
            t("request_flow.summary_title"),
            t("request.field_village", village=data["village_name"]),
            t("request_flow.field_category", category=t(f"request_category.{data['category']}")),
            t("request.field_text", text=data["text"]),
            t("request.field_photos", count=photos)
            if photos
            else t("request_flow.field_no_photos"),
            t("request.field_location")
            if data.get("lat") is not None
            else t("request_flow.field_no_location"),
            t("request_flow.field_anonymous")
            if data["anonymous"]
            else t("request_flow.field_named"),
        ]
    )


async def _show_summary(
    message: Message, state: FSMContext, t: Translator, replies: Replies
) -> None:
    await state.set_state(Draft.summary)
    await state.update_data(editing=False)
    data = await state.get_data()
    kit.show_summary(message, replies, t, summary_text(data, t), lambda a: _cb(data, a))


# --- the draft: start and buttons ----------------------------------------------------------


async def start(
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
) -> None:
    menu = main_menu(Role.VILLAGER, t)
    village = await villages.current_village(session, user.id)
    if village is None:
        replies.add(message.answer(t("request_flow.no_village"), reply_markup=menu))
        return
    refused = await _too_many_open(session, user, t, settings)
    if refused is None:
        # Checked again at Submit; told now too, before the villager types it all for nothing.
        route = await store.route_for_village(session, village.id)
        if not isinstance(route, Routed):
            refused = t("request_flow.unrouted", village=village.name)
    if refused is not None:
        replies.add(message.answer(refused, reply_markup=menu))
        return
    await state.set_data(
        {"draft": kit.new_draft_id(FLOW), "village_id": village.id, "village_name": village.name}
    )
    await _ask(message, "category", state, t, replies)


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
    if callback_data.action == "submit":
        sent = await store.request_for_draft(
            session, draft_id=callback_data.draft, villager_id=user.id
        )
        if sent is not None:  # a second tap on Submit: the first one stored it
            ref = store.reference(sent)
            replies.add(callback.answer(t("request_flow.already_sent", ref=ref), show_alert=True))
            return
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


async def _pick_category(
    *, value: str, message: Message, state: FSMContext, t: Translator, replies: Replies, **_: Any
) -> None:
    if value not in {c.value for c in RequestCategory}:
        replies.add(message.answer(t("callback.stale")))
        return
    await state.update_data(category=value)
    await _advance("category", message, state, t, replies)


async def _pick_anonymous(
    *, value: str, message: Message, state: FSMContext, t: Translator, replies: Replies, **_: Any
) -> None:
    if value not in ("0", "1"):
        replies.add(message.answer(t("callback.stale")))
        return
    await state.update_data(anonymous=value == "1")
    await _advance("anonymous", message, state, t, replies)


async def _edit(
    *,
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    data: dict[str, Any],
    **_: Any,
) -> None:
    fields = STEPS
    await kit.offer_fields(
        message,
        state,
        t,
        replies,
        edit_state=Draft.edit,
        fields=[(t(f"request_flow.edit.{s}"), _cb(data, "edit_field", s)) for s in fields],
    )


async def _edit_field(
    *, value: str, message: Message, state: FSMContext, t: Translator, replies: Replies, **_: Any
) -> None:
    if value not in STEPS:
        replies.add(message.answer(t("callback.stale")))
        return
    # Photos are sent again rather than added to: a wrong photo could not be taken out.
    await state.update_data(editing=True)
    if value == "photos":
        await state.update_data(photos=[])
    await _ask(message, value, state, t, replies)


_cancel = kit.cancel_draft(Role.VILLAGER)


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
    menu = main_menu(Role.VILLAGER, t)
    village = await villages.current_village(session, user.id)
    if village is None or village.id != data["village_id"]:
        await state.clear()
        replies.add(message.edit_reply_markup(reply_markup=None))
        replies.add(message.answer(t("request_flow.village_changed"), reply_markup=menu))
        return
    now = clock()
    refused = await _too_many_open(session, user, t, settings) or await _too_fast(
        session, user, t, settings, now
    )
    if refused is not None:  # the draft stays: Submit works once the limit allows it
        replies.add(message.answer(refused))
        return
    routed = await store.route_for_village(session, village.id)
    if not isinstance(routed, Routed):
        await state.clear()
        replies.add(message.edit_reply_markup(reply_markup=None))
        replies.add(
            message.answer(t("request_flow.unrouted", village=village.name), reply_markup=menu)
        )
        return
    saved = await store.create_request(
        session,
        store.NewRequest(
            draft_id=data["draft"],
            villager_id=user.id,
            village_id=village.id,
            category=data["category"],
            body=data["text"],
            photos=[(p[0], p[1]) for p in data.get("photos", [])],
            latitude=data.get("lat"),
            longitude=data.get("lon"),
            anonymous=data["anonymous"],
            created_at=now,
        ),
        routed,
        config=settings.deadlines,
    )
    request = await store.get_request(session, saved.id)
    assert request is not None
    if saved.created:
        await request_ui.new_request_to_handlers(session, request, settings)
    await state.clear()
    replies.add(message.edit_reply_markup(reply_markup=None))
    text = t(
        "request_flow.sent",
        ref=request.ref,
        who=handler_label(t, request),
        hours=settings.request_answer_hours,
    )
    replies.add(message.answer(text, reply_markup=menu))


_BUTTONS: kit.Buttons = {
    "category": (frozenset({"category"}), _pick_category),
    "anonymous": (frozenset({"anonymous"}), _pick_anonymous),
    "submit": (frozenset({"summary"}), _submit),
    "edit": (frozenset({"summary"}), _edit),
    "edit_field": (frozenset({"edit"}), _edit_field),
    "cancel": (frozenset({"summary", "edit"}), _cancel),
}


# --- the draft: answers by message ---------------------------------------------------------


async def typed_text(message: Message, state: FSMContext, t: Translator, replies: Replies) -> None:
    text, problem = clean_text(message.text or "", max_len=MAX_TEXT)
    if problem is not None:
        replies.add(message.answer(t(f"flow.text_{problem}", limit=MAX_TEXT)))
        return
    assert text is not None
    if not kit.has_words(text):
        replies.add(message.answer(t("request_flow.text_no_words")))
        return
    await state.update_data(text=text)
    await _advance("text", message, state, t, replies)


async def photo(
    message: Message, state: FSMContext, t: Translator, replies: Replies, albums: AlbumAcks
) -> None:
    await kit.add_photo(message, state, t, replies, albums)


async def photos_done(message: Message, state: FSMContext, t: Translator, replies: Replies) -> None:
    await _advance("photos", message, state, t, replies)


async def no_photos(message: Message, state: FSMContext, t: Translator, replies: Replies) -> None:
    await state.update_data(photos=[])
    await _advance("photos", message, state, t, replies)


async def _location_answered(
    message: Message, state: FSMContext, t: Translator, replies: Replies, key: str
) -> None:
    if not (await state.get_data()).get("editing"):
        # The next step's buttons are inline: take the location keyboard away first.
        replies.add(message.answer(t(key), reply_markup=ReplyKeyboardRemove()))
    await _advance("location", message, state, t, replies)


async def shared_location(
    message: Message, state: FSMContext, t: Translator, replies: Replies
) -> None:
    assert message.location is not None
    lat, lon = message.location.latitude, message.location.longitude
    if not valid_point(lat, lon):
        replies.add(message.answer(t("request_flow.bad_location")))
        return
    await state.update_data(lat=lat, lon=lon)
    await _location_answered(message, state, t, replies, "request_flow.location_saved")


async def skip_location(
    message: Message, state: FSMContext, t: Translator, replies: Replies
) -> None:
    await state.update_data(lat=None, lon=None)
    await _location_answered(message, state, t, replies, "request_flow.location_skipped")


async def wrong_input(message: Message, state: FSMContext, t: Translator, replies: Replies) -> None:
    """Anything a step cannot use: say what it wants, and ask again."""
    step = kit.step_of(await state.get_state())
    if step in ("category", "anonymous", "summary", "edit"):
        replies.add(message.answer(t("flow.use_buttons")))
        return
    hint = {
        "text": "request_flow.bad_text",
        "photos": "request_flow.bad_photo",
        "location": "request_flow.bad_location",
    }[step]
    replies.add(message.answer(t(hint)))
    await _ask(message, step, state, t, replies)


# --- /myrequests ---------------------------------------------------------------------------


async def _my_page(
    session: AsyncSession, user: User, t: Translator, settings: Settings, now: datetime, page: int
) -> tuple[str, InlineKeyboardMarkup] | None:
    """One page of the villager's requests with a button each; None when the page is empty."""
    listed, total = await store.villager_requests(
        session, villager_id=user.id, limit=PAGE, offset=page * PAGE
    )
    if not listed:
        return None
    pages = -(-total // PAGE)
    lines = [t("request_flow.my_title", count=total)]
    if pages > 1:
        lines.append(t("request_flow.my_page", page=page + 1, pages=pages))
    lines += [list_line(t, r, None, now=now, tz=settings.tz) for r in listed]
    lines += ["", t("request_flow.my_hint")]
    rows = [
        [
            InlineKeyboardButton(
                text=t(
                    "request_flow.my_button",
                    ref=r.ref,
                    status=t(f"request_status.{r.status.value}"),
                ),
                callback_data=MyRequestCb(action=request_ui.OPEN, request_id=r.id).pack(),
            )
        ]
        for r in listed
    ]
    rows.append(request_ui.page_buttons(t, page, pages, MyRequestPageCb))
    return "\n".join(lines), kit.inline(rows)


async def list_mine(
    message: Message,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    shown = await _my_page(session, user, t, settings, clock(), 0)
    if shown is None:
        replies.add(
            message.answer(t("request_flow.my_none"), reply_markup=main_menu(Role.VILLAGER, t))
        )
        return
    text, keyboard = shown
    replies.add(message.answer(text, reply_markup=keyboard))


async def on_page(
    callback: CallbackQuery,
    callback_data: MyRequestPageCb,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    page = callback_data.page
    # The number comes from the client: a forged one may not even fit the query's offset.
    fits = 0 <= page < 2**31 // PAGE
    shown = await _my_page(session, user, t, settings, clock(), page) if fits else None
    if shown is None or not isinstance(callback.message, Message):
        replies.add(callback.answer(t("callback.stale"), show_alert=True))
        return
    text, keyboard = shown
    replies.add(callback.answer())
    replies.add(callback.message.edit_text(text, reply_markup=keyboard))


# --- a request's buttons: details, add a message, rate, "not solved" -----------------------


async def on_my_request(
    callback: CallbackQuery,
    callback_data: MyRequestCb,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    # The id comes from the client: the request must be this villager's own.
    request = await store.get_request(session, callback_data.request_id)
    action = _ACTIONS.get(callback_data.action)
    if (
        request is None
        or action is None
        or await store.actor_for(session, request, user) is not Actor.VILLAGER
    ):
        replies.add(callback.answer(t("callback.stale"), show_alert=True))
        return
    await action(
        callback=callback,
        value=callback_data.value,
        request=request,
        state=state,
        session=session,
        user=user,
        t=t,
        replies=replies,
        settings=settings,
        clock=clock,
    )


async def _open(
    *,
    callback: CallbackQuery,
    request: RequestView,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    **_: Any,
) -> None:
    events = await store.history(session, request.id)
    keyboard = request_ui.villager_keyboard(t, request, rated=request.rating is not None)
    replies.add(callback.answer())
    replies.add(
        SendMessage(
            chat_id=user.id,
            text=villager_card(t, request, events, tz=settings.tz),
            reply_markup=keyboard,
        )
    )


async def _start_message(
    *,
    callback: CallbackQuery,
    request: RequestView,
    state: FSMContext,
    user: User,
    t: Translator,
    replies: Replies,
    **_: Any,
) -> None:
    current = await state.get_state()
    if current is not None and current != Follow.message.state:
        # Another flow is under way; its draft is not thrown away by a stray tap.
        replies.add(callback.answer(t("fallback.in_flow"), show_alert=True))
        return
    if not request.is_open:
        text = t("request_flow.message_finished", ref=request.ref)
        replies.add(callback.answer(text, show_alert=True))
        return
    await state.set_state(Follow.message)
    await state.set_data({"request_id": request.id})
    replies.add(callback.answer())
    text = t("request_flow.ask_message", ref=request.ref, limit=MAX_TEXT)
    replies.add(SendMessage(chat_id=user.id, text=text, reply_markup=kit.cancel_keyboard(t)))


def _refused(t: Translator, request: RequestView, exc: TransitionError) -> str:
    return t(REFUSALS.get(exc.code, "request_flow.refused_other"), ref=request.ref)


def _drop_buttons(callback: CallbackQuery, replies: Replies) -> None:
    if isinstance(callback.message, Message):
        replies.add(callback.message.edit_reply_markup(reply_markup=None))


async def _rate(
    *,
    callback: CallbackQuery,
    value: int,
    request: RequestView,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
    **_: Any,
) -> None:
    try:
        stars = validate_rating(value)
    except ValueError:
        replies.add(callback.answer(t("callback.stale"), show_alert=True))
        return
    try:
        await store.record_event(
            session,
            request_id=request.id,
            event=Event.RATED,
            actor=Actor.VILLAGER,
            now=clock(),
            user_id=user.id,
            rating=stars,
            config=settings.deadlines,
        )
    except TransitionError as exc:  # a second tap, or it was reopened meanwhile
        replies.add(callback.answer(_refused(t, request, exc), show_alert=True))
        return
    await request_ui.to_handlers(session, request, "rated", settings, rating=stars)
    replies.add(callback.answer())
    _drop_buttons(callback, replies)
    text = t("request_flow.rated", rating=stars, who=handler_label(t, request))
    replies.add(SendMessage(chat_id=user.id, text=text))


async def _unsolved(
    *,
    callback: CallbackQuery,
    request: RequestView,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
    **_: Any,
) -> None:
    try:
        await store.record_event(
            session,
            request_id=request.id,
            event=Event.REOPENED,
            actor=Actor.VILLAGER,
            now=clock(),
            user_id=user.id,
            config=settings.deadlines,
        )
    except TransitionError as exc:
        replies.add(callback.answer(_refused(t, request, exc), show_alert=True))
        return
    reopened = await store.get_request(session, request.id)
    assert reopened is not None
    hours = settings.request_answer_hours
    await request_ui.to_handlers(session, reopened, "reopened", settings, answer=hours)
    replies.add(callback.answer())
    _drop_buttons(callback, replies)
    text = t("request_flow.reopened", ref=request.ref, who=handler_label(t, request), hours=hours)
    replies.add(
        SendMessage(
            chat_id=user.id, text=text, reply_markup=request_ui.villager_keyboard(t, reopened)
        )
    )


_ACTIONS: dict[str, Any] = {
    request_ui.OPEN: _open,
    request_ui.MESSAGE: _start_message,
    request_ui.RATE: _rate,
    request_ui.UNSOLVED: _unsolved,
}


# --- adding a message to an open request ---------------------------------------------------


async def added_message(
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    """The one message (a text, or a photo with an optional caption) for the request."""
    photos: list[tuple[str, str]] = []
    if message.photo:
        photos = [kit.photo_ids(message)]
        body, _ = clean_text(message.caption or "", max_len=MAX_TEXT)
    else:
        body, problem = clean_text(message.text or "", max_len=MAX_TEXT)
        if problem is not None:
            replies.add(message.answer(t(f"flow.text_{problem}", limit=MAX_TEXT)))
            return
    request = await store.get_request(session, (await state.get_data())["request_id"])
    assert request is not None  # requests are never deleted
    if not request.is_open:
        await _finished(message, state, t, replies, request)
        return
    now = clock()
    too_fast = await _too_fast(session, user, t, settings, now)
    if too_fast is not None:  # refused: stored nowhere, relayed nowhere
        replies.add(message.answer(too_fast))
        return
    try:
        recorded = await store.record_event(
            session,
            request_id=request.id,
            event=Event.VILLAGER_MESSAGE,
            actor=Actor.VILLAGER,
            now=now,
            user_id=user.id,
            body=body,
            photos=photos,
            config=settings.deadlines,
        )
    except TransitionError:  # resolved or closed by the officer this very moment
        await _finished(message, state, t, replies, request)
        return
    await request_ui.villager_message_to_handlers(
        session, request, body=body, photos=photos, settings=settings
    )
    await state.clear()
    if message.media_group_id is not None:
        # The album's other photos arrive as updates of their own: they join this message.
        await state.set_data(
            {"album": message.media_group_id, "event": recorded.event_id, "request_id": request.id}
        )
    text = t("request_flow.message_sent", who=handler_label(t, request))
    replies.add(message.answer(text, reply_markup=main_menu(Role.VILLAGER, t)))


async def _finished(
    message: Message, state: FSMContext, t: Translator, replies: Replies, request: RequestView
) -> None:
    await state.clear()
    text = t("request_flow.message_finished", ref=request.ref)
    replies.add(message.answer(text, reply_markup=main_menu(Role.VILLAGER, t)))


async def _rest_of_album(message: Message, state: FSMContext) -> bool:
    group = message.media_group_id
    return group is not None and (await state.get_data()).get("album") == group


async def album_photo(
    message: Message, state: FSMContext, session: AsyncSession, settings: Settings
) -> None:
    """A further photo of the album a message was sent with: added to that message; the
    album was answered once already."""
    data = await state.get_data()
    request = await store.get_request(session, data["request_id"])
    assert request is not None
    photos = [kit.photo_ids(message)]
    body, _ = clean_text(message.caption or "", max_len=MAX_TEXT)
    await store.add_event_photos(session, event_id=data["event"], photos=photos, body=body)
    await request_ui.villager_message_to_handlers(
        session, request, body=body, photos=photos, settings=settings
    )


async def wrong_message(message: Message, t: Translator, replies: Replies) -> None:
    replies.add(message.answer(t("request_flow.bad_message")))


def build_router() -> Router:
    router = Router(name="request")
    villager = HasRole(Role.VILLAGER)
    router.message.register(start, command_or_button("request"), villager, StateFilter(None))
    router.message.register(list_mine, command_or_button("myrequests"), villager, StateFilter(None))
    router.message.register(album_photo, F.photo, villager, StateFilter(None), _rest_of_album)
    router.callback_query.register(on_button, FlowCb.filter(F.flow == FLOW), villager)
    router.callback_query.register(on_page, MyRequestPageCb.filter(), villager)
    router.callback_query.register(on_my_request, MyRequestCb.filter(), villager)

    text = F.text & ~F.text.startswith("/")
    router.message.register(typed_text, Draft.text, text)
    router.message.register(photo, Draft.photos, F.photo)
    router.message.register(photos_done, Draft.photos, F.text.in_(all_labels("flow.photos_done")))
    router.message.register(no_photos, Draft.photos, F.text.in_(all_labels("flow.no_photos")))
    router.message.register(shared_location, Draft.location, F.location)
    router.message.register(skip_location, Draft.location, F.text.in_(all_labels("flow.skip")))
    router.message.register(
        wrong_input, StateFilter(*Draft.__all_states__), ~F.text.startswith("/")
    )

    router.message.register(added_message, Follow.message, text | F.photo)
    router.message.register(wrong_message, Follow.message, ~F.text.startswith("/"))
    return router
