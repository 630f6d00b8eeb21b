"""weekly-digest and monthly-digest on a fixed clock: what each supervisor gets in the outbox
(text parts, the chart PNG, the XLSX workbook), read back; a second run adds nothing; quiet
hours; a big scope split cleanly; and the chart's Chinese actually drawn."""

from __future__ import annotations

import base64
import io
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook
from PIL import Image, ImageChops
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.i18n import Translator
from bot.texts import MAX_MESSAGE
from core.roles import AssignmentKind, Role
from core.tokens import new_village_token
from scheduler import charts
from scheduler.digests import (
    MAX_LINES,
    _section,
    month_before,
    monthly_digest,
    week_so_far,
    week_that_ended,
    weekly_digest,
)
from scheduler.jobs import JobContext
from storage import invites
from storage.models import (
    Absence,
    Assignment,
    Officer,
    OutboxMessage,
    Photo,
    Station,
    Supervisor,
    SupervisorStation,
    User,
    Village,
)
from tests.harness import Chat, make_settings
from tests.test_scores import Month, add_hazard, add_request, add_visit, seed_month, utc

ZH, EN = Translator("zh"), Translator("en")
SHANGHAI = ZoneInfo("Asia/Shanghai")
# Monday 23 November 2026, 08:00 in Shanghai: the weekly digest of 16–22 November.
MONDAY = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
CHIEF, COUNTY, SILENT, BLOCKED = 9001, 9002, 9003, 9004


@dataclass
class Seeded:
    month: Month
    supervisors: dict[str, int]
    refs: dict[str, str]


async def _supervisor(
    s: AsyncSession, stations: list[int], account: int | None, **user: Any
) -> int:
    supervisor = Supervisor(name="督导", county_wide=not stations)
    s.add(supervisor)
    await s.flush()
    s.add_all(SupervisorStation(supervisor_id=supervisor.id, station_id=sid) for sid in stations)
    if account is not None:
        s.add(
            User(
                id=account,
                role=Role.SUPERVISOR.value,
                supervisor_id=supervisor.id,
                first_name="所长",
                **user,
            )
        )
    await s.flush()
    return supervisor.id


async def seed(s: AsyncSession) -> Seeded:
    """The month of tests.test_scores, and in the week of 16–22 November: a request nobody
    accepted, a hazard past its re-inspection date, a report filed 3.2 km away, one with a
    reused photo, an absence; four supervisors, two of whom get nothing."""
    month = await seed_month(s)
    county = month.county
    a, b = county.officers["A"], county.officers["B"]
    v1, v2, _ = (v.id for v in county.directory.villages)
    far = await add_visit(s, a, v1, date(2026, 11, 18), 2, distance_m=3200, far_from_village=True)
    reused = await add_visit(s, b, v1, date(2026, 11, 19), 1)
    s.add(Photo(visit_report_id=reused, file_id="f", file_unique_id="u", reused=True))
    await add_visit(s, a, v2, date(2026, 11, 12), 1, far_from_village=True)  # the week before
    request = await add_request(s, v1, utc(11, 18, 2), [])
    hazard = await add_hazard(
        s, a, v1, severity="high", reported_at=utc(11, 10), due_at=utc(11, 17)
    )
    s.add(
        Absence(
            draft_id="ab1",
            officer_id=a.id,
            village_id=v1,
            day=date(2026, 11, 17),
            reason="=SUM(A1) 县里集中培训",
        )
    )
    station, other = county.directory.station.id, county.directory.other_station.id
    supervisors = {
        "chief": await _supervisor(s, [station], CHIEF, locale="zh"),
        "county": await _supervisor(s, [], COUNTY, language_code="en"),
        "silent": await _supervisor(s, [other], None),
        "blocked": await _supervisor(s, [other], BLOCKED, blocked_at=utc(11, 1)),
    }
    return Seeded(
        month,
        supervisors,
        {
            "far": f"V{far:06d}",
            "reused": f"V{reused:06d}",
            "request": f"R{request:06d}",
            "hazard": f"H{hazard:06d}",
        },
    )


@pytest.fixture
async def seeded(sessions: async_sessionmaker[AsyncSession]) -> Seeded:
    async with sessions() as s, s.begin():
        return await seed(s)


def _ctx(sessions: async_sessionmaker[AsyncSession], now: datetime, **settings: Any) -> JobContext:
    return JobContext(sessions=sessions, settings=make_settings(**settings), now=now)


