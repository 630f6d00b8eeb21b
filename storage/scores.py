"""A month's points, the ranking, and each officer's month against the quota, for a scope.

Everything is computed with a fixed number of set-based queries, however many officers:
a county of 340 officers costs the same handful of round trips as a station of five.

Who is ranked: every officer with at least one assignment (the roster). An officer's station
is the station of their resident village, else of their contact village (the lowest station
code when there are several); station rankings, scopes and /team follow it.

What earns points in a month (see core.scoring for what each is worth):
- a visit day: each distinct (officer, village, visit date) of the month's visit reports,
  named by the first report of that day;
- the households of each visit report, and each activity line (its count; an activity
  without a count counts 1), named by the report;
- a resolved request: counted once, for the officer who first resolved it and in the month
  (county time) of that first resolution. A request the villager reopens and the officer
  resolves again earns nothing more, and a month's ranking never changes afterwards;
- a hazard closed that month (county time) as rectified, or handed over to a department,
  for the officer who reported it (only they can close it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Date,
    DateTime,
    Integer,
    Select,
    String,
    Subquery,
    and_,
    bindparam,
    case,
    cast,
    column,
    func,
    literal,
    select,
    true,
    union_all,
)
from sqlalchemy import (
    values as values_table,
)
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from core.activities import COUNTED, Activity
from core.quota import (
    COUNTERS,
    Progress,
    Quota,
    behind_pace,
    month_bounds,
    profile,
)
from core.requests import Event
from core.roles import AssignmentKind
from core.scoring import Item, Source, Tally, by_source, rank, record_name, source_of, totals
from storage.attention import Scope, among, in_scope
from storage.models import (
    Assignment,
    Hazard,
    MonthStanding,
    Officer,
    RequestEvent,
    Station,
    Village,
    VisitActivity,
    VisitReport,
)
from storage.pace import assignment_pace

_ACTIVITY_CODES = [a.value for a in Activity]
_COUNTED_CODES = [a.value for a in COUNTED]
_SOURCE_ORDER = {source: i for i, source in enumerate(Source)}


@dataclass(frozen=True)
class Member:
    """An officer on the roster, with their station."""

    officer_id: int
    badge: str
    name: str
    station_id: int
    station_code: str
    station_name: str


def _home_stations(scope: Scope = None) -> Subquery:
    """(officer_id, station_id) for every officer with an assignment: their resident
    village's station, else their contact village's; the lowest station code on a tie.
    A scope keeps the officers with a village in it (their home may lie outside)."""
    touching = aliased(Assignment)
    near = (
        []
        if scope is None
        else [
            Assignment.officer_id.in_(
                select(touching.officer_id)
                .join(Village, Village.id == touching.village_id)
                .where(*in_scope(Village.station_id, scope))
            )
        ]
    )
    return (
        select(Assignment.officer_id, Village.station_id)
        .join(Village, Village.id == Assignment.village_id)
        .join(Station, Station.id == Village.station_id)
        .where(*near)
        .ext(distinct_on(Assignment.officer_id))
        .order_by(
            Assignment.officer_id,
            Assignment.kind != AssignmentKind.RESIDENT.value,  # false (resident) first
            Station.code,
        )
        .subquery("home")
    )


async def roster(session: AsyncSession, *, scope: Scope = None) -> list[Member]:
    """The officers whose station is in the scope, by station code and badge."""
    home = _home_stations(scope)
    rows = await session.execute(
        select(Officer.id, Officer.badge, Officer.name, Station.id, Station.code, Station.name)
        .join(home, home.c.officer_id == Officer.id)
        .join(Station, Station.id == home.c.station_id)
        .where(*in_scope(home.c.station_id, scope))
        .order_by(Station.code, Officer.badge)
    )
    return [Member(*row) for row in rows]


def _instants(month: date, tz: ZoneInfo) -> tuple[date, date, datetime, datetime]:
    """The month's first and last day, and its start and end as instants in county time."""
    first, last = month_bounds(month)
    start = datetime.combine(first, time(), tz)
    return first, last, start, datetime.combine(last + timedelta(days=1), time(), tz)


