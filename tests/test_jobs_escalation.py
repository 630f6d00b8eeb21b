"""request-deadlines against a real PostgreSQL, with fixed clocks: an unacknowledged request
after 24 h, an unanswered one after 72 h, a department's clock, each once, with its history
event; a reopened request's new answer clock; who is told, in which language, and when."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.i18n import Translator
from bot.request_texts import event_line
from core.requests import Actor, Event, Routed
from core.roles import Role
from scheduler.escalation import request_deadlines
from scheduler.jobs import JobContext
from storage import requests as store
from storage.models import OutboxMessage, RequestEvent, Supervisor, SupervisorStation, User
from tests.factories import Directory
from tests.harness import make_settings

ZH, EN = Translator("zh"), Translator("en")
SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 16, 22, 0, tzinfo=SHANGHAI)  # a Monday evening
OFFICER, CHIEF, OTHER_CHIEF, VILLAGER = 2001, 3001, 3002, 5001
HOUR = timedelta(hours=1)


async def _people(
    sessions: async_sessionmaker[AsyncSession], directory: Directory, *, officer: bool = True
) -> None:
    """The villager; officer A (English) unless `officer` is False; a chief of each station."""
    async with sessions() as s, s.begin():
        s.add(User(id=VILLAGER, role=Role.VILLAGER.value, first_name="李四"))
        if officer:
            a = directory.officers[0]
            s.add(User(id=OFFICER, role=Role.OFFICER.value, officer_id=a.id, language_code="en"))
        for account, name, station, locale in (
            (CHIEF, "刘所长", directory.station, "zh"),
            (OTHER_CHIEF, "孙所长", directory.other_station, "en"),
        ):
            chief = Supervisor(name=name)
            s.add(chief)
            await s.flush()
            s.add(SupervisorStation(supervisor_id=chief.id, station_id=station.id))
            s.add(
                User(id=account, role=Role.SUPERVISOR.value, supervisor_id=chief.id, locale=locale)
            )


async def _request(sessions: async_sessionmaker[AsyncSession], village_id: int) -> int:
    async with sessions() as s, s.begin():
        routed = await store.route_for_village(s, village_id)
        assert isinstance(routed, Routed)
        saved = await store.create_request(
            s,
            store.NewRequest(
                draft_id=secrets.token_hex(8),
                villager_id=VILLAGER,
                village_id=village_id,
                category="dispute",
                body="邻居占用我家宅基地",
                photos=(),
                latitude=None,
                longitude=None,
                anonymous=False,
                created_at=T0,
            ),
            routed,
        )
        return saved.id


async def _event(
    sessions: async_sessionmaker[AsyncSession],
    rid: int,
    event: Event,
    at: datetime,
    actor: Actor = Actor.OFFICER,
    department: str | None = None,
) -> None:
    async with sessions() as s, s.begin():
        await store.record_event(
            s, request_id=rid, event=event, actor=actor, now=at, department=department
        )


async def _run(sessions: async_sessionmaker[AsyncSession], now: datetime) -> str:
    return await request_deadlines(JobContext(sessions, make_settings(), now))


async def _outbox(sessions: async_sessionmaker[AsyncSession]) -> list[OutboxMessage]:
    async with sessions() as s:
        return list(await s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


async def _escalations(sessions: async_sessionmaker[AsyncSession], rid: int) -> list[str]:
    async with sessions() as s:
        rows = await s.scalars(
            select(RequestEvent)
            .where(RequestEvent.request_id == rid, RequestEvent.event == "escalated")
            .order_by(RequestEvent.id)
        )
        return [f"{e.actor}:{e.body}" for e in rows]


def _sent(rows: list[OutboxMessage]) -> list[tuple[int, str]]:
    return [(r.chat_id, r.payload["text"]) for r in rows]


async def test_acceptance_then_answer_escalate_once_each(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _people(sessions, directory)
    rid = await _request(sessions, directory.villages[0].id)
    ref = f"R{rid:06d}"

    assert await _run(sessions, T0 + 23 * HOUR) == (
        "0 requests past a deadline, 0 deadlines escalated, 0 messages queued"
    )
    # 24 h 15 min without acceptance, at 22:15: held until 08:00.
    late_evening = T0 + timedelta(hours=24, minutes=15)
    assert await _run(sessions, late_evening) == (
        "1 requests past a deadline, 1 deadlines escalated, 2 messages queued"
    )
    rows = await _outbox(sessions)
    assert _sent(rows) == [
        (
            CHIEF,
            f"⏰ 诉求超时：{ref}（矛盾纠纷）\n"
            "村（社区）：张庄村\n"
            "经办：王警官（警号 012345）\n"
            "受理时限为 11-17 22:00，已超出 15 分钟。\n"
            "发送 /overdue 查看辖区全部超时事项。",
        ),
        (
            OFFICER,
            f"⏰ Your request {ref} (张庄村) is past its acceptance deadline by 15 min "
            "(due 11-17 22:00); your supervisor has been told. Please deal with it now: "
            "/requests opens your inbox.",
        ),
    ]
    assert {r.not_before for r in rows} == {datetime(2026, 11, 18, 8, 0, tzinfo=SHANGHAI)}
    assert await _escalations(sessions, rid) == ["system:ack"]

    # Still unaccepted an hour later: nothing new.
    assert (await _run(sessions, T0 + 25 * HOUR)).endswith(
        "0 deadlines escalated, 0 messages queued"
    )
    assert len(await _outbox(sessions)) == 2

    await _event(sessions, rid, Event.ACKNOWLEDGED, T0 + 26 * HOUR)
    # Unanswered after 72 h; the job runs at 09:00 the next morning: due at once.
    morning = T0 + 83 * HOUR
    await _run(sessions, morning)
    rows = (await _outbox(sessions))[2:]
    assert [r.chat_id for r in rows] == [CHIEF, OFFICER]
    assert "答复时限为 11-19 22:00，已超出 11 小时 0 分钟。" in rows[0].payload["text"]
    assert "past its answer deadline by 11 h 0 min (due 11-19 22:00)" in rows[1].payload["text"]
    assert {r.not_before for r in rows} == {morning}
    assert await _escalations(sessions, rid) == ["system:ack", "system:answer"]
    await _run(sessions, morning + HOUR)
    assert len(await _outbox(sessions)) == 4
    assert await _escalations(sessions, rid) == ["system:ack", "system:answer"]

    # The history names the deadline in the reader's language.
    async with sessions() as s:
        history = await store.history(s, rid)
    assert [e.event for e in history] == [
        Event.CREATED,
        Event.ESCALATED,
        Event.ACKNOWLEDGED,
        Event.ESCALATED,
    ]
    assert event_line(ZH, history[1], SHANGHAI, for_villager=True) == (
        "11-17 22:15 受理超过时限，已报告督导人员"
    )
    assert event_line(EN, history[3], SHANGHAI, for_villager=False) == (
        "11-20 09:00 Deadline missed (answer); reported to the supervisor"
    )


async def test_a_department_clock_and_a_reopened_request(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _people(sessions, directory)
    forwarded = await _request(sessions, directory.villages[0].id)
    reopened = await _request(sessions, directory.villages[1].id)
    await _event(sessions, forwarded, Event.FORWARDED, T0 + HOUR, department="civil_affairs")
    await _event(sessions, reopened, Event.ACKNOWLEDGED, T0 + HOUR)

    await _run(sessions, T0 + 73 * HOUR)  # the unanswered one; the department has a week
    assert await _escalations(sessions, reopened) == ["system:answer"]
    assert await _escalations(sessions, forwarded) == []

    await _event(sessions, reopened, Event.RESOLVED, T0 + 74 * HOUR)
    await _event(sessions, reopened, Event.REOPENED, T0 + 75 * HOUR, Actor.VILLAGER)
    await _run(sessions, T0 + 100 * HOUR)  # the new answer clock runs until T0 + 147 h
    assert await _escalations(sessions, reopened) == ["system:answer"]
    await _run(sessions, T0 + 148 * HOUR)
    assert await _escalations(sessions, reopened) == ["system:answer", "system:answer"]
    await _run(sessions, T0 + 149 * HOUR)
    assert await _escalations(sessions, reopened) == ["system:answer", "system:answer"]

    # The department's 168 h from the forwarding; the officer's answer clock is paused.
    await _run(sessions, T0 + 170 * HOUR)
    await _run(sessions, T0 + 171 * HOUR)
    assert await _escalations(sessions, forwarded) == ["system:department"]
    rows = await _outbox(sessions)
    assert len(rows) == 6  # chief and officer, three times
    assert "部门反馈时限为 11-23 23:00，已超出 1 小时 0 分钟。" in rows[4].payload["text"]
    assert (
        rows[5]
        .payload["text"]
        .startswith(
            f"⏰ Your request R{forwarded:06d} (张庄村) is past its department's reply deadline"
        )
    )


async def test_no_officer_or_an_officer_not_on_the_bot(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _people(sessions, directory, officer=False)
    unbound = await _request(sessions, directory.villages[1].id)  # officer A, not joined
    no_officer = await _request(sessions, directory.villages[2].id)  # station S02's chief
    await _run(sessions, T0 + 25 * HOUR)
    # One message each: the handler is among the supervisors told.
    assert _sent(await _outbox(sessions)) == [
        (
            CHIEF,
            f"⏰ 诉求超时：R{unbound:06d}（矛盾纠纷）\n"
            "村（社区）：李庄村\n"
            "经办：王警官（警号 012345）\n"
            "受理时限为 11-17 22:00，已超出 1 小时 0 分钟。\n"
            "发送 /overdue 查看辖区全部超时事项。\n"
            "该民警尚未加入本机器人，收不到提醒，请当面督促办理。",
        ),
        (
            OTHER_CHIEF,
            f"⏰ Request past its deadline: R{no_officer:06d} (Dispute)\n"
            "Village: 东关社区\n"
            "Handled by: Supervisor 孙所长\n"
            "The acceptance was due 11-17 22:00: 1 h 0 min late.\n"
            "Send /overdue to see everything overdue in your area.",
        ),
    ]


async def test_two_runs_at_once_escalate_once(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _people(sessions, directory)
    rids = [await _request(sessions, v.id) for v in directory.villages]
    now = T0 + 25 * HOUR
    results = await asyncio.gather(*(_run(sessions, now) for _ in range(3)))
    escalated = [int(r.split(", ")[1].split()[0]) for r in results]
    assert sum(escalated) == 3
    for rid in rids:
        assert await _escalations(sessions, rid) == ["system:ack"]
    rows = await _outbox(sessions)
    # 张庄村 and 李庄村: the chief and officer A; 东关社区: the other chief.
    assert sorted(r.chat_id for r in rows) == [OFFICER, OFFICER, CHIEF, CHIEF, OTHER_CHIEF]
    assert len({r.dedup_key for r in rows}) == 5