async def _outbox(sessions: async_sessionmaker[AsyncSession], chat_id: int) -> list[OutboxMessage]:
    async with sessions() as s:
        rows = await s.scalars(
            select(OutboxMessage).where(OutboxMessage.chat_id == chat_id).order_by(OutboxMessage.id)
        )
        return list(rows)


async def _count(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(OutboxMessage)) or 0)


def _upload(row: OutboxMessage, field: str) -> tuple[str, bytes]:
    upload = row.payload[field]
    return upload["filename"], base64.b64decode(upload["base64"])


def _keep(name: str, png: bytes) -> None:
    """A chart left under /tmp for a person to look at."""
    (Path(tempfile.gettempdir()) / name).write_bytes(png)


def _non_white(image: Image.Image, box: tuple[int, int, int, int]) -> int:
    return sum(image.convert("L").crop(box).histogram()[:200])


# --- periods -------------------------------------------------------------------------------


def test_periods() -> None:
    week = week_that_ended(date(2026, 11, 23))
    assert (week.first, week.last, week.as_of, week.key) == (
        date(2026, 11, 16),
        date(2026, 11, 22),
        date(2026, 11, 23),
        "weekly-2026-W47",
    )
    # Run late on a Wednesday: still the last whole week.
    assert week_that_ended(date(2026, 11, 25)) == week
    # A week that ended the month is judged on the month's last day (the whole quota due).
    may = week_that_ended(date(2026, 6, 1))
    assert (may.first, may.last, may.as_of) == (
        date(2026, 5, 25),
        date(2026, 5, 31),
        date(2026, 5, 31),
    )
    # A week across two months is judged in the month it ended in.
    assert week_that_ended(date(2026, 12, 7)).as_of == date(2026, 12, 7)
    # ISO weeks: 28 Dec 2026 – 3 Jan 2027 is week 53 of 2026.
    assert week_that_ended(date(2027, 1, 4)).key == "weekly-2026-W53"
    january = month_before(date(2027, 1, 1))
    assert (january.first, january.last, january.as_of, january.key) == (
        date(2026, 12, 1),
        date(2026, 12, 31),
        date(2026, 12, 31),
        "monthly-2026-12",
    )
    now = week_so_far(date(2026, 11, 21))
    assert (now.first, now.last, now.as_of) == (
        date(2026, 11, 16),
        date(2026, 11, 21),
        date(2026, 11, 21),
    )


# --- the weekly digest -----------------------------------------------------------------------


