"""quota-nudges and village-day-reminders against a real PostgreSQL, with fixed clocks:
the nudge day, month ends, the county's time zone, quiet hours, absences, second and
concurrent runs, the texts in both languages."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.nudges import nudge_period, quota_nudge, quota_nudge_key, village_day_key
from core.quota import Progress, Quota
from core.roles import AssignmentKind, Role
from scheduler.jobs import JobContext
from scheduler.nudges import quota_nudges, village_day_reminders
from storage.models import Absence, Assignment, Officer, OutboxMessage, User, VisitReport
from tests.factories import Directory
from tests.harness import make_settings

SHANGHAI = ZoneInfo("Asia/Shanghai")
ZH_ACCOUNT, EN_ACCOUNT = 1001, 1002  # officer A reads Chinese, officer B English


def _local(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


def _ctx(sessions: async_sessionmaker[AsyncSession], now: datetime, **settings: Any) -> JobContext:
    return JobContext(sessions, make_settings(**settings), now)


async def _join(sessions: async_sessionmaker[AsyncSession], directory: Directory) -> None:
    """Both officers joined the bot; a third, resident in V003, has not."""
    a, b = directory.officers
    async with sessions() as s, s.begin():
        s.add(User(id=ZH_ACCOUNT, role=Role.OFFICER.value, officer_id=a.id, locale="zh"))
        s.add(User(id=EN_ACCOUNT, role=Role.OFFICER.value, officer_id=b.id, language_code="en"))
        c = Officer(badge="099999", name="钱警官")
        s.add(c)
        await s.flush()
        s.add(
            Assignment(
                officer_id=c.id,
                village_id=directory.villages[2].id,
                kind=AssignmentKind.RESIDENT.value,
            )
        )


async def _visit(
    sessions: async_sessionmaker[AsyncSession],
    officer: Officer,
    village_id: int,
    day: date,
    households: int,
) -> None:
    async with sessions() as s, s.begin():
        s.add(
            VisitReport(
                draft_id=secrets.token_hex(8),
                officer_id=officer.id,
                village_id=village_id,
                visit_date=day,
                hours=Decimal(3),
                households=households,
                submitted_by=ZH_ACCOUNT,
            )
        )


async def _absence(
    sessions: async_sessionmaker[AsyncSession], officer: Officer, village_id: int, day: date
) -> None:
    async with sessions() as s, s.begin():
        s.add(
            Absence(
                draft_id=secrets.token_hex(8),
                officer_id=officer.id,
                village_id=village_id,
                day=day,
                reason="县里集中培训",
            )
        )


async def _outbox(sessions: async_sessionmaker[AsyncSession]) -> list[OutboxMessage]:
    async with sessions() as s:
        return list(await s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def _texts(rows: list[OutboxMessage], chat_id: int) -> list[str]:
    return [r.payload["text"] for r in rows if r.chat_id == chat_id]


# --- the rule -----------------------------------------------------------------------------------


def test_the_rule_and_its_keys() -> None:
    quota = Quota(visit_days=4, households=4)
    slow = Progress(visit_days=1, households=2)
    assert quota_nudge(quota, slow, date(2026, 11, 9), absences=0, from_day=10) is None
    nudge = quota_nudge(quota, slow, date(2026, 11, 25), absences=0, from_day=10)
    assert nudge is not None
    assert nudge.behind == ("visit_days", "households")
    assert nudge.missing == {"visit_days": 3, "households": 2}
    # Two recorded absences bring the expected days (3 on the 25th) below the one done.
    eased = quota_nudge(quota, slow, date(2026, 11, 25), absences=2, from_day=10)
    assert eased is not None and eased.behind == ("households",)
    assert nudge_period(date(2026, 11, 7)) == "2026-11-w1"
    assert nudge_period(date(2026, 11, 29)) == "2026-11-w5"
    assert nudge_period(date(2026, 12, 1)) == "2026-12-w1"
    assert (
        quota_nudge_key(7, 12, date(2026, 11, 25), ("visit_days", "households"))
        == "quota-nudge:7:12:2026-11-w4:visit_days+households"
    )
    assert village_day_key(7, date(2026, 11, 24)) == "village-day:7:2026-11-24"


# --- quota-nudges -------------------------------------------------------------------------------


async def test_nudges_start_on_the_tenth_not_the_ninth(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _join(sessions, directory)
    ninth = await quota_nudges(_ctx(sessions, _local(2026, 11, 9, 9, 0)))
    assert ninth == "no nudges before day 10 of the month (2026-11-09)"
    assert await _outbox(sessions) == []

    tenth = await quota_nudges(_ctx(sessions, _local(2026, 11, 10, 9, 0)))
    assert tenth == "3 assignments checked, 3 behind pace, 3 nudges queued"
    rows = await _outbox(sessions)
    # Officer A for both villages, officer B for the one; the officer without an account
    # is not among the assignments checked.
    assert sorted(r.chat_id for r in rows) == [ZH_ACCOUNT, ZH_ACCOUNT, EN_ACCOUNT]
    assert _texts(rows, ZH_ACCOUNT)[0] == (
        "⏰ 工作进度提醒\n"
        "张庄村：下村 0/4 天，入户 0/4 户，本月还剩 21 天。\n"
        "还差下村 4 天、入户 4 户。请抓紧安排，每次走访后用 /visit 填报。"
    )
    # NUDGE_FROM_DAY moves the first day.
    await quota_nudges(_ctx(sessions, _local(2026, 12, 9, 9, 0)))
    assert len(await _outbox(sessions)) == 3
    await quota_nudges(_ctx(sessions, _local(2026, 12, 9, 9, 0), nudge_from_day=9))
    assert len(await _outbox(sessions)) == 6


async def test_the_exact_nudge_in_both_languages(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _join(sessions, directory)
    a, b = directory.officers
    v1, v2, _ = (v.id for v in directory.villages)
    await _visit(sessions, a, v1, date(2026, 11, 12), 2)
    for day in (3, 10, 17, 24):  # the whole quota in 李庄村
        await _visit(sessions, a, v2, date(2026, 11, day), 1)
    await _visit(sessions, a, v2, date(2026, 10, 31), 9)  # last month: not counted
    now = _local(2026, 11, 25, 9, 0)  # day 25 of 30: 6 days left, 3 of 4 expected

    assert await quota_nudges(_ctx(sessions, now)) == (
        "3 assignments checked, 2 behind pace, 2 nudges queued"
    )
    rows = await _outbox(sessions)
    assert _texts(rows, ZH_ACCOUNT) == [
        "⏰ 工作进度提醒\n"
        "张庄村：下村 1/4 天，入户 2/4 户，本月还剩 6 天。\n"
        "还差下村 3 天、入户 2 户。请抓紧安排，每次走访后用 /visit 填报。"
    ]
    assert _texts(rows, EN_ACCOUNT) == [
        "⏰ Progress reminder\n"
        "张庄村: 0 of 4 days, 0 of 4 households, 6 days left.\n"
        "Still to do: 4 village day(s), 4 household(s). Please plan your visits and report "
        "each one with /visit."
    ]
    by_chat = {r.chat_id: r for r in rows}
    assert by_chat[ZH_ACCOUNT].dedup_key == (
        f"quota-nudge:{a.id}:{v1}:2026-11-w4:visit_days+households"
    )
    assert by_chat[EN_ACCOUNT].dedup_key == (
        f"quota-nudge:{b.id}:{v1}:2026-11-w4:visit_days+households"
    )
    assert all(r.not_before == now for r in rows)  # 09:00: due at once


async def test_absences_lower_the_expected_days(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _join(sessions, directory)
    a, b = directory.officers
    v1, v2, _ = (v.id for v in directory.villages)
    # Day 16: 2 days and 2 households expected. One day and two households done in each.
    for village in (v1, v2):
        await _visit(sessions, a, village, date(2026, 11, 12), 2)
    await _absence(sessions, a, v1, date(2026, 11, 10))
    await _absence(sessions, b, v1, date(2026, 11, 10))
    await _absence(sessions, a, v2, date(2026, 10, 27))  # last month's: does not count

    await quota_nudges(_ctx(sessions, _local(2026, 11, 16, 9, 0)))
    rows = await _outbox(sessions)
    # 张庄村 is on pace with the absence; 李庄村 is not.
    assert _texts(rows, ZH_ACCOUNT) == [
        "⏰ 工作进度提醒\n"
        "李庄村：下村 1/4 天，入户 2/4 户，本月还剩 15 天。\n"
        "还差下村 3 天、入户 2 户。请抓紧安排，每次走访后用 /visit 填报。"
    ]
    # Officer B is behind even so (nothing done); the quota is not lowered, and he is told.
    [english] = _texts(rows, EN_ACCOUNT)
    assert english.startswith("⏰ Progress reminder\n张庄村: 0 of 4 days, 0 of 4 households")
    assert english.endswith(
        "\nYou reported 1 missed village day(s) this month; that time still has to be made up."
    )
    assert [r.dedup_key for r in rows if r.chat_id == EN_ACCOUNT] == [
        f"quota-nudge:{b.id}:{v1}:2026-11-w3:visit_days+households"
    ]


async def test_a_month_end_and_the_county_time_zone(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _join(sessions, directory)
    a, _ = directory.officers
    v1, v2, _ = (v.id for v in directory.villages)
    for day in (5, 12, 19):
        await _visit(sessions, a, v1, date(2027, 1, day), 2)
    for day in (5, 12, 19, 26):
        await _visit(sessions, a, v2, date(2027, 1, day), 1)
    await _visit(sessions, a, v1, date(2027, 2, 2), 1)

    # The last day of January, 09:00: the whole quota is due today.
    await quota_nudges(_ctx(sessions, _local(2027, 1, 31, 9, 0)))
    assert _texts(await _outbox(sessions), ZH_ACCOUNT) == [
        "⏰ 工作进度提醒\n"
        "张庄村：下村 3/4 天，入户 6/4 户，本月还剩 1 天。\n"
        "还差下村 1 天。请抓紧安排，每次走访后用 /visit 填报。"
    ]
    # 23:30 UTC on 31 January is already 1 February in Shanghai: too early to nudge.
    late = await quota_nudges(_ctx(sessions, datetime(2027, 1, 31, 23, 30, tzinfo=UTC)))
    assert late == "no nudges before day 10 of the month (2027-02-01)"
    assert len(await _outbox(sessions)) == 2  # A's and B's 张庄村; 李庄村 is done

    # February starts fresh: January's visits do not count, February's do.
    await quota_nudges(_ctx(sessions, _local(2027, 2, 10, 9, 0)))
    rows = [r for r in await _outbox(sessions) if r.chat_id == ZH_ACCOUNT][1:]
    assert [r.payload["text"].split("\n")[1] for r in rows] == [
        "李庄村：下村 0/4 天，入户 0/4 户，本月还剩 19 天。"
    ]
    assert rows[0].dedup_key == f"quota-nudge:{a.id}:{v2}:2027-02-w2:visit_days+households"


async def test_quiet_hours_hold_nudges_until_morning(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _join(sessions, directory)
    # 16:30 UTC on the 9th is 00:30 on the 10th in Shanghai: the nudge day, in the night.
    night = datetime(2026, 11, 9, 16, 30, tzinfo=UTC)
    assert (await quota_nudges(_ctx(sessions, night))).endswith("3 nudges queued")
    rows = await _outbox(sessions)
    assert {r.not_before for r in rows} == {_local(2026, 11, 10, 8, 0)}

    # A run at 22:00 writes messages due at 08:00 the next morning ...
    await quota_nudges(_ctx(sessions, _local(2026, 11, 21, 22, 0)))
    evening = (await _outbox(sessions))[3:]
    assert len(evening) == 3
    assert {r.not_before for r in evening} == {_local(2026, 11, 22, 8, 0)}
    # ... and one at 09:00 (a new week: 22 November) messages due at once.
    nine = _local(2026, 11, 22, 9, 0)
    await quota_nudges(_ctx(sessions, nine))
    morning = (await _outbox(sessions))[6:]
    assert len(morning) == 3 and {r.not_before for r in morning} == {nine}
    # QUIET_HOURS is a setting.
    await quota_nudges(_ctx(sessions, _local(2026, 11, 29, 22, 0), quiet_hours="23:00-07:00"))
    assert {r.not_before for r in (await _outbox(sessions))[9:]} == {_local(2026, 11, 29, 22, 0)}


async def test_a_second_run_and_two_at_once_send_nothing_twice(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _join(sessions, directory)
    now = _local(2026, 11, 10, 9, 0)
    results = await asyncio.gather(
        quota_nudges(_ctx(sessions, now)), quota_nudges(_ctx(sessions, now))
    )
    assert sorted(r.rsplit(", ", 1)[1] for r in results) == [
        "0 nudges queued",
        "3 nudges queued",
    ]
    assert len(await _outbox(sessions)) == 3
    # Later the same week, still behind on the same counters: nothing new.
    again = await quota_nudges(_ctx(sessions, _local(2026, 11, 13, 9, 0)))
    assert again.endswith("3 behind pace, 0 nudges queued")
    assert len(await _outbox(sessions)) == 3
    # A different reason the same week is one more nudge: a day in the village without
    # households leaves only the households behind.
    a, _ = directory.officers
    await _visit(sessions, a, directory.villages[0].id, date(2026, 11, 13), 0)
    await quota_nudges(_ctx(sessions, _local(2026, 11, 14, 9, 0)))
    rows = await _outbox(sessions)
    assert len(rows) == 4
    assert rows[-1].dedup_key == (
        f"quota-nudge:{a.id}:{directory.villages[0].id}:2026-11-w2:households"
    )
    await quota_nudges(_ctx(sessions, _local(2026, 11, 15, 9, 0)))
    assert len(await _outbox(sessions)) == 7  # a new week: all three again


# --- village-day-reminders ------------------------------------------------------------------


async def test_village_day_reminders(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _join(sessions, directory)
    a, b = directory.officers
    v1, v2, _ = (v.id for v in directory.villages)
    await _absence(sessions, a, v2, date(2026, 11, 24))  # A cannot go to 李庄村 today
    await _absence(sessions, a, v1, date(2026, 11, 17))  # another week's
    await _absence(sessions, b, v1, date(2026, 11, 24))  # B cannot go to his only village

    wednesday = await village_day_reminders(_ctx(sessions, _local(2026, 11, 25, 8, 30)))
    assert wednesday == "2026-11-25 is not the village day (tuesday)"
    assert await _outbox(sessions) == []

    tuesday = _local(2026, 11, 24, 8, 30)
    result = await village_day_reminders(_ctx(sessions, tuesday))
    assert result == "1 officers with villages today, 1 reminders queued"
    [row] = await _outbox(sessions)
    assert (row.chat_id, row.dedup_key, row.not_before) == (
        ZH_ACCOUNT,
        f"village-day:{a.id}:2026-11-24",
        tuesday,
    )
    assert row.payload["text"] == (
        "🚓 今天是下村日，请到：张庄村。\n"
        "走访后用 /visit 填报；去不了的，请用 /absence 报备，并另找时间补上。"
    )
    both = await asyncio.gather(
        village_day_reminders(_ctx(sessions, tuesday)),
        village_day_reminders(_ctx(sessions, _local(2026, 11, 24, 11, 0))),
    )
    assert [r.endswith("0 reminders queued") for r in both] == [True, True]
    assert len(await _outbox(sessions)) == 1

    # VILLAGE_DAY=wednesday, the next week: every village, in each officer's language.
    await village_day_reminders(_ctx(sessions, _local(2026, 12, 2, 8, 30), village_day="wednesday"))
    rows = (await _outbox(sessions))[1:]
    assert _texts(rows, ZH_ACCOUNT) == [
        "🚓 今天是下村日，请到：张庄村、李庄村。\n"
        "走访后用 /visit 填报；去不了的，请用 /absence 报备，并另找时间补上。"
    ]
    assert _texts(rows, EN_ACCOUNT) == [
        "🚓 Today is village day. Your villages today: 张庄村.\n"
        "Report each visit with /visit; if you cannot go, report it with /absence and make "
        "the time up."
    ]