def _items(month: date, tz: ZoneInfo, officers: Sequence[int] | None = None) -> Subquery:
    """Every item of the month: (officer_id, code, record_id, units); only the `officers'`
    when given, each part then read through an index on the officer."""
    first, last, start, end = _instants(month, tz)
    return _items_between(
        first,
        last,
        start,
        end,
        None if officers is None else lambda column: among(column, officers),
    )


Bound = date | datetime | BindParameter[Any]


def _items_between(
    first: Bound,
    last: Bound,
    start: Bound,
    end: Bound,
    theirs_only: Callable[[Any], ColumnElement[bool]] | None,
) -> Subquery:
    """_items between the month's first and last day (visits) and instants (requests,
    hazards): values, or parameters bound at execution; `theirs_only` is the condition on
    an officer id column that keeps only the officers wanted (None: everyone)."""
    in_month = and_(VisitReport.visit_date >= first, VisitReport.visit_date <= last)
    theirs: list[ColumnElement[bool]] = []
    if theirs_only is not None:
        in_month = and_(in_month, theirs_only(VisitReport.officer_id))
        # The requests they resolved in the month; whether theirs was the first resolution
        # is decided among all of each request's resolutions below.
        theirs = [
            RequestEvent.request_id.in_(
                select(RequestEvent.request_id).where(
                    RequestEvent.event == Event.RESOLVED.value,
                    theirs_only(RequestEvent.officer_id),
                    RequestEvent.at >= start,
                    RequestEvent.at < end,
                )
            )
        ]
    days = (
        select(
            VisitReport.officer_id,
            literal(Source.VISIT_DAY.value).label("code"),
            func.min(VisitReport.id).label("record_id"),
            literal(1).label("units"),
        )
        .where(in_month)
        .group_by(VisitReport.officer_id, VisitReport.village_id, VisitReport.visit_date)
    )
    households = select(
        VisitReport.officer_id,
        literal(Source.HOUSEHOLD.value),
        VisitReport.id,
        VisitReport.households,
    ).where(in_month, VisitReport.households > 0)
    activities = (
        select(
            VisitReport.officer_id,
            VisitActivity.code,
            VisitReport.id,
            case((VisitActivity.code.in_(_COUNTED_CODES), VisitActivity.count), else_=1),
        )
        .join(VisitActivity, VisitActivity.report_id == VisitReport.id)
        .where(in_month, VisitActivity.code.in_(_ACTIVITY_CODES))
    )
    first_resolved = (
        select(RequestEvent.request_id, RequestEvent.officer_id, RequestEvent.at)
        .where(
            RequestEvent.event == Event.RESOLVED.value,
            RequestEvent.officer_id.is_not(None),
            *theirs,
        )
        .ext(distinct_on(RequestEvent.request_id))
        .order_by(RequestEvent.request_id, RequestEvent.id)
        .subquery("first_resolved")
    )
    resolved = select(
        first_resolved.c.officer_id,
        literal(Source.REQUEST_RESOLVED.value),
        first_resolved.c.request_id,
        literal(1),
    ).where(first_resolved.c.at >= start, first_resolved.c.at < end)
    hazards = select(
        Hazard.officer_id,
        case(
            (Hazard.status == "rectified", literal(Source.HAZARD_RECTIFIED.value)),
            else_=literal(Source.HAZARD_HANDED_OVER.value),
        ),
        Hazard.id,
        literal(1),
    ).where(
        Hazard.status.in_(("rectified", "handed_over")),
        Hazard.closed_at >= start,
        Hazard.closed_at < end,
        *([] if theirs_only is None else [theirs_only(Hazard.officer_id)]),
    )
    return union_all(days, households, activities, resolved, hazards).subquery("items")


def _on_roster(column: ColumnElement[int]) -> ColumnElement[bool]:
    return column.in_(select(_home_stations().c.officer_id))


def _officers_of(column: ColumnElement[int], officers: Sequence[int] | None) -> Any:
    """Only the officers given, else every officer on the roster."""
    return _on_roster(column) if officers is None else among(column, officers)


