"""month_tallies (migration 0012): the triggers keep each (month, officer, village) row equal
to a recomputation from the visit reports and their activity lines, through inserts, edits
that move a report, changed and deleted lines, deleted reports and concurrent writers; the
migration's backfill computes the same; assignment_pace reads the same from the tallies as
from the reports; and /me's overview reads what the per-village reads read."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from itertools import count
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.progress import previous_month
from core.activities import PROBLEM_SOLVING, Activity, patrols, problems_solved
from core.quota import Progress, month_bounds, profile
from storage import hazards, overview, pace, villages, visits
from storage.models import (
    Absence,
    Hazard,
    MonthTally,
    Officer,
    QuotaOverride,
    Village,
    VisitActivity,
    VisitReport,
)
from tests.factories import Directory

MIGRATION = (
    Path(__file__).resolve().parents[1] / "storage/migrations/versions/0012_month_tallies.py"
)
Key = tuple[date, int, int]  # month, officer, village
Counts = tuple[int, int, int, int]  # visit days, households, patrols, problems solved

_drafts = count(1)


def _migration() -> ModuleType:
    spec = importlib.util.spec_from_file_location("month_tallies_migration", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _visit(
    s: AsyncSession,
    officer: int,
    village: int,
    day: date,
    households: int,
    activities: Mapping[str, int],
) -> int:
    saved = await visits.save_visit(
        s,
        visits.NewVisit(
            draft_id=f"tally-{next(_drafts)}",
            officer_id=officer,
            village_id=village,
            visit_date=day,
            hours=Decimal("2.0"),
            households=households,
            activities=activities,
            latitude=None,
            longitude=None,
            distance_m=None,
            far_from_village=False,
            notes=None,
            submitted_by=1,
            photos=[],
        ),
    )
    assert saved is not None  # the officer is assigned to the village
    report_id, stored = saved
    assert stored
    return report_id


async def _recomputed(s: AsyncSession) -> dict[Key, Counts]:
    """The tallies from the base tables, counted in Python with core.activities' rules."""
    lines: dict[int, dict[Activity, int | None]] = {}
    for report_id, code, n in await s.execute(
        select(VisitActivity.report_id, VisitActivity.code, VisitActivity.count)
    ):
        lines.setdefault(report_id, {})[Activity(code)] = n
    days: dict[Key, set[date]] = {}
    sums: dict[Key, list[int]] = {}
    for report_id, officer, village, day, households in await s.execute(
        select(
            VisitReport.id,
            VisitReport.officer_id,
            VisitReport.village_id,
            VisitReport.visit_date,
            VisitReport.households,
        )
    ):
        key = (day.replace(day=1), officer, village)
        days.setdefault(key, set()).add(day)
        mine = lines.get(report_id, {})
        totals = sums.setdefault(key, [0, 0, 0])
        totals[0] += households
        totals[1] += patrols(mine)
        totals[2] += problems_solved(mine)
    return {key: (len(days[key]), *sums[key]) for key in days}  # type: ignore[misc]


async def _stored(s: AsyncSession) -> dict[Key, Counts]:
    rows = await s.execute(
        select(
            MonthTally.month,
            MonthTally.officer_id,
            MonthTally.village_id,
            MonthTally.visit_days,
            MonthTally.households,
            MonthTally.patrols,
            MonthTally.problems_solved,
        )
    )
    return {(m, o, v): (d, h, p, q) for m, o, v, d, h, p, q in rows}


