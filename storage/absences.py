"""Village days an officer reported they could not keep; saved once per draft."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Absence, Officer, Station, Village
from storage.villages import stations_in_scope


async def save_absence(
    session: AsyncSession,
    *,
    draft_id: str,
    officer_id: int,
    village_id: int,
    day: date,
    reason: str,
) -> tuple[int, bool]:
    """Store the absence unless this draft was stored already. Returns (id, newly stored)."""
    absence_id = await session.scalar(
        insert(Absence)
        .values(
            draft_id=draft_id, officer_id=officer_id, village_id=village_id, day=day, reason=reason
        )
        .on_conflict_do_nothing(index_elements=[Absence.draft_id])
        .returning(Absence.id)
    )
    if absence_id is not None:
        return absence_id, True
    existing = await session.scalar(select(Absence.id).where(Absence.draft_id == draft_id))
    assert existing is not None
    return existing, False


@dataclass(frozen=True)
class AbsenceView:
    id: int
    village_id: int
    village_name: str
    day: date
    reason: str
    reported_at: datetime


async def absences_in(
    session: AsyncSession, *, officer_id: int, first: date, last: date
) -> list[AbsenceView]:
    """The officer's absences on days from `first` to `last`, both included, by day."""
    rows = await session.execute(
        select(Absence, Village.name)
        .join(Village, Village.id == Absence.village_id)
        .where(Absence.officer_id == officer_id, Absence.day >= first, Absence.day <= last)
        .order_by(Absence.day, Absence.id)
    )
    return [
        AbsenceView(a.id, a.village_id, name, a.day, a.reason, a.reported_at) for a, name in rows
    ]


@dataclass(frozen=True)
class ScopedAbsence:
    day: date
    officer_name: str
    officer_badge: str
    village_name: str
    station_name: str
    reason: str


async def absences_in_scope(
    session: AsyncSession, *, supervisor_id: int, first: date, last: date
) -> list[ScopedAbsence]:
    """Absences recorded for villages in a supervisor's stations, by day."""
    stations = await stations_in_scope(session, supervisor_id)
    rows = await session.execute(
        select(Absence.day, Officer.name, Officer.badge, Village.name, Station.name, Absence.reason)
        .join(Officer, Officer.id == Absence.officer_id)
        .join(Village, Village.id == Absence.village_id)
        .join(Station, Station.id == Village.station_id)
        .where(Village.station_id.in_(stations), Absence.day >= first, Absence.day <= last)
        .order_by(Absence.day, Station.code, Village.code, Absence.id)
    )
    return [ScopedAbsence(*row) for row in rows]