async def test_weekly_digest(sessions: async_sessionmaker[AsyncSession], seeded: Seeded) -> None:
    line = await weekly_digest(_ctx(sessions, MONDAY))
    assert line == "weekly-2026-W47: 2 digest(s) queued, 0 already queued"
    rows = await _outbox(sessions, CHIEF)
    key = f"digest:weekly-2026-W47:supervisor-{seeded.supervisors['chief']}"
    assert [(r.method, r.dedup_key) for r in rows] == [
        ("sendMessage", f"{key}:text1"),
        ("sendPhoto", f"{key}:chart"),
        ("sendDocument", f"{key}:workbook"),
    ]
    assert {r.not_before for r in rows} == {MONDAY}  # 08:00: the quiet hours are over
    assert await _outbox(sessions, SILENT) == [] and await _outbox(sessions, BLOCKED) == []

    text = rows[0].payload["text"]
    refs = seeded.refs
    # A: 张庄村 2 days, 7 households; 李庄村 2 days, 1 household (2 expected by the 23rd).
    assert text.split("\n\n") == [
        "\n".join(
            [
                ZH("digest.title_weekly", first="11-16", last="11-22"),
                ZH("digest.scope_stations", stations="城关派出所"),
                ZH(
                    "digest.summary",
                    officers=2,
                    behind=1,
                    requests=1,
                    hazards=1,
                    flagged=2,
                    absences=1,
                ),
            ]
        ),
        ZH("digest.behind_title", count=1)
        + "\n• 王警官（012345，城关派出所）下村 4/8 天，入户 8/8 户；落后：李庄村（入户户数）",
        ZH("digest.requests_title", count=1)
        + f"\n• {refs['request']} 张庄村（王警官）：受理、答复超时，"
        + "时限 11-19 10:00，已超出 3 天 22 小时",
        ZH("digest.hazards_title", count=1)
        + f"\n• {refs['hazard']} 张庄村 消防安全（高风险）王警官：应于 11-17 前复查",
        ZH("digest.flagged_title", count=2)
        + f"\n• {refs['far']} 11-18 王警官 张庄村：定位距村中心 3.2 公里"
        + f"\n• {refs['reused']} 11-19 赵警官 张庄村：照片在其他报告中用过",
        ZH("digest.absences_title", count=1) + "\n• 11-17 王警官 张庄村：=SUM(A1) 县里集中培训",
        ZH("digest.ranking_title", month="2026年11月")
        + "\n1. 王警官（012345，城关派出所）48 分 · 所内第 1 · 全县第 1"
        + "\n2. 赵警官（067890，城关派出所）28 分 · 所内第 2 · 全县第 2",
    ]

    # The chart: one bar per officer, Chinese drawn.
    name, png = _upload(rows[1], "photo")
    assert name == "digest.png" and rows[1].payload["caption"] == ZH(
        "digest.chart_caption", month="2026年11月"
    )
    image = Image.open(io.BytesIO(png))
    _keep("digest-weekly.png", png)
    assert image.format == "PNG" and image.size == (charts.WIDTH, 130 + 2 * 52 + 70)
    assert _non_white(image, (40, 130, 290, 234)) > 300  # the two names
    rgb = image.convert("RGB").tobytes()
    red = sum(1 for i in range(0, len(rgb), 3) if rgb[i : i + 3] == b"\xd6\x45\x41")
    assert red > 1000  # A's bar (behind) and the legend

    # The workbook: one sheet per table, real dates, text kept as text.
    name, xlsx = _upload(rows[2], "document")
    assert name == "digest-weekly-2026-W47.xlsx"
    book = load_workbook(io.BytesIO(xlsx))
    assert book.sheetnames == [
        ZH(f"digest.sheet.{n}")
        for n in ("team", "ranking", "items", "requests", "hazards", "flagged", "absences")
    ]
    team = book[ZH("digest.sheet.team")]
    assert team.freeze_panes == "A2" and team["A1"].font.b
    assert [c.value for c in team[1]][:5] == [
        ZH("digest.col.badge"),
        "姓名",
        "派出所",
        "下村天数",
        "下村任务",
    ]
    assert [c.value for c in team[2]] == [
        "012345", "王警官", "城关派出所", 4, 8, 8, 8, 2, 0, 1, 0, 56, "进度落后",
        "李庄村（入户户数）", 1, 48, 1, 1,
    ]  # fmt: skip
    assert team.max_row == 3
    requests = book[ZH("digest.sheet.requests")]
    assert [c.value for c in requests[2]] == [
        refs["request"], "张庄村", "王警官", "矛盾纠纷", "待受理", "受理、答复",
        datetime(2026, 11, 19, 10, 0),
    ]  # fmt: skip
    flagged = book[ZH("digest.sheet.flagged")]
    assert [c.value for c in flagged[2]] == [
        refs["far"], datetime(2026, 11, 18), "王警官", "012345", "张庄村", 3200, True, False,
    ]  # fmt: skip
    absences = book[ZH("digest.sheet.absences")]
    assert absences["F2"].value == "=SUM(A1) 县里集中培训" and absences["F2"].data_type == "s"
    assert absences["A2"].is_date
    items = book[ZH("digest.sheet.items")]
    assert sum(row[6].value for row in items.iter_rows(min_row=2) if row[0].value == "012345") == 48

    # The county supervisor's, in English, has all four officers.
    english = (await _outbox(sessions, COUNTY))[0].payload["text"]
    assert english.startswith(
        EN("digest.title_weekly", first="11-16", last="11-22") + "\n" + EN("digest.scope_county")
    )
    assert "Officers: 4 (3 behind pace)." in english

    # A second run (or a second process) adds nothing.
    before = await _count(sessions)
    again = await weekly_digest(_ctx(sessions, MONDAY))
    assert again == "weekly-2026-W47: 0 digest(s) queued, 2 already queued"
    assert await _count(sessions) == before


