"""The score in /me, supervisors' /team (order, flags, pages, scope) and /digest, through the
real Dispatcher, HTTP and PostgreSQL, on the month of tests.test_scores."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.handlers.team import TeamPageCb
from bot.i18n import Translator
from core.roles import AssignmentKind
from core.scoring import DEFAULT_POINTS
from core.tokens import new_village_token
from storage import invites, standings
from storage.models import Assignment, Officer, Village
from tests.botapi import SimUser
from tests.harness import Chat
from tests.test_scores import Month, seed_month

ZH, EN = Translator("zh"), Translator("en")
# Saturday 21 November 2026, 10:00 in Shanghai: day 21 of 30, two village days expected of
# four by now (floor(4 × 20 / 30)), and two households of four.
NOW = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
async def month(sessions: async_sessionmaker[AsyncSession]) -> Month:
    async with sessions() as s, s.begin():
        return await seed_month(s)


async def _officer(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], badge: str, **kw: str
) -> SimUser:
    chat.clock.now = NOW
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_officer_invite(
            s, badge=badge, now=NOW, ttl=timedelta(days=7)
        )
    user = chat.server.user(**kw)  # type: ignore[arg-type]
    await chat.say(user, f"/start {issued.payload}")
    return user


async def _supervisor(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], stations: list[str], **kw: str
) -> SimUser:
    chat.clock.now = NOW
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_supervisor_invite(
            s,
            station_codes=stations,
            county_wide=not stations,
            name=None,
            now=NOW,
            ttl=timedelta(days=7),
        )
    user = chat.server.user(**kw)  # type: ignore[arg-type]
    await chat.say(user, f"/start {issued.payload}")
    return user


def _text_of(chat: Chat, user: SimUser, message_id: int) -> str:
    [message] = [m for m in chat.server.messages_to(user) if m.message_id == message_id]
    return message.text or ""


def _answer(chat: Chat, update: dict[str, Any]) -> str | None:
    answer = chat.server.callback_answer(update)
    return None if answer is None else answer["text"]


# --- /me -----------------------------------------------------------------------------------


async def _refresh_standings(sessions: async_sessionmaker[AsyncSession], now: datetime) -> None:
    async with sessions() as s, s.begin():
        await standings.refresh(s, month=now.date(), tz=SHANGHAI, table=DEFAULT_POINTS, now=now)


async def test_me_shows_the_score_and_ranks_in_both_languages(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], month: Month
) -> None:
    a = await _officer(chat, sessions, "012345")
    await chat.say(a, "/me")
    last = chat.last_text(a).split("\n\n")[-1].splitlines()
    # The points are live; the ranks wait for the first refresh.
    assert last[:2] == [ZH("score.me", points=35), ZH("score.ranks_pending")]
    await _refresh_standings(sessions, NOW)
    await chat.say(a, "/me")
    last = chat.last_text(a).split("\n\n")[-1].splitlines()
    assert last[:3] == [
        ZH("score.me", points=35),
        ZH(
            "score.ranks",
            time="11-21 10:00",
            station_rank=1,
            station_size=2,
            county_rank=1,
            county_size=4,
        ),
        "得分构成：下村天数 10 分，入户走访 5 分，工作事项 10 分，办结诉求 5 分，隐患整改 5 分",
    ]
    assert last[1] == "🏆 排名（截至 11-21 10:00）：所内第 1/2 名，全县第 1/4 名"

    c = await _officer(chat, sessions, "033333", language_code="en")
    await chat.say(c, "/me")
    last = chat.last_text(c).split("\n\n")[-1].splitlines()
    assert last[:3] == [
        "🏅 Score this month: 22 points",
        "🏆 Ranks as of 11-21 10:00: #1 of 2 in the station, #2 of 4 in the county",
        "Made up of: 5 for village days, 12 for households, 5 for requests resolved",
    ]
    d = await _officer(chat, sessions, "044444", language_code="en")
    await chat.say(d, "/me")
    last = chat.last_text(d).split("\n\n")[-1].splitlines()
    assert last[:2] == [
        EN("score.me", points=0),
        EN(
            "score.ranks",
            time="11-21 10:00",
            station_rank=2,
            station_size=2,
            county_rank=4,
            county_size=4,
        ),
    ]
    assert not last[2].startswith("Made up of")  # nothing earned, nothing to list

    # A new month starts from nothing, ranked at its first refresh; only B's hazard closed
    # at 00:30 on 1 December counts.
    december = datetime(2026, 12, 1, 2, tzinfo=UTC)
    chat.clock.now = december
    await chat.say(c, "/me")
    last = chat.last_text(c).split("\n\n")[-1].splitlines()
    assert last[:2] == [EN("score.me", points=0), EN("score.ranks_pending")]
    await _refresh_standings(sessions, december)
    await chat.say(c, "/me")
    last = chat.last_text(c).split("\n\n")[-1].splitlines()
    assert last[1] == EN(
        "score.ranks",
        time="12-01 10:00",
        station_rank=1,
        station_size=2,
        county_rank=2,
        county_size=4,
    )


# --- /team ---------------------------------------------------------------------------------

A_LINE = (
    "1. ⚠️ 王警官（012345，城关派出所）\n   下村 2/8 天，入户 5/8 户 · 35 分\n"
    "   落后：张庄村（下村天数）；李庄村（下村天数、入户户数）"
)
B_LINE = "2. 👍 赵警官（067890，城关派出所）\n   下村 2/4 天，入户 8/4 户 · 22 分"


async def test_team_order_flags_and_scope(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], month: Month
) -> None:
    chief = await _supervisor(chat, sessions, ["S01"])
    await chat.click(chief, ZH("button.team"))
    # A has done 6 of 16 (1 + 4 of 张庄村's 4 + 4, 1 + 0 of 李庄村's), B 6 of 8.
    assert chat.last_text(chief) == "\n\n".join(
        [
            ZH("team.title", month="2026年11月", count=2) + "\n" + ZH("team.legend"),
            A_LINE,
            B_LINE,
        ]
    )
    assert chat.server.last_message_to(chief).buttons == []  # one page: no page buttons

    other = await _supervisor(chat, sessions, ["S02"])
    await chat.say(other, "/team")
    text = chat.last_text(other)
    assert "王警官" not in text and "赵警官" not in text  # another station's officers
    assert text.split("\n\n")[1:] == [
        "1. ⚠️ 李警官（044444，东关派出所）\n   下村 0/4 天，入户 0/4 户 · 0 分\n"
        "   落后：东关社区（下村天数、入户户数）",
        "2. ⚠️ 孙警官（033333，东关派出所）\n   下村 1/4 天，入户 12/4 户 · 22 分\n"
        "   落后：东关社区（下村天数）",
    ]

    county = await _supervisor(chat, sessions, [], language_code="en")
    await chat.say(county, "/team")
    text = chat.last_text(county)
    assert text.startswith(EN("team.title", month="2026-11", count=4))
    order = [text.index(name) for name in ("李警官", "王警官", "孙警官", "赵警官")]
    assert order == sorted(order)  # 0 %, 37.5 %, 62.5 %, 75 % done
    assert (
        "   2 of 8 days, 5 of 8 households · 35 points\n"
        "   behind: 张庄村 (village days); 李庄村 (village days, households)" in text
    )

    officer = await _officer(chat, sessions, "012345")
    await chat.say(officer, "/team")
    assert chat.last_text(officer) == ZH("fallback.unknown")


async def _more_officers(sessions: async_sessionmaker[AsyncSession], month: Month) -> None:
    """21 more officers resident in villages of their own in 城关派出所, none with a visit."""
    station = month.county.directory.station.id
    async with sessions() as s, s.begin():
        for n in range(21):
            village = Village(
                code=f"V1{n:02d}",
                name=f"新村{n:02d}",
                station_id=station,
                join_token=new_village_token(),
            )
            officer = Officer(badge=f"1000{n:02d}", name=f"新警官{n:02d}")
            s.add_all([village, officer])
            await s.flush()
            s.add(
                Assignment(
                    officer_id=officer.id,
                    village_id=village.id,
                    kind=AssignmentKind.RESIDENT.value,
                )
            )


async def test_team_pages(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], month: Month
) -> None:
    await _more_officers(sessions, month)
    chief = await _supervisor(chat, sessions, ["S01"])
    await chat.say(chief, "/team")
    listing = chat.server.last_message_to(chief)
    text = listing.text or ""
    assert ZH("team.title", month="2026年11月", count=23) in text
    assert ZH("team.page", page=1, pages=3) in text
    assert "1. ⚠️ 新警官00（100000，城关派出所）" in text and "10. ⚠️ 新警官09" in text
    assert "11. " not in text
    assert listing.buttons == [ZH("team.next")]

    await chat.click(chief, ZH("team.next"))
    text = _text_of(chat, chief, listing.message_id)
    assert ZH("team.page", page=2, pages=3) in text
    assert "11. ⚠️ 新警官10" in text and "20. ⚠️ 新警官19" in text and "10. " not in text
    [page2] = [m for m in chat.server.messages_to(chief) if m.message_id == listing.message_id]
    assert page2.buttons == [ZH("team.previous"), ZH("team.next")]

    await chat.click(chief, ZH("team.next"))
    text = _text_of(chat, chief, listing.message_id)
    assert text.split("\n\n")[1:] == [
        "21. ⚠️ 新警官20（100020，城关派出所）\n   下村 0/4 天，入户 0/4 户 · 0 分\n"
        "   落后：新村20（下村天数、入户户数）",
        "22" + A_LINE[1:],
        "23" + B_LINE[1:],
    ]
    await chat.click(chief, ZH("team.previous"))
    assert ZH("team.page", page=2, pages=3) in _text_of(chat, chief, listing.message_id)

    # A forged page past the end shows the last; a negative one is refused.
    far = await chat.server.press(chief, listing.message_id, TeamPageCb(page=99).pack(), force=True)
    await chat.send(far)
    assert ZH("team.page", page=3, pages=3) in _text_of(chat, chief, listing.message_id)
    negative = await chat.server.press(
        chief, listing.message_id, TeamPageCb(page=-1).pack(), force=True
    )
    await chat.send(negative)
    assert _answer(chat, negative) == ZH("callback.stale")

    # Another station's supervisor forging a page sees only their own station.
    other = await _supervisor(chat, sessions, ["S02"])
    await chat.say(other, "/team")
    own = chat.server.last_message_to(other)
    await chat.send(
        await chat.server.press(other, own.message_id, TeamPageCb(page=1).pack(), force=True)
    )
    text = _text_of(chat, other, own.message_id)
    assert "新警官" not in text and "王警官" not in text and "孙警官" in text

    # An officer's forged page button does nothing but say it is stale.
    officer = await _officer(chat, sessions, "012345")
    await chat.say(officer, "/me")
    mine = chat.server.last_message_to(officer)
    pressed = await chat.server.press(
        officer, mine.message_id, TeamPageCb(page=1).pack(), force=True
    )
    await chat.send(pressed)
    assert _answer(chat, pressed) == ZH("callback.stale")
    assert _text_of(chat, officer, mine.message_id) == mine.text


async def test_team_when_no_officer_is_assigned(
    chat: Chat, sessions: async_sessionmaker[AsyncSession]
) -> None:
    from storage.models import Station

    async with sessions() as s, s.begin():
        s.add(Station(code="S09", name="空派出所"))
    chief = await _supervisor(chat, sessions, ["S09"], language_code="en")
    await chat.say(chief, "/team")
    assert chat.last_text(chief) == EN("team.none")


# --- /digest -------------------------------------------------------------------------------


async def test_digest_now_sends_text_chart_and_workbook(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], month: Month
) -> None:
    chief = await _supervisor(chat, sessions, ["S01"])
    before = len(chat.server.messages_to(chief))
    await chat.click(chief, ZH("button.digest"))
    sent = chat.server.messages_to(chief)[before:]
    assert [("photo" in m.raw, "document" in m.raw) for m in sent] == [
        (False, False),
        (True, False),
        (False, True),
    ]
    text = sent[0].text or ""
    assert text.startswith(
        ZH("digest.title_now", first="11-16", last="11-21", time="10:00")
        + "\n"
        + ZH("digest.scope_stations", stations="城关派出所")
    )
    assert ZH("digest.behind_title", count=1) + "\n• 王警官（012345，城关派出所）" in text
    assert "1. 王警官（012345，城关派出所）35 分 · 所内第 1 · 全县第 1" in text
    assert "孙警官" not in text  # another station

    assert sent[1].caption == ZH("digest.chart_caption", month="2026年11月")
    photo = max(sent[1].raw["photo"], key=lambda p: p["width"])
    image = Image.open(io.BytesIO(chat.server.file_data(photo["file_id"])))
    assert image.format == "PNG" and image.width == 1400

    document = sent[2].raw["document"]
    assert document["file_name"] == "digest-now-2026-11-21.xlsx"
    assert sent[2].caption == ZH("digest.workbook_caption")
    book = load_workbook(io.BytesIO(chat.server.file_data(document["file_id"])))
    assert book.sheetnames[:3] == [
        ZH("digest.sheet.team"),
        ZH("digest.sheet.ranking"),
        ZH("digest.sheet.items"),
    ]
    team = book[ZH("digest.sheet.team")]
    assert [c.value for c in team[2]][:3] == ["012345", "王警官", "城关派出所"]
    assert team.max_row == 3
