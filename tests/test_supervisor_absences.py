"""Supervisors see the absences officers record, for their own stations only."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.i18n import Translator
from storage import invites
from storage.models import Absence
from tests.botapi import SimUser
from tests.factories import Directory
from tests.harness import Chat

ZH, EN = Translator("zh"), Translator("en")
NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


async def _supervisor(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], stations: list[str], **kw: str
) -> SimUser:
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


async def _absence(
    sessions: async_sessionmaker[AsyncSession],
    officer_id: int,
    village_id: int,
    day: date,
    why: str,
) -> None:
    async with sessions() as s, s.begin():
        s.add(
            Absence(draft_id=why, officer_id=officer_id, village_id=village_id, day=day, reason=why)
        )


async def test_absences_in_scope(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    chat.clock.now = NOW
    v1, _, v3 = directory.villages
    a, b = directory.officers
    await _absence(sessions, a.id, v1.id, date(2026, 11, 24), "县里集中培训")
    await _absence(sessions, b.id, v3.id, date(2026, 11, 3), "flood duty")
    await _absence(sessions, a.id, v1.id, date(2026, 10, 27), "last month")

    chief = await _supervisor(chat, sessions, ["S01"])
    await chat.say(chief, ZH("button.absences"))
    assert chat.last_text(chief) == "\n".join(
        [
            ZH("supervisor.absences_title", month="2026-11", count=1),
            ZH(
                "supervisor.absence_line",
                day="11-24",
                officer="王警官",
                badge="012345",
                village="张庄村",
                station="城关派出所",
                reason="县里集中培训",
            ),
        ]
    )
    county = await _supervisor(chat, sessions, [], language_code="en")
    await chat.say(county, "/absences")
    text = chat.last_text(county)
    assert text.startswith(EN("supervisor.absences_title", month="2026-11", count=2))
    assert text.index("flood duty") < text.index("县里集中培训")  # by day
    assert "last month" not in text


async def test_no_absences_and_officers_cannot_look(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    chat.clock.now = NOW
    chief = await _supervisor(chat, sessions, ["S02"], language_code="en")
    await chat.say(chief, "/absences")
    assert chat.last_text(chief) == EN("supervisor.absences_none", month="2026-11")
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_officer_invite(
            s, badge="012345", now=NOW, ttl=timedelta(days=7)
        )
    officer = chat.server.user(language_code="en")
    await chat.say(officer, f"/start {issued.payload}")
    await chat.say(officer, "/absences")
    assert chat.last_text(officer) == EN("fallback.unknown")
