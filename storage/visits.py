"""Visit reports: saved once per draft, and the month's progress computed in the database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import Integer, and_, case, cast, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Absence, Photo, QuotaOverride, Village, VisitActivity, VisitReport
from storage.photos import flag_reused_file_ids


@dataclass(frozen=True)
class NewVisit:
    draft_id: str
    officer_id: int
    village_id: int
    visit_date: date
    hours: Decimal
    households: int
    activities: Mapping[str, int]
    latitude: float | None
    longitude: float | None
    distance_m: int | None
    far_from_village: bool
    notes: str | None
    submitted_by: int
    photos: Sequence[tuple[str, str]]  # (file_id, file_unique_id)


async def save_visit(session: AsyncSession, visit: NewVisit) -> tuple[int, bool]:
    """Store the report unless this draft was stored already. Returns (id, newly stored)."""
    stmt = (
        insert(VisitReport)
        .values(
            draft_id=visit.draft_id,
            officer_id=visit.officer_id,
            village_id=visit.village_id,
            visit_date=visit.visit_date,
            hours=visit.hours,
            households=visit.households,
            latitude=visit.latitude,
            longitude=visit.longitude,
            distance_m=visit.distance_m,
            far_from_village=visit.far_from_village,
            notes=visit.notes,
            submitted_by=visit.submitted_by,
        )
        .on_conflict_do_nothing(index_elements=[VisitReport.draft_id])
        .returning(VisitReport.id)
    )
    report_id = await session.scalar(stmt)
    if report_id is None:
        existing = await session.scalar(
            select(VisitReport.id).where(VisitReport.draft_id == visit.draft_id)
        )
        assert existing is not None
        return existing, False
    session.add_all(
        VisitActivity(report_id=report_id, code=code, count=count)
        for code, count in visit.activities.items()
    )
    photos = [
        Photo(visit_report_id=report_id, position=i, file_id=fid, file_unique_id=uid)
        for i, (fid, uid) in enumerate(visit.photos)
    ]
    session.add_all(photos)
    await session.flush()
    await flag_reused_file_ids(session, photo_ids=[p.id for p in photos])
    return report_id, True


@dataclass(frozen=True)
class VillageProgress:
    village_id: int
    visit_days: int
    households: int
    patrols: int
    problems_solved: int
    absences: int


async def progress(
    session: AsyncSession,
    *,
    officer_id: int,
    first: date,
    last: date,
    problem_codes: Sequence[str],
    patrol_code: str,
) -> dict[int, VillageProgress]:
    """Per village of the officer: distinct visit days, households, patrols and problems solved
    between `first` and `last` (one aggregate query), and the absences recorded."""
    in_period = and_(
        VisitReport.officer_id == officer_id,
        VisitReport.visit_date >= first,
        VisitReport.visit_date <= last,
    )
    activity_totals = (
        select(
            VisitActivity.report_id,
            func.sum(case((VisitActivity.code == patrol_code, VisitActivity.count), else_=0)).label(
                "patrols"
            ),
            func.sum(
                case((VisitActivity.code.in_(problem_codes), VisitActivity.count), else_=0)
            ).label("problems"),
        )
        # Only this officer's reports of the period: without it the totals of every
        # activity ever recorded would be summed first (seconds at province scale).
        .join(VisitReport, VisitReport.id == VisitActivity.report_id)
        .where(in_period)
        .group_by(VisitActivity.report_id)
        .subquery()
    )
    rows = await session.execute(
        select(
            VisitReport.village_id,
            func.count(func.distinct(VisitReport.visit_date)),
            func.coalesce(func.sum(VisitReport.households), 0),
            cast(func.coalesce(func.sum(activity_totals.c.patrols), 0), Integer),
            cast(func.coalesce(func.sum(activity_totals.c.problems), 0), Integer),
        )
        .outerjoin(activity_totals, activity_totals.c.report_id == VisitReport.id)
        .where(in_period)
        .group_by(VisitReport.village_id)
    )
    totals = {r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}
    absent = dict(
        (
            await session.execute(
                select(Absence.village_id, func.count())
                .where(Absence.officer_id == officer_id, Absence.day >= first, Absence.day <= last)
                .group_by(Absence.village_id)
            )
        ).all()
    )
    return {
        village_id: VillageProgress(
            village_id, *totals.get(village_id, (0, 0, 0, 0)), int(absent.get(village_id, 0))
        )
        for village_id in totals.keys() | absent.keys()
    }


async def quota_overrides(
    session: AsyncSession, village_ids: Sequence[int]
) -> dict[int, tuple[QuotaOverride | None, QuotaOverride | None]]:
    """For each village: (its station's override, its own override)."""
    rows = await session.execute(
        select(Village.id, QuotaOverride)
        .join(
            QuotaOverride,
            or_(
                QuotaOverride.village_id == Village.id,
                QuotaOverride.station_id == Village.station_id,
            ),
        )
        .where(Village.id.in_(village_ids))
    )
    result: dict[int, tuple[QuotaOverride | None, QuotaOverride | None]] = {
        v: (None, None) for v in village_ids
    }
    for village_id, override in rows:
        station, village = result[village_id]
        if override.village_id is not None:
            village = override
        else:
            station = override
        result[village_id] = (station, village)
    return result