async def month_items(
    session: AsyncSession, *, month: date, tz: ZoneInfo, scope: Scope = None
) -> list[Item]:
    """Every item the scope's officers earned in `month`'s month, by officer, source and
    record: the trace behind each point."""
    officers = None if scope is None else [m.officer_id for m in await roster(session, scope=scope)]
    items = _items(month, tz, officers)
    rows = await session.execute(
        select(items.c.officer_id, items.c.code, items.c.record_id, items.c.units).where(
            _officers_of(items.c.officer_id, officers)
        )
    )
    result = [
        Item(officer, source_of(code), code, record_name(source_of(code), record), int(units))
        for officer, code, record, units in rows
    ]
    result.sort(key=lambda i: (i.officer_id, _SOURCE_ORDER[i.source], i.record, i.code))
    return result


async def month_tallies(
    session: AsyncSession, *, month: date, tz: ZoneInfo, officers: Sequence[int] | None = None
) -> list[Tally]:
    """The month's items summed per officer and code, in the database: of the `officers`,
    else of the whole roster."""
    items = _items(month, tz, officers)
    rows = await session.execute(
        select(items.c.officer_id, items.c.code, cast(func.sum(items.c.units), Integer))
        .where(_officers_of(items.c.officer_id, officers))
        .group_by(items.c.officer_id, items.c.code)
    )
    return [Tally(officer, code, int(units)) for officer, code, units in rows]


def county_ranking(month: date, tz: ZoneInfo, table: Mapping[str, int]) -> Select[Any]:
    """Every officer on the roster with their station, the month's points and their ranks
    in the station and the county (competition ranking, as core.scoring.rank), computed in
    the database: what `standings` gives for the county, as rows for storage.standings to
    store, without tens of thousands of objects in the process."""
    home = _home_stations()
    items = _items(month, tz)
    worth = values_table(column("code", String), column("points", Integer), name="worth").data(
        sorted(table.items())
    )
    earned = (
        select(items.c.officer_id, func.sum(items.c.units * worth.c.points).label("points"))
        .join(worth, worth.c.code == items.c.code)
        .group_by(items.c.officer_id)
        .subquery("earned")
    )
    points = cast(func.coalesce(earned.c.points, 0), Integer)
    return select(
        home.c.officer_id,
        home.c.station_id,
        points.label("points"),
        func.rank()
        .over(partition_by=home.c.station_id, order_by=points.desc())
        .label("station_rank"),
        func.count().over(partition_by=home.c.station_id).label("station_size"),
        func.rank().over(order_by=points.desc()).label("county_rank"),
        func.count().over().label("county_size"),
    ).select_from(home.outerjoin(earned, earned.c.officer_id == home.c.officer_id))


@dataclass(frozen=True)
class Standing:
    """An officer's month: points (in all and per source), what they did, and their ranks
    (competition ranking: equal points share a rank)."""

    member: Member
    points: int
    by_source: Mapping[Source, int]
    visit_days: int
    households: int
    station_rank: int
    station_size: int
    county_rank: int
    county_size: int


async def standings(
    session: AsyncSession,
    *,
    month: date,
    tz: ZoneInfo,
    table: Mapping[str, int],
    scope: Scope = None,
) -> list[Standing]:
    """The scope's officers, best first (ties by badge). Ranks are always counted among the
    whole station and the whole county, whatever the scope.

    For the county (no scope) everything is computed here. For a scope, only its officers'
    points are (a scope holds whole stations, so the station ranks are exact), and the
    county ranks are those of the last refresh of month_standings (storage.standings), or
    computed for the whole county when that refresh does not cover every officer."""
    members = await roster(session, scope=scope)
    officers = None if scope is None else [m.officer_id for m in members]
    tallies = await month_tallies(session, month=month, tz=tz, officers=officers)
    points = {m.officer_id: 0 for m in members} | totals(tallies, table)
    sources = by_source(tallies, table)
    units: dict[tuple[int, str], int] = {(t.officer_id, t.code): t.units for t in tallies}
    stations: dict[int, dict[int, int]] = {}
    for m in members:
        stations.setdefault(m.station_id, {})[m.officer_id] = points[m.officer_id]
    station_ranks = {sid: rank(scores) for sid, scores in stations.items()}
    if scope is None:
        ranked = rank({m.officer_id: points[m.officer_id] for m in members})
        county = {officer: (place, len(members)) for officer, place in ranked.items()}
    else:
        county = await _county_ranks(session, month=month, tz=tz, table=table, members=members)
    result = [
        Standing(
            member=m,
            points=points[m.officer_id],
            by_source=sources.get(m.officer_id, dict.fromkeys(Source, 0)),
            visit_days=units.get((m.officer_id, Source.VISIT_DAY.value), 0),
            households=units.get((m.officer_id, Source.HOUSEHOLD.value), 0),
            station_rank=station_ranks[m.station_id][m.officer_id],
            station_size=len(stations[m.station_id]),
            county_rank=county[m.officer_id][0],
            county_size=county[m.officer_id][1],
        )
        for m in members
    ]
    result.sort(key=lambda s: (s.county_rank, s.member.badge))
    return result


