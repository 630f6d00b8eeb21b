"""Telegram tells us when a user blocks or unblocks the bot: remember it, so that nothing
is sent to someone who cannot receive it."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatMemberStatus, ChatType
from aiogram.types import ChatMemberUpdated
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from storage.models import User
from storage.users import set_blocked


async def bot_membership_changed(
    event: ChatMemberUpdated, session: AsyncSession, user: User, clock: Clock
) -> None:
    blocked = event.new_chat_member.status == ChatMemberStatus.KICKED
    await set_blocked(session, user, at=clock() if blocked else None)


def build_router() -> Router:
    router = Router(name="membership")
    router.my_chat_member.register(bot_membership_changed, F.chat.type == ChatType.PRIVATE)
    return router
