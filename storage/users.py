"""Telegram accounts and the roles bound to them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from core.roles import Role
from storage.models import User, VillagerMembership


@dataclass(frozen=True)
class TelegramProfile:
    id: int
    first_name: str
    last_name: str | None
    username: str | None
    language_code: str | None


async def touch_user(session: AsyncSession, profile: TelegramProfile) -> User:
    """The user row for a Telegram account, created on first contact and kept current."""
    return await keep_current(session, await session.get(User, profile.id), profile)


def attach_user(session: AsyncSession, row: Mapping[str, Any]) -> User:
    """A users row read without the ORM (see storage.fsm.PostgresStorage.read_with_user) as
    the session's persistent User, as if the session had loaded it: no query. The values go
    straight into the instance, as the ORM's own loading puts them (half the CPU of
    setting each attribute, which records a change that `make_transient_to_detached` then
    forgets)."""
    user: User = _new_user()
    user.__dict__.update({name: row[name] for name in _COLUMNS})
    make_transient_to_detached(user)
    session.add(user)
    return user


_COLUMNS = [column.key for column in User.__mapper__.column_attrs]
_new_user = User.__mapper__.class_manager.new_instance


async def keep_current(session: AsyncSession, user: User | None, profile: TelegramProfile) -> User:
    """`user`, the account's row as just read, created on first contact (None) and brought
    up to date with the profile Telegram sent; written only when something changed."""
    if user is None:
        user = User(id=profile.id, role=Role.STRANGER.value)
        session.add(user)
    for attr in ("first_name", "last_name", "username", "language_code"):
        value = getattr(profile, attr)
        if attr == "first_name":
            value = value or ""
        if getattr(user, attr) != value:
            setattr(user, attr, value)
    if user.blocked_at is not None:
        user.blocked_at = None  # writing to the bot means they unblocked it
    if user in session.new or session.is_modified(user):
        await session.flush()
    return user


async def set_locale(session: AsyncSession, user: User, locale: str) -> None:
    user.locale = locale
    await session.flush()


async def release_role(session: AsyncSession, user: User) -> None:
    """Drop whatever role the account had, ending a current village membership."""
    await session.execute(
        update(VillagerMembership)
        .where(VillagerMembership.user_id == user.id, VillagerMembership.left_at.is_(None))
        .values(left_at=func.now())
    )
    user.role = Role.STRANGER.value
    user.officer_id = None
    user.supervisor_id = None
    await session.flush()


async def user_bound_to_officer(session: AsyncSession, officer_id: int) -> User | None:
    return await session.scalar(select(User).where(User.officer_id == officer_id))


async def set_blocked(session: AsyncSession, user: User, *, at: datetime | None) -> None:
    user.blocked_at = at
    await session.flush()
