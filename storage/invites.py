"""One-time invites for officers and supervisors. Only the payload's SHA-256 is stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.roles import InviteKind, Role
from core.tokens import hash_payload, new_invite_payload
from storage.models import (
    Invite,
    JoinFailure,
    Officer,
    Station,
    Supervisor,
    SupervisorStation,
    User,
)
from storage.users import release_role, user_bound_to_officer


class NotFoundError(LookupError):
    """A code or badge named by the operator does not exist."""


@dataclass(frozen=True)
class IssuedInvite:
    payload: str
    expires_at: datetime


class Refusal(StrEnum):
    UNKNOWN = "unknown"
    USED = "used"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Redeemed:
    kind: InviteKind
    officer: Officer | None = None
    supervisor: Supervisor | None = None
    stations: tuple[Station, ...] = ()
    # The account the officer was bound to before, now released.
    previous_user_id: int | None = None


async def create_officer_invite(
    session: AsyncSession, *, badge: str, now: datetime, ttl: timedelta
) -> tuple[IssuedInvite, Officer]:
    officer = await session.scalar(select(Officer).where(Officer.badge == badge))
    if officer is None:
        raise NotFoundError(f"no officer with badge {badge!r}; import the directory first")
    issued = await _issue(session, now=now, ttl=ttl, kind=InviteKind.OFFICER, officer_id=officer.id)
    return issued, officer


async def create_supervisor_invite(
    session: AsyncSession,
    *,
    station_codes: list[str],
    county_wide: bool,
    name: str | None,
    now: datetime,
    ttl: timedelta,
) -> tuple[IssuedInvite, list[Station]]:
    stations = list(await session.scalars(select(Station).where(Station.code.in_(station_codes))))
    missing = sorted(set(station_codes) - {s.code for s in stations})
    if missing:
        raise NotFoundError(f"no station with code {', '.join(map(repr, missing))}")
    issued = await _issue(
        session,
        now=now,
        ttl=ttl,
        kind=InviteKind.SUPERVISOR,
        supervisor_name=name,
        county_wide=county_wide,
        station_ids=sorted(s.id for s in stations),
    )
    return issued, sorted(stations, key=lambda s: s.code)


async def _issue(
    session: AsyncSession, *, now: datetime, ttl: timedelta, **fields: object
) -> IssuedInvite:
    payload = new_invite_payload()
    invite = Invite(token_hash=hash_payload(payload), expires_at=now + ttl, **fields)
    session.add(invite)
    await session.flush()
    return IssuedInvite(payload=payload, expires_at=invite.expires_at)


async def redeem_invite(
    session: AsyncSession, *, payload: str, user: User, now: datetime
) -> Redeemed | Refusal:
    """Bind `user` to what the invite names; refuse a used, expired or unknown invite."""
    invite = await session.scalar(
        select(Invite).where(Invite.token_hash == hash_payload(payload)).with_for_update()
    )
    if invite is None or invite.revoked_at is not None:
        return Refusal.UNKNOWN
    if invite.used_at is not None:
        return Refusal.USED
    if invite.expires_at <= now:
        return Refusal.EXPIRED
    invite.used_at = now
    invite.used_by = user.id
    if invite.kind == InviteKind.OFFICER:
        return await _bind_officer(session, invite, user, now)
    return await _bind_supervisor(session, invite, user)


async def _bind_officer(
    session: AsyncSession, invite: Invite, user: User, now: datetime
) -> Redeemed:
    assert invite.officer_id is not None
    officer = await session.get_one(Officer, invite.officer_id)
    previous = await user_bound_to_officer(session, officer.id)
    previous_id = None
    if previous is not None and previous.id != user.id:
        await release_role(session, previous)
        previous_id = previous.id
    await release_role(session, user)
    user.role = Role.OFFICER.value
    user.officer_id = officer.id
    # Older invites for the same officer could rebind the account behind their back.
    await session.execute(
        update(Invite)
        .where(
            Invite.officer_id == officer.id,
            Invite.id != invite.id,
            Invite.used_at.is_(None),
            Invite.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    await session.flush()
    return Redeemed(kind=InviteKind.OFFICER, officer=officer, previous_user_id=previous_id)


async def _bind_supervisor(session: AsyncSession, invite: Invite, user: User) -> Redeemed:
    supervisor = Supervisor(name=invite.supervisor_name, county_wide=invite.county_wide)
    session.add(supervisor)
    await session.flush()
    session.add_all(
        SupervisorStation(supervisor_id=supervisor.id, station_id=sid) for sid in invite.station_ids
    )
    stations = await session.scalars(
        select(Station).where(Station.id.in_(invite.station_ids)).order_by(Station.code)
    )
    await release_role(session, user)
    user.role = Role.SUPERVISOR.value
    user.supervisor_id = supervisor.id
    await session.flush()
    return Redeemed(kind=InviteKind.SUPERVISOR, supervisor=supervisor, stations=tuple(stations))


async def record_join_failure(session: AsyncSession, *, user_id: int, now: datetime) -> None:
    session.add(JoinFailure(user_id=user_id, at=now))
    await session.flush()


async def join_failures_since(session: AsyncSession, *, user_id: int, since: datetime) -> int:
    """How many links that led nowhere this account opened since `since`."""
    return int(
        await session.scalar(
            select(func.count())
            .select_from(JoinFailure)
            .where(JoinFailure.user_id == user_id, JoinFailure.at > since)
        )
        or 0
    )


async def prune_join_failures(session: AsyncSession, *, older_than: datetime) -> int:
    """Forget failed links older than any guessing window looks at."""
    result = await session.execute(delete(JoinFailure).where(JoinFailure.at < older_than))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
