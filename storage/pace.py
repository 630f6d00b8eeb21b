"""Every officer assignment at once: its month against the quota in force, and the villages
due a visit on a village day. Set-based (one query each, whatever the number of officers),
for the scheduler's jobs and the digests; storage.overview is the per-officer version behind /me.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    Dialect,
    Integer,
    Subquery,
    and_,
    case,
    cast,
    exists,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.compiler import SQLCompiler

from core.activities import PROBLEM_SOLVING, Activity
from core.quota import Progress, Quota, QuotaOverride, month_bounds, resolve_quota
from core.roles import Role
from storage.attention import Scope, among, in_scope
from storage.db import driver_connection
from storage.models import (
    Absence,
    Assignment,
    MonthTally,
    Station,
    User,
    Village,
    VisitActivity,
    VisitReport,
)

_PROBLEM_CODES = [a.value for a in PROBLEM_SOLVING]
_QUOTA_CODES = [Activity.PATROL.value, *_PROBLEM_CODES]


class AssignmentPace(NamedTuple):
    """A named tuple rather than a frozen dataclass: a province builds 89,000 of them, and
    a tuple is built in a third of the time."""

    officer_id: int
    village_id: int
    village_name: str
    station_id: int
    account: int | None  # the officer's Telegram account, None when not joined
    locale: str | None  # the account's /language choice
    language_code: str | None  # and its Telegram language
    quota: Quota  # in force for the village
    progress: Progress  # from first to last, counted as the quota counts
    absences: int  # village days reported missed from first to last


def override_of(columns: Sequence[Any]) -> QuotaOverride | None:
    """The override of an override's columns as read (profile, visit_days, households,
    patrols, problems_solved); None when they are all None (no override)."""
    profile, *counters = columns
    if profile is None and all(c is None for c in counters):
        return None
    return QuotaOverride(profile, *counters)


class _Quotas:
    """The quota in force in each village, from every override (a province has about a
    thousand for its tens of thousands of assignments): each distinct pair of overrides
    (the station's, the village's) resolved once, and the county's quota where neither."""

    def __init__(self, county: Quota, overrides: Iterable[Sequence[Any]]) -> None:
        self.county = county
        self.station: dict[int, int] = {}  # station id -> its override's id
        self.village: dict[int, int] = {}
        self.columns: dict[int, Sequence[Any]] = {}  # override id -> its columns
        for override_id, station_id, village_id, *columns in overrides:
            if station_id is not None:
                self.station[station_id] = override_id
            if village_id is not None:
                self.village[village_id] = override_id
            self.columns[override_id] = columns
        self.known: dict[tuple[int | None, int | None], Quota] = {}

    def __call__(self, station: int | None, village: int | None) -> Quota:
        """The quota of the overrides with these ids (None: no override at that level)."""
        key = (station, village)
        quota = self.known.get(key)
        if quota is None:
            quota = resolve_quota(
                self.county,
                None if station is None else override_of(self.columns[station]),
                None if village is None else override_of(self.columns[village]),
            )
            self.known[key] = quota
        return quota


# Every override, read before the assignments: its id, scope and columns (see override_of).
_OVERRIDES = (
    "SELECT id, station_id, village_id, profile, visit_days, households, patrols, "
    "problems_solved FROM quota_overrides"
)


def _month_visits(first: date, last: date, where: Sequence[ColumnElement[bool]]) -> Subquery:
    """Per officer and village: the distinct visit days, households, patrols and problems
    solved of the reports dated `first`..`last` that meet `where`, in one pass: each report's
    quota activities are summed first, then the reports per officer and village."""
    period = and_(VisitReport.visit_date >= first, VisitReport.visit_date <= last, *where)
    # The period's report ids lie between these two, whatever the dates of the others: a
    # condition the activities' index (report_id) turns into a range scan, where without it
    # the activities of every report ever filed would be read.
    lowest = select(func.min(VisitReport.id)).where(period).scalar_subquery()
    highest = select(func.max(VisitReport.id)).where(period).scalar_subquery()
    counted = VisitActivity.count
    per_report = (
        select(
            VisitActivity.report_id,
            func.sum(case((VisitActivity.code == Activity.PATROL.value, counted), else_=0)).label(
                "patrols"
            ),
            func.sum(case((VisitActivity.code.in_(_PROBLEM_CODES), counted), else_=0)).label(
                "problems"
            ),
        )
        .where(
            VisitActivity.report_id >= lowest,
            VisitActivity.report_id <= highest,
            VisitActivity.code.in_(_QUOTA_CODES),
        )
        .group_by(VisitActivity.report_id)
        .subquery("per_report")
    )
    return (
        select(
            VisitReport.officer_id,
            VisitReport.village_id,
            func.count(func.distinct(VisitReport.visit_date)).label("days"),
            func.sum(VisitReport.households).label("households"),
            func.sum(per_report.c.patrols).label("patrols"),
            func.sum(per_report.c.problems).label("problems"),
        )
        .outerjoin(per_report, per_report.c.report_id == VisitReport.id)
        .where(period)
        .group_by(VisitReport.officer_id, VisitReport.village_id)
        .subquery("visits")
    )