async def _county_ranks(
    session: AsyncSession,
    *,
    month: date,
    tz: ZoneInfo,
    table: Mapping[str, int],
    members: Sequence[Member],
) -> dict[int, tuple[int, int]]:
    """(county rank, county size) of each member: as stored by the month's last refresh,
    else (an officer joined since, or no refresh yet) computed for the whole county."""
    if not members:
        return {}
    officers = [m.officer_id for m in members]
    stored = await stored_standings(session, month=month, officers=officers)
    if all(o in stored for o in officers):
        return {o: (s.county_rank, s.county_size) for o, s in stored.items()}
    ranked = county_ranking(month, tz, table).subquery("ranked")
    rows = await session.execute(
        select(ranked.c.officer_id, ranked.c.county_rank, ranked.c.county_size).where(
            among(ranked.c.officer_id, officers)
        )
    )
    return {officer: (int(place), int(size)) for officer, place, size in rows}


@dataclass(frozen=True)
class StoredStanding:
    """An officer's row of month_standings: points and ranks as of `refreshed_at`."""

    officer_id: int
    points: int
    station_rank: int
    station_size: int
    county_rank: int
    county_size: int
    refreshed_at: datetime


# StoredStanding's fields, in order.
_STORED_COLUMNS = (
    MonthStanding.officer_id,
    MonthStanding.points,
    MonthStanding.station_rank,
    MonthStanding.station_size,
    MonthStanding.county_rank,
    MonthStanding.county_size,
    MonthStanding.refreshed_at,
)


async def stored_standings(
    session: AsyncSession, *, month: date, officers: Sequence[int]
) -> dict[int, StoredStanding]:
    """The officers' rows of `month`'s month as last refreshed (none for an officer the
    refresh did not see)."""
    rows = await session.execute(
        select(*_STORED_COLUMNS).where(
            MonthStanding.month == month_bounds(month)[0],
            among(MonthStanding.officer_id, officers),
        )
    )
    return {row[0]: StoredStanding(*row) for row in rows}


@dataclass(frozen=True)
class OfficerScore:
    """One officer's month for /me: points computed now, per source, and the ranks of the
    month's last refresh (None before the first that saw them)."""

    points: int
    by_source: Mapping[Source, int]
    ranks: StoredStanding | None


@cache
def _officer_score_statement() -> Select[Any]:
    """officer_score's statement, built once: the union of _items costs milliseconds to build
    and to compute the cache key of at every /me. Bound at execution: officer_id, first and
    last (the month's days), start and end (its instants). A row per code of the officer's
    items, summed (a Tally), each with the stored standing's columns (None when no refresh
    saw the officer); a single row with a None code when the month has no item."""
    officer = bindparam("officer_id", type_=Integer)
    first = bindparam("first", type_=Date)
    instant = DateTime(timezone=True)
    items = _items_between(
        first,
        bindparam("last", type_=Date),
        bindparam("start", type_=instant),
        bindparam("end", type_=instant),
        lambda column: column == officer,
    )
    tallies = (
        select(items.c.code, cast(func.sum(items.c.units), Integer).label("units"))
        .where(items.c.officer_id == officer)
        .group_by(items.c.code)
        .subquery("tallies")
    )
    stored = (
        select(*_STORED_COLUMNS)
        .where(MonthStanding.month == first, MonthStanding.officer_id == officer)
        .subquery("stored")
    )
    one = select(literal(1).label("one")).subquery("one")
    return select(tallies.c.code, tallies.c.units, *stored.c).select_from(
        one.outerjoin(stored, true()).outerjoin(tallies, true())
    )


