"""Pieces every guided conversation uses: drafts, step headers, stale-button checks, and the
steps the visit, hazard and absence flows share (village, location, photos)."""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiogram.filters.callback_data import MAX_CALLBACK_LENGTH, CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State
from aiogram.methods import EditMessageText
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bot.i18n import Translator
from bot.menus import main_menu
from bot.replies import Replies
from core.geo import distance_m
from core.roles import Role
from storage import villages

MAX_PHOTOS = 10


class FlowCb(CallbackData, prefix="f"):
    """A button of a flow. `draft` ties it to one conversation: buttons of an older draft,
    or of a step already left, are recognised as stale."""

    flow: str
    draft: str
    action: str
    value: str = ""

    def pack(self) -> str:
        """aiogram's `pack` without its pydantic dump (a keyboard packs a dozen of these)."""
        parts = (self.__prefix__, self.flow, self.draft, self.action, self.value)
        packed = self.__separator__.join(parts)
        if packed.count(self.__separator__) != 4 or len(packed.encode()) > MAX_CALLBACK_LENGTH:
            return super().pack()  # raises, as aiogram says
        return packed


def button_id(value: str) -> int | None:
    """An id carried by a button, or None. Buttons can be forged: only plain ASCII digits
    that fit a database integer are taken ("²".isdigit() is true, and so is a 30-digit id)."""
    if value.isascii() and value.isdigit() and len(value) <= 9:
        return int(value)
    return None


async def picked_village(
    session: AsyncSession, *, officer_id: int, value: str
) -> tuple[int, str, float | None, float | None] | None:
    """The village a button names, as (id, name, centre lat, centre lon), when it is one of
    the officer's villages now; None for anything else (the id comes from the client)."""
    village_id = button_id(value)
    if village_id is None:
        return None
    found = await villages.assigned_village(session, officer_id=officer_id, village_id=village_id)
    return None if found is None else (village_id, *found)


def distance_to_centre(
    lat: float, lon: float, centre_lat: float | None, centre_lon: float | None
) -> int | None:
    """Metres from the village centre, or None when the village has no recorded centre."""
    if centre_lat is None or centre_lon is None:
        return None
    return round(distance_m(lat, lon, centre_lat, centre_lon))


def new_draft_id(flow: str) -> str:
    """A conversation's id, naming its flow: all flows keep their draft under one key and
    share step names ("village", "summary"), so a button of one flow carrying another
    flow's live draft is told apart (and refused) by the prefix."""
    return f"{flow}.{secrets.token_hex(8)}"


def header(t: Translator, step: int, total: int) -> str:
    return t("flow.step", step=step, total=total)


def button(t: Translator, label: str, cb: FlowCb) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=label, callback_data=cb.pack())


def inline(rows: Sequence[Sequence[InlineKeyboardButton]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[list(r) for r in rows if r])


def chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def step_of(state_name: str | None) -> str:
    """The step a conversation is at: the state's name without its group."""
    return (state_name or "").rpartition(":")[2]


# A flow's buttons: action -> (the steps it may be pressed at, what it does). The handler is
# called with keyword arguments: value, message, state, t, replies, data, step and whatever
# the flow passes on to `press`.
Buttons = Mapping[str, tuple[frozenset[str], Callable[..., Awaitable[None]]]]


async def press(
    callback: CallbackQuery,
    callback_data: FlowCb,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    buttons: Buttons,
    **context: Any,
) -> None:
    """Run what a flow's button does, when it belongs to the live draft and to the step the
    conversation is at; otherwise say it is stale and change nothing."""
    data = await live_draft(callback, callback_data, state, t, replies)
    if data is None or not isinstance(callback.message, Message):
        return
    step = step_of(await state.get_state())
    entry = buttons.get(callback_data.action)
    if entry is None or step not in entry[0]:
        replies.add(callback.answer(t("callback.stale"), show_alert=True))
        return
    replies.add(callback.answer())
    await entry[1](
        value=callback_data.value,
        message=callback.message,
        state=state,
        t=t,
        replies=replies,
        data=data,
        step=step,
        **context,
    )


async def live_draft(
    callback: CallbackQuery,
    callback_data: FlowCb,
    state: FSMContext,
    t: Translator,
    replies: Replies,
) -> dict[str, Any] | None:
    """The conversation's data when the button belongs to it; else say so and return None.
    A button under a message Telegram no longer gives (deleted, or too old) is stale too:
    nothing could be edited or answered under it."""
    data = await state.get_data()
    if (
        data.get("draft") != callback_data.draft
        or not callback_data.draft.startswith(f"{callback_data.flow}.")
        or not isinstance(callback.message, Message)
    ):
        replies.add(callback.answer(t("callback.stale"), show_alert=True))
        return None
    return data


def cancel_draft(role: Role) -> Callable[..., Awaitable[None]]:
    """The summary's Cancel button: the draft is dropped, its buttons taken away, and the
    role's main menu comes back."""

    async def cancel(
        *, message: Message, state: FSMContext, t: Translator, replies: Replies, **_: Any
    ) -> None:
        await state.clear()
        replies.add(message.edit_reply_markup(reply_markup=None))
        replies.add(message.answer(t("cancel.done"), reply_markup=main_menu(role, t)))

    return cancel


async def offer_fields(
    message: Message,
    state: FSMContext,
    t: Translator,
    replies: Replies,
    *,
    edit_state: State,
    fields: Sequence[tuple[str, FlowCb]],
) -> None:
    """The summary's Edit button: one button (label, what it presses) per step that can be
    changed, two to a row; the conversation waits at `edit_state` for the choice."""
    await state.set_state(edit_state)
    buttons = [button(t, label, cb) for label, cb in fields]
    replies.add(message.answer(t("flow.edit_which"), reply_markup=inline(chunks(buttons, 2))))


def show_summary(
    message: Message,
    replies: Replies,
    t: Translator,
    text: str,
    button: Callable[[str], FlowCb],
    *,
    editable: bool = True,
) -> None:
    """The draft's summary with Submit, Edit (when `editable`) and Cancel; the first message
    takes away the reply keyboard of the step before."""
    submit = InlineKeyboardButton(text=t("flow.submit"), callback_data=button("submit").pack())
    cancel = InlineKeyboardButton(text=t("flow.cancel"), callback_data=button("cancel").pack())
    if editable:
        edit = InlineKeyboardButton(text=t("flow.edit"), callback_data=button("edit").pack())
        rows = [[submit], [edit, cancel]]
    else:
        rows = [[submit, cancel]]
    replies.add(message.answer(t("flow.summary_ready"), reply_markup=ReplyKeyboardRemove()))
    replies.add(message.answer(text, reply_markup=inline(rows)))


def location_keyboard(t: Translator) -> ReplyKeyboardMarkup:
    return ReplyKeyboardMarkup(
        keyboard=[
            [KeyboardButton(text=t("flow.send_location"), request_location=True)],
            [KeyboardButton(text=t("flow.skip")), KeyboardButton(text=t("flow.cancel"))],
        ],
        resize_keyboard=True,
        is_persistent=True,
    )


def cancel_keyboard(t: Translator) -> ReplyKeyboardMarkup:
    """Replaces the main menu while text is typed, so that a tap on it is not taken as text."""
    return ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text=t("flow.cancel"))]], resize_keyboard=True, is_persistent=True
    )


