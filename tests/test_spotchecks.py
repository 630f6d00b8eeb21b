"""Weekly spot checks: the spot-checks job drawing each supervisor's sample, and /spotcheck,
where the supervisor verifies or flags each report and a flag reaches the officer."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.handlers.spotcheck import SpotCheckCb
from bot.i18n import Translator
from scheduler.jobs import JobContext, all_jobs
from scheduler.spotchecks import dedup_key, draw_spot_checks
from storage import invites, spotchecks, visits
from storage.models import (
    OutboxMessage,
    SpotCheck,
    Station,
    Supervisor,
    SupervisorStation,
    User,
    VisitReport,
)
from tests.botapi import BotApiServer, SimUser
from tests.botapi.state import SentMessage
from tests.factories import Directory
from tests.harness import Chat, make_settings, running_chat

ZH, EN = Translator("zh"), Translator("en")
COUNTY = ZoneInfo("Asia/Shanghai")  # the settings' default time zone
MONDAY = date(2026, 11, 23)  # the check week; its sample comes from 11-16 to 11-22


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), COUNTY)


JOB_AT = local(MONDAY, 8, 10)
IN_WEEK = local(date(2026, 11, 18), 16, 30)  # Wednesday afternoon of the reviewed week


# --- helpers -------------------------------------------------------------------------------


async def _run(sessions: async_sessionmaker[AsyncSession], now: datetime, **settings: Any) -> str:
    return await draw_spot_checks(JobContext(sessions, make_settings(**settings), now))


async def _report(
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    submitted: datetime,
    *,
    officer: int = 0,
    village: int = 0,
    photos: Sequence[tuple[str, str]] = (),
    far: bool = False,
    notes: str | None = None,
) -> int:
    async with sessions() as s, s.begin():
        saved = await visits.save_visit(
            s,
            visits.NewVisit(
                draft_id=secrets.token_hex(8),
                officer_id=directory.officers[officer].id,
                village_id=directory.villages[village].id,
                visit_date=submitted.astimezone(COUNTY).date(),
                hours=Decimal("2.5"),
                households=3,
                activities={"patrol": 2, "household_visit": 1},
                latitude=34.13 if far else 34.1,
                longitude=113.2,
                # A village without a recorded centre has no distance.
                distance_m=None
                if directory.villages[village].latitude is None
                else 3336
                if far
                else 12,
                far_from_village=far,
                notes=notes,
                submitted_by=1,
                photos=photos,
            ),
            if_assigned=False,  # a report of the past, whoever is assigned now
        )
        assert saved is not None  # the officer is assigned to the village
        report_id, _ = saved
        # The bot stamps submitted_at with the database's clock; the tests need their own.
        await s.execute(
            update(VisitReport).where(VisitReport.id == report_id).values(submitted_at=submitted)
        )
    return report_id


async def _supervisor_row(
    sessions: async_sessionmaker[AsyncSession], stations: Sequence[Station]
) -> int:
    """A supervisor who has not joined the bot."""
    async with sessions() as s, s.begin():
        supervisor = Supervisor(name=None, county_wide=not stations)
        s.add(supervisor)
        await s.flush()
        s.add_all(
            SupervisorStation(supervisor_id=supervisor.id, station_id=st.id) for st in stations
        )
    return supervisor.id


async def _supervisor(
    chat: Chat,
    sessions: async_sessionmaker[AsyncSession],
    stations: list[str],
    name: str | None = None,
    **kw: str,
) -> SimUser:
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_supervisor_invite(
            s,
            station_codes=stations,
            county_wide=not stations,
            name=name,
            now=chat.clock(),
            ttl=timedelta(days=7),
        )
    user = chat.server.user(**kw)  # type: ignore[arg-type]
    await chat.say(user, f"/start {issued.payload}")
    return user


async def _officer(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], badge: str, **kw: str
) -> SimUser:
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_officer_invite(
            s, badge=badge, now=chat.clock(), ttl=timedelta(days=7)
        )
    user = chat.server.user(**kw)  # type: ignore[arg-type]
    await chat.say(user, f"/start {issued.payload}")
    return user


async def _supervisor_id(sessions: async_sessionmaker[AsyncSession], user: SimUser) -> int:
    async with sessions() as s:
        found = await s.scalar(select(User.supervisor_id).where(User.id == user.id))
    assert found is not None
    return found


async def _photo(chat: Chat, user: SimUser) -> tuple[str, str]:
    """A photo the test server knows (so that the bot can send it on), not sent to the bot."""
    update_ = await chat.server.send_photo(user)
    largest = update_["message"]["photo"][-1]
    return largest["file_id"], largest["file_unique_id"]


async def _checks(sessions: async_sessionmaker[AsyncSession]) -> list[SpotCheck]:
    async with sessions() as s:
        return list(await s.scalars(select(SpotCheck).order_by(SpotCheck.id)))


async def _drawn(sessions: async_sessionmaker[AsyncSession], supervisor_id: int) -> set[int]:
    return {c.visit_report_id for c in await _checks(sessions) if c.supervisor_id == supervisor_id}


async def _outbox(sessions: async_sessionmaker[AsyncSession]) -> list[OutboxMessage]:
    async with sessions() as s:
        return list(await s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def _answer(chat: Chat, update_: dict[str, Any]) -> str | None:
    answer = chat.server.callback_answer(update_)
    return None if answer is None else answer["text"]


def _card(chat: Chat, user: SimUser, report_id: int) -> SentMessage:
    """The latest card of this report sent to the user."""
    ref = f"V{report_id:06d}"
    return [m for m in chat.server.messages_to(user) if ref in (m.text or "").split("\n")[0]][-1]


async def _press(chat: Chat, user: SimUser, message_id: int, data: str) -> dict[str, Any]:
    return await chat.send(await chat.server.press(user, message_id, data, force=True))


# --- drawing -------------------------------------------------------------------------------


def test_the_job_is_registered_for_monday_morning() -> None:
    job = all_jobs()["spot-checks"]
    assert job.run is draw_spot_checks
    assert job.cron(make_settings()) == {"day_of_week": "mon", "hour": "8", "minute": "10"}


async def test_week_bounds_and_scope_in_the_county_time_zone(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    s01, s02 = directory.station, directory.other_station
    chief = await _supervisor_row(sessions, [s01])
    other = await _supervisor_row(sessions, [s02])
    county = await _supervisor_row(sessions, [])
    first = await _report(sessions, directory, local(date(2026, 11, 16), 0, 0))
    middle = await _report(sessions, directory, IN_WEEK, village=1)
    # Sunday 23:30 in Shanghai (15:30 UTC) is still the reviewed week …
    sunday_night = await _report(sessions, directory, local(date(2026, 11, 22), 23, 30))
    # … and Monday 00:30 (Sunday 16:30 UTC) is the next one; so is 23:59 the Sunday before.
    monday_early = await _report(sessions, directory, local(MONDAY, 0, 30))
    week_before = await _report(sessions, directory, local(date(2026, 11, 15), 23, 59))
    east = await _report(sessions, directory, IN_WEEK, officer=1, village=2)

    outcome = await _run(sessions, JOB_AT, spot_check_size=10)
    assert outcome == "8 visit reports drawn for 3 supervisors (week of 2026-11-23); 0 told"
    # Fewer reports than the sample size: all of them.
    assert await _drawn(sessions, chief) == {first, middle, sunday_night}
    assert await _drawn(sessions, other) == {east}  # another station's reports, never
    assert await _drawn(sessions, county) == {first, middle, sunday_night, east}
    assert {c.week for c in await _checks(sessions)} == {MONDAY}
    assert {c.status for c in await _checks(sessions)} == {"pending"}

    # A run on a Wednesday of the same week draws for that week: nothing new.
    assert (await _run(sessions, local(MONDAY + timedelta(days=2), 14))).startswith("0 visit")
    # The next Monday draws the next week, Monday 00:30 included.
    await _run(sessions, JOB_AT + timedelta(days=7), spot_check_size=10)
    next_week = [c for c in await _checks(sessions) if c.week == MONDAY + timedelta(days=7)]
    assert {c.visit_report_id for c in next_week} == {monday_early}
    assert week_before not in {c.visit_report_id for c in await _checks(sessions)}


async def test_the_sample_has_the_configured_size_and_is_random(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    reports = {
        await _report(sessions, directory, IN_WEEK + timedelta(minutes=i), village=i % 2)
        for i in range(8)
    }
    chiefs = [await _supervisor_row(sessions, [directory.station]) for _ in range(6)]
    outcome = await _run(sessions, JOB_AT)  # SPOT_CHECK_SIZE defaults to 5
    assert outcome.startswith("30 visit reports drawn for 6 supervisors")
    samples = [await _drawn(sessions, chief) for chief in chiefs]
    assert all(len(sample) == 5 and sample <= reports for sample in samples)
    # 56 possible samples of 5 out of 8: six identical ones would mean it is not random.
    assert len({frozenset(sample) for sample in samples}) > 1

    later = {
        await _report(sessions, directory, IN_WEEK + timedelta(days=7, minutes=i)) for i in range(4)
    }
    await _run(sessions, JOB_AT + timedelta(days=7), spot_check_size=3)
    for chief in chiefs:
        assert len(await _drawn(sessions, chief) & later) == 3


async def test_no_double_draw_and_one_message_per_supervisor_and_week(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    chat.clock.now = local(date(2026, 11, 20), 10)
    chief = await _supervisor(chat, sessions, ["S01"], name="刘所长")
    english = await _supervisor(chat, sessions, [], language_code="en")
    idle = await _supervisor(chat, sessions, ["S02"])  # no reports in their station
    absent = await _supervisor_row(sessions, [directory.station])  # not joined
    for i in range(7):
        await _report(sessions, directory, IN_WEEK + timedelta(hours=i))
    await _report(sessions, directory, IN_WEEK, officer=1, village=2)  # S02's only report

    # Two processes at once: each supervisor's draw is serialised, so it happens once,
    # in one process or the other.
    outcomes = await asyncio.gather(_run(sessions, JOB_AT), _run(sessions, JOB_AT))
    assert sum(int(line.split()[0]) for line in outcomes) == 16
    assert sum(int(line.split("; ")[1].split()[0]) for line in outcomes) == 3
    assert len(await _checks(sessions)) == 16
    chief_id = await _supervisor_id(sessions, chief)
    assert len(await _drawn(sessions, chief_id)) == 5
    assert len(await _drawn(sessions, absent)) == 5
    assert len(await _drawn(sessions, await _supervisor_id(sessions, idle))) == 1
    queued = await _outbox(sessions)
    assert len(queued) == 3
    assert {m.chat_id for m in queued} == {chief.id, english.id, idle.id}
    assert all(m.not_before == JOB_AT for m in queued)  # 08:10 is outside the quiet hours
    assert dedup_key(chief_id, MONDAY) in {m.dedup_key for m in queued}

    assert await chat.deliver() == 3
    assert chat.last_text(chief) == ZH("spotcheck.drawn", count=5)
    assert chat.last_text(english) == EN("spotcheck.drawn", count=5)
    assert chat.last_text(idle) == ZH("spotcheck.drawn", count=1)

    rows = [(c.id, c.visit_report_id) for c in await _checks(sessions)]
    assert (await _run(sessions, JOB_AT + timedelta(hours=2))).startswith("0 visit reports")
    assert [(c.id, c.visit_report_id) for c in await _checks(sessions)] == rows
    # Even a week drawn afresh (its sample deleted by hand) tells each supervisor once.
    async with sessions() as s, s.begin():
        await s.execute(delete(SpotCheck))
    assert (await _run(sessions, JOB_AT)).endswith("; 0 told")
    assert len(await _outbox(sessions)) == 3
    assert await chat.deliver() == 0


async def test_quiet_hours_and_nothing_to_draw(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    chat.clock.now = local(date(2026, 11, 20), 10)
    chief = await _supervisor(chat, sessions, ["S01"])
    idle = await _supervisor(chat, sessions, ["S02"])
    await _report(sessions, directory, IN_WEEK)
    await _report(sessions, directory, IN_WEEK, village=1)
    # Run at 07:00 (e.g. on start-up after a night down): it waits for the end of the quiet
    # hours at 08:00.
    outcome = await _run(sessions, local(MONDAY, 7))
    assert outcome == "2 visit reports drawn for 1 supervisors (week of 2026-11-23); 1 told"
    [message] = await _outbox(sessions)
    assert message.chat_id == chief.id and message.not_before == local(MONDAY, 8)
    assert message.payload["text"] == ZH("spotcheck.drawn", count=2)
    assert await _drawn(sessions, await _supervisor_id(sessions, idle)) == set()


# --- reviewing -----------------------------------------------------------------------------


async def test_verify_and_flag_with_a_comment_that_reaches_the_officer(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    chat.clock.now = local(date(2026, 11, 20), 10)
    officer = await _officer(chat, sessions, "012345")
    chief = await _supervisor(chat, sessions, ["S01"], name="刘所长")
    shared = await _photo(chat, officer)
    await _report(sessions, directory, local(date(2026, 11, 2), 10), photos=[shared])
    photos = [shared, *[await _photo(chat, officer) for _ in range(4)]]
    doubtful = await _report(
        sessions, directory, IN_WEEK, photos=photos, far=True, notes="走访了村委会和五户村民"
    )
    plain = await _report(sessions, directory, IN_WEEK + timedelta(hours=3), village=1)
    await _run(sessions, JOB_AT)
    await chat.deliver()

    chat.clock.now = local(MONDAY, 10)
    before = len(chat.server.messages_to(chief))
    await chat.say(chief, ZH("button.spotcheck"))
    sent = chat.server.messages_to(chief)[before:]
    album, card = sent[:-1], sent[-1]
    assert len(album) == 4  # the first four of five photos, as one album
    assert all(m.raw.get("photo") and m.raw.get("media_group_id") for m in album)
    assert album[0].caption == ZH("spotcheck.photos_caption", ref=f"V{doubtful:06d}")
    assert card.text == "\n".join(
        [
            ZH("spotcheck.card_title", ref=f"V{doubtful:06d}", left=2),
            "民警：王警官（警号 012345）",
            "村（社区）：张庄村",
            "日期：2026-11-18",
            "时长：2.5 小时",
            "走访户数：3",
            "工作内容：入户走访、巡逻巡查 ×2",
            "定位：已定位，距村中心约 3336 米",
            ZH("spotcheck.far"),
            "照片：共 5 张，上方显示前 4 张",
            ZH("spotcheck.reused"),
            "备注：走访了村委会和五户村民",
            "提交时间：2026-11-18 16:30",
        ]
    )
    assert card.buttons == [ZH("spotcheck.verify"), ZH("spotcheck.flag")]

    await chat.click(chief, ZH("spotcheck.flag"))
    ref = f"V{doubtful:06d}"
    assert chat.last_text(chief) == ZH("spotcheck.ask_comment", ref=ref, limit=1000)
    assert chat.keyboard_labels(chief) == [ZH("flow.cancel")]
    # Wrong input keeps the step.
    await chat.send(await chat.server.send_sticker(chief))
    assert chat.last_text(chief) == ZH("spotcheck.comment_text_only")
    await chat.send(await chat.server.send_photo(chief))
    assert chat.last_text(chief) == ZH("spotcheck.comment_text_only")
    await chat.say(chief, "照" * 4096)
    assert chat.last_text(chief) == ZH("flow.text_too_long", limit=1000)
    await chat.say(chief, "\x00")
    assert chat.last_text(chief) == ZH("flow.text_empty")
    await chat.say(chief, "👎👎")
    assert chat.last_text(chief) == ZH("spotcheck.comment_no_words")
    assert {c.status for c in await _checks(sessions)} == {"pending"}

    comment = "照片与11月2日的报告重复\x00，请说明情况"
    before = len(chat.server.messages_to(chief))
    await chat.say(chief, comment)
    done, next_card = chat.server.messages_to(chief)[before:]
    assert done.text == ZH("spotcheck.flagged_done", ref=ref)
    assert chat.keyboard_labels(chief)[0] == ZH("button.team")  # the menu is back
    assert next_card.text is not None
    assert next_card.text.startswith(ZH("spotcheck.card_title", ref=f"V{plain:06d}", left=1))
    assert "照片：0 张" in next_card.text and "备注：无" in next_card.text
    assert "李庄村" in next_card.text and ZH("spotcheck.far") not in next_card.text
    assert _card(chat, chief, doubtful).buttons == []  # the flagged card lost its buttons

    press = await chat.click(chief, ZH("spotcheck.verify"))
    assert _answer(chat, press) == ZH("spotcheck.verified_done", ref=f"V{plain:06d}")
    assert chat.last_text(chief) == ZH("spotcheck.done", verified=1, flagged=1)
    assert _card(chat, chief, plain).buttons == []

    checks = {c.visit_report_id: c for c in await _checks(sessions)}
    flagged, verified = checks[doubtful], checks[plain]
    assert (flagged.status, flagged.comment) == ("flagged", "照片与11月2日的报告重复，请说明情况")
    assert (verified.status, verified.comment) == ("verified", None)
    assert flagged.decided_by == verified.decided_by == chief.id
    assert flagged.decided_at == verified.decided_at == chat.clock()

    assert await chat.deliver() == 1
    assert chat.last_text(officer) == ZH(
        "spotcheck.officer_flagged",
        ref=ref,
        village="张庄村",
        date="11-18",
        who="督导人员刘所长",
        comment="照片与11月2日的报告重复，请说明情况",
    )
    await chat.say(chief, "/spotcheck")  # all done: the week's tally again
    assert chat.last_text(chief) == ZH("spotcheck.done", verified=1, flagged=1)


async def test_drawn_on_demand_in_english_and_cancel_leaves_it_pending(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    chat.clock.now = local(MONDAY, 7, 30)  # before the job's 08:10
    officer = await _officer(chat, sessions, "067890", language_code="en")
    chief = await _supervisor(chat, sessions, [], language_code="en")  # county-wide, unnamed
    photo = await _photo(chat, officer)
    report = await _report(sessions, directory, IN_WEEK, officer=1, village=2, photos=[photo])
    await chat.say(chief, "/spotcheck")
    ref = f"V{report:06d}"
    shown, card = chat.server.messages_to(chief)[-2:]
    assert shown.raw.get("photo") and "media_group_id" not in shown.raw
    assert shown.caption == EN("spotcheck.photos_caption", ref=ref)
    assert card.text is not None
    assert card.text.startswith(EN("spotcheck.card_title", ref=ref, left=1))
    assert "Officer: 赵警官 (badge 067890)" in card.text
    assert EN("visit.field.location", value=EN("visit.location_no_centre")) in card.text
    assert "Activities: Household visits, Patrol ×2" in card.text
    [drawn] = await _checks(sessions)
    assert (drawn.visit_report_id, drawn.week, drawn.status) == (report, MONDAY, "pending")

    # The job, when it runs, finds the week drawn: no second sample, no message.
    assert (await _run(sessions, JOB_AT)).startswith("0 visit reports")
    assert await _outbox(sessions) == []

    await chat.click(chief, EN("spotcheck.flag"))
    await chat.say(chief, "/cancel")
    assert chat.last_text(chief) == EN("cancel.done")
    assert [c.status for c in await _checks(sessions)] == ["pending"]
    await chat.say(chief, EN("button.spotcheck"))
    assert chat.last_text(chief).startswith(EN("spotcheck.card_title", ref=ref, left=1))
    await chat.click(chief, EN("spotcheck.flag"))
    await chat.say(chief, "Nobody in Dongguan remembers this visit.")
    assert chat.texts(chief)[-2] == EN("spotcheck.flagged_done", ref=ref)
    assert chat.last_text(chief) == EN("spotcheck.done", verified=0, flagged=1)

    await chat.deliver()
    assert chat.last_text(officer) == EN(
        "spotcheck.officer_flagged",
        ref=ref,
        village="东关社区",
        date="11-18",
        who="Supervisor",
        comment="Nobody in Dongguan remembers this visit.",
    )


async def test_forged_stale_and_double_presses_change_nothing(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    chat.clock.now = local(MONDAY, 9)
    chief = await _supervisor(chat, sessions, ["S01"])
    intruder = await _supervisor(chat, sessions, ["S02"], language_code="en")
    officer = await _officer(chat, sessions, "067890", language_code="en")
    first = await _report(sessions, directory, IN_WEEK)  # officer 012345 has not joined
    second = await _report(sessions, directory, IN_WEEK + timedelta(hours=1))
    await chat.say(chief, "/spotcheck")
    checks = {c.visit_report_id: c.id for c in await _checks(sessions)}
    card = _card(chat, chief, first)

    anchor = chat.server.last_message_to(intruder).message_id
    for data in (
        SpotCheckCb(action="ok", check_id=checks[first]).pack(),  # another supervisor's
        SpotCheckCb(action="flag", check_id=checks[first]).pack(),
        SpotCheckCb(action="ok", check_id=checks[second] + 99).pack(),  # no such check
        SpotCheckCb(action="ok", check_id=2**31).pack(),  # beyond the column
        "spot:ok:abc",
    ):
        assert _answer(chat, await _press(chat, intruder, anchor, data)) == EN("callback.stale")
    zap = SpotCheckCb(action="zap", check_id=checks[first]).pack()  # an unknown action
    assert _answer(chat, await _press(chat, chief, card.message_id, zap)) == ZH("callback.stale")
    # Not a supervisor: the button is not theirs either.
    ok = SpotCheckCb(action="ok", check_id=checks[first]).pack()
    officer_anchor = chat.server.last_message_to(officer).message_id
    assert _answer(chat, await _press(chat, officer, officer_anchor, ok)) == EN("callback.stale")
    await chat.say(officer, "/spotcheck")
    assert chat.last_text(officer) == EN("fallback.unknown")
    assert {c.status for c in await _checks(sessions)} == {"pending"}

    # A double tap on Flag: the second one finds the comment under way.
    flag = SpotCheckCb(action="flag", check_id=checks[first]).pack()
    await _press(chat, chief, card.message_id, flag)
    again = await _press(chat, chief, card.message_id, flag)
    assert _answer(chat, again) == ZH("fallback.in_flow")
    await chat.say(chief, "没有定位，也没有照片")
    # The officer has not joined the bot: recorded, and the supervisor is told so.
    assert chat.texts(chief)[-2] == ZH("spotcheck.flagged_no_account", ref=f"V{first:06d}")
    assert await _outbox(sessions) == []

    # The old card's buttons (gone from the chat, pressed anyway): already decided.
    for data in (ok, flag):
        late = await _press(chat, chief, card.message_id, data)
        assert _answer(chat, late) == ZH(
            "spotcheck.already", ref=f"V{first:06d}", status=ZH("spotcheck.status.flagged")
        )
    # A double tap on Verify decides once and shows the tally once.
    verify = SpotCheckCb(action="ok", check_id=checks[second]).pack()
    second_card = _card(chat, chief, second).message_id
    await _press(chat, chief, second_card, verify)
    decided_at = {c.id: c.decided_at for c in await _checks(sessions)}
    chat.clock.now += timedelta(minutes=5)
    late = await _press(chat, chief, second_card, verify)
    assert _answer(chat, late) == ZH(
        "spotcheck.already", ref=f"V{second:06d}", status=ZH("spotcheck.status.verified")
    )
    assert chat.texts(chief).count(ZH("spotcheck.done", verified=1, flagged=1)) == 1
    checks_now = await _checks(sessions)
    assert {c.id: c.decided_at for c in checks_now} == decided_at
    assert {c.visit_report_id: c.status for c in checks_now} == {
        first: "flagged",
        second: "verified",
    }


async def test_nothing_to_check(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    chat.clock.now = local(MONDAY, 9)
    chief = await _supervisor(chat, sessions, ["S02"])
    await _report(sessions, directory, IN_WEEK)  # in S01, not theirs
    await chat.say(chief, "/spotcheck")
    assert chat.last_text(chief) == ZH("spotcheck.nothing", first="11-16", last="11-22")
    assert await _checks(sessions) == []


async def test_spot_checks_turned_off(
    botapi: BotApiServer, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _report(sessions, directory, IN_WEEK)
    async with running_chat(botapi, sessions, spot_check_size=0) as chat:
        chat.clock.now = local(MONDAY, 9)
        chief = await _supervisor(chat, sessions, ["S01"], language_code="en")
        await chat.say(chief, "/spotcheck")
        assert chat.last_text(chief) == EN("spotcheck.off")
    assert (await _run(sessions, JOB_AT, spot_check_size=0)).startswith("0 visit reports")
    assert await _checks(sessions) == []


async def test_a_verdict_is_recorded_once_and_only_by_its_supervisor(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    chief = await _supervisor_row(sessions, [directory.station])
    other = await _supervisor_row(sessions, [])
    report = await _report(sessions, directory, IN_WEEK)
    async with sessions() as s, s.begin():
        assert await spotchecks.draw(s, supervisor_id=chief, week=MONDAY, tz=COUNTY, size=5) == 1
        assert await spotchecks.draw(s, supervisor_id=chief, week=MONDAY, tz=COUNTY, size=5) is None
    [check] = await _checks(sessions)
    decide = partial(spotchecks.decide, check_id=check.id, user_id=7, now=JOB_AT)
    async with sessions() as s, s.begin():
        with pytest.raises(ValueError):
            await decide(s, supervisor_id=chief, verdict=spotchecks.FLAGGED, comment=None)
        assert not await decide(s, supervisor_id=other, verdict=spotchecks.VERIFIED, comment=None)
        assert await spotchecks.check_for(s, check_id=check.id, supervisor_id=other) is None
        assert await decide(s, supervisor_id=chief, verdict=spotchecks.FLAGGED, comment="重复")
        assert not await decide(s, supervisor_id=chief, verdict=spotchecks.VERIFIED, comment=None)
        tally = await spotchecks.tally(s, supervisor_id=chief, week=MONDAY)
        assert (tally.verified, tally.flagged, tally.pending) == (0, 1, 0)
    [check] = await _checks(sessions)
    assert (check.visit_report_id, check.status, check.comment) == (report, "flagged", "重复")
