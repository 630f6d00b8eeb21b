"""The stored standings (storage.standings, the standings-refresh job) and the scoped reads
that use them: a scope's standings, items, team and pace equal the county's kept to the
scope, and a scope's county ranks are those of the last refresh."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.settings import Settings
from core.quota import month_bounds, profile
from core.scoring import DEFAULT_POINTS
from scheduler.jobs import JobContext, all_jobs
from storage import scores, standings
from storage.models import MonthStanding, VisitReport
from storage.pace import assignment_pace
from tests.test_scores import NOVEMBER, TZ, Month, seed_month

NOW = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)


@pytest.fixture
async def month(sessions: async_sessionmaker[AsyncSession]) -> Month:
    async with sessions() as s, s.begin():
        return await seed_month(s)


async def _refresh(sessions: async_sessionmaker[AsyncSession], now: datetime = NOW) -> int:
    async with sessions() as s, s.begin():
        return await standings.refresh(s, month=NOVEMBER, tz=TZ, table=DEFAULT_POINTS, now=now)


async def test_refresh_stores_the_county_standings_and_runs_twice_safely(
    sessions: async_sessionmaker[AsyncSession], month: Month
) -> None:
    assert await _refresh(sessions) == 4
    assert await _refresh(sessions) == 4  # replaces, never doubles
    async with sessions() as s:
        live = await scores.standings(s, month=NOVEMBER, tz=TZ, table=DEFAULT_POINTS)
        ids = [x.member.officer_id for x in live]
        stored = await scores.stored_standings(s, month=date(2026, 11, 30), officers=ids)
        rows = await s.scalar(select(func.count()).select_from(MonthStanding))
        when = await standings.refreshed_at(s, month=NOVEMBER)
    assert rows == 4
    assert when == NOW
    assert [
        (x.points, x.station_rank, x.station_size, x.county_rank, x.county_size) for x in live
    ] == [
        (
            stored[o].points,
            stored[o].station_rank,
            stored[o].station_size,
            stored[o].county_rank,
            stored[o].county_size,
        )
        for o in ids
    ]
    # Each stored point traces to its records.
    async with sessions() as s:
        items = await scores.month_items(s, month=NOVEMBER, tz=TZ)
    for officer in ids:
        mine = sum(i.points(DEFAULT_POINTS) for i in items if i.officer_id == officer)
        assert mine == stored[officer].points


async def test_refresh_ranks_ties_as_the_live_standings_do(
    sessions: async_sessionmaker[AsyncSession], month: Month
) -> None:
    # Only village days count: officers with as many days share a rank ("1224").
    days_only = dict.fromkeys(DEFAULT_POINTS, 0) | {"visit_day": 1}
    async with sessions() as s, s.begin():
        await standings.refresh(s, month=NOVEMBER, tz=TZ, table=days_only, now=NOW)
    async with sessions() as s:
        live = await scores.standings(s, month=NOVEMBER, tz=TZ, table=days_only)
        ids = [x.member.officer_id for x in live]
        stored = await scores.stored_standings(s, month=NOVEMBER, officers=ids)
    ranks = [(x.points, x.station_rank, x.county_rank) for x in live]
    assert len({points for points, _, _ in ranks}) < len(ranks)  # there is a tie
    assert ranks == [(stored[o].points, stored[o].station_rank, stored[o].county_rank) for o in ids]


async def test_a_scope_reads_the_county_ranks_of_the_last_refresh(
    sessions: async_sessionmaker[AsyncSession], month: Month
) -> None:
    station = [month.county.directory.station.id]
    async with sessions() as s:
        before = await scores.standings(
            s, month=NOVEMBER, tz=TZ, table=DEFAULT_POINTS, scope=station
        )
        county = await scores.standings(s, month=NOVEMBER, tz=TZ, table=DEFAULT_POINTS)
    # No refresh yet: computed for the county, the same as the county's kept to the scope.
    kept = [x for x in county if x.member.station_id in station]
    assert before == kept
    await _refresh(sessions)
    async with sessions() as s:
        after = await scores.standings(
            s, month=NOVEMBER, tz=TZ, table=DEFAULT_POINTS, scope=station
        )
    assert after == kept
    # The stored ranks are what a scope shows (as of the refresh), whatever changed since.
    async with sessions() as s, s.begin():
        await s.execute(
            update(MonthStanding)
            .where(MonthStanding.officer_id == before[0].member.officer_id)
            .values(county_rank=99, county_size=100)
        )
    async with sessions() as s:
        stale = await scores.standings(
            s, month=NOVEMBER, tz=TZ, table=DEFAULT_POINTS, scope=station
        )
    assert (stale[-1].county_rank, stale[-1].county_size) == (99, 100)
    assert stale[-1].points == before[0].points  # the points stay live


async def test_scoped_items_team_and_pace_equal_the_county_kept_to_the_scope(
    sessions: async_sessionmaker[AsyncSession], month: Month
) -> None:
    await _refresh(sessions)
    for station in (month.county.directory.station, month.county.directory.other_station):
        scope = [station.id]
        async with sessions() as s:
            members = {m.officer_id for m in await scores.roster(s, scope=scope)}
            items = await scores.month_items(s, month=NOVEMBER, tz=TZ, scope=scope)
            everything = await scores.month_items(s, month=NOVEMBER, tz=TZ)
            team = await scores.team(
                s, as_of=NOW.date(), tz=TZ, table=DEFAULT_POINTS, county_profile="xi", scope=scope
            )
            whole = await scores.team(
                s, as_of=NOW.date(), tz=TZ, table=DEFAULT_POINTS, county_profile="xi"
            )
        assert members
        assert items == [i for i in everything if i.officer_id in members]
        assert team == [r for r in whole if r.standing.member.officer_id in members]

    first, last = month_bounds(NOVEMBER)
    async with sessions() as s:
        every = await assignment_pace(s, first=first, last=last, county=profile("xi"))
        home = [month.county.directory.station.id]
        scoped = await assignment_pace(s, first=first, last=last, county=profile("xi"), scope=home)
        officer = month.county.officers["A"].id
        theirs = await assignment_pace(
            s, first=first, last=last, county=profile("xi"), officers=[officer]
        )
        visited = await s.scalar(select(func.count()).where(VisitReport.officer_id == officer))
    assert visited and any(r.progress.visit_days for r in theirs)
    assert scoped == [r for r in every if r.station_id in home]
    assert theirs == [r for r in every if r.officer_id == officer]


async def test_the_job_refreshes_this_month_and_early_on_the_month_before(
    sessions: async_sessionmaker[AsyncSession], month: Month
) -> None:
    job = all_jobs()["standings-refresh"]
    settings = Settings(_env_file=None, timezone="Asia/Shanghai")
    said = await job.run(JobContext(sessions, settings, NOW))
    assert said == "standings refreshed, 2026-11: 4 officers"
    december = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
    said = await job.run(JobContext(sessions, settings, december))
    assert said == "standings refreshed, 2026-12: 4 officers; 2026-11: 4 officers"
    async with sessions() as s:
        assert await standings.refreshed_at(s, month=NOVEMBER) == december
        assert await standings.refreshed_at(s, month=date(2026, 10, 1)) is None
