"""The buttons of villagers' requests and the notifications each change sends the other side.

Both sides' handlers (bot/flows/request.py for villagers, bot/handlers/inbox.py for officers
and supervisors) use these, so a request looks and behaves the same wherever it appears.
Every id a button carries is re-checked on the server against the presser's rights
(storage.requests.actor_for) and the request's current status.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from sqlalchemy.ext.asyncio import AsyncSession

from bot.i18n import Translator
from bot.notify import tell
from bot.request_texts import handler_label, villager_label
from bot.settings import Settings
from core.requests import RATING_MAX, RATING_MIN, RequestStatus
from storage import requests as store
from storage.requests import RequestView

# --------------------------------------------------------------------------- callback data


class InboxCb(CallbackData, prefix="rq"):
    """A button of an officer's (or supervisor's) request: open, ack, reply, fwd, back,
    resolve, close."""

    action: str
    request_id: int


class InboxPageCb(CallbackData, prefix="rqp"):
    page: int


class MyRequestCb(CallbackData, prefix="mr"):
    """A button of a villager's own request: open, msg, rate (value = stars), unsolved."""

    action: str
    request_id: int
    value: int = 0


class MyRequestPageCb(CallbackData, prefix="mrp"):
    page: int


OPEN, ACK, REPLY, FORWARD, RETURNED, RESOLVE, CLOSE = (
    "open",
    "ack",
    "reply",
    "fwd",
    "back",
    "resolve",
    "close",
)
MESSAGE, RATE, UNSOLVED = "msg", "rate", "unsolved"
HANDLER_ACTIONS = frozenset({OPEN, ACK, REPLY, FORWARD, RETURNED, RESOLVE, CLOSE})
VILLAGER_ACTIONS = frozenset({OPEN, MESSAGE, RATE, UNSOLVED})

# --------------------------------------------------------------------------- keyboards


def _button(t: Translator, key: str, cb: CallbackData, **values: object) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=t(key, **values), callback_data=cb.pack())


def handler_keyboard(
    t: Translator, request: RequestView, *, details: bool = False
) -> InlineKeyboardMarkup | None:
    """What the officer can do with the request in its status; `details` adds a button that
    opens the full card (for notifications)."""

    def b(key: str, action: str) -> InlineKeyboardButton:
        return _button(t, f"request_button.{key}", InboxCb(action=action, request_id=request.id))

    status = request.status
    rows: list[list[InlineKeyboardButton]] = []
    if status is RequestStatus.NEW:
        rows = [
            [b("accept", ACK), b("reply", REPLY)],
            [b("forward", FORWARD), b("resolve", RESOLVE)],
        ]
        rows.append([b("close", CLOSE)])
    elif status in (RequestStatus.ACKNOWLEDGED, RequestStatus.ANSWERED):
        rows = [
            [b("reply", REPLY), b("forward", FORWARD)],
            [b("resolve", RESOLVE), b("close", CLOSE)],
        ]
    elif status is RequestStatus.FORWARDED:
        rows = [[b("reply", REPLY), b("returned", RETURNED)], [b("resolve", RESOLVE)]]
    if details:
        rows.append([b("open", OPEN)])
    return InlineKeyboardMarkup(inline_keyboard=rows) if rows else None


def villager_keyboard(
    t: Translator, request: RequestView, *, details: bool = False, rated: bool = False
) -> InlineKeyboardMarkup | None:
    """What the villager can do with their request: add a message while it is open; rate it
    or say it is not solved once resolved (unless `rated` already)."""

    def cb(action: str, value: int = 0) -> MyRequestCb:
        return MyRequestCb(action=action, request_id=request.id, value=value)

    rows: list[list[InlineKeyboardButton]] = []
    if request.is_open:
        rows.append([_button(t, "request_button.add_message", cb(MESSAGE))])
    elif request.status is RequestStatus.RESOLVED and not rated:
        rows.append(
            [
                _button(t, "request_button.star", cb(RATE, stars), rating=stars)
                for stars in range(RATING_MIN, RATING_MAX + 1)
            ]
        )
        rows.append([_button(t, "request_button.not_solved", cb(UNSOLVED))])
    if details:
        rows.append([_button(t, "request_button.open", cb(OPEN))])
    return InlineKeyboardMarkup(inline_keyboard=rows) if rows else None


def page_buttons(
    t: Translator, page: int, pages: int, make: type[InboxPageCb] | type[MyRequestPageCb]
) -> list[InlineKeyboardButton]:
    buttons = []
    if page > 0:
        buttons.append(_button(t, "request_button.previous", make(page=page - 1)))
    if page + 1 < pages:
        buttons.append(_button(t, "request_button.next", make(page=page + 1)))
    return buttons


# --------------------------------------------------------------------------- notifications


async def _photos(
    session: AsyncSession,
    chat_id: int,
    request: RequestView,
    photos: Sequence[tuple[str, str]],
    settings: Settings,
) -> None:
    for number, (file_id, _) in enumerate(photos, start=1):
        await tell(
            session,
            chat_id=chat_id,
            default_locale=settings.default_locale,
            compose=lambda t, n=number: (  # type: ignore[misc]
                t("request.photo_caption", ref=request.ref, number=n, total=len(photos)),
                None,
            ),
            method="sendPhoto",
            extra={"photo": file_id},
        )


