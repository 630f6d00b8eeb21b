"""An officer's own overview for /me in one statement: their villages with the quota in force,
this month's and last month's tallies and absences, and how many of their hazards are open.
The same figures as storage.villages.officer_villages, storage.visits.quota_overrides and
months_progress, and storage.hazards.count_open, in one round trip instead of four. And one
village's month so (`village_month`), for the progress line after a report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from core.hazards import HazardStatus
from core.quota import Progress, Quota, month_bounds, resolve_quota
from storage.db import driver_connection
from storage.pace import override_of

# (quota in force, progress in the month, absences recorded in it), as bot.progress's Month.
MonthOf = tuple[Quota, Progress, int]


@dataclass(frozen=True, slots=True)
class VillageMonths:
    village_id: int
    name: str
    now: MonthOf
    before: MonthOf


@dataclass(frozen=True, slots=True)
class Overview:
    villages: list[VillageMonths]  # by station and village code; empty when none assigned
    open_hazards: int


def _override(where: str) -> str:
    """The override (a row of its columns, as override_of takes them), or NULL."""
    return (
        "(SELECT ROW(profile, visit_days, households, patrols, problems_solved)"
        f" FROM quota_overrides WHERE {where})"
    )


def _tally(month: str) -> str:
    """The month's counters as Progress takes them (an array), or NULL: nothing done."""
    return (
        "(SELECT ARRAY[visit_days, households, patrols, problems_solved] FROM month_tallies t"
        f" WHERE t.month = {month} AND t.officer_id = a.officer_id"
        " AND t.village_id = a.village_id)"
    )


def _absent(first: str, last: str) -> str:
    return (
        "(SELECT count(*) FROM absences x"
        " WHERE x.officer_id = a.officer_id AND x.village_id = a.village_id"
        f" AND x.day >= {first} AND x.day <= {last})"
    )


# Run through the driver (storage.db.driver_connection), as the update's fixed statements
# are. Parameters: $1 the officer, $2 and $3 this month's first and last days, $4 and $5
# last month's. Per village, each figure is a subquery of one table through an index,
# planned on its own: as joins, the custom plans of a connection's first executions cost
# three times as much (1.3 against 0.45 ms here). The open hazards' count does not depend on
# the village: it runs once.
_OVERVIEW = f"""
    SELECT (SELECT count(*) FROM hazards h
             WHERE h.officer_id = $1 AND h.status = '{HazardStatus.OPEN.value}'),
           v.id, v.name,
           {_override("station_id = v.station_id")}, {_override("village_id = v.id")},
           {_tally("$2")}, {_absent("$2", "$3")}, {_tally("$4")}, {_absent("$4", "$5")}
      FROM assignments a
      JOIN villages v ON v.id = a.village_id
      JOIN stations s ON s.id = v.station_id
     WHERE a.officer_id = $1
     ORDER BY s.code, v.code"""


async def officer_overview(
    session: AsyncSession, *, officer_id: int, today: date, previous: date, county: Quota
) -> Overview:
    """The officer's villages in `today`'s month and in `previous`'s, the quota in force
    being the county's (`county`) as the station's and the village's overrides change it."""
    db = await driver_connection(session)
    rows = await db.fetch(_OVERVIEW, officer_id, *month_bounds(today), *month_bounds(previous))
    villages = []
    for _, village_id, name, station, own, done, absent, done_before, absent_before in rows:
        quota = resolve_quota(
            county,
            None if station is None else override_of(station),
            None if own is None else override_of(own),
        )
        villages.append(
            VillageMonths(
                village_id,
                name,
                (quota, _progress(done), absent),
                (quota, _progress(done_before), absent_before),
            )
        )
    return Overview(villages, rows[0][0] if rows else 0)


# One village's month: $1 the officer, $2 the village, $3 and $4 the month's first and last
# days. The same subqueries as the overview's.
_VILLAGE_MONTH = f"""
    SELECT {_override("station_id = v.station_id")}, {_override("village_id = v.id")},
           {_tally("$3")}, {_absent("$3", "$4")}
      FROM (SELECT $1::integer AS officer_id, $2::integer AS village_id) a
      JOIN villages v ON v.id = a.village_id"""


async def village_month(
    session: AsyncSession, *, officer_id: int, village_id: int, day: date, county: Quota
) -> MonthOf:
    """The quota in force in the village, the officer's progress there in `day`'s month and
    the absences recorded in it; in one round trip instead of two (quota_overrides and
    months_progress)."""
    db = await driver_connection(session)
    row = await db.fetchrow(_VILLAGE_MONTH, officer_id, village_id, *month_bounds(day))
    if row is None:  # no such village
        return county, Progress(), 0
    station, own, done, absent = row
    quota = resolve_quota(
        county,
        None if station is None else override_of(station),
        None if own is None else override_of(own),
    )
    return quota, _progress(done), absent


def _progress(counters: list[int] | None) -> Progress:
    return Progress() if counters is None else Progress(*counters)
