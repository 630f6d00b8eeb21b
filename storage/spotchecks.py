"""Supervisors' weekly spot checks of visit reports (每日抽查录入数据): the sample, and the
verdicts.

A sample belongs to a supervisor and a week: `week` is the Monday of the week the check is
done in, and the reports are those submitted in the calendar week before it (Monday 00:00
to Monday 00:00 in the county's time zone), in the supervisor's scope at the time of the
draw. A week is drawn once: `draw` takes a per-supervisor advisory lock and draws nothing
when the week has a sample already, so the job, a second run of it and /spotcheck drawing
on demand cannot add to one another's sample.

The sample comes from random.SystemRandom: the operating system's generator, which nobody
can replay, so that an officer cannot work out in advance which reports will be checked.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, exists, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage import locks
from storage.models import (
    Officer,
    Photo,
    SpotCheck,
    Supervisor,
    User,
    Village,
    VisitActivity,
    VisitReport,
)
from storage.villages import stations_in_scope

PENDING, VERIFIED, FLAGGED = "pending", "verified", "flagged"
VERDICTS = frozenset({VERIFIED, FLAGGED})
MAX_ID = 2**31 - 1

# An advisory lock class of its own (the two-int4 key space; see storage.photos), keyed by
# the supervisor: two draws for one supervisor never run at the same time.
_LOCK = text("SELECT pg_advisory_xact_lock(:cls, :key)")


def reference(report_id: int) -> str:
    """The number an officer was given for the report: V000123."""
    return f"V{report_id:06d}"


def reviewed_days(week: date) -> tuple[date, date]:
    """The first and last day whose reports a week's sample is drawn from."""
    return week - timedelta(days=7), week - timedelta(days=1)


