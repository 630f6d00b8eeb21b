"""Invites: single use, expiring, hashed; binding and rebinding accounts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.roles import InviteKind, Role
from core.tokens import hash_payload, is_valid_payload
from storage import invites, villages
from storage.models import Invite, SupervisorStation, User, VillagerMembership
from storage.users import TelegramProfile, touch_user
from tests.factories import seed_directory

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
TTL = timedelta(days=7)


async def _user(session: AsyncSession, uid: int) -> User:
    return await touch_user(session, TelegramProfile(uid, f"u{uid}", None, None, "zh-hans"))


async def test_officer_invite_binds_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s, s.begin():
        d = await seed_directory(s)
        issued, officer = await invites.create_officer_invite(s, badge="012345", now=NOW, ttl=TTL)
        assert officer.id == d.officers[0].id
        assert is_valid_payload(issued.payload) and len(issued.payload) <= 64
        assert issued.expires_at == NOW + TTL
        stored = await s.scalar(select(Invite.token_hash))
        assert stored == hash_payload(issued.payload) and issued.payload.encode() not in stored

        first = await _user(s, 1001)
        outcome = await invites.redeem_invite(s, payload=issued.payload, user=first, now=NOW)
        assert isinstance(outcome, invites.Redeemed) and outcome.kind == InviteKind.OFFICER
        assert (first.role, first.officer_id) == (Role.OFFICER, officer.id)

        second = await _user(s, 1002)
        again = await invites.redeem_invite(s, payload=issued.payload, user=second, now=NOW)
        assert again == invites.Refusal.USED
        assert second.role == Role.STRANGER


async def test_expired_and_unknown(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s, s.begin():
        await seed_directory(s)
        issued, _ = await invites.create_officer_invite(s, badge="012345", now=NOW, ttl=TTL)
        user = await _user(s, 1001)
        late = NOW + TTL + timedelta(seconds=1)
        assert await invites.redeem_invite(s, payload=issued.payload, user=user, now=late) == (
            invites.Refusal.EXPIRED
        )
        assert await invites.redeem_invite(s, payload="i-guess", user=user, now=NOW) == (
            invites.Refusal.UNKNOWN
        )
        assert user.role == Role.STRANGER


async def test_new_invite_rebinds_and_revokes_older(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        await seed_directory(s)
        old, _ = await invites.create_officer_invite(s, badge="012345", now=NOW, ttl=TTL)
        first = await _user(s, 1001)
        await invites.redeem_invite(s, payload=old.payload, user=first, now=NOW)
        spare, _ = await invites.create_officer_invite(s, badge="012345", now=NOW, ttl=TTL)
        new, _ = await invites.create_officer_invite(s, badge="012345", now=NOW, ttl=TTL)

        phone = await _user(s, 2002)
        outcome = await invites.redeem_invite(s, payload=new.payload, user=phone, now=NOW)
        assert isinstance(outcome, invites.Redeemed) and outcome.previous_user_id == 1001
        assert (first.role, first.officer_id) == (Role.STRANGER, None)
        assert phone.role == Role.OFFICER
        # The spare invite issued before could otherwise take the account back.
        stranger = await _user(s, 3003)
        assert await invites.redeem_invite(s, payload=spare.payload, user=stranger, now=NOW) == (
            invites.Refusal.UNKNOWN
        )


async def test_supervisor_invite_scopes(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s, s.begin():
        d = await seed_directory(s)
        issued, stations = await invites.create_supervisor_invite(
            s, station_codes=["S02", "S01"], county_wide=False, name="刘所长", now=NOW, ttl=TTL
        )
        assert [st.code for st in stations] == ["S01", "S02"]
        user = await _user(s, 1001)
        outcome = await invites.redeem_invite(s, payload=issued.payload, user=user, now=NOW)
        assert isinstance(outcome, invites.Redeemed) and outcome.supervisor is not None
        assert user.role == Role.SUPERVISOR
        scoped = set(await s.scalars(select(SupervisorStation.station_id)))
        assert scoped == {d.station.id, d.other_station.id}
        scope = await villages.supervisor_scope(s, outcome.supervisor.id)
        assert (scope.villages, scope.officers) == (3, 2)

        county, _ = await invites.create_supervisor_invite(
            s, station_codes=[], county_wide=True, name=None, now=NOW, ttl=TTL
        )
        chief = await _user(s, 1002)
        outcome = await invites.redeem_invite(s, payload=county.payload, user=chief, now=NOW)
        assert isinstance(outcome, invites.Redeemed) and outcome.supervisor is not None
        assert (await villages.supervisor_scope(s, outcome.supervisor.id)).county_wide


async def test_unknown_targets_are_refused(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s, s.begin():
        await seed_directory(s)
        with pytest.raises(invites.NotFoundError, match="999"):
            await invites.create_officer_invite(s, badge="999", now=NOW, ttl=TTL)
        with pytest.raises(invites.NotFoundError, match="S99"):
            await invites.create_supervisor_invite(
                s, station_codes=["S01", "S99"], county_wide=False, name=None, now=NOW, ttl=TTL
            )
        assert await s.scalar(select(func.count()).select_from(Invite)) == 0


async def test_villager_switches_village(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s, s.begin():
        d = await seed_directory(s)
        user = await _user(s, 1001)
        await villages.join_village(s, user, d.villages[0].id)
        await villages.join_village(s, user, d.villages[2].id)
        current = await villages.current_village(s, user.id)
        assert current is not None and current.code == "V003"
        rows = (
            await s.execute(
                select(VillagerMembership.village_id, VillagerMembership.left_at).order_by(
                    VillagerMembership.id
                )
            )
        ).all()
        assert [r.village_id for r in rows] == [d.villages[0].id, d.villages[2].id]
        assert rows[0].left_at is not None and rows[1].left_at is None
        assert user.role == Role.VILLAGER


async def test_current_village_names_resident_officer(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        d = await seed_directory(s)
        user = await _user(s, 1001)
        await villages.join_village(s, user, d.villages[0].id)
        current = await villages.current_village(s, user.id)
        assert current is not None and current.officer_name == "王警官"  # resident, not contact


async def test_join_failures_are_counted_in_the_window_and_pruned(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    async with sessions() as s, s.begin():
        for minutes in (40, 10, 5, 1):
            await invites.record_join_failure(s, user_id=7, now=now - timedelta(minutes=minutes))
        await invites.record_join_failure(s, user_id=8, now=now)
    async with sessions() as s, s.begin():
        since = now - timedelta(minutes=15)
        assert await invites.join_failures_since(s, user_id=7, since=since) == 3
        assert await invites.join_failures_since(s, user_id=8, since=since) == 1
        assert await invites.prune_join_failures(s, older_than=now - timedelta(minutes=30)) == 1
        assert await invites.join_failures_since(s, user_id=7, since=now - timedelta(days=1)) == 3