async def _check(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> dict[Key, Counts]:
    """The stored tallies equal the recomputation, and November's pace from the tallies
    equals the pace aggregated from the reports; returns the tallies."""
    first, last = month_bounds(date(2026, 11, 1))
    async with sessions() as s:
        stored = await _stored(s)
        assert stored == await _recomputed(s)
        tallied = await pace.assignment_pace(s, first=first, last=last, county=profile("xi"))
    with monkeypatch.context() as m:  # not a whole month: the reports are aggregated
        m.setattr(pace, "month_bounds", lambda day: (None, None))
        async with sessions() as s:
            summed = await pace.assignment_pace(s, first=first, last=last, county=profile("xi"))
    assert tallied == summed
    await _same_as_aggregated(sessions)
    return stored


async def _same_as_aggregated(sessions: async_sessionmaker[AsyncSession]) -> None:
    """A village's month as the flows and /me read it (storage.overview, from the tallies)
    equals visits.progress (from the reports) for every officer, village and month,
    absences included."""
    months = [date(2026, 10, 1), date(2026, 11, 1), date(2026, 12, 1)]
    async with sessions() as s:
        village_ids = list(await s.scalars(select(Village.id)))
        for officer in await s.scalars(select(Officer.id)):
            for month in months:
                first, last = month_bounds(month)
                summed = await visits.progress(
                    s,
                    officer_id=officer,
                    first=first,
                    last=last,
                    problem_codes=[a.value for a in PROBLEM_SOLVING],
                    patrol_code=Activity.PATROL.value,
                )
                for village in village_ids:
                    _, done, absent = await overview.village_month(
                        s, officer_id=officer, village_id=village, day=month, county=profile("xi")
                    )
                    p = summed.get(village)
                    expected = (
                        (Progress(), 0)
                        if p is None
                        else (
                            Progress(p.visit_days, p.households, p.patrols, p.problems_solved),
                            p.absences,
                        )
                    )
                    assert (done, absent) == expected, (officer, village, month)


async def test_tallies_follow_every_write_and_pace_is_unchanged(
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = (o.id for o in directory.officers)
    v1, v2, v3 = (v.id for v in directory.villages)
    nov, octo = date(2026, 11, 1), date(2026, 10, 1)
    async with sessions() as s, s.begin():
        first = await _visit(s, a, v1, date(2026, 11, 3), 4, {"patrol": 2, "household_visit": 4})
        # The same day again: one visit day, the counts add up.
        await _visit(s, a, v1, date(2026, 11, 3), 1, {"dispute_mediation": 2, "patrol": 1})
        moved = await _visit(
            s, a, v1, date(2026, 11, 9), 3, {"resident_service": 1, "legal_publicity": 5}
        )
        await _visit(s, a, v2, date(2026, 11, 30), 2, {"hardship_help": 1})
        await _visit(s, a, v2, date(2026, 12, 1), 6, {"linkage_matter": 3})
        await _visit(s, a, v1, date(2026, 10, 31), 5, {})
        lone = await _visit(s, b, v1, date(2026, 11, 5), 0, {"other": 1})
        # Absences are no visits, but /me reads them with the tallies.
        for n, (village, day) in enumerate([(v2, date(2026, 11, 12)), (v1, date(2026, 10, 6))]):
            s.add(
                Absence(
                    draft_id=f"tally-a{n}", officer_id=a, village_id=village, day=day, reason="培训"
                )
            )
    tallies = await _check(sessions, monkeypatch)
    assert tallies[(nov, a, v1)] == (2, 8, 3, 3)
    assert tallies[(nov, a, v2)] == (1, 2, 0, 1)
    assert tallies[(octo, a, v1)] == (1, 5, 0, 0)
    assert tallies[(nov, b, v1)] == (1, 0, 0, 0)

    # An edit that moves a report to another day and village (and changes its households).
    async with sessions() as s, s.begin():
        await s.execute(
            update(VisitReport)
            .where(VisitReport.id == moved)
            .values(visit_date=date(2026, 11, 20), village_id=v3, households=7)
        )
    tallies = await _check(sessions, monkeypatch)
    assert tallies[(nov, a, v1)] == (1, 5, 3, 2)
    assert tallies[(nov, a, v3)] == (1, 7, 0, 1)

    # Lines deleted, changed and added; a report moved to another month and officer.
    async with sessions() as s, s.begin():
        await s.execute(
            delete(VisitActivity).where(
                VisitActivity.report_id == first, VisitActivity.code == "patrol"
            )
        )
        await s.execute(
            update(VisitActivity)
            .where(VisitActivity.code == "dispute_mediation")
            .values(code="info_collection")
        )
        s.add(VisitActivity(report_id=lone, code="patrol", count=4))
        await s.flush()
        await s.execute(
            update(VisitReport)
            .where(VisitReport.visit_date == date(2026, 10, 31))
            .values(visit_date=date(2026, 11, 28), officer_id=b)
        )
    tallies = await _check(sessions, monkeypatch)
    assert tallies[(nov, a, v1)] == (1, 5, 1, 0)
    assert tallies[(nov, b, v1)] == (2, 5, 4, 0)
    assert (octo, a, v1) not in tallies  # its only report left the month

    # Deleted reports (their lines go with them): a key emptied loses its row.
    async with sessions() as s, s.begin():
        await s.execute(delete(VisitReport).where(VisitReport.id == moved))
        await s.execute(delete(VisitReport).where(VisitReport.officer_id == b))
    tallies = await _check(sessions, monkeypatch)
    assert (nov, a, v3) not in tallies
    assert (nov, b, v1) not in tallies
    assert len(tallies) == 3


async def test_the_backfill_computes_the_same_tallies(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    a, b = (o.id for o in directory.officers)
    v1, v2, _ = (v.id for v in directory.villages)
    async with sessions() as s, s.begin():
        await _visit(s, a, v1, date(2026, 11, 3), 4, {"patrol": 2, "dispute_mediation": 1})
        await _visit(s, a, v1, date(2026, 11, 3), 1, {"patrol": 1})
        await _visit(s, a, v2, date(2026, 10, 30), 2, {"hardship_help": 1, "other": 1})
        await _visit(s, b, v1, date(2026, 11, 4), 0, {})
    async with sessions() as s, s.begin():
        triggered = await _stored(s)
        await s.execute(text("DELETE FROM month_tallies"))
        await s.execute(text(_migration().BACKFILL))
        assert await _stored(s) == triggered == await _recomputed(s)
        assert len(triggered) == 3


async def test_concurrent_reports_of_one_officer_are_both_counted(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    """The second transaction's recomputation waits for the first to commit (the officer's
    advisory lock), then sees its report: neither overwrites the other's tally."""
    a = directory.officers[0].id
    v1 = directory.villages[0].id
    async with sessions() as first:
        await first.begin()
        await _visit(first, a, v1, date(2026, 11, 3), 4, {"patrol": 2})

        async def second() -> None:
            async with sessions() as s, s.begin():
                # No lines: the report's insert is the only statement that recomputes.
                await _visit(s, a, v1, date(2026, 11, 4), 1, {})

        racing = asyncio.create_task(second())
        await asyncio.sleep(0.5)
        assert not racing.done()  # waiting for the officer's lock
        await first.commit()
        await asyncio.wait_for(racing, 10)
    async with sessions() as s:
        assert (
            await _stored(s) == await _recomputed(s) == {(date(2026, 11, 1), a, v1): (2, 5, 2, 0)}
        )


async def test_the_me_overview_reads_what_the_per_village_reads_read(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    """storage.overview (/me's one statement) gives each officer's villages, quotas in force,
    both months' tallies and absences, and open hazards as the separate reads do."""
    a, b = (o.id for o in directory.officers)
    v1, v2, _ = (v.id for v in directory.villages)
    async with sessions() as s, s.begin():
        await _visit(s, a, v1, date(2026, 11, 3), 4, {"patrol": 2, "dispute_mediation": 1})
        await _visit(s, a, v2, date(2026, 12, 1), 6, {"linkage_matter": 3})
        await _visit(s, b, v1, date(2026, 10, 30), 1, {})
        s.add(
            Absence(
                draft_id="ov-a", officer_id=a, village_id=v2, day=date(2026, 11, 12), reason="培训"
            )
        )
        s.add(QuotaOverride(station_id=directory.station.id, visit_days=6))
        s.add(QuotaOverride(village_id=v2, profile="changde", households=9))
        for n, status in enumerate(["open", "open", "rectified"]):
            s.add(
                Hazard(
                    draft_id=f"ov-h{n}",
                    officer_id=a,
                    village_id=v1,
                    category="fire",
                    severity="low",
                    description="电线老化",
                    status=status,
                    reported_by=1,
                )
            )
    async with sessions() as s:
        for officer in (a, b):
            for today in (date(2026, 12, 2), date(2026, 11, 15), date(2026, 10, 1)):
                before = previous_month(today)
                got = await overview.officer_overview(
                    s, officer_id=officer, today=today, previous=before, county=profile("xi")
                )
                listed = await villages.officer_villages(s, officer)
                ids = [v.id for v in listed]
                now: list[overview.MonthOf] = []
                then: list[overview.MonthOf] = []
                for i in ids:
                    for day, read in ((today, now), (before, then)):
                        read.append(
                            await overview.village_month(
                                s, officer_id=officer, village_id=i, day=day, county=profile("xi")
                            )
                        )
                assert [(v.village_id, v.name) for v in got.villages] == [
                    (v.id, v.name) for v in listed
                ]
                assert [v.now for v in got.villages] == now, (officer, today)
                assert [v.before for v in got.villages] == then, (officer, today)
                assert got.open_hazards == await hazards.count_open(s, officer_id=officer)
        assert (await hazards.count_open(s, officer_id=a), len(ids)) == (2, 1)  # b: one village
        mine = await overview.officer_overview(
            s,
            officer_id=a,
            today=date(2026, 12, 2),
            previous=date(2026, 11, 1),
            county=profile("xi"),
        )
        quotas = {v.village_id: v.now[0] for v in mine.villages}
        assert quotas[v1].visit_days == 6 and quotas[v2].households == 9  # the overrides count
