"""storage.requests against a real PostgreSQL: routing, the history as the record, derived
status and deadlines, rights, limits, rerouting and who hears about a request."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.requests import (
    Actor,
    DeadlineConfig,
    Event,
    Refusal,
    RequestStatus,
    Routed,
    RouteKind,
    TransitionError,
    Unrouted,
)
from core.roles import AssignmentKind, Role
from storage import requests as store
from storage.models import (
    Assignment,
    Request,
    RequestEvent,
    Supervisor,
    SupervisorStation,
    User,
)
from tests.factories import Directory

T0 = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


async def _villager(session: AsyncSession, user_id: int = 5001, **kw: object) -> User:
    user = User(id=user_id, role=Role.VILLAGER.value, first_name="李四", **kw)
    session.add(user)
    await session.flush()
    return user


async def _supervisor(
    session: AsyncSession, *, stations: list[int], county: bool = False, account: int | None = None
) -> Supervisor:
    supervisor = Supervisor(name="刘所长", county_wide=county)
    session.add(supervisor)
    await session.flush()
    session.add_all(SupervisorStation(supervisor_id=supervisor.id, station_id=s) for s in stations)
    if account is not None:
        session.add(User(id=account, role=Role.SUPERVISOR.value, supervisor_id=supervisor.id))
    await session.flush()
    return supervisor


async def _new(
    session: AsyncSession,
    village_id: int,
    *,
    villager_id: int = 5001,
    draft: str = "d1",
    at: datetime = T0,
    anonymous: bool = False,
) -> int:
    routed = await store.route_for_village(session, village_id)
    assert isinstance(routed, Routed)
    saved = await store.create_request(
        session,
        store.NewRequest(
            draft_id=draft,
            villager_id=villager_id,
            village_id=village_id,
            category="dispute",
            body="邻居占用我家宅基地",
            photos=[("file-1", "uniq-1")],
            latitude=34.1,
            longitude=113.2,
            anonymous=anonymous,
            created_at=at,
        ),
        routed,
    )
    return saved.id


async def test_routing_resident_contact_supervisor_county_then_nobody(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    v1, v2, v3 = (v.id for v in directory.villages)
    a, b = (o.id for o in directory.officers)
    async with sessions() as s, s.begin():
        assert await store.route_for_village(s, v1) == Routed(
            RouteKind.OFFICER, a, AssignmentKind.RESIDENT
        )
        await s.execute(delete(Assignment).where(Assignment.officer_id == a))
        assert await store.route_for_village(s, v1) == Routed(
            RouteKind.OFFICER, b, AssignmentKind.CONTACT
        )
        assert isinstance(await store.route_for_village(s, v2), Unrouted)
        county = await _supervisor(s, stations=[], county=True)
        assert await store.route_for_village(s, v3) == Routed(RouteKind.SUPERVISOR, county.id, None)
        own = await _supervisor(s, stations=[directory.other_station.id])
        # The station's own supervisor comes before the county office.
        assert await store.route_for_village(s, v3) == Routed(RouteKind.SUPERVISOR, own.id, None)


async def test_create_is_once_per_draft_and_derives_status_and_deadline(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    async with sessions() as s, s.begin():
        await _villager(s)
        first = await _new(s, directory.villages[0].id)
        again = await _new(s, directory.villages[0].id)
    assert first == again
    async with sessions() as s:
        request = await store.get_request(s, first)
        events = await store.history(s, first)
    assert request is not None and request.status is RequestStatus.NEW
    assert request.officer_id == directory.officers[0].id and request.supervisor_id is None
    assert (request.due_clock, request.due_at) == ("ack", T0 + timedelta(hours=24))
    assert request.photos == (("file-1", "uniq-1"),)
    assert request.ref == f"R{first:06d}" and request.villager_name == "李四"
    assert [(e.event, e.actor, e.user_id) for e in events] == [
        (Event.CREATED, Actor.VILLAGER, 5001)
    ]


async def test_events_drive_status_department_rating_and_due(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = directory.officers[0].id
    config = DeadlineConfig(ack=timedelta(hours=1), answer=timedelta(hours=10))
    async with sessions() as s, s.begin():
        await _villager(s)
        rid = await _new(s, directory.villages[0].id)

    async def record(event: Event, actor: Actor, at: datetime, **kw: object) -> store.Recorded:
        async with sessions() as s, s.begin():
            return await store.record_event(
                s,
                request_id=rid,
                event=event,
                actor=actor,
                now=at,
                config=config,
                **kw,  # type: ignore[arg-type]
            )

    async def row() -> Request:
        async with sessions() as s:
            found = await s.get(Request, rid)
            assert found is not None
            return found

    done = await record(
        Event.ACKNOWLEDGED, Actor.OFFICER, T0 + timedelta(minutes=30), officer_id=officer
    )
    assert (done.before, done.after) == (RequestStatus.NEW, RequestStatus.ACKNOWLEDGED)
    assert ((await row()).due_clock, (await row()).due_at) == ("answer", T0 + timedelta(hours=10))
    # Two hours at the department pause the answer clock; the department's clock runs.
    await record(
        Event.FORWARDED, Actor.OFFICER, T0 + timedelta(hours=2), department="civil_affairs"
    )
    forwarded = await row()
    assert (forwarded.status, forwarded.department, forwarded.due_clock) == (
        "forwarded",
        "civil_affairs",
        "department",
    )
    await record(Event.RETURNED, Actor.OFFICER, T0 + timedelta(hours=4), department="civil_affairs")
    assert ((await row()).status, (await row()).due_at) == (
        "acknowledged",
        T0 + timedelta(hours=12),
    )
    await record(Event.RESOLVED, Actor.OFFICER, T0 + timedelta(hours=5), body="已调解")
    assert ((await row()).status, (await row()).due_at) == ("resolved", None)
    await record(Event.RATED, Actor.VILLAGER, T0 + timedelta(hours=6), rating=4)
    assert (await row()).rating == 4
    with pytest.raises(TransitionError) as refused:
        await record(Event.REOPENED, Actor.VILLAGER, T0 + timedelta(hours=7))
    assert refused.value.code is Refusal.ALREADY_RATED
    async with sessions() as s:
        events = await store.history(s, rid)
    assert [e.event for e in events][-1] is Event.RATED  # the refused event left no trace


async def test_refused_event_changes_nothing_and_times_never_go_back(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    async with sessions() as s, s.begin():
        await _villager(s)
        rid = await _new(s, directory.villages[0].id)
    async with sessions() as s, s.begin():
        with pytest.raises(TransitionError) as refused:
            await store.record_event(
                s, request_id=rid, event=Event.RATED, actor=Actor.VILLAGER, now=T0, rating=5
            )
    assert refused.value.code is Refusal.NOT_RESOLVED
    async with sessions() as s, s.begin():
        with pytest.raises(TransitionError):  # a villager cannot accept their own request
            await store.record_event(
                s, request_id=rid, event=Event.ACKNOWLEDGED, actor=Actor.VILLAGER, now=T0
            )
        with pytest.raises(LookupError):
            await store.record_event(
                s, request_id=rid + 99, event=Event.ACKNOWLEDGED, actor=Actor.OFFICER, now=T0
            )
    # Another process's clock a little behind: the event is dated at the one before it.
    async with sessions() as s, s.begin():
        done = await store.record_event(
            s,
            request_id=rid,
            event=Event.ACKNOWLEDGED,
            actor=Actor.OFFICER,
            now=T0 - timedelta(seconds=3),
        )
    assert done.at == T0


async def test_concurrent_double_accept_records_one_event(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    async with sessions() as s, s.begin():
        await _villager(s)
        rid = await _new(s, directory.villages[0].id)

    async def accept() -> bool:
        try:
            async with sessions() as s, s.begin():
                await store.record_event(
                    s, request_id=rid, event=Event.ACKNOWLEDGED, actor=Actor.OFFICER, now=T0
                )
                await asyncio.sleep(0.05)  # hold the row lock while the other one waits
            return True
        except TransitionError:
            return False

    assert sorted(await asyncio.gather(accept(), accept())) == [False, True]
    async with sessions() as s:
        events = await store.history(s, rid)
    assert [e.event for e in events] == [Event.CREATED, Event.ACKNOWLEDGED]


async def test_actor_for_checks_who_may_touch_a_request(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    a, b = (o.id for o in directory.officers)
    async with sessions() as s, s.begin():
        villager = await _villager(s)
        stranger = await _villager(s, 5002)
        rid = await _new(s, directory.villages[0].id)
        officer = User(id=7001, role=Role.OFFICER.value, officer_id=a)
        contact = User(id=7002, role=Role.OFFICER.value, officer_id=b)
        s.add_all([officer, contact])
        here = await _supervisor(s, stations=[directory.station.id], account=7003)
        there = await _supervisor(s, stations=[directory.other_station.id], account=7004)
        county = await _supervisor(s, stations=[], county=True, account=7005)
        await s.flush()
        request = await store.get_request(s, rid)
        assert request is not None
        users = {u.id: u for u in await s.scalars(select(User))}
        assert await store.actor_for(s, request, villager) is Actor.VILLAGER
        assert await store.actor_for(s, request, stranger) is None
        assert await store.actor_for(s, request, officer) is Actor.OFFICER
        assert await store.actor_for(s, request, contact) is None
        assert await store.actor_for(s, request, users[7003]) is Actor.SUPERVISOR
        assert await store.actor_for(s, request, users[7004]) is None
        assert await store.actor_for(s, request, users[7005]) is Actor.SUPERVISOR
        assert {here.id, there.id, county.id} == {
            users[i].supervisor_id for i in (7003, 7004, 7005)
        }
        # Ids from buttons may be anything; they find nothing instead of failing.
        for forged in (0, -1, 2**31, 2**40):
            assert await store.get_request(s, forged) is None


async def test_open_count_and_recent_messages_for_the_limits(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    async with sessions() as s, s.begin():
        await _villager(s)
        first = await _new(s, directory.villages[0].id, draft="a", at=T0)
        await _new(s, directory.villages[0].id, draft="b", at=T0 + timedelta(seconds=30))
        await store.record_event(
            s,
            request_id=first,
            event=Event.VILLAGER_MESSAGE,
            actor=Actor.VILLAGER,
            now=T0 + timedelta(seconds=50),
            user_id=5001,
            body="补充",
        )
        await store.record_event(
            s,
            request_id=first,
            event=Event.RESOLVED,
            actor=Actor.OFFICER,
            now=T0 + timedelta(seconds=55),
        )
    async with sessions() as s:
        assert await store.open_count(s, villager_id=5001) == 1
        recent = await store.recent_messages(s, villager_id=5001, now=T0 + timedelta(seconds=61))
    # The first request is over a minute old; the officer's resolution is not the villager's.
    assert sorted(recent) == [T0 + timedelta(seconds=30), T0 + timedelta(seconds=50)]


async def test_open_for_handler_most_urgent_first_and_villager_listing(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = directory.officers[0].id
    async with sessions() as s, s.begin():
        await _villager(s)
        old = await _new(s, directory.villages[0].id, draft="a", at=T0)
        new = await _new(s, directory.villages[1].id, draft="b", at=T0 + timedelta(hours=1))
        done = await _new(s, directory.villages[0].id, draft="c", at=T0 + timedelta(hours=2))
        # Accepting the old one moves its next deadline to the answer, 3 days out.
        await store.record_event(
            s, request_id=old, event=Event.ACKNOWLEDGED, actor=Actor.OFFICER, now=T0
        )
        await store.record_event(
            s, request_id=done, event=Event.RESOLVED, actor=Actor.OFFICER, now=T0
        )
    async with sessions() as s:
        inbox = await store.open_for_handler(s, officer_id=officer)
        listed, total = await store.villager_requests(s, villager_id=5001, limit=2)
    assert [r.id for r in inbox] == [new, old]
    assert total == 3 and [r.id for r in listed] == [new, old]  # open first, newest first
    with pytest.raises(ValueError):
        async with sessions() as s:
            await store.open_for_handler(s)


async def test_handler_accounts_fall_back_to_supervisors_when_the_officer_has_not_joined(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    async with sessions() as s, s.begin():
        await _villager(s)
        rid = await _new(s, directory.villages[0].id)
        await _supervisor(s, stations=[directory.station.id], account=7003)
        request = await store.get_request(s, rid)
        assert request is not None
        assert await store.handler_accounts(s, request) == [7003]
        s.add(User(id=7001, role=Role.OFFICER.value, officer_id=directory.officers[0].id))
        await s.flush()
        assert await store.handler_accounts(s, request) == [7001]


async def test_anonymous_request_hides_the_name_and_phone(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    async with sessions() as s, s.begin():
        await _villager(s, phone="+8613800000000")
        rid = await _new(s, directory.villages[0].id, anonymous=True)
        request = await store.get_request(s, rid)
    assert request is not None
    assert (request.villager_name, request.villager_phone, request.anonymous) == ("", None, True)


async def test_reroute_moves_open_requests_with_a_reassigned_event(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    v1 = directory.villages[0].id
    a, b = (o.id for o in directory.officers)
    async with sessions() as s, s.begin():
        await _villager(s)
        open_id = await _new(s, v1, draft="a")
        closed_id = await _new(s, v1, draft="b")
        await store.record_event(
            s, request_id=closed_id, event=Event.RESOLVED, actor=Actor.OFFICER, now=T0
        )
        unchanged = await store.reroute_open_requests(s, village_ids=[v1], now=T0)
        assert unchanged.moved == [] and unchanged.stranded == []
        # The resident leaves the village: the contact officer takes its open requests.
        await s.execute(
            delete(Assignment).where(Assignment.officer_id == a, Assignment.village_id == v1)
        )
        moved = await store.reroute_open_requests(s, village_ids=[v1], now=T0 + timedelta(hours=1))
    assert [(m.request_id, m.old_officer_id, m.new.recipient_id) for m in moved.moved] == [
        (open_id, a, b)
    ]
    async with sessions() as s:
        rows = {r.id: r for r in await s.scalars(select(Request))}
        last = await s.scalar(
            select(RequestEvent)
            .where(RequestEvent.request_id == open_id)
            .order_by(RequestEvent.id.desc())
        )
    assert rows[open_id].officer_id == b and rows[closed_id].officer_id == a
    assert last is not None and (last.event, last.actor, last.officer_id) == (
        "reassigned",
        "system",
        b,
    )
    # Nobody left at all: the request stays where it is and is reported as stranded.
    async with sessions() as s, s.begin():
        await s.execute(delete(Assignment).where(Assignment.village_id == v1))
        stranded = await store.reroute_open_requests(s, village_ids=[v1], now=T0)
    assert stranded.stranded == [open_id] and stranded.moved == []