async def test_quiet_hours_hold_the_digest_until_morning(
    sessions: async_sessionmaker[AsyncSession], seeded: Seeded
) -> None:
    # 22:00 on Monday in Shanghai (14:00 UTC): queued now, due at 08:00 on Tuesday.
    await weekly_digest(_ctx(sessions, datetime(2026, 11, 23, 14, 0, tzinfo=UTC)))
    rows = await _outbox(sessions, CHIEF)
    assert len(rows) == 3
    assert {r.not_before for r in rows} == {datetime(2026, 11, 24, 8, 0, tzinfo=SHANGHAI)}
    # 07:30 on Monday in Shanghai is still Sunday 23:30 in UTC: the county's date decides.
    await weekly_digest(_ctx(sessions, datetime(2026, 11, 22, 23, 30, tzinfo=UTC)))
    assert len(await _outbox(sessions, CHIEF)) == 3  # the same week: nothing new


async def test_monthly_digest(sessions: async_sessionmaker[AsyncSession], seeded: Seeded) -> None:
    first = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)  # 08:00 on 1 December in Shanghai
    line = await monthly_digest(_ctx(sessions, first))
    assert line == "monthly-2026-11: 2 digest(s) queued, 0 already queued"
    rows = await _outbox(sessions, CHIEF)
    assert (
        rows[0].dedup_key
        == f"digest:monthly-2026-11:supervisor-{seeded.supervisors['chief']}:text1"
    )
    text = rows[0].payload["text"]
    blocks = text.split("\n\n")
    assert blocks[0].startswith(ZH("digest.title_monthly", month="2026年11月"))
    # Judged on 30 November: the whole quota. Neither officer of 城关派出所 met it.
    assert blocks[1].startswith(ZH("digest.missed_title", month="2026年11月", count=2))
    assert (
        "• 王警官（012345，城关派出所）下村 4/8 天，入户 8/8 户；"
        "落后：张庄村（下村天数）；李庄村（下村天数、入户户数）" in blocks[1]
    )
    # The whole month's flagged reports and absences.
    assert blocks[4].startswith(ZH("digest.flagged_title", count=3))
    name, _ = _upload(rows[2], "document")
    assert name == "digest-monthly-2026-11.xlsx"
    assert await monthly_digest(_ctx(sessions, first)) == (
        "monthly-2026-11: 0 digest(s) queued, 2 already queued"
    )


# --- a big scope -----------------------------------------------------------------------------


