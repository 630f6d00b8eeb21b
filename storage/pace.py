"""Every officer assignment at once: its month against the quota in force, and the villages
due a visit on a village day. Set-based (one query each, whatever the number of officers),
for the scheduler's jobs; storage.visits.progress is the per-officer version behind /me.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import ColumnElement, Integer, Subquery, and_, case, cast, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from core.activities import PROBLEM_SOLVING, Activity
from core.quota import Progress, Quota, QuotaOverride, resolve_quota
from core.roles import Role
from storage.attention import Scope, in_scope
from storage.models import (
    Absence,
    Assignment,
    Station,
    User,
    Village,
    VisitActivity,
    VisitReport,
)
from storage.models import QuotaOverride as QuotaOverrideRow

_PROBLEM_CODES = [a.value for a in PROBLEM_SOLVING]


@dataclass(frozen=True)
class AssignmentPace:
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


def _override(row: QuotaOverrideRow | None) -> QuotaOverride | None:
    if row is None:
        return None
    return QuotaOverride(
        profile=row.profile,
        visit_days=row.visit_days,
        households=row.households,
        patrols=row.patrols,
        problems_solved=row.problems_solved,
    )


async def assignment_pace(
    session: AsyncSession,
    *,
    first: date,
    last: date,
    county: Quota,
    scope: Scope = None,
    bound_only: bool = False,
) -> list[AssignmentPace]:
    """Each assignment (officer x village) in the scope with its quota and what was done
    between `first` and `last`, by officer and village code. `bound_only` keeps the officers
    who joined the bot. One query: the visits, their activities and the absences are
    aggregated per officer and village and joined to the assignments."""
    period = and_(VisitReport.visit_date >= first, VisitReport.visit_date <= last)
    visits = (
        select(
            VisitReport.officer_id,
            VisitReport.village_id,
            func.count(func.distinct(VisitReport.visit_date)).label("days"),
            func.sum(VisitReport.households).label("households"),
        )
        .where(period)
        .group_by(VisitReport.officer_id, VisitReport.village_id)
        .subquery()
    )
    counted = VisitActivity.count
    activities = (
        select(
            VisitReport.officer_id,
            VisitReport.village_id,
            func.sum(case((VisitActivity.code == Activity.PATROL.value, counted), else_=0)).label(
                "patrols"
            ),
            func.sum(case((VisitActivity.code.in_(_PROBLEM_CODES), counted), else_=0)).label(
                "problems"
            ),
        )
        .join(VisitActivity, VisitActivity.report_id == VisitReport.id)
        .where(period, VisitActivity.code.in_([Activity.PATROL.value, *_PROBLEM_CODES]))
        .group_by(VisitReport.officer_id, VisitReport.village_id)
        .subquery()
    )
    absent = (
        select(Absence.officer_id, Absence.village_id, func.count().label("days"))
        .where(Absence.day >= first, Absence.day <= last)
        .group_by(Absence.officer_id, Absence.village_id)
        .subquery()
    )
    station_quota, village_quota = aliased(QuotaOverrideRow), aliased(QuotaOverrideRow)

    def same(table: Subquery) -> ColumnElement[bool]:
        return and_(
            table.c.officer_id == Assignment.officer_id,
            table.c.village_id == Assignment.village_id,
        )

    account = and_(User.officer_id == Assignment.officer_id, User.role == Role.OFFICER.value)
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
            cast(func.coalesce(activities.c.patrols, 0), Integer),
            cast(func.coalesce(activities.c.problems, 0), Integer),
            func.coalesce(absent.c.days, 0),
            station_quota,
            village_quota,
        )
        .join(Village, Village.id == Assignment.village_id)
        .join(Station, Station.id == Village.station_id)
        .join(User, account, isouter=not bound_only)
        .outerjoin(visits, same(visits))
        .outerjoin(activities, same(activities))
        .outerjoin(absent, same(absent))
        .outerjoin(station_quota, station_quota.station_id == Village.station_id)
        .outerjoin(village_quota, village_quota.village_id == Village.id)
        .where(*in_scope(Village.station_id, scope))
        .order_by(Assignment.officer_id, Station.code, Village.code)
    )
    result = []
    for row in await session.execute(stmt):
        officer, village, name, station, user, locale, language = row[:7]
        days, households, patrols, problems, absences, own_station, own_village = row[7:]
        result.append(
            AssignmentPace(
                officer_id=officer,
                village_id=village,
                village_name=name,
                station_id=station,
                account=user,
                locale=locale,
                language_code=language,
                quota=resolve_quota(county, _override(own_station), _override(own_village)),
                progress=Progress(
                    visit_days=int(days),
                    households=households,
                    patrols=patrols,
                    problems_solved=problems,
                ),
                absences=int(absences),
            )
        )
    return result


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