async def new_request_to_handlers(
    session: AsyncSession, request: RequestView, settings: Settings
) -> list[int]:
    """The new request, its photos and its location to whoever handles it (the station's
    supervisors when its officer has not joined the bot). Returns the accounts told."""
    accounts = await store.handler_accounts(session, request)
    unbound = request.officer_id is not None and (
        await store.officer_account(session, request.officer_id) is None
    )
    ack, answer = settings.request_ack_hours, settings.request_answer_hours
    for chat_id in accounts:

        def compose(t: Translator) -> tuple[str, Any]:
            if unbound:
                head = t(
                    "request_note.new_unbound",
                    ref=request.ref,
                    village=request.village_name,
                    officer=request.officer_name or "",
                )
            else:
                head = t(
                    "request_note.new",
                    ref=request.ref,
                    village=request.village_name,
                    ack=ack,
                    answer=answer,
                )
            body = "\n".join(
                [
                    head,
                    "",
                    t(
                        "request.ref_title",
                        ref=request.ref,
                        category=t(f"request_category.{request.category}"),
                    ),
                    t("request.field_from", who=villager_label(t, request)),
                    *(
                        [t("request.field_phone", phone=request.villager_phone)]
                        if request.villager_phone
                        else []
                    ),
                    t("request.field_text", text=request.body),
                ]
            )
            return body, handler_keyboard(t, request, details=True)

        await tell(
            session, chat_id=chat_id, default_locale=settings.default_locale, compose=compose
        )
        await _photos(session, chat_id, request, request.photos, settings)
        if request.latitude is not None and request.longitude is not None:
            await tell(
                session,
                chat_id=chat_id,
                default_locale=settings.default_locale,
                compose=lambda t: (None, None),
                method="sendLocation",
                extra={"latitude": request.latitude, "longitude": request.longitude},
            )
    return accounts


async def villager_message_to_handlers(
    session: AsyncSession,
    request: RequestView,
    *,
    body: str | None,
    photos: Sequence[tuple[str, str]],
    settings: Settings,
) -> None:
    """A message the villager added, relayed as a copy: never forwarded, so the officer
    never sees the villager's account (nor their name when the request is anonymous)."""
    for chat_id in await store.handler_accounts(session, request):
        await _relay(
            session,
            chat_id,
            request,
            body=body,
            photos=photos,
            settings=settings,
            text_key="request_note.villager_message",
            photo_key="request_note.villager_photo",
            who=lambda t: villager_label(t, request),
            keyboard=lambda t: handler_keyboard(t, request, details=True),
        )


async def reply_to_villager(
    session: AsyncSession,
    request: RequestView,
    *,
    body: str | None,
    photos: Sequence[tuple[str, str]],
    settings: Settings,
    who: Callable[[Translator], str] | None = None,
) -> None:
    """The officer's reply, relayed to the villager as a copy from "Officer <name>" (or from
    `who`: a supervisor who stepped in)."""
    await _relay(
        session,
        request.villager_id,
        request,
        body=body,
        photos=photos,
        settings=settings,
        text_key="request_note.reply",
        photo_key="request_note.reply_photo",
        who=who or (lambda t: handler_label(t, request)),
        keyboard=lambda t: villager_keyboard(t, request, details=True),
    )


async def _relay(
    session: AsyncSession,
    chat_id: int,
    request: RequestView,
    *,
    body: str | None,
    photos: Sequence[tuple[str, str]],
    settings: Settings,
    text_key: str,
    photo_key: str,
    who: Any,
    keyboard: Any,
) -> None:
    """A text, or photos with the text as the first caption; the buttons go on the last."""
    locale = settings.default_locale
    if not photos:
        await tell(
            session,
            chat_id=chat_id,
            default_locale=locale,
            compose=lambda t: (
                t(text_key, ref=request.ref, who=who(t), text=body or ""),
                keyboard(t),
            ),
        )
        return
    for index, (file_id, _) in enumerate(photos):
        first, last = index == 0, index == len(photos) - 1

        def compose(t: Translator, first: bool = first, last: bool = last) -> tuple[str, Any]:
            if first and body:
                caption = t(text_key, ref=request.ref, who=who(t), text=body)
            else:
                caption = t(photo_key, ref=request.ref, who=who(t))
            return caption[:1024], keyboard(t) if last else None

        await tell(
            session,
            chat_id=chat_id,
            default_locale=locale,
            compose=compose,
            method="sendPhoto",
            extra={"photo": file_id},
        )


async def to_villager(
    session: AsyncSession,
    request: RequestView,
    key: str,
    settings: Settings,
    *,
    with_rating: bool = False,
    department: str | None = None,
    text: str | None = None,
    who: Callable[[Translator], str] | None = None,
) -> None:
    """A status change told to the villager: `request_note.<key>` with the handler (or `who`,
    a supervisor who stepped in) as {who}, the department (a code, named in the villager's
    language) and the officer's `text`; a resolution also asks for a rating."""

    def compose(t: Translator) -> tuple[str, Any]:
        message = t(
            f"request_note.{key}",
            ref=request.ref,
            who=who(t) if who else handler_label(t, request),
            department=t(f"department.{department}") if department else "",
            text=text or "",
        )
        if with_rating:
            message += "\n\n" + t("request_note.rate")
        return message, villager_keyboard(t, request, details=True)

    await tell(
        session,
        chat_id=request.villager_id,
        default_locale=settings.default_locale,
        compose=compose,
    )


async def to_handlers(
    session: AsyncSession, request: RequestView, key: str, settings: Settings, **values: object
) -> None:
    """A villager's rating or "not solved" told to whoever handles the request."""
    for chat_id in await store.handler_accounts(session, request):
        await tell(
            session,
            chat_id=chat_id,
            default_locale=settings.default_locale,
            compose=lambda t: (
                t(f"request_note.{key}", ref=request.ref, **values),
                handler_keyboard(t, request, details=True),
            ),
        )