def _month_tallies(month: date, officers: Sequence[int] | None, villages: Any) -> Subquery:
    """The same per officer and village as _month_visits for a whole month, read from
    `month_tallies` (kept by triggers on the reports and their activities): a row per
    officer and village with a report in the month, found by the primary key's month."""
    where: list[ColumnElement[bool]] = [MonthTally.month == month]
    if officers is not None:
        where.append(among(MonthTally.officer_id, officers))
    if villages is not None:
        where.append(MonthTally.village_id.in_(villages))
    return (
        select(
            MonthTally.officer_id,
            MonthTally.village_id,
            MonthTally.visit_days.label("days"),
            MonthTally.households,
            MonthTally.patrols,
            MonthTally.problems_solved.label("problems"),
        )
        .where(*where)
        .subquery("visits")
    )


async def assignment_pace(
    session: AsyncSession,
    *,
    first: date,
    last: date,
    county: Quota,
    scope: Scope = None,
    officers: Sequence[int] | None = None,
    bound_only: bool = False,
) -> list[AssignmentPace]:
    """Each assignment (officer x village) in the scope, or of the `officers` (all their
    villages, wherever they lie), with its quota and what was done between `first` and
    `last`, by officer and village code. `bound_only` keeps the officers who joined the bot.
    One query: the visits (a whole month's from `month_tallies`, another period's aggregated
    from the reports and their activities) and the absences per officer and village, joined
    to the assignments; a scope or officers narrow them too, so that a station's pace reads
    only its station's rows. The overrides, a small table, are read whole before it."""
    narrow: list[ColumnElement[bool]] = []
    absent_narrow: list[ColumnElement[bool]] = []
    if officers is not None:
        narrow.append(among(VisitReport.officer_id, officers))
        absent_narrow.append(among(Absence.officer_id, officers))
    villages = None
    if scope is not None:
        villages = select(Village.id).where(*in_scope(Village.station_id, scope))
        narrow.append(VisitReport.village_id.in_(villages))
        absent_narrow.append(Absence.village_id.in_(villages))
    if (first, last) == month_bounds(first):
        visits = _month_tallies(first, officers, villages)
    else:
        visits = _month_visits(first, last, narrow)
    absent = (
        select(Absence.officer_id, Absence.village_id, func.count().label("days"))
        .where(Absence.day >= first, Absence.day <= last, *absent_narrow)
        .group_by(Absence.officer_id, Absence.village_id)
        .subquery()
    )

    def same(table: Subquery) -> ColumnElement[bool]:
        return and_(
            table.c.officer_id == Assignment.officer_id,
            table.c.village_id == Assignment.village_id,
        )

    account = and_(User.officer_id == Assignment.officer_id, User.role == Role.OFFICER.value)
    mine = [] if officers is None else [among(Assignment.officer_id, officers)]
    # AssignmentPace's first seven fields, then the progress's four counters and the absences.
    stmt = (
        select(
            Assignment.officer_id,
            Assignment.village_id,
            Village.name,
            Village.station_id,
            User.id,
            User.locale,
            User.language_code,
            func.coalesce(visits.c.days, 0),
            cast(func.coalesce(visits.c.households, 0), Integer),
            cast(func.coalesce(visits.c.patrols, 0), Integer),
            cast(func.coalesce(visits.c.problems, 0), Integer),
            func.coalesce(absent.c.days, 0),
        )
        .join(Village, Village.id == Assignment.village_id)
        .join(Station, Station.id == Village.station_id)  # for the order only
        .join(User, account, isouter=not bound_only)
        .outerjoin(visits, same(visits))
        .outerjoin(absent, same(absent))
        .where(*in_scope(Village.station_id, scope), *mine)
        .order_by(Assignment.officer_id, Station.code, Village.code)
    )
    db = await driver_connection(session)
    sql, args = _driver_sql(stmt, (await session.connection()).dialect)
    # No cyclic garbage collection while tens of thousands of rows and paces are built (none
    # of them cyclic): its passes over the growing heap took longer than building them, and
    # still made fetching and building 89,000 rows from the driver three times as long.
    with _no_gc():
        if scope is None and officers is None:
            # The whole county's rows are sorted: in memory, not spilled to disk at the
            # default work_mem (4 MB). For the rest of this transaction only.
            await db.execute("SET LOCAL work_mem = '64MB'")
        quotas = _Quotas(county, await db.fetch(_OVERRIDES))
        # Through the driver: 89,000 rows through SQLAlchemy's Result and Row objects took
        # longer than building the paces.
        return _paces(await db.fetch(sql, *args), quotas)


