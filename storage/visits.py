"""Visit reports: saved once per draft, and the month's progress computed in the database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import (
    ARRAY,
    Date,
    Integer,
    Select,
    String,
    and_,
    any_,
    bindparam,
    case,
    cast,
    func,
    literal,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import (
    Absence,
    Assignment,
    Photo,
    VisitActivity,
    VisitReport,
)
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


_REPORT_COLUMNS = (
    "draft_id",
    "officer_id",
    "village_id",
    "visit_date",
    "hours",
    "households",
    "latitude",
    "longitude",
    "distance_m",
    "far_from_village",
    "notes",
    "submitted_by",
)


@cache
def _insert_report_statement(if_assigned: bool) -> Any:
    """save_visit's insert, built once (the values bound at execution): building it with
    the values, and its cache key, took about a millisecond per report. `if_assigned`: it
    inserts only while the officer is assigned to the village, checked in the statement."""
    values = select(
        *(
            bindparam(name, type_=VisitReport.__table__.c[name].type).label(name)
            for name in _REPORT_COLUMNS
        )
    )
    if if_assigned:
        values = values.where(
            select(Assignment.id)
            .where(
                Assignment.officer_id == bindparam("officer_id"),
                Assignment.village_id == bindparam("village_id"),
            )
            .exists()
        )
    reports = VisitReport.metadata.tables[VisitReport.__tablename__]
    return (  # Core, not the ORM's bulk insert: nothing in the session reads the row
        insert(reports)
        .from_select(list(_REPORT_COLUMNS), values)
        .on_conflict_do_nothing(index_elements=[reports.c.draft_id])
        .returning(reports.c.id)
    )


@cache
def _insert_activities_statement() -> Any:
    """save_visit's insert of the activities (a Core statement: no ORM objects, nothing in
    the session reads them), built once."""
    return insert(VisitActivity.metadata.tables[VisitActivity.__tablename__])


async def save_visit(
    session: AsyncSession, visit: NewVisit, *, if_assigned: bool = True
) -> tuple[int, bool] | None:
    """Store the report unless this draft was stored already: (id, newly stored). None when
    the officer is not (or no longer) assigned to the village: nothing is stored (unless
    not `if_assigned`, for reports of past assignments)."""
    params = {name: getattr(visit, name) for name in _REPORT_COLUMNS}
    report_id = await session.scalar(_insert_report_statement(if_assigned), params)
    if report_id is None:
        existing = await session.scalar(
            select(VisitReport.id).where(VisitReport.draft_id == visit.draft_id)
        )
        return None if existing is None else (existing, False)
    if visit.activities:
        await session.execute(
            _insert_activities_statement(),
            [
                {"report_id": report_id, "code": code, "count": count}
                for code, count in visit.activities.items()
            ],
        )
    if visit.photos:
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


@cache
def _progress_statement() -> Select[Any]:
    """storage.visits.progress's statement, built once: building the tree and computing its
    cache key took milliseconds per call, and /me runs it for two months. The values are
    bound at execution (officer_id, first, last, problem_codes, patrol_code)."""
    officer_id = bindparam("officer_id", type_=Integer)
    # The days are rendered into the SQL (two months, two statements): bound as parameters,
    # PostgreSQL's generic plan of the prepared statement read a whole month of every
    # officer's reports through the date index before keeping this officer's.
    first = bindparam("first", type_=Date, literal_execute=True)
    last = bindparam("last", type_=Date, literal_execute=True)
    problem_codes = bindparam("problem_codes", type_=ARRAY(String))
    patrol_code = bindparam("patrol_code", type_=String)
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
                case((VisitActivity.code == any_(problem_codes), VisitActivity.count), else_=0)
            ).label("problems"),
        )
        # Only this officer's reports of the period: without it the totals of every
        # activity ever recorded would be summed first (seconds at province scale).
        .join(VisitReport, VisitReport.id == VisitActivity.report_id)
        .where(in_period)
        .group_by(VisitActivity.report_id)
        .subquery()
    )
    visited = (
        select(
            VisitReport.village_id,
            func.count(func.distinct(VisitReport.visit_date)).label("days"),
            func.coalesce(func.sum(VisitReport.households), 0).label("households"),
            func.coalesce(func.sum(activity_totals.c.patrols), 0).label("patrols"),
            func.coalesce(func.sum(activity_totals.c.problems), 0).label("problems"),
            literal(0).label("absences"),
        )
        .outerjoin(activity_totals, activity_totals.c.report_id == VisitReport.id)
        .where(in_period)
        .group_by(VisitReport.village_id)
    )
    absent = (
        select(Absence.village_id, *(literal(0) for _ in range(4)), func.count())
        .where(Absence.officer_id == officer_id, Absence.day >= first, Absence.day <= last)
        .group_by(Absence.village_id)
    )
    # Visits and absences in one round trip: /me runs this for two months.
    both = union_all(visited, absent).subquery()
    return select(
        both.c.village_id,
        *(cast(func.sum(column), Integer) for column in list(both.c)[1:]),
    ).group_by(both.c.village_id)


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
    rows = await session.execute(
        _progress_statement(),
        {
            "officer_id": officer_id,
            "first": first,
            "last": last,
            "problem_codes": list(problem_codes),
            "patrol_code": patrol_code,
        },
    )
    return {row[0]: VillageProgress(*(int(value) for value in row)) for row in rows}