def has_words(text: str) -> bool:
    """At least one letter or digit: a text made of emoji alone says nothing."""
    return any(unicodedata.category(c)[0] in "LN" for c in text)


def skip_keyboard(t: Translator) -> ReplyKeyboardMarkup:
    return ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text=t("flow.skip")), KeyboardButton(text=t("flow.cancel"))]],
        resize_keyboard=True,
        is_persistent=True,
    )


def photos_keyboard(t: Translator, *, optional: bool) -> ReplyKeyboardMarkup:
    row = [KeyboardButton(text=t("flow.photos_done"))]
    if optional:
        row.append(KeyboardButton(text=t("flow.no_photos")))
    return ReplyKeyboardMarkup(
        keyboard=[row, [KeyboardButton(text=t("flow.cancel"))]],
        resize_keyboard=True,
        is_persistent=True,
    )


def photo_ids(message: Message) -> tuple[str, str]:
    """The largest size of a photo message: (file_id, file_unique_id)."""
    assert message.photo
    largest = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
    return largest.file_id, largest.file_unique_id


class AlbumAcks:
    """Which message acknowledged an album, so that its further photos edit that message
    instead of each getting an answer. In memory: an album's photos arrive together."""

    def __init__(self, keep: int = 1000) -> None:
        self._acks: dict[tuple[int, str], int] = {}
        self._keep = keep

    def get(self, chat_id: int, group: str) -> int | None:
        return self._acks.get((chat_id, group))

    def remember(self, chat_id: int, group: str) -> Callable[[Any], None]:
        def store(sent: Any) -> None:
            if len(self._acks) >= self._keep:
                self._acks.pop(next(iter(self._acks)))
            self._acks[(chat_id, group)] = int(sent.message_id)

        return store


async def add_photo(
    message: Message, state: FSMContext, t: Translator, replies: Replies, albums: AlbumAcks
) -> None:
    """Keep a photo in the draft, answering once per album (see AlbumAcks)."""
    data = await state.get_data()
    photos: list[list[str]] = data.get("photos", [])
    if len(photos) >= MAX_PHOTOS:
        replies.add(message.answer(t("flow.photos_full", limit=MAX_PHOTOS)))
        return
    file_id, unique_id = photo_ids(message)
    if any(p[1] == unique_id for p in photos):
        replies.add(message.answer(t("flow.photo_duplicate")))
        return
    photos.append([file_id, unique_id])
    await state.update_data(photos=photos)
    text = t("flow.photos_received", count=len(photos), limit=MAX_PHOTOS)
    group = message.media_group_id
    ack = albums.get(message.chat.id, group) if group else None
    if ack is not None:
        replies.add(EditMessageText(chat_id=message.chat.id, message_id=ack, text=text))
    elif group is not None:
        replies.add_then(message.answer(text), albums.remember(message.chat.id, group))
    else:
        replies.add(message.answer(text))