def _paces(rows: Sequence[Any], quotas: _Quotas) -> list[AssignmentPace]:
    """The rows of assignment_pace's query as paces: the row's values are used as they
    are, and quotas and progresses shared (a province's assignments have a handful of
    distinct quotas and a few thousand distinct month counts)."""
    county = quotas.county
    station_override, village_override = quotas.station.get, quotas.village.get
    progress: dict[tuple[int, ...], Progress] = {}
    paces: list[AssignmentPace] = []
    append = paces.append
    # AssignmentPace(...) is a Python function around tuple.__new__ (as its _make is):
    # calling that directly saves a frame per row, a third of the cost of building one.
    make = tuple.__new__
    for (
        officer_id,
        village_id,
        name,
        station_id,
        account,
        locale,
        language_code,
        days,
        households,
        patrols,
        problems,
        absences,
    ) in rows:
        counts = (days, households, patrols, problems)
        done = progress.get(counts)
        if done is None:
            done = progress[counts] = Progress(*counts)
        station, village = station_override(station_id), village_override(village_id)
        quota = county if station is None and village is None else quotas(station, village)
        append(
            make(
                AssignmentPace,
                (
                    officer_id,
                    village_id,
                    name,
                    station_id,
                    account,
                    locale,
                    language_code,
                    quota,
                    done,
                    absences,
                ),
            )
        )
    return paces


def _driver_sql(stmt: ClauseElement, dialect: Dialect) -> tuple[str, list[Any]]:
    """The statement as the driver takes it: its SQL (`$1`…, lists in IN expanded) and the
    values in the order of their numbers. Its values need no conversion (ints, strings,
    dates and int arrays, as asyncpg takes them)."""
    compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    assert isinstance(compiled, SQLCompiler)
    params = compiled.params
    return compiled.string, [params[name] for name in compiled.positiontup or ()]


@contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused, unless it already was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class VillageDay:
    """An officer's villages to visit on a village day (those reported missed left out)."""

    officer_id: int
    account: int
    locale: str | None
    language_code: str | None
    villages: tuple[str, ...]  # names, by station and village code


async def village_day_rounds(session: AsyncSession, *, day: date) -> list[VillageDay]:
    """Every officer who joined the bot and has a village to visit on `day`: their
    assignments minus the villages they reported an absence for on that day."""
    reported = exists().where(
        Absence.officer_id == Assignment.officer_id,
        Absence.village_id == Assignment.village_id,
        Absence.day == day,
    )
    rows = await session.execute(
        select(Assignment.officer_id, User.id, User.locale, User.language_code, Village.name)
        .join(Village, Village.id == Assignment.village_id)
        .join(Station, Station.id == Village.station_id)
        .join(
            User,
            and_(User.officer_id == Assignment.officer_id, User.role == Role.OFFICER.value),
        )
        .where(~reported)
        .order_by(Assignment.officer_id, Station.code, Village.code)
    )
    rounds: dict[int, tuple[int, str | None, str | None, list[str]]] = {}
    for officer_id, account, locale, language, name in rows:
        rounds.setdefault(officer_id, (account, locale, language, []))[3].append(name)
    return [
        VillageDay(o, a, loc, lang, tuple(names)) for o, (a, loc, lang, names) in rounds.items()
    ]
