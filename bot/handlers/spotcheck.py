"""/spotcheck: a supervisor reviews the visit reports drawn for their weekly spot check, one
at a time, and verifies or flags each; a flag's comment reaches the officer.

The sample is drawn by the spot-checks job (scheduler.spotchecks) on Monday morning, or
here when the supervisor asks before the job ran. Every button press re-checks on the server
that the check is the presser's and still pending, and a verdict is one conditional UPDATE,
so a double tap or an old card decides nothing twice.
"""

from __future__ import annotations

from datetime import date

from aiogram import F, Router
from aiogram.filters import StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.methods import EditMessageReplyMarkup, SendMediaGroup, SendMessage, SendPhoto
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    Message,
)
from aiogram.types.media_union import MediaUnion
from sqlalchemy.ext.asyncio import AsyncSession

from bot.filters import HasRole
from bot.flows import kit
from bot.i18n import Translator
from bot.menus import command_or_button, main_menu
from bot.notify import tell
from bot.replies import Replies
from bot.request_texts import supervisor_label
from bot.settings import Settings
from core.activities import COUNTED, ORDER
from core.clock import Clock
from core.parsing import clean_text
from core.roles import Role
from core.schedule import week_start
from storage import spotchecks
from storage.models import Supervisor, User
from storage.requests import officer_account
from storage.spotchecks import CheckView

VERIFY, FLAG = "ok", "flag"
MAX_COMMENT = 1000
# The first few photos go with the card: enough to judge, not a wall of pictures.
PHOTOS_SHOWN = 4


class Review(StatesGroup):
    comment = State()


class SpotCheckCb(CallbackData, prefix="spot"):
    """Verify or flag a drawn report; whose it is is decided on the server at every press."""

    action: str
    check_id: int


def _week(clock: Clock, settings: Settings) -> date:
    """The Monday of the county's current week: the week the sample is drawn for."""
    return week_start(clock().astimezone(settings.tz).date())


def _activities(t: Translator, stored: tuple[tuple[str, int], ...]) -> str:
    position = {a.value: i for i, a in enumerate(ORDER)}
    listed = sorted(stored, key=lambda item: position.get(item[0], len(ORDER)))
    return t("summary.separator").join(
        t(f"activity.{code}") + (f" ×{count}" if code in COUNTED else "") for code, count in listed
    ) or t("summary.none")


def _place(t: Translator, check: CheckView) -> str:
    if not check.located:
        return t("visit.no_location")
    if check.distance_m is None:
        return t("visit.location_no_centre")
    return t("visit.location_distance", distance=check.distance_m)


def card_text(t: Translator, check: CheckView, *, left: int, settings: Settings) -> str:
    """The report as the supervisor judges it, with what makes it look doubtful."""
    hours = f"{check.hours.normalize():f}"  # 2.0 → 2, 2.5 → 2.5
    lines = [
        t("spotcheck.card_title", ref=check.ref, left=left),
        t("spotcheck.field.officer", name=check.officer_name, badge=check.officer_badge),
        t("visit.field.village", value=check.village_name),
        t("visit.field.date", value=check.visit_date.isoformat()),
        t("visit.field.hours", value=hours),
        t("visit.field.households", value=check.households),
        t("visit.field.activities", value=_activities(t, check.activities)),
        t("visit.field.location", value=_place(t, check)),
    ]
    if check.far_from_village:
        lines.append(t("spotcheck.far"))
    if len(check.photos) > PHOTOS_SHOWN:
        lines.append(t("spotcheck.photos_more", count=len(check.photos), shown=PHOTOS_SHOWN))
    else:
        lines.append(t("visit.field.photos", value=len(check.photos)))
    if check.reused_photo:
        lines.append(t("spotcheck.reused"))
    lines.append(t("visit.field.notes", value=check.notes or t("summary.none")))
    submitted = f"{check.submitted_at.astimezone(settings.tz):%Y-%m-%d %H:%M}"
    lines.append(t("spotcheck.field.submitted", value=submitted))
    return "\n".join(lines)