async def test_a_big_scope_is_split_cleanly(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s, s.begin():
        stations = [Station(code=f"S{n:02d}", name=f"第{n:02d}派出所") for n in range(6)]
        s.add_all(stations)
        await s.flush()
        for n in range(120):
            village = Village(
                code=f"V{n:03d}",
                name=f"{n:03d}号村",
                station_id=stations[n % 6].id,
                join_token=new_village_token(),
            )
            officer = Officer(badge=f"2{n:05d}", name=f"欧阳警官{n:03d}")
            s.add_all([village, officer])
            await s.flush()
            s.add(
                Assignment(
                    officer_id=officer.id, village_id=village.id, kind=AssignmentKind.RESIDENT.value
                )
            )
            if n % 3:  # two in three did something this month
                await add_visit(s, officer, village.id, date(2026, 11, 2 + n % 20), n % 7)
        await _supervisor(s, [], COUNTY, locale="zh")

    await weekly_digest(_ctx(sessions, MONDAY))
    rows = await _outbox(sessions, COUNTY)
    texts = [r.payload["text"] for r in rows if r.method == "sendMessage"]
    assert len(texts) >= 2
    assert all(len(text) <= MAX_MESSAGE for text in texts)
    assert [r.dedup_key.rsplit(":", 1)[1] for r in rows] == [  # type: ignore[union-attr]
        *(f"text{n}" for n in range(1, len(texts) + 1)),
        "chart",
        "workbook",
    ]
    # Every line is whole: each officer line of the ranking ends with its county rank.
    lines = [line for text in texts for line in text.splitlines()]
    ranking = [line for line in lines if line.endswith(tuple(f"全县第 {n}" for n in range(1, 121)))]
    assert len(ranking) == MAX_LINES
    assert ZH("digest.more", count=120 - MAX_LINES) in lines
    behind = [line for line in lines if line.startswith("• 欧阳警官")]
    assert len(behind) == MAX_LINES and all("；落后：" in line for line in behind)
    # Split between sections: the ranking did not fit after the others.
    assert len(texts) == 2
    assert texts[1].startswith(ZH("digest.ranking_title", month="2026年11月") + "\n1. ")

    _, png = _upload(rows[-2], "photo")
    image = Image.open(io.BytesIO(png))
    _keep("digest-county.png", png)
    assert image.size == (charts.WIDTH, 130 + charts.MAX_BARS * 52 + 70)
    _, xlsx = _upload(rows[-1], "document")
    team = load_workbook(io.BytesIO(xlsx))[ZH("digest.sheet.team")]
    assert team.max_row == 121  # everyone in the workbook


# --- the chart ---------------------------------------------------------------------------------


def _chart(names: list[str], font: Path | None = None) -> Image.Image:
    text = charts.ChartText(
        title="二〇二六年十一月 民警任务完成情况",
        subtitle="城关派出所",
        legend={"behind": "进度落后", "on_pace": "进度正常", "met": "已完成"},
        quota="任务 100%",
        empty="无",
    )
    bars = [charts.Bar(name, 0.5, "下村 2/4 天", "on_pace") for name in names]
    return Image.open(io.BytesIO(charts.progress_chart(bars, text, font=font)))


def test_the_chart_draws_chinese_names() -> None:
    one, other = _chart(["王警官"]), _chart(["赵警官"])
    label = (40, 130, 290, 182)
    assert _non_white(one, label) > 150
    # Missing glyphs would all be the same box: different names must look different.
    assert ImageChops.difference(one.convert("L"), other.convert("L")).crop(label).getbbox()
    assert (
        not ImageChops.difference(one.convert("L"), other.convert("L"))
        .crop((290, 130, 1400, 182))
        .getbbox()
    )
    empty = _chart([])
    assert empty.size == (charts.WIDTH, 130 + 52 + 70)
    # CHART_FONT names another font file (here the same collection's first face).
    font, _ = charts.default_font()
    assert _non_white(_chart(["王警官"], font=font), label) > 150


async def test_the_digest_is_delivered_with_its_files(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], seeded: Seeded
) -> None:
    chat.clock.now = MONDAY
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_supervisor_invite(
            s, station_codes=["S02"], county_wide=False, name=None, now=MONDAY,
            ttl=timedelta(days=7),
        )  # fmt: skip
    chief = chat.server.user(language_code="en")
    await chat.say(chief, f"/start {issued.payload}")
    before = len(chat.server.messages_to(chief))
    await weekly_digest(_ctx(sessions, MONDAY))
    await chat.deliver()
    sent = chat.server.messages_to(chief)[before:]
    assert len(sent) == 3
    assert (sent[0].text or "").startswith(EN("digest.title_weekly", first="11-16", last="11-22"))
    assert "王警官" not in (sent[0].text or "")  # 东关派出所 only
    assert sent[1].caption == EN("digest.chart_caption", month="2026-11")
    photo = max(sent[1].raw["photo"], key=lambda p: p["width"])
    assert Image.open(io.BytesIO(chat.server.file_data(photo["file_id"]))).format == "PNG"
    document = sent[2].raw["document"]
    assert document["file_name"] == "digest-weekly-2026-W47.xlsx"
    book = load_workbook(io.BytesIO(chat.server.file_data(document["file_id"])))
    assert book.sheetnames[0] == EN("digest.sheet.team")
    assert [c.value for c in book[EN("digest.sheet.team")]["B"][1:]] == ["李警官", "孙警官"]
    # Once sent, the outbox keeps Telegram's file_id instead of the files' bytes.
    stored = {row.method: row.payload for row in await _outbox(sessions, chief.id)}
    assert stored["sendPhoto"]["photo"] == photo["file_id"]
    assert stored["sendDocument"]["document"] == document["file_id"]


def test_a_long_section_goes_on_under_its_title() -> None:
    lines = [f"• {n:03d} " + "长" * 300 for n in range(MAX_LINES + 5)]
    blocks = _section(ZH, "标题：", lines, "无")
    assert len(blocks) > 1 and all(len(block) <= MAX_MESSAGE for block in blocks)
    assert blocks[0].startswith("标题：\n• 000 ")
    assert all(b.startswith("标题： " + ZH("digest.continued") + "\n• ") for b in blocks[1:])
    listed = [line for block in blocks for line in block.splitlines()[1:]]
    assert listed == [*lines[:MAX_LINES], ZH("digest.more", count=5)]  # whole lines, in order
    assert _section(ZH, "标题：", [], "无") == ["无"]
