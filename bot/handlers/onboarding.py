"""/start: join links for officers, supervisors and villagers, and the greeting of each role."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from aiogram import F, Router
from aiogram.filters import CommandObject, CommandStart, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bot.callbacks import JoinVillageCb
from bot.filters import HasRole
from bot.i18n import Translator, all_labels
from bot.menus import chat_commands, main_menu
from bot.replies import Replies
from core.clock import Clock
from core.roles import InviteKind, Role
from core.tokens import (
    GUESS_WINDOW_SECONDS,
    INVITE_PREFIX,
    VILLAGE_PREFIX,
    guessing,
    is_valid_payload,
)
from storage import invites, villages
from storage.models import User


class JoinVillage(StatesGroup):
    confirm = State()


def _welcome(
    user: User, role: Role, t: Translator, replies: Replies, message: Message, text: str
) -> None:
    replies.add(
        message.answer(text, reply_markup=main_menu(role, t)), chat_commands(user.id, role, t)
    )


async def start_with_link(
    message: Message,
    command: CommandObject,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    role: Role,
    t: Translator,
    replies: Replies,
    clock: Clock,
) -> None:
    payload, now = command.args or "", clock()
    since = now - timedelta(seconds=GUESS_WINDOW_SECONDS)
    if guessing(await invites.join_failures_since(session, user_id=user.id, since=since)):
        # Links are not even looked at: trying more of them is pointless for a while.
        replies.add(
            message.answer(t("start.too_many_attempts", minutes=GUESS_WINDOW_SECONDS // 60))
        )
        return
    if not is_valid_payload(payload) or not payload.startswith((INVITE_PREFIX, VILLAGE_PREFIX)):
        found = False
        replies.add(message.answer(t("start.link_invalid")))
    elif payload.startswith(INVITE_PREFIX):
        found = await _redeem(message, payload, state, session, user, t, replies, clock)
    else:
        found = await _offer_village(message, payload, state, session, user, role, t, replies)
    if not found:
        await invites.record_join_failure(session, user_id=user.id, now=now)


async def _redeem(
    message: Message,
    payload: str,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    t: Translator,
    replies: Replies,
    clock: Clock,
) -> bool:
    """Redeem an invite; False when the link names no invite at all (a guess)."""
    outcome = await invites.redeem_invite(session, payload=payload, user=user, now=clock())
    if isinstance(outcome, invites.Refusal):
        replies.add(message.answer(t(f"start.invite_{outcome.value}")))
        return outcome is not invites.Refusal.UNKNOWN
    await state.clear()
    if outcome.previous_user_id is not None:
        # The officer's old account loses its officer commands at once, and the conversation
        # it was in: the steps left were an officer's.
        replies.add(chat_commands(outcome.previous_user_id, Role.STRANGER, t))
        old = outcome.previous_user_id
        await FSMContext(state.storage, replace(state.key, chat_id=old, user_id=old)).clear()
    if outcome.kind == InviteKind.OFFICER:
        assert outcome.officer is not None
        listed = await villages.officer_villages(session, outcome.officer.id)
        text = t("start.officer_welcome", name=outcome.officer.name, badge=outcome.officer.badge)
        text += "\n" + _village_lines(listed, t)
        _welcome(user, Role.OFFICER, t, replies, message, text)
    else:
        if outcome.supervisor is not None and outcome.supervisor.county_wide:
            scope = t("scope.county")
        else:
            scope = t("scope.separator").join(s.name for s in outcome.stations)
        _welcome(
            user, Role.SUPERVISOR, t, replies, message, t("start.supervisor_welcome", scope=scope)
        )
    return True


def _village_lines(listed: list[villages.VillageView], t: Translator) -> str:
    if not listed:
        return t("villages.none")
    return "\n".join(
        t("villages.line", village=v.name, station=v.station_name, kind=t(f"assignment.{v.kind}"))
        for v in listed
    )


async def _offer_village(
    message: Message,
    payload: str,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    role: Role,
    t: Translator,
    replies: Replies,
) -> bool:
    """Offer to join the village the link names; False when it names none (a guess)."""
    village = await villages.village_by_token(session, payload.removeprefix(VILLAGE_PREFIX))
    if village is None:
        replies.add(message.answer(t("start.link_invalid")))
        return False
    if role in (Role.OFFICER, Role.SUPERVISOR):
        replies.add(message.answer(t("join.not_for_staff")))
        return True
    current = await villages.current_village(session, user.id) if role == Role.VILLAGER else None
    if current is not None and current.id == village.id:
        replies.add(
            message.answer(t("join.already", village=village.name), reply_markup=main_menu(role, t))
        )
        return True
    await state.set_state(JoinVillage.confirm)
    await state.set_data({"village_id": village.id})
    text = t("join.confirm", village=village.name, station=village.station_name)
    if current is not None:
        text += "\n" + t("join.switch_note", current=current.name)
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=t("join.yes"),
                    callback_data=JoinVillageCb(village_id=village.id, join=True).pack(),
                ),
                InlineKeyboardButton(
                    text=t("join.no"),
                    callback_data=JoinVillageCb(village_id=village.id, join=False).pack(),
                ),
            ]
        ]
    )
    replies.add(message.answer(text, reply_markup=keyboard))
    return True


async def confirm_village(
    callback: CallbackQuery,
    callback_data: JoinVillageCb,
    state: FSMContext,
    session: AsyncSession,
    user: User,
    role: Role,
    t: Translator,
    replies: Replies,
) -> None:
    data = await state.get_data()
    if data.get("village_id") != callback_data.village_id:
        replies.add(callback.answer(t("callback.stale"), show_alert=True))
        return
    edit = (
        callback.message.edit_reply_markup(reply_markup=None)
        if isinstance(callback.message, Message)
        else None
    )
    if not callback_data.join:
        await state.clear()
        replies.add(callback.answer())
        if edit is not None:
            replies.add(edit)
        replies.add(
            callback.message.answer(t("join.declined"), reply_markup=main_menu(role, t))  # type: ignore[union-attr]
        )
        return
    await villages.join_village(session, user, callback_data.village_id)
    village = await villages.current_village(session, user.id)
    assert village is not None
    # The phone number is optional: offered with a keyboard, not a step that holds the user.
    await state.clear()
    replies.add(callback.answer(t("join.joined_short")))
    if edit is not None:
        replies.add(edit)
    officer = village.officer_name or t("join.no_officer")
    replies.add(
        callback.message.answer(  # type: ignore[union-attr]
            t("join.joined", village=village.name, officer=officer) + "\n\n" + t("join.ask_phone"),
            reply_markup=_phone_keyboard(t),
        ),
        chat_commands(user.id, Role.VILLAGER, t),
    )


def _phone_keyboard(t: Translator) -> ReplyKeyboardMarkup:
    return ReplyKeyboardMarkup(
        keyboard=[
            [KeyboardButton(text=t("join.share_phone"), request_contact=True)],
            [KeyboardButton(text=t("join.skip_phone"))],
        ],
        resize_keyboard=True,
        one_time_keyboard=True,
    )


async def phone_shared(
    message: Message, session: AsyncSession, user: User, t: Translator, replies: Replies
) -> None:
    assert message.contact is not None
    if message.contact.user_id != user.id:
        replies.add(message.answer(t("join.phone_not_own"), reply_markup=_phone_keyboard(t)))
        return
    await villages.set_phone(session, user, message.contact.phone_number[:32])
    replies.add(message.answer(t("join.phone_saved"), reply_markup=main_menu(Role.VILLAGER, t)))


async def phone_skipped(message: Message, t: Translator, replies: Replies) -> None:
    replies.add(message.answer(t("join.phone_skipped"), reply_markup=main_menu(Role.VILLAGER, t)))


async def confirm_invalid(message: Message, t: Translator, replies: Replies) -> None:
    replies.add(message.answer(t("join.use_buttons")))


async def start_plain(
    message: Message, session: AsyncSession, user: User, role: Role, t: Translator, replies: Replies
) -> None:
    if role == Role.STRANGER:
        text = t("start.stranger")
    elif role == Role.VILLAGER:
        village = await villages.current_village(session, user.id)
        text = t("start.villager", village=village.name if village else "—")
    elif role == Role.OFFICER:
        text = t("start.officer", name=user.first_name)
    else:
        text = t("start.supervisor", name=user.first_name)
    _welcome(user, role, t, replies, message, text)


def build_router() -> Router:
    router = Router(name="onboarding")
    router.message.register(start_with_link, CommandStart(deep_link=True))
    router.callback_query.register(confirm_village, JoinVillage.confirm, JoinVillageCb.filter())
    villager_idle = (HasRole(Role.VILLAGER), StateFilter(None))
    router.message.register(phone_shared, F.contact, *villager_idle)
    skip = F.text.in_(all_labels("join.skip_phone"))
    router.message.register(phone_skipped, skip, *villager_idle)
    router.message.register(confirm_invalid, JoinVillage.confirm, ~F.text.startswith("/"))
    router.message.register(start_plain, CommandStart())
    return router