def _keyboard(t: Translator, check: CheckView) -> InlineKeyboardMarkup:
    return kit.inline(
        [
            [
                InlineKeyboardButton(
                    text=t("spotcheck.verify"),
                    callback_data=SpotCheckCb(action=VERIFY, check_id=check.id).pack(),
                ),
                InlineKeyboardButton(
                    text=t("spotcheck.flag"),
                    callback_data=SpotCheckCb(action=FLAG, check_id=check.id).pack(),
                ),
            ]
        ]
    )


def _photos(chat_id: int, t: Translator, check: CheckView) -> SendPhoto | SendMediaGroup | None:
    shown = check.photos[:PHOTOS_SHOWN]
    caption = t("spotcheck.photos_caption", ref=check.ref)
    if not shown:
        return None
    if len(shown) == 1:
        return SendPhoto(chat_id=chat_id, photo=shown[0], caption=caption)
    # The caption of an album is its first photo's.
    media: list[MediaUnion] = [
        InputMediaPhoto(media=file_id, caption=caption if i == 0 else None)
        for i, file_id in enumerate(shown)
    ]
    return SendMediaGroup(chat_id=chat_id, media=media)


async def _show_next(
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    week: date,
) -> None:
    """The oldest pending check (photos, then the card); when none is left, the week's tally."""
    assert user.supervisor_id is not None
    listed = await spotchecks.pending(session, supervisor_id=user.supervisor_id)
    # Plain messages: the pressed card may be too old to answer as a reply.
    if not listed:
        tally = await spotchecks.tally(session, supervisor_id=user.supervisor_id, week=week)
        if tally.drawn:
            text = t("spotcheck.done", verified=tally.verified, flagged=tally.flagged)
        elif settings.spot_check_size == 0:
            text = t("spotcheck.off")
        else:
            first, last = spotchecks.reviewed_days(week)
            text = t("spotcheck.nothing", first=f"{first:%m-%d}", last=f"{last:%m-%d}")
        menu = main_menu(Role.SUPERVISOR, t)
        replies.add(SendMessage(chat_id=user.id, text=text, reply_markup=menu))
        return
    check = await spotchecks.check_for(
        session, check_id=listed[0].id, supervisor_id=user.supervisor_id
    )
    assert check is not None
    photos = _photos(user.id, t, check)
    if photos is not None:
        replies.add(photos)
    text = card_text(t, check, left=len(listed), settings=settings)
    replies.add(SendMessage(chat_id=user.id, text=text, reply_markup=_keyboard(t, check)))


