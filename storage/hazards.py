"""Hazards: stored once per draft, listed while open, closed once however often asked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from sqlalchemy import ColumnElement, Integer, Select, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.hazards import HazardStatus
from storage.models import Assignment, Hazard, Photo, Village
from storage.photos import flag_reused_file_ids

RECTIFIED = "rectified"  # closed_how of a hazard rectified on site; otherwise a department


@dataclass(frozen=True)
class NewHazard:
    draft_id: str
    officer_id: int
    village_id: int
    category: str
    severity: str
    description: str
    latitude: float | None
    longitude: float | None
    distance_m: int | None
    reported_by: int
    reported_at: datetime
    due_at: datetime | None
    photos: Sequence[tuple[str, str]]  # (file_id, file_unique_id)


@dataclass(frozen=True)
class SavedHazard:
    id: int
    due_at: datetime | None
    created: bool  # False: this draft had been stored already


@dataclass(frozen=True)
class HazardView:
    id: int
    officer_id: int
    village_id: int
    village_name: str
    category: str
    severity: str
    description: str
    status: str
    reported_at: datetime
    due_at: datetime | None


MAX_ID = 2**31 - 1


async def save_hazard(session: AsyncSession, hazard: NewHazard) -> SavedHazard:
    """Store the hazard with its evidence photos unless this draft was stored already."""
    stmt = (
        insert(Hazard)
        .values(
            draft_id=hazard.draft_id,
            officer_id=hazard.officer_id,
            village_id=hazard.village_id,
            category=hazard.category,
            severity=hazard.severity,
            description=hazard.description,
            latitude=hazard.latitude,
            longitude=hazard.longitude,
            distance_m=hazard.distance_m,
            status=HazardStatus.OPEN.value,
            reported_by=hazard.reported_by,
            reported_at=hazard.reported_at,
            due_at=hazard.due_at,
        )
        .on_conflict_do_nothing(index_elements=[Hazard.draft_id])
        .returning(Hazard.id)
    )
    hazard_id = await session.scalar(stmt)
    if hazard_id is None:
        existing = (
            await session.execute(
                select(Hazard.id, Hazard.due_at).where(Hazard.draft_id == hazard.draft_id)
            )
        ).one()
        return SavedHazard(existing[0], existing[1], created=False)
    photos = [
        Photo(hazard_id=hazard_id, role="evidence", position=i, file_id=fid, file_unique_id=uid)
        for i, (fid, uid) in enumerate(hazard.photos)
    ]
    session.add_all(photos)
    await session.flush()
    await flag_reused_file_ids(session, photo_ids=[p.id for p in photos])
    return SavedHazard(hazard_id, hazard.due_at, created=True)


def _may_close(officer_id: int) -> ColumnElement[bool]:
    """The officer reported the hazard, or serves its village now."""
    return or_(
        Hazard.officer_id == officer_id,
        Hazard.village_id.in_(
            select(Assignment.village_id).where(Assignment.officer_id == officer_id)
        ),
    )


# HazardView's fields by name; hazards are always read joined with their village.
_VIEW = (
    Hazard.id,
    Hazard.officer_id,
    Hazard.village_id,
    Village.name.label("village_name"),
    Hazard.category,
    Hazard.severity,
    Hazard.description,
    Hazard.status,
    Hazard.reported_at,
    Hazard.due_at,
)


async def open_hazards(
    session: AsyncSession, *, officer_id: int, limit: int | None = None
) -> list[HazardView]:
    """The open hazards this officer reported, oldest first."""
    stmt = (
        select(*_VIEW)
        .join(Village, Village.id == Hazard.village_id)
        .where(Hazard.officer_id == officer_id, Hazard.status == HazardStatus.OPEN.value)
        .order_by(Hazard.reported_at, Hazard.id)
        .limit(limit)
    )
    return [HazardView(**row._asdict()) for row in await session.execute(stmt)]


@cache
def _count_open_statement() -> Select[int]:
    """count_open's statement, built once (officer_id bound at execution)."""
    return (
        select(func.count())
        .select_from(Hazard)
        .where(
            Hazard.officer_id == bindparam("officer_id", type_=Integer),
            Hazard.status == HazardStatus.OPEN.value,
        )
    )


async def count_open(session: AsyncSession, *, officer_id: int) -> int:
    """How many hazards this officer reported are still open."""
    count = await session.scalar(_count_open_statement(), {"officer_id": officer_id})
    return int(count or 0)


async def hazard_for(
    session: AsyncSession, *, hazard_id: int, officer_id: int
) -> HazardView | None:
    """The hazard, whatever its status, when this officer may close it; else None, so that a
    forged id tells nothing about someone else's hazard."""
    if not 0 < hazard_id <= MAX_ID:  # a forged id may not even fit the column
        return None
    row = (
        await session.execute(
            select(*_VIEW)
            .join(Village, Village.id == Hazard.village_id)
            .where(Hazard.id == hazard_id, _may_close(officer_id))
        )
    ).first()
    return None if row is None else HazardView(**row._asdict())


async def is_evidence_photo(session: AsyncSession, *, hazard_id: int, file_unique_id: str) -> bool:
    """Whether the picture is one of the photos the hazard was reported with."""
    found = await session.scalar(
        select(Photo.id).where(
            Photo.hazard_id == hazard_id,
            Photo.role == "evidence",
            Photo.file_unique_id == file_unique_id,
        )
    )
    return found is not None


async def close_hazard(
    session: AsyncSession,
    *,
    hazard_id: int,
    officer_id: int,
    how: str,
    note: str | None,
    after_photo: tuple[str, str] | None,
    now: datetime,
) -> bool:
    """Close an open hazard: `how` is RECTIFIED (with the after photo) or a department code.

    One conditional UPDATE: a hazard already closed, or one the officer may not close, is
    left alone and False comes back, so a repeated close changes nothing.
    """
    if how == RECTIFIED and after_photo is None:
        raise ValueError("a rectified hazard needs its after photo")
    status = HazardStatus.RECTIFIED if how == RECTIFIED else HazardStatus.HANDED_OVER
    closed = await session.scalar(
        update(Hazard)
        .where(
            Hazard.id == hazard_id,
            Hazard.status == HazardStatus.OPEN.value,
            _may_close(officer_id),
        )
        .values(status=status.value, closed_at=now, closed_how=how, closing_note=note)
        .returning(Hazard.id)
        .execution_options(synchronize_session=False)
    )
    if closed is None:
        return False
    if after_photo is not None:
        after = Photo(
            hazard_id=hazard_id,
            role="after",
            position=0,
            file_id=after_photo[0],
            file_unique_id=after_photo[1],
        )
        session.add(after)
        await session.flush()
        await flag_reused_file_ids(session, photo_ids=[after.id])
    await session.flush()
    return True