def _bounds(week: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    first, _ = reviewed_days(week)
    # Local midnights on the wall clock, so a daylight-saving change moves nothing.
    return datetime.combine(first, time(), tz), datetime.combine(week, time(), tz)


async def supervisors(session: AsyncSession) -> list[tuple[int, int | None]]:
    """Every supervisor as (id, the Telegram account bound to them or None), by id."""
    rows = await session.execute(
        select(Supervisor.id, User.id)
        .outerjoin(User, (User.supervisor_id == Supervisor.id) & (User.role == "supervisor"))
        .order_by(Supervisor.id)
    )
    return [(supervisor_id, account) for supervisor_id, account in rows]


async def draw(
    session: AsyncSession,
    *,
    supervisor_id: int,
    week: date,
    tz: ZoneInfo,
    size: int,
    rng: random.Random | None = None,
) -> int | None:
    """Draw the supervisor's sample for `week`: how many reports were drawn (0 when there
    was nothing to draw), or None when the week had been drawn before. Fewer reports than
    `size` are all taken."""
    await session.execute(_LOCK, {"cls": locks.SPOT_CHECK_DRAW, "key": supervisor_id})
    if await drawn_for(session, supervisor_id=supervisor_id, week=week):
        return None
    if size <= 0:
        return 0
    start, end = _bounds(week, tz)
    scope = await stations_in_scope(session, supervisor_id)
    candidates = list(
        await session.scalars(
            select(VisitReport.id)
            .join(Village, Village.id == VisitReport.village_id)
            .where(
                Village.station_id.in_(scope),
                VisitReport.submitted_at >= start,
                VisitReport.submitted_at < end,
            )
            .order_by(VisitReport.id)
        )
    )
    chosen = (rng or random.SystemRandom()).sample(candidates, min(size, len(candidates)))
    if not chosen:
        return 0
    inserted = await session.scalars(
        insert(SpotCheck)
        .values(
            [{"supervisor_id": supervisor_id, "visit_report_id": r, "week": week} for r in chosen]
        )
        .on_conflict_do_nothing(index_elements=[SpotCheck.supervisor_id, SpotCheck.visit_report_id])
        .returning(SpotCheck.id)
    )
    return len(list(inserted))


async def drawn_for(session: AsyncSession, *, supervisor_id: int, week: date) -> bool:
    return bool(
        await session.scalar(
            select(exists().where(SpotCheck.supervisor_id == supervisor_id, SpotCheck.week == week))
        )
    )


# --------------------------------------------------------------------------- reviewing


@dataclass(frozen=True)
class CheckView:
    """A drawn report as the supervisor reviews it."""

    id: int
    supervisor_id: int
    week: date
    status: str
    comment: str | None
    report_id: int
    officer_id: int
    officer_name: str
    officer_badge: str
    village_name: str
    visit_date: date
    hours: Decimal
    households: int
    distance_m: int | None
    far_from_village: bool
    located: bool
    notes: str | None
    submitted_at: datetime
    activities: tuple[tuple[str, int], ...] = ()  # (code, count), as stored
    photos: tuple[str, ...] = ()  # file ids, in the order they were sent
    reused_photo: bool = False

    @property
    def ref(self) -> str:
        return reference(self.report_id)


async def _views(session: AsyncSession, *conditions: ColumnElement[bool]) -> list[CheckView]:
    rows = (
        await session.execute(
            select(
                SpotCheck.id,
                SpotCheck.supervisor_id,
                SpotCheck.week,
                SpotCheck.status,
                SpotCheck.comment,
                VisitReport.id,
                Officer.id,
                Officer.name,
                Officer.badge,
                Village.name,
                VisitReport.visit_date,
                VisitReport.hours,
                VisitReport.households,
                VisitReport.distance_m,
                VisitReport.far_from_village,
                VisitReport.latitude.is_not(None),
                VisitReport.notes,
                VisitReport.submitted_at,
            )
            .join(VisitReport, VisitReport.id == SpotCheck.visit_report_id)
            .join(Officer, Officer.id == VisitReport.officer_id)
            .join(Village, Village.id == VisitReport.village_id)
            .where(*conditions)
            .order_by(SpotCheck.week, VisitReport.submitted_at, SpotCheck.id)
        )
    ).all()
    return [CheckView(*tuple(row)) for row in rows]


async def _with_details(session: AsyncSession, view: CheckView) -> CheckView:
    activities = (
        await session.execute(
            select(VisitActivity.code, VisitActivity.count).where(
                VisitActivity.report_id == view.report_id
            )
        )
    ).all()
    photos = (
        await session.execute(
            select(Photo.file_id, Photo.reused)
            .where(Photo.visit_report_id == view.report_id)
            .order_by(Photo.position, Photo.id)
        )
    ).all()
    return replace(
        view,
        activities=tuple((code, count) for code, count in activities),
        photos=tuple(file_id for file_id, _ in photos),
        reused_photo=any(reused for _, reused in photos),
    )


async def pending(session: AsyncSession, *, supervisor_id: int) -> list[CheckView]:
    """The supervisor's undecided checks, oldest week first, then by submission (without
    activities and photos: see `check_for`)."""
    return await _views(
        session, SpotCheck.supervisor_id == supervisor_id, SpotCheck.status == PENDING
    )


async def check_for(
    session: AsyncSession, *, check_id: int, supervisor_id: int
) -> CheckView | None:
    """The check with its report's activities and photos, whatever its status, when it
    belongs to this supervisor; else None, so that a forged id tells nothing."""
    if not 0 < check_id <= MAX_ID:  # a forged id may not even fit the column
        return None
    found = await _views(
        session, SpotCheck.id == check_id, SpotCheck.supervisor_id == supervisor_id
    )
    return await _with_details(session, found[0]) if found else None


async def decide(
    session: AsyncSession,
    *,
    check_id: int,
    supervisor_id: int,
    verdict: str,
    comment: str | None,
    user_id: int,
    now: datetime,
) -> bool:
    """Record the verdict when the check is this supervisor's and still pending; False (and
    nothing changed) otherwise. One conditional UPDATE: a double tap decides once."""
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}")
    if verdict == FLAGGED and not comment:
        raise ValueError("a flag needs a comment")
    changed = await session.scalar(
        update(SpotCheck)
        .where(
            SpotCheck.id == check_id,
            SpotCheck.supervisor_id == supervisor_id,
            SpotCheck.status == PENDING,
        )
        .values(status=verdict, comment=comment, decided_by=user_id, decided_at=now)
        .returning(SpotCheck.id)
    )
    return changed is not None


@dataclass(frozen=True)
class WeekTally:
    verified: int
    flagged: int
    pending: int

    @property
    def drawn(self) -> int:
        return self.verified + self.flagged + self.pending


async def tally(session: AsyncSession, *, supervisor_id: int, week: date) -> WeekTally:
    def count(status: str) -> ColumnElement[int]:
        return func.count().filter(SpotCheck.status == status)

    row = (
        await session.execute(
            select(count(VERIFIED), count(FLAGGED), count(PENDING)).where(
                SpotCheck.supervisor_id == supervisor_id, SpotCheck.week == week
            )
        )
    ).one()
    return WeekTally(int(row[0]), int(row[1]), int(row[2]))