async def start(
    message: Message,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    assert user.supervisor_id is not None
    week = _week(clock, settings)
    # The job draws on Monday morning; before it ran (or for a supervisor who joined since)
    # the week is drawn now. A week drawn already is left as it is.
    await spotchecks.draw(
        session,
        supervisor_id=user.supervisor_id,
        week=week,
        tz=settings.tz,
        size=settings.spot_check_size,
    )
    await _show_next(session, user, t, replies, settings, week)


async def on_button(
    callback: CallbackQuery,
    callback_data: SpotCheckCb,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    assert user.supervisor_id is not None
    if await state.get_state() is not None:
        # A comment (or another flow) is under way; it is finished or cancelled first.
        replies.add(callback.answer(t("fallback.in_flow"), show_alert=True))
        return
    # The id comes from the client: the check must be one drawn for this supervisor.
    check = await spotchecks.check_for(
        session, check_id=callback_data.check_id, supervisor_id=user.supervisor_id
    )
    if check is None or callback_data.action not in (VERIFY, FLAG):
        replies.add(callback.answer(t("callback.stale"), show_alert=True))
        return
    card = callback.message if isinstance(callback.message, Message) else None
    if check.status != spotchecks.PENDING:
        replies.add(callback.answer(_already(t, check), show_alert=True))
        if card is not None:
            replies.add(card.edit_reply_markup(reply_markup=None))
        return
    if callback_data.action == FLAG:
        await state.set_state(Review.comment)
        await state.set_data({"check_id": check.id, "card": card.message_id if card else None})
        replies.add(callback.answer())
        text = t("spotcheck.ask_comment", ref=check.ref, limit=MAX_COMMENT)
        replies.add(SendMessage(chat_id=user.id, text=text, reply_markup=kit.cancel_keyboard(t)))
        return
    decided = await spotchecks.decide(
        session,
        check_id=check.id,
        supervisor_id=user.supervisor_id,
        verdict=spotchecks.VERIFIED,
        comment=None,
        user_id=user.id,
        now=clock(),
    )
    if card is not None:
        replies.add(card.edit_reply_markup(reply_markup=None))
    if not decided:  # decided by a concurrent press since it was read
        replies.add(callback.answer(t("callback.stale"), show_alert=True))
        return
    replies.add(callback.answer(t("spotcheck.verified_done", ref=check.ref)))
    await _show_next(session, user, t, replies, settings, _week(clock, settings))


def _already(t: Translator, check: CheckView) -> str:
    return t("spotcheck.already", ref=check.ref, status=t(f"spotcheck.status.{check.status}"))


async def _tell_officer(
    session: AsyncSession, check: CheckView, user: User, comment: str, settings: Settings
) -> bool:
    """The flag and its comment, to the officer in their language; False when the officer
    has no account to tell."""
    account = await officer_account(session, check.officer_id)
    if account is None:
        return False
    supervisor = await session.get(Supervisor, user.supervisor_id)
    name = supervisor.name if supervisor else None

    def compose(t: Translator) -> tuple[str, None]:
        text = t(
            "spotcheck.officer_flagged",
            ref=check.ref,
            village=check.village_name,
            date=f"{check.visit_date:%m-%d}",
            who=supervisor_label(t, name),
            comment=comment,
        )
        return text, None

    await tell(
        session,
        chat_id=account,
        default_locale=settings.default_locale,
        compose=compose,
        dedup_key=f"spot-check-flag:{check.id}",
    )
    return True


async def typed_comment(
    message: Message,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    settings: Settings,
    clock: Clock,
) -> None:
    assert user.supervisor_id is not None
    comment, problem = clean_text(message.text or "", max_len=MAX_COMMENT)
    if problem is not None:
        replies.add(message.answer(t(f"flow.text_{problem}", limit=MAX_COMMENT)))
        return
    assert comment is not None
    if not kit.has_words(comment):
        replies.add(message.answer(t("spotcheck.comment_no_words")))
        return
    data = await state.get_data()
    await state.clear()
    menu = main_menu(Role.SUPERVISOR, t)
    check = await spotchecks.check_for(
        session, check_id=data["check_id"], supervisor_id=user.supervisor_id
    )
    # Checked again now: the report may have been decided (or deleted) since Flag was pressed.
    decided = check is not None and await spotchecks.decide(
        session,
        check_id=check.id,
        supervisor_id=user.supervisor_id,
        verdict=spotchecks.FLAGGED,
        comment=comment,
        user_id=user.id,
        now=clock(),
    )
    if check is None or not decided:
        text = t("callback.stale") if check is None else _already(t, check)
        replies.add(message.answer(text, reply_markup=menu))
        return
    told = await _tell_officer(session, check, user, comment, settings)
    if data.get("card"):
        replies.add(
            EditMessageReplyMarkup(chat_id=user.id, message_id=data["card"], reply_markup=None)
        )
    key = "spotcheck.flagged_done" if told else "spotcheck.flagged_no_account"
    replies.add(message.answer(t(key, ref=check.ref), reply_markup=menu))
    await _show_next(session, user, t, replies, settings, _week(clock, settings))


async def wrong_input(message: Message, t: Translator, replies: Replies) -> None:
    """A sticker, photo, document… where the comment is wanted; the step stays."""
    replies.add(message.answer(t("spotcheck.comment_text_only")))


def build_router() -> Router:
    router = Router(name="spotcheck")
    supervisor = HasRole(Role.SUPERVISOR)
    router.message.register(start, command_or_button("spotcheck"), supervisor, StateFilter(None))
    router.callback_query.register(on_button, SpotCheckCb.filter(), supervisor)
    router.message.register(
        typed_comment, Review.comment, supervisor, F.text & ~F.text.startswith("/")
    )
    router.message.register(wrong_input, Review.comment, supervisor, ~F.text.startswith("/"))
    return router
