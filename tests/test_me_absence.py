"""/me (progress against the quota) and /absence (a village day that cannot happen), through
the real Dispatcher, HTTP and PostgreSQL; and the coming-day rules they rest on."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.i18n import LOCALES, Translator
from core.activities import PROBLEM_SOLVING, Activity
from core.days import check_coming_day, coming_days, parse_coming_date
from storage import absences, invites, visits
from storage.models import Absence, Hazard, QuotaOverride, VisitActivity, VisitReport
from tests.botapi import SimUser
from tests.factories import Directory
from tests.harness import Chat

ZH, EN = Translator("zh"), Translator("en")
# Saturday 21 November 2026, 10:00 in Asia/Shanghai: day 21 of 30, 10 days left.
NOW = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
TODAY = date(2026, 11, 21)


# --- core.days -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-25", date(2026, 11, 25)),
        ("2026/11/25", date(2026, 11, 25)),
        ("２０２６－１１－２５", date(2026, 11, 25)),
        ("2026年11月25日", date(2026, 11, 25)),
        ("2026-11-19", date(2026, 11, 19)),  # with a year, the day as written
        ("11-25", date(2026, 11, 25)),
        ("11/21", date(2026, 11, 21)),
        ("11-20", date(2027, 11, 20)),  # without a year: the next such date, never a past one
        ("01-05", date(2027, 1, 5)),
        ("12月3日", date(2026, 12, 3)),
        ("12 月 3 号", date(2026, 12, 3)),
        ("十二月三日", date(2026, 12, 3)),
        ("十一月二十五号", date(2026, 11, 25)),
        ("25日", date(2026, 11, 25)),
        ("15号", date(2026, 12, 15)),
        ("31日", date(2026, 12, 31)),
        ("2-29", date(2028, 2, 29)),
        ("今天", TODAY),
        ("明天", date(2026, 11, 22)),
        ("后天", date(2026, 11, 23)),
        ("Tomorrow", date(2026, 11, 22)),
        ("2-30", None),
        ("2026-02-30", None),
        ("13-01", None),
        ("32日", None),
        ("next week", None),
        ("", None),
        ("\x00", None),
        ("11-25\x00", None),
        ("1" * 40, None),
        ("🗓", None),
    ],
)
def test_parse_coming_date(text: str, expected: date | None) -> None:
    assert parse_coming_date(text, today=TODAY) == expected


def test_check_coming_day() -> None:
    assert check_coming_day(TODAY, today=TODAY) is None
    assert check_coming_day(TODAY + timedelta(days=31), today=TODAY) is None
    assert check_coming_day(TODAY + timedelta(days=32), today=TODAY) == "too_far"
    assert check_coming_day(TODAY - timedelta(days=1), today=TODAY) == "past"
    assert check_coming_day(TODAY + timedelta(days=3), today=TODAY, ahead=2) == "too_far"


def test_coming_days() -> None:
    days = coming_days(TODAY, 7)
    assert days[0] == TODAY and days[-1] == date(2026, 11, 28) and len(days) == 8


@pytest.mark.parametrize("locale", LOCALES)
def test_composed_keys_exist(locale: str) -> None:
    t = Translator(locale)
    assert len({t(f"absence.weekday.{n}") for n in range(7)}) == 7
    for name in ("visit_days", "households", "patrols", "problems_solved"):
        assert t(f"me.counter.{name}")
    for problem in ("past", "too_far"):
        assert t(f"absence.day_{problem}", days=31, last="12-22")
    for step in ("day", "reason"):
        assert t(f"absence.bad_{step}")


# --- helpers -------------------------------------------------------------------------------


async def _officer(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], badge: str, **kw: str
) -> SimUser:
    chat.clock.now = NOW
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_officer_invite(
            s, badge=badge, now=chat.clock(), ttl=timedelta(days=7)
        )
    user = chat.server.user(**kw)  # type: ignore[arg-type]
    await chat.say(user, f"/start {issued.payload}")
    return user


_drafts = iter(range(1, 10_000))


async def _visit(
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    *,
    village: int,
    day: date,
    households: int = 1,
    officer: int = 0,
    activities: dict[str, int] | None = None,
) -> None:
    async with sessions() as s, s.begin():
        report = VisitReport(
            draft_id=f"seed{next(_drafts)}",
            officer_id=directory.officers[officer].id,
            village_id=directory.villages[village].id,
            visit_date=day,
            hours=Decimal(3),
            households=households,
            submitted_by=1,
        )
        s.add(report)
        await s.flush()
        s.add_all(
            VisitActivity(report_id=report.id, code=code, count=count)
            for code, count in (activities or {}).items()
        )


async def _hazard(
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    *,
    status: str = "open",
    officer: int = 0,
) -> None:
    async with sessions() as s, s.begin():
        s.add(
            Hazard(
                draft_id=f"hz{next(_drafts)}",
                officer_id=directory.officers[officer].id,
                village_id=directory.villages[0].id,
                category="fire",
                severity="low",
                description="堆放柴草",
                status=status,
                reported_by=1,
            )
        )


async def _absence_rows(sessions: async_sessionmaker[AsyncSession]) -> list[Absence]:
    async with sessions() as s:
        return list(await s.scalars(select(Absence).order_by(Absence.id)))


def _buttons(message: object) -> list[tuple[str, str]]:
    markup = getattr(message, "reply_markup", None) or {}
    return [
        (b["text"], b["callback_data"]) for row in markup.get("inline_keyboard", []) for b in row
    ]


def _block(text: str, village: str) -> str:
    """The lines of /me about one village."""
    return next(b for b in text.split("\n\n") if b.startswith(ZH("me.village", village=village)))


# --- /me -----------------------------------------------------------------------------------


async def _seed_month(sessions: async_sessionmaker[AsyncSession], directory: Directory) -> None:
    # 张庄村: one day (11 households) this month; October met.
    await _visit(sessions, directory, village=0, day=date(2026, 11, 10), households=11)
    for d in (1, 8, 15, 22):
        await _visit(sessions, directory, village=0, day=date(2026, 10, d), households=2)
    # 李庄村: nothing this month; October short of days and households.
    await _visit(sessions, directory, village=1, day=date(2026, 10, 6), households=1)
    await _visit(sessions, directory, village=1, day=date(2026, 10, 6), households=1)  # same day
    # The other officer's visit to 张庄村 is theirs, not officer A's.
    await _visit(sessions, directory, village=0, day=date(2026, 11, 11), officer=1, households=9)


async def test_me_shows_both_months_in_chinese(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    await _seed_month(sessions, directory)
    await _hazard(sessions, directory)
    await _hazard(sessions, directory)
    await _hazard(sessions, directory, status="rectified")
    await _hazard(sessions, directory, officer=1)

    before = len(chat.server.messages_to(officer))
    await chat.click(officer, ZH("button.me"))
    assert len(chat.server.messages_to(officer)) == before + 1  # one message
    text = chat.last_text(officer)
    assert text.startswith(ZH("me.title", date="2026-11-21", days_left="本月还剩 10 天"))
    zhang, li = _block(text, "张庄村"), _block(text, "李庄村")
    assert zhang.splitlines() == [
        "🏘 张庄村",
        "本月：下村 1/4 天，入户 11/4 户",
        "⚠️ 进度落后：下村天数",  # 2 days expected by the 21st of 30
        "上月：下村 4/4 天，入户 8/4 户 ✅ 已完成",
    ]
    assert li.splitlines() == [
        "🏘 李庄村",
        "本月：下村 0/4 天，入户 0/4 户",
        "⚠️ 进度落后：下村天数、入户户数",
        "上月：下村 1/4 天，入户 2/4 户 ❌ 未完成：下村天数、入户户数",
    ]
    assert text.endswith(
        "🏅 本月得分：16 分\n"
        "🏆 排名每 10 分钟更新一次，下次更新后显示您的排名。\n"  # no refresh yet
        "得分构成：下村天数 5 分，入户走访 11 分\n"
        "🗓 本月报备未能下村：0 天\n🛠 未整改隐患：2 处"
    )
    assert chat.keyboard_labels(officer)[0] == ZH("button.visit")


async def test_me_in_english_with_station_and_village_quotas(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345", language_code="en")
    assert Activity.DISPUTE_MEDIATION in PROBLEM_SOLVING
    await _visit(
        sessions,
        directory,
        village=0,
        day=date(2026, 11, 3),
        households=6,
        activities={Activity.PATROL.value: 2, Activity.DISPUTE_MEDIATION.value: 3},
    )
    await _visit(sessions, directory, village=0, day=date(2026, 11, 17), households=5)
    async with sessions() as s, s.begin():
        s.add(QuotaOverride(station_id=directory.station.id, profile="changde"))
        s.add(QuotaOverride(village_id=directory.villages[1].id, visit_days=6, households=0))

    await chat.say(officer, "/me")
    text = chat.last_text(officer)
    assert text.startswith(EN("me.title", date="2026-11-21", days_left="10 days left"))
    zhang = text.split("\n\n")[1].splitlines()
    assert zhang == [
        "🏘 张庄村",
        "This month: 2 of 4 days, 11 of 10 households, 2 of 2 patrols, 3 of 5 problems solved",
        "👍 On pace",  # expected by now: 2 days, 6 households, 1 patrol, 3 problems
        "Last month: 0 of 4 days, 0 of 10 households, 0 of 2 patrols, 0 of 5 problems solved"
        " ❌ missed: village days, households, patrols, problems solved",
    ]
    li = text.split("\n\n")[2].splitlines()
    assert li[1] == "This month: 0 of 6 days, 0 of 2 patrols, 0 of 5 problems solved"
    assert li[2] == "⚠️ Behind pace: village days, patrols, problems solved"
    assert text.endswith(EN("me.hazards", count=0))


async def test_behind_pace_follows_the_clock_and_the_absences(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "067890")  # only 张庄村
    await _visit(sessions, directory, village=0, day=date(2026, 11, 2), officer=1, households=4)

    chat.clock.now = datetime(2026, 11, 6, 2, tzinfo=UTC)  # grace days: nothing expected yet
    await chat.say(officer, "/me")
    assert ZH("me.on_pace") in chat.last_text(officer)
    chat.clock.now = NOW  # 2 days expected by the 21st
    await chat.say(officer, "/me")
    assert "⚠️ 进度落后：下村天数" in chat.last_text(officer)

    async with sessions() as s, s.begin():  # one village day reported missed
        await absences.save_absence(
            s,
            draft_id="abs1",
            officer_id=directory.officers[1].id,
            village_id=directory.villages[0].id,
            day=date(2026, 11, 17),
            reason="集中培训",
        )
    await chat.say(officer, "/me")
    text = chat.last_text(officer)
    assert "进度落后" not in text and ZH("me.on_pace") in text
    assert ZH("me.village_absences", count=1) in text
    assert ZH("me.absences", count=1) in text
    assert "下村 1/4 天" in text  # the absence is not a visit day

    chat.clock.now = datetime(2026, 11, 30, 2, tzinfo=UTC)  # the last day: the whole quota
    await chat.say(officer, "/me")
    assert "⚠️ 进度落后：下村天数" in chat.last_text(officer)

    await _visit(sessions, directory, village=0, day=date(2026, 11, 30), officer=1)
    await _visit(sessions, directory, village=0, day=date(2026, 11, 29), officer=1)
    await _visit(sessions, directory, village=0, day=date(2026, 11, 28), officer=1)
    await chat.say(officer, "/me")
    assert "本月：下村 4/4 天，入户 7/4 户\n✅ 已完成" in chat.last_text(officer)


async def test_me_is_for_officers_outside_flows(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    stranger = chat.server.user(language_code="en")
    await chat.say(stranger, "/me")
    assert chat.last_text(stranger) == EN("fallback.stranger")
    officer = await _officer(chat, sessions, "012345")
    await chat.say(officer, "/absence")
    await chat.say(officer, "/me")
    assert chat.last_text(officer) == ZH("fallback.in_flow")


# --- /absence ------------------------------------------------------------------------------


async def test_complete_absence_in_chinese(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    await _visit(sessions, directory, village=0, day=date(2026, 11, 10), households=3)
    await chat.click(officer, ZH("button.absence"))
    assert chat.last_text(officer) == ZH("flow.step", step=1, total=3) + "\n" + ZH(
        "absence.ask_village"
    )
    await chat.click(officer, "张庄村")
    prompt = chat.server.last_message_to(officer)
    assert prompt.text == ZH("flow.step", step=2, total=3) + "\n" + ZH(
        "absence.ask_day", last="12-22"
    )
    labels = [label for label, _ in _buttons(prompt)]
    assert labels[:3] == ["今天 周六", "明天 周日", "11-23 周一"]
    assert labels[-1] == "11-28 周六" and len(labels) == 8
    await chat.click(officer, "11-24 周二")
    assert chat.last_text(officer) == ZH("flow.step", step=3, total=3) + "\n" + ZH(
        "absence.ask_reason", limit=500
    )
    assert chat.keyboard_labels(officer) == [ZH("flow.cancel")]
    await chat.say(officer, "  参加县局集中培训 📚  ")
    assert chat.last_text(officer) == "\n".join(
        [
            ZH("absence.summary_title"),
            "村（社区）：张庄村",
            "日期：2026-11-24（周二）",
            "原因：参加县局集中培训 📚",
        ]
    )
    await chat.click(officer, ZH("flow.submit"))

    [row] = await _absence_rows(sessions)
    assert (row.officer_id, row.village_id, row.day, row.reason) == (
        directory.officers[0].id,
        directory.villages[0].id,
        date(2026, 11, 24),
        "参加县局集中培训 📚",
    )
    saved = chat.last_text(officer)
    assert saved.splitlines() == [
        ZH("absence.saved", ref=f"A{row.id:06d}", village="张庄村", day="2026-11-24（周二）"),
        ZH("absence.make_up"),
        "2026年11月进度：下村 1/4 天，入户 3/4 户",
    ]
    assert "挤出时间" in saved and "活动办" in saved
    assert chat.keyboard_labels(officer)[0] == ZH("button.visit")  # back to the menu
    summary = chat.server.messages_to(officer)[-2]
    assert _buttons(summary) == []  # Submit / Cancel gone from the summary


async def test_single_village_and_typed_date_in_english(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "067890", language_code="en")
    await chat.say(officer, "/absence")
    assert chat.last_text(officer).startswith(EN("flow.step", step=2, total=3))
    assert [label for label, _ in _buttons(chat.server.last_message_to(officer))][:2] == [
        "Today Sat",
        "Tomorrow Sun",
    ]
    await chat.say(officer, "12-15")  # beyond the buttons, typed
    await chat.say(officer, "Flood duty at the reservoir")
    assert "Day: 2026-12-15 (Tue)" in chat.last_text(officer)
    await chat.click(officer, EN("flow.submit"))
    [row] = await _absence_rows(sessions)
    assert (row.day, row.reason, row.village_id) == (
        date(2026, 12, 15),
        "Flood duty at the reservoir",
        directory.villages[0].id,
    )
    assert chat.last_text(officer).splitlines() == [
        EN("absence.saved", ref=f"A{row.id:06d}", village="张庄村", day="2026-12-15 (Tue)"),
        EN("absence.make_up"),
        "Progress in 2026-12: 0 of 4 days, 0 of 4 households",
    ]


async def test_wrong_input_at_every_step_keeps_the_step(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345", language_code="en")
    await chat.say(officer, "/absence")
    village_prompt = chat.server.last_message_to(officer)
    await chat.say(officer, "Zhangzhuang")
    assert chat.last_text(officer) == EN("flow.use_buttons")
    await chat.send(await chat.server.send_photo(officer))
    assert chat.last_text(officer) == EN("flow.use_buttons")
    # A forged button: the right draft, a village the officer does not serve.
    draft_cb = _buttons(village_prompt)[0][1]
    forged = draft_cb.rsplit(":", 1)[0] + f":{directory.villages[2].id}"
    await chat.send(await chat.server.press(officer, village_prompt.message_id, forged, force=True))
    assert chat.last_text(officer) == EN("callback.stale")
    for junk in ("99999999999999", "²", "-1"):
        forged = draft_cb.rsplit(":", 1)[0] + f":{junk}"
        before = len(chat.texts(officer))
        await chat.send(
            await chat.server.press(officer, village_prompt.message_id, forged, force=True)
        )
        assert chat.texts(officer)[before:] == [EN("callback.stale")], junk
    await chat.click(officer, "张庄村")

    day_prompt = chat.server.last_message_to(officer)
    ask_day = day_prompt.text
    for bad, expected in [
        ("someday", EN("absence.bad_day")),
        ("2-30", EN("absence.bad_day")),
        ("\x00", EN("absence.bad_day")),
        ("x" * 4096, EN("absence.bad_day")),
        ("2026-11-20", EN("absence.day_past", last="12-22")),
        ("12-23", EN("absence.day_too_far", days=31, last="12-22")),
        ("11-20", EN("absence.day_too_far", days=31, last="12-22")),  # next year's 20 Nov
    ]:
        await chat.say(officer, bad)
        assert chat.last_text(officer) == expected, bad
    await chat.send(await chat.server.send_sticker(officer))
    assert chat.texts(officer)[-2:] == [EN("absence.bad_day"), ask_day]
    forged = _buttons(day_prompt)[0][1].rsplit(":", 1)[0] + ":2026-11-01"  # a past day
    await chat.send(await chat.server.press(officer, day_prompt.message_id, forged, force=True))
    assert chat.last_text(officer) == EN("absence.day_past", last="12-22")
    forged = _buttons(day_prompt)[0][1].rsplit(":", 1)[0] + ":tomorrow"
    await chat.send(await chat.server.press(officer, day_prompt.message_id, forged, force=True))
    assert chat.last_text(officer) == EN("callback.stale")
    # The village buttons belong to a step already left.
    again = await chat.server.press(officer, village_prompt.message_id, draft_cb)
    await chat.send(again)
    assert chat.server.callback_answer(again)["text"] == EN("callback.stale")  # type: ignore[index]
    await chat.say(officer, "11-25")

    ask_reason = chat.last_text(officer)
    await chat.say(officer, "r" * 501)
    assert chat.last_text(officer) == EN("flow.text_too_long", limit=500)
    await chat.say(officer, "\x00 \n\u202e")
    assert chat.last_text(officer) == EN("flow.text_empty")
    await chat.send(await chat.server.send_photo(officer))
    assert chat.texts(officer)[-2:] == [EN("absence.bad_reason"), ask_reason]
    await chat.say(officer, "r" * 500)

    await chat.say(officer, "submit")
    assert chat.last_text(officer) == EN("flow.use_buttons")
    await chat.send(await chat.server.send_location(officer, 34.1, 113.2))
    assert chat.last_text(officer) == EN("flow.use_buttons")
    await chat.click(officer, EN("flow.submit"))
    [row] = await _absence_rows(sessions)
    assert row.day == date(2026, 11, 25) and row.reason == "r" * 500


async def test_double_submit_and_redelivery_store_one_absence(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "067890")
    await chat.say(officer, "/absence")
    await chat.click(officer, "明天 周日")
    await chat.say(officer, "派出所值班")
    summary = chat.server.last_message_to(officer)
    submit = next(cb for label, cb in _buttons(summary) if label == ZH("flow.submit"))
    first = await chat.server.press(officer, summary.message_id, submit)
    second = await chat.server.press(officer, summary.message_id, submit, force=True)
    await chat.send(first)
    await chat.send(first)  # the same update delivered again
    await chat.send(second)  # a second tap
    assert len(await _absence_rows(sessions)) == 1
    assert chat.server.callback_answer(second)["text"] == ZH("callback.stale")  # type: ignore[index]
    assert sum(ZH("absence.make_up") in text for text in chat.texts(officer)) == 1

    # The same day again, in a new report: refused, the step stays.
    await chat.say(officer, "/absence")
    await chat.click(officer, "明天 周日")
    assert chat.last_text(officer) == ZH(
        "absence.day_taken", village="张庄村", day="2026-11-22（周日）"
    )
    await chat.say(officer, "后天")
    assert chat.last_text(officer).startswith(ZH("flow.step", step=3, total=3))


async def test_absence_is_not_a_visit_day(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "067890")
    await chat.say(officer, "/absence")
    await chat.click(officer, "今天 周六")
    await chat.say(officer, "县局集中培训")
    await chat.click(officer, ZH("flow.submit"))
    officer_id, village_id = directory.officers[1].id, directory.villages[0].id
    async with sessions() as s:
        done = await visits.progress(
            s,
            officer_id=officer_id,
            first=date(2026, 11, 1),
            last=date(2026, 11, 30),
            problem_codes=[a.value for a in PROBLEM_SOLVING],
            patrol_code=Activity.PATROL.value,
        )
        reports = await s.scalar(select(func.count()).select_from(VisitReport))
    assert (done[village_id].visit_days, done[village_id].absences) == (0, 1)
    assert reports == 0
    await chat.say(officer, "/me")
    text = chat.last_text(officer)
    assert "本月：下村 0/4 天" in text and ZH("me.absences", count=1) in text


async def test_submit_rechecks_the_day_and_cancel_saves_nothing(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "067890")
    await chat.say(officer, "/absence")
    await chat.click(officer, "今天 周六")
    await chat.say(officer, "临时任务")
    chat.clock.now = NOW + timedelta(days=1)  # the summary waited past midnight
    await chat.click(officer, ZH("flow.submit"))
    assert chat.texts(officer)[-2] == ZH("absence.day_changed")
    assert chat.last_text(officer).startswith(ZH("flow.step", step=2, total=3))
    assert await _absence_rows(sessions) == []
    await chat.click(officer, "今天 周日")
    assert "原因：临时任务" in chat.last_text(officer)  # straight back to the summary
    await chat.click(officer, ZH("flow.cancel"))
    assert chat.last_text(officer) == ZH("cancel.done")
    assert await _absence_rows(sessions) == []

    await chat.say(officer, "/absence")
    await chat.click(officer, "今天 周日")
    await chat.click(officer, ZH("flow.cancel"))  # the reply keyboard's cancel
    assert chat.last_text(officer) == ZH("cancel.done")
    assert await _absence_rows(sessions) == []


async def test_storage_saves_once_and_lists_by_day(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer_id = directory.officers[0].id
    async with sessions() as s, s.begin():
        first = await absences.save_absence(
            s,
            draft_id="d1",
            officer_id=officer_id,
            village_id=directory.villages[1].id,
            day=date(2026, 11, 24),
            reason="a",
        )
        again = await absences.save_absence(
            s,
            draft_id="d1",
            officer_id=officer_id,
            village_id=directory.villages[0].id,
            day=date(2026, 11, 1),
            reason="b",
        )
        await absences.save_absence(
            s,
            draft_id="d2",
            officer_id=officer_id,
            village_id=directory.villages[0].id,
            day=date(2026, 11, 3),
            reason="c",
        )
        await absences.save_absence(
            s,
            draft_id="d3",
            officer_id=officer_id,
            village_id=directory.villages[0].id,
            day=date(2026, 12, 1),
            reason="d",
        )
    assert first[1] is True and again == (first[0], False)
    async with sessions() as s:
        listed = await absences.absences_in(
            s, officer_id=officer_id, first=date(2026, 11, 1), last=date(2026, 11, 30)
        )
        other = await absences.absences_in(
            s, officer_id=directory.officers[1].id, first=date(2026, 1, 1), last=date(2027, 1, 1)
        )
    assert [(a.day, a.village_name, a.reason) for a in listed] == [
        (date(2026, 11, 3), "张庄村", "c"),
        (date(2026, 11, 24), "李庄村", "a"),
    ]
    assert other == []


async def test_a_past_day_typed_is_refused_as_past(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_officer_invite(
            s, badge="067890", now=chat.clock(), ttl=timedelta(days=7)
        )
    officer = chat.server.user(language_code="zh-hans")
    await chat.say(officer, f"/start {issued.payload}")
    await chat.say(officer, "/absence")
    await chat.say(officer, "昨天")
    assert chat.last_text(officer).startswith("不能报备已经过去的日期")