async def officer_score(
    session: AsyncSession, *, officer_id: int, month: date, tz: ZoneInfo, table: Mapping[str, int]
) -> OfficerScore:
    """The officer's points this month, exact (their own items only, through the indexes on
    the officer: the same items as month_tallies), and their stored ranks: one round trip."""
    first, last, start, end = _instants(month, tz)
    connection = await session.connection()
    rows = (
        await connection.execute(
            _officer_score_statement(),
            {"officer_id": officer_id, "first": first, "last": last, "start": start, "end": end},
        )
    ).all()
    tallies = [Tally(officer_id, row[0], int(row[1])) for row in rows if row[0] is not None]
    stored = rows[0][2:]
    return OfficerScore(
        totals(tallies, table).get(officer_id, 0),
        by_source(tallies, table).get(officer_id, dict.fromkeys(Source, 0)),
        None if stored[0] is None else StoredStanding(*stored),
    )


# --------------------------------------------------------------------------- the team


@dataclass(frozen=True)
class Assigned:
    """One assignment's month: the quota in force, what was done, absences recorded."""

    village_id: int
    village_name: str
    quota: Quota
    progress: Progress
    absences: int


@dataclass(frozen=True)
class TeamRow:
    standing: Standing
    villages: tuple[Assigned, ...]
    behind: tuple[str, ...]  # counters behind pace in at least one village, COUNTERS order
    behind_in: tuple[tuple[str, tuple[str, ...]], ...]  # (village name, its counters behind)
    done: float  # the share of the month's quota done, 0..1 (1 when nothing is required)

    @property
    def quota(self) -> Quota:
        """The quotas of all the officer's villages added up."""
        return Quota(**_summed(v.quota.as_dict() for v in self.villages))

    @property
    def progress(self) -> Progress:
        return Progress(**_summed(v.progress.as_dict() for v in self.villages))


def _summed(counters: Any) -> dict[str, int]:
    total = dict.fromkeys(COUNTERS, 0)
    for values in counters:
        for name in COUNTERS:
            total[name] += values[name]
    return total


def done_share(villages: Sequence[Assigned]) -> float:
    """How much of the month's quota is done: each counter counts up to its quota (more
    households do not make up for missing days), over the sum of all quotas."""
    needed = done = 0
    for village in villages:
        for name in COUNTERS:
            quota = getattr(village.quota, name)
            needed += quota
            done += min(getattr(village.progress, name), quota)
    return 1.0 if needed == 0 else done / needed


async def team(
    session: AsyncSession,
    *,
    as_of: date,
    tz: ZoneInfo,
    table: Mapping[str, int],
    county_profile: str,
    scope: Scope = None,
) -> list[TeamRow]:
    """The scope's officers in `as_of`'s month, the least of their quota done first (then
    the fewest points, then by badge); "behind" is judged at the start of `as_of`
    (core.quota.behind_pace, absences taken into account) over all their villages."""
    ranked = await standings(session, month=as_of, tz=tz, table=table, scope=scope)
    if not ranked:
        return []
    first, last = month_bounds(as_of)
    # Every assignment of the scope's officers: an officer's villages may lie outside the
    # scope (a contact village of another station), and they all count.
    officers = None if scope is None else [s.member.officer_id for s in ranked]
    villages: dict[int, list[Assigned]] = {}
    for pace in await assignment_pace(
        session, first=first, last=last, county=profile(county_profile), officers=officers
    ):
        villages.setdefault(pace.officer_id, []).append(
            Assigned(pace.village_id, pace.village_name, pace.quota, pace.progress, pace.absences)
        )
    rows = []
    for standing in ranked:
        own = villages.get(standing.member.officer_id, [])
        behind_in = [
            (v.village_name, tuple(late))
            for v in own
            if (late := behind_pace(v.quota, v.progress, as_of, absences=v.absences))
        ]
        behind = {name for _, names in behind_in for name in names}
        rows.append(
            TeamRow(
                standing,
                tuple(own),
                tuple(name for name in COUNTERS if name in behind),
                tuple(behind_in),
                done_share(own),
            )
        )
    rows.sort(key=lambda r: (r.done, r.standing.points, r.standing.member.badge))
    return rows
