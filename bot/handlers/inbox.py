"""/requests: the officer's (or supervisor's) inbox of villagers' requests, each request's
card, and the actions on it: accept, reply, forward to a department, department reported
back, resolve, close as not a police matter.

Every press is re-checked on the server (the request exists, the presser handles it or
supervises its village) and every change is one event through storage.requests.record_event,
which refuses what the request's status does not allow. What the villager is told goes
through the outbox in the same transaction (bot.request_ui).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiogram import F, Router
from aiogram.filters import StateFilter
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

from bot import request_ui
from bot.filters import HasRole
from bot.flows import kit
from bot.flows.hazard import departments
from bot.flows.kit import FlowCb
from bot.i18n import Translator, all_labels
from bot.menus import command_or_button, main_menu
from bot.replies import Replies
from bot.request_texts import handler_card, list_line, supervisor_label, villager_label
from bot.request_ui import InboxCb, InboxPageCb
from bot.settings import Settings
from core.clock import Clock
from core.parsing import clean_text
from core.requests import Actor, Event, TransitionError, apply
from core.roles import Role
from storage import requests as store
from storage.models import User
from storage.requests import EventView, RequestView

FLOW = "ib"  # the department picker's buttons
PAGE_SIZE = 8
MAX_TEXT = 2000  # a reply, a note or an explanation sent to the villager
STAFF = frozenset({Actor.OFFICER, Actor.SUPERVISOR})
Action = Callable[..., Awaitable[None]]  # what a request's button does, given its checked request


class Inbox(StatesGroup):
    reply = State()
    department = State()
    forward_note = State()
    resolve_note = State()
    close_note = State()


_STATES = frozenset(s.state for s in Inbox.__all_states__)


def _refusal(t: Translator, error: TransitionError, request: RequestView) -> str:
    return t(f"inbox.refused.{error.code.value}", ref=request.ref)


async def _handled(
    session: AsyncSession, request_id: int, user: User
) -> tuple[RequestView, Actor] | None:
    """The request and what the user is to it, when they handle it (or supervise it)."""
    request = await store.get_request(session, request_id)
    if request is None:
        return None
    actor = await store.actor_for(session, request, user)
    return (request, actor) if actor in STAFF else None


async def _record(
    session: AsyncSession,
    request: RequestView,
    event: Event,
    actor: Actor,
    user: User,
    settings: Settings,
    clock: Clock,
    **fields: Any,
) -> tuple[RequestView, EventView]:
    """Record the event (TransitionError when the status does not allow it); the request as
    it is now (for the card and the villager's buttons) and the event as recorded."""
    recorded = await store.record_event(
        session,
        request_id=request.id,
        event=event,
        actor=actor,
        now=clock(),
        user_id=user.id,
        officer_id=user.officer_id if actor is Actor.OFFICER else None,
        supervisor_id=user.supervisor_id if actor is Actor.SUPERVISOR else None,
        config=settings.deadlines,
        **fields,
    )
    updated = await store.get_request(session, request.id)
    assert updated is not None
    return updated, await _event(session, request.id, recorded.event_id)


async def _event(session: AsyncSession, request_id: int, event_id: int) -> EventView:
    return next(e for e in await store.history(session, request_id) if e.id == event_id)


def _signed(event: EventView) -> Callable[[Translator], str] | None:
    """Who the villager is told acted: a supervisor stepping in signs with their own name,
    not with that of the officer the request is routed to (None: the request's handler)."""
    if event.actor is not Actor.SUPERVISOR:
        return None
    return lambda t: supervisor_label(t, event.supervisor_name)


async def _send_card(
    session: AsyncSession,
    request: RequestView,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    now = clock()
    events = await store.history(session, request.id)
    state = store.deadlines_of(events, now, settings.deadlines)
    text = handler_card(t, request, events, state, now=now, tz=settings.tz)
    # A plain message: the pressed one may be too old to answer as a reply.
    keyboard = request_ui.handler_keyboard(t, request)
    replies.add(SendMessage(chat_id=user.id, text=text, reply_markup=keyboard))


# --- /requests: the list ---------------------------------------------------------------------


async def _page(
    session: AsyncSession, user: User, t: Translator, settings: Settings, clock: Clock, page: int
) -> tuple[str, InlineKeyboardMarkup | None]:
    if user.officer_id is not None:
        listed = await store.open_for_handler(session, officer_id=user.officer_id)
    else:
        listed = await store.open_for_handler(session, supervisor_id=user.supervisor_id)
    if not listed:
        return t("inbox.none"), None
    pages = -(-len(listed) // PAGE_SIZE)
    page = min(page, pages - 1)
    shown = listed[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    now = clock()
    events = await store.histories(session, [r.id for r in shown])
    states = {r.id: store.deadlines_of(events[r.id], now, settings.deadlines) for r in shown}
    head = t("inbox.list_title", count=len(listed))
    if pages > 1:
        head += "\n" + t("inbox.page", page=page + 1, pages=pages)
    items = [
        list_line(t, r, states[r.id], now=now, tz=settings.tz)
        + "\n   "
        + t("inbox.item_from", who=villager_label(t, r), village=r.village_name)
        for r in shown
    ]
    buttons = [
        InlineKeyboardButton(
            text=t("inbox.item_overdue" if states[r.id].overdue else "inbox.item", ref=r.ref),
            callback_data=InboxCb(action=request_ui.OPEN, request_id=r.id).pack(),
        )
        for r in shown
    ]
    rows = [*kit.chunks(buttons, 2), request_ui.page_buttons(t, page, pages, InboxPageCb)]
    return "\n\n".join([head, *items]), kit.inline(rows)


async def show_inbox(
    message: Message,
    session: AsyncSession,
    user: User,
    role: Role,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    text, keyboard = await _page(session, user, t, settings, clock, 0)
    replies.add(message.answer(text, reply_markup=keyboard or main_menu(role, t)))


async def on_page(
    callback: CallbackQuery,
    callback_data: InboxPageCb,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    if callback_data.page < 0 or not isinstance(callback.message, Message):
        replies.add(callback.answer(t("callback.stale"), show_alert=True))
        return
    text, keyboard = await _page(session, user, t, settings, clock, callback_data.page)
    replies.add(callback.answer())
    replies.add(callback.message.edit_text(text, reply_markup=keyboard))


# --- a request's buttons -----------------------------------------------------------------------


async def on_request_button(
    callback: CallbackQuery,
    callback_data: InboxCb,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    current = await state.get_state()
    if current is not None and current not in _STATES:
        # Another flow is under way; its draft is not thrown away by a stray tap.
        replies.add(callback.answer(t("fallback.in_flow"), show_alert=True))
        return
    # The id comes from the client: the request must be one this user handles now.
    found = await _handled(session, callback_data.request_id, user)
    action = _ACTIONS.get(callback_data.action)
    if found is None or action is None:
        replies.add(callback.answer(t("callback.stale"), show_alert=True))
        return
    request, actor = found
    await action(
        callback=callback,
        request=request,
        actor=actor,
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
    clock: Clock,
    **_: Any,
) -> None:
    replies.add(callback.answer())
    await _send_card(session, request, user, t, replies, settings, clock)


async def _at_once(
    event: Event,
    *,
    callback: CallbackQuery,
    request: RequestView,
    actor: Actor,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
    **_: Any,
) -> None:
    """Accept, or "department reported back": one tap, one event, the villager told."""
    department = request.department if event is Event.RETURNED else None
    try:
        updated, recorded = await _record(
            session, request, event, actor, user, settings, clock, department=department
        )
    except TransitionError as error:
        replies.add(callback.answer(_refusal(t, error, request), show_alert=True))
        return
    if event is Event.ACKNOWLEDGED:
        await request_ui.to_villager(
            session, updated, "acknowledged", settings, who=_signed(recorded)
        )
        replies.add(callback.answer(t("inbox.accepted", ref=request.ref)))
    else:
        await request_ui.to_villager(
            session, updated, "returned", settings, department=department, who=_signed(recorded)
        )
        replies.add(callback.answer(t("inbox.returned_done", ref=request.ref)))
    # The pressed buttons are spent; the new card carries the ones the status allows now.
    if isinstance(callback.message, Message):
        replies.add(callback.message.edit_reply_markup(reply_markup=None))
    await _send_card(session, updated, user, t, replies, settings, clock)


async def _accept(**kwargs: Any) -> None:
    await _at_once(Event.ACKNOWLEDGED, **kwargs)


async def _returned(**kwargs: Any) -> None:
    await _at_once(Event.RETURNED, **kwargs)


# What each multi-step action records, the state that collects its input, and its prompt.
_STEPS: dict[str, tuple[Event, State, str]] = {
    request_ui.REPLY: (Event.REPLIED, Inbox.reply, "inbox.ask_reply"),
    request_ui.FORWARD: (Event.FORWARDED, Inbox.department, "inbox.ask_department"),
    request_ui.RESOLVE: (Event.RESOLVED, Inbox.resolve_note, "inbox.ask_resolve_note"),
    request_ui.CLOSE: (Event.CLOSED_NOT_POLICE, Inbox.close_note, "inbox.ask_close_note"),
}


def _begin(action: str) -> Action:
    async def begin(
        *,
        callback: CallbackQuery,
        request: RequestView,
        actor: Actor,
        state: FSMContext,
        user: User,
        t: Translator,
        replies: Replies,
        settings: Settings,
        **_: Any,
    ) -> None:
        """Ask for what the action needs, unless its status refuses it already (so nobody
        types an explanation only to be told the request is at a department)."""
        event, step, prompt = _STEPS[action]
        try:
            apply(request.status, event, actor=actor)
        except TransitionError as error:
            replies.add(callback.answer(_refusal(t, error, request), show_alert=True))
            return
        replies.add(callback.answer())
        data: dict[str, Any] = {
            "draft": kit.new_draft_id(FLOW),
            "request_id": request.id,
            "origin": callback.message.message_id if callback.message else None,
        }
        keyboard: InlineKeyboardMarkup | ReplyKeyboardMarkup
        if step is Inbox.department:
            data["departments"] = departments(settings)
            buttons = [
                kit.button(t, t(f"department.{code}"), _dept_cb(data, i))
                for i, code in enumerate(data["departments"])
            ]
            keyboard = kit.inline(kit.chunks(buttons, 2))
        elif step is Inbox.resolve_note:
            keyboard = kit.skip_keyboard(t)
        else:
            keyboard = kit.cancel_keyboard(t)
        await state.set_state(step)
        await state.set_data(data)
        text = t(prompt, ref=request.ref, limit=MAX_TEXT)
        replies.add(SendMessage(chat_id=user.id, text=text, reply_markup=keyboard))

    return begin


_ACTIONS: dict[str, Action] = {
    request_ui.OPEN: _open,
    request_ui.ACK: _accept,
    request_ui.RETURNED: _returned,
    **{action: _begin(action) for action in _STEPS},
}


def _dept_cb(data: dict[str, Any], index: int) -> FlowCb:
    return FlowCb(flow=FLOW, draft=data["draft"], action="dept", value=str(index))


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
    if (
        callback_data.action != "dept"
        or await state.get_state() != Inbox.department.state
        or (index := kit.button_id(callback_data.value)) is None
        or index >= len(offered)
    ):
        replies.add(callback.answer(t("callback.stale"), show_alert=True))
        return
    code = offered[index]
    await state.update_data(department=code)
    await state.set_state(Inbox.forward_note)
    replies.add(callback.answer(t(f"department.{code}")))
    replies.add(callback.message.edit_reply_markup(reply_markup=None))
    ref = store.reference(data["request_id"])
    replies.add(
        callback.message.answer(
            t(
                "inbox.ask_forward_note",
                ref=ref,
                department=t(f"department.{code}"),
                limit=MAX_TEXT,
            ),
            reply_markup=kit.skip_keyboard(t),
        )
    )


# --- what the officer sends: the reply, a note, an explanation ---------------------------------


async def _complete(
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    role: Role,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
    *,
    body: str | None,
    photos: Sequence[tuple[str, str]] = (),
) -> int | None:
    """Record what the conversation collected and tell the villager; the event's id, or
    None when nothing was recorded. Checked again now: the request may have been resolved or
    passed to someone else while the officer was typing."""
    step, data = await state.get_state(), await state.get_data()
    await state.clear()
    menu = main_menu(role, t)
    found = await _handled(session, data["request_id"], user)
    if found is None:
        ref = store.reference(data["request_id"])
        replies.add(message.answer(t("inbox.not_yours", ref=ref), reply_markup=menu))
        return None
    request, actor = found
    department = data.get("department")
    event = {
        Inbox.reply.state: Event.REPLIED,
        Inbox.forward_note.state: Event.FORWARDED,
        Inbox.resolve_note.state: Event.RESOLVED,
        Inbox.close_note.state: Event.CLOSED_NOT_POLICE,
    }[step]
    try:
        updated, recorded = await _record(
            session,
            request,
            event,
            actor,
            user,
            settings,
            clock,
            body=body,
            photos=photos,
            department=department if event is Event.FORWARDED else None,
        )
    except TransitionError as error:
        replies.add(message.answer(_refusal(t, error, request), reply_markup=menu))
        return None
    ref, who = request.ref, _signed(recorded)
    if event is Event.REPLIED:
        await request_ui.reply_to_villager(
            session, updated, body=body, photos=photos, settings=settings, who=who
        )
        done = t("inbox.reply_sent", ref=ref)
    elif event is Event.FORWARDED:
        await request_ui.to_villager(
            session, updated, "forwarded", settings, department=department, who=who
        )
        done = t("inbox.forwarded_done", ref=ref, department=t(f"department.{department}"))
    elif event is Event.RESOLVED:
        key = "resolved_note" if body else "resolved"
        await request_ui.to_villager(
            session, updated, key, settings, text=body, with_rating=True, who=who
        )
        done = t("inbox.resolved_done", ref=ref)
    else:
        await request_ui.to_villager(session, updated, "closed", settings, text=body, who=who)
        done = t("inbox.closed_done", ref=ref)
    if data.get("origin"):
        replies.add(
            EditMessageReplyMarkup(chat_id=user.id, message_id=data["origin"], reply_markup=None)
        )
    replies.add(message.answer(done, reply_markup=menu))
    await _send_card(session, updated, user, t, replies, settings, clock)
    return recorded.id


def _text_problem(t: Translator, text: str | None) -> tuple[str | None, str | None]:
    """(the cleaned text, None), or (None, what to tell the officer)."""
    cleaned, problem = clean_text(text or "", max_len=MAX_TEXT)
    if problem is not None:
        return None, t(f"flow.text_{problem}", limit=MAX_TEXT)
    assert cleaned is not None
    if not kit.has_words(cleaned):
        return None, t("inbox.no_words")
    return cleaned, None


async def typed_text(
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    role: Role,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    """The reply, the forwarding or resolution note, or the explanation of a closure."""
    text, problem = _text_problem(t, message.text)
    if problem is not None:
        replies.add(message.answer(problem))
        return
    await _complete(message, state, session, user, role, t, replies, settings, clock, body=text)


async def skipped_note(
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    role: Role,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    await _complete(message, state, session, user, role, t, replies, settings, clock, body=None)


async def explanation_needed(message: Message, t: Translator, replies: Replies) -> None:
    """ "Skip" typed where the explanation is required: the villager must learn where to turn."""
    replies.add(message.answer(t("inbox.close_needs_text")))


async def reply_photo(
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    role: Role,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    caption = None
    if message.caption:
        caption, problem = _text_problem(t, message.caption)
        if problem is not None:
            replies.add(message.answer(problem))
            return
    request_id = (await state.get_data())["request_id"]
    photo = kit.photo_ids(message)
    event_id = await _complete(
        message,
        state,
        session,
        user,
        role,
        t,
        replies,
        settings,
        clock,
        body=caption,
        photos=[photo],
    )
    album = message.media_group_id
    if event_id is not None and album:
        # The album's other photos arrive as messages of their own, after the conversation
        # has ended: they join this reply (see album_photo).
        marker = {"group": album, "request_id": request_id, "event": event_id}
        await state.set_data({"reply_album": marker})


async def _continues_album(message: Message, state: FSMContext) -> bool:
    album = (await state.get_data()).get("reply_album") or {}
    return bool(message.media_group_id) and album.get("group") == message.media_group_id


async def album_photo(
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    settings: Settings,
) -> None:
    """Another photo of the album a reply was sent with: added to that reply, and relayed."""
    album = (await state.get_data())["reply_album"]
    found = await _handled(session, album["request_id"], user)
    if found is None:
        return
    # The reply's text is the album's caption, which Telegram puts on its first photo.
    photo = kit.photo_ids(message)
    await store.add_event_photos(session, event_id=album["event"], photos=[photo])
    reply = await _event(session, album["request_id"], album["event"])
    await request_ui.reply_to_villager(
        session, found[0], body=None, photos=[photo], settings=settings, who=_signed(reply)
    )


async def wrong_input(message: Message, state: FSMContext, t: Translator, replies: Replies) -> None:
    """Anything a step cannot use: say what it wants; the step stays."""
    hint = {
        Inbox.reply.state: "inbox.reply_text_or_photo",
        Inbox.department.state: "flow.use_buttons",
        Inbox.close_note.state: "inbox.close_text_only",
    }.get(await state.get_state() or "", "inbox.note_text_only")
    replies.add(message.answer(t(hint)))


def build_router() -> Router:
    router = Router(name="inbox")
    staff = HasRole(Role.OFFICER, Role.SUPERVISOR)
    router.message.register(show_inbox, command_or_button("requests"), staff, StateFilter(None))
    router.callback_query.register(on_page, InboxPageCb.filter(), staff)
    router.callback_query.register(on_request_button, InboxCb.filter(), staff)
    router.callback_query.register(on_department, FlowCb.filter(F.flow == FLOW), staff)

    text = F.text & ~F.text.startswith("/")
    notes = StateFilter(Inbox.forward_note, Inbox.resolve_note)
    skip = F.text.in_(all_labels("flow.skip"))
    router.message.register(skipped_note, notes, skip)
    router.message.register(explanation_needed, Inbox.close_note, skip)
    router.message.register(
        typed_text,
        StateFilter(Inbox.reply, Inbox.forward_note, Inbox.resolve_note, Inbox.close_note),
        text,
    )
    router.message.register(reply_photo, Inbox.reply, F.photo)
    router.message.register(album_photo, StateFilter(None), staff, F.photo, _continues_album)
    router.message.register(
        wrong_input, StateFilter(*Inbox.__all_states__), ~F.text.startswith("/")
    )
    return router
