"""Villages as villagers, officers and supervisors see them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Integer, Select, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.roles import Role
from storage.db import driver_connection
from storage.models import (
    Assignment,
    Officer,
    Station,
    Supervisor,
    SupervisorStation,
    User,
    Village,
    VillagerMembership,
)
from storage.users import release_role


@dataclass(frozen=True)
class VillageView:
    id: int
    code: str
    name: str
    station_code: str
    station_name: str
    join_token: str
    kind: str | None = None  # the viewing officer's assignment kind
    officer_name: str | None = None  # the resident (else contact) officer


def _view(village: Village, station: Station, **extra: str | None) -> VillageView:
    return VillageView(
        id=village.id,
        code=village.code,
        name=village.name,
        station_code=station.code,
        station_name=station.name,
        join_token=village.join_token,
        **extra,
    )


async def _village_where(
    session: AsyncSession, condition: ColumnElement[bool]
) -> VillageView | None:
    row = (
        await session.execute(
            select(Village, Station)
            .join(Station, Village.station_id == Station.id)
            .where(condition)
        )
    ).first()
    return None if row is None else _view(*row)


async def village_by_token(session: AsyncSession, token: str) -> VillageView | None:
    return await _village_where(session, Village.join_token == token)


async def village_by_code(session: AsyncSession, code: str) -> VillageView | None:
    return await _village_where(session, Village.code == code)


async def current_village(session: AsyncSession, user_id: int) -> VillageView | None:
    """The villager's current village, with the officer who answers for it."""
    officer_name = (
        select(Officer.name)
        .join(Assignment, Assignment.officer_id == Officer.id)
        .where(Assignment.village_id == Village.id)
        .order_by(Assignment.kind.desc())  # 'resident' before 'contact'
        .limit(1)
        .scalar_subquery()
    )
    row = (
        await session.execute(
            select(Village, Station, officer_name)
            .join(Station, Village.station_id == Station.id)
            .join(VillagerMembership, VillagerMembership.village_id == Village.id)
            .where(VillagerMembership.user_id == user_id, VillagerMembership.left_at.is_(None))
        )
    ).first()
    if row is None:
        return None
    village, station, name = row
    return _view(village, station, officer_name=name)


async def join_village(session: AsyncSession, user: User, village_id: int) -> None:
    """Make `user` a villager of `village_id`, ending any earlier membership."""
    await release_role(session, user)
    session.add(VillagerMembership(user_id=user.id, village_id=village_id))
    user.role = Role.VILLAGER.value
    await session.flush()


async def set_phone(session: AsyncSession, user: User, phone: str) -> None:
    user.phone = phone
    await session.flush()


# officer_villages's statement, through the driver (storage.db.driver_connection): every
# visit, hazard and absence report starts with it. Columns in VillageView's order.
_OFFICER_VILLAGES = """
    SELECT v.id, v.code, v.name, s.code, s.name, v.join_token, a.kind
      FROM assignments a
      JOIN villages v ON v.id = a.village_id
      JOIN stations s ON s.id = v.station_id
     WHERE a.officer_id = $1
     ORDER BY s.code, v.code"""


async def officer_villages(session: AsyncSession, officer_id: int) -> list[VillageView]:
    db = await driver_connection(session)
    return [VillageView(*row) for row in await db.fetch(_OFFICER_VILLAGES, officer_id)]


@dataclass(frozen=True)
class ScopeView:
    county_wide: bool
    stations: list[tuple[str, str]]  # (code, name)
    villages: int
    officers: int


async def stations_in_scope(session: AsyncSession, supervisor_id: int) -> Select[Any]:
    """A subquery of the station ids a supervisor sees (all of them for the county)."""
    supervisor = await session.get_one(Supervisor, supervisor_id)
    if supervisor.county_wide:
        return select(Station.id)
    return select(SupervisorStation.station_id).where(
        SupervisorStation.supervisor_id == supervisor_id
    )


async def supervisor_scope(session: AsyncSession, supervisor_id: int) -> ScopeView:
    supervisor = await session.get_one(Supervisor, supervisor_id)
    station_filter = await stations_in_scope(session, supervisor_id)
    stations = (
        await session.execute(
            select(Station.code, Station.name)
            .where(Station.id.in_(station_filter))
            .order_by(Station.code)
        )
    ).all()
    counts = (
        await session.execute(
            select(
                func.count(func.distinct(Village.id)),
                func.count(func.distinct(Assignment.officer_id)),
            )
            .select_from(Village)
            .outerjoin(Assignment, Assignment.village_id == Village.id)
            .where(Village.station_id.in_(station_filter))
        )
    ).one()
    return ScopeView(
        county_wide=supervisor.county_wide,
        stations=[(c, n) for c, n in stations],
        villages=counts[0],
        officers=counts[1],
    )


async def leave_current_village(session: AsyncSession, user_id: int) -> None:
    await session.execute(
        update(VillagerMembership)
        .where(VillagerMembership.user_id == user_id, VillagerMembership.left_at.is_(None))
        .values(left_at=func.now())
    )


@cache
def _assigned_village_statement() -> Select[str, float | None, float | None]:
    """assigned_village's statement, built once (the ids bound at execution)."""
    return (
        select(Village.name, Village.latitude, Village.longitude)
        .join(Assignment, Assignment.village_id == Village.id)
        .where(
            Assignment.officer_id == bindparam("officer_id", type_=Integer),
            Village.id == bindparam("village_id", type_=Integer),
        )
    )


async def assigned_village(
    session: AsyncSession, *, officer_id: int, village_id: int
) -> tuple[str, float | None, float | None] | None:
    """(name, centre latitude, centre longitude) when the officer is assigned to the village."""
    row = (
        await session.execute(
            _assigned_village_statement(), {"officer_id": officer_id, "village_id": village_id}
        )
    ).first()
    return None if row is None else (row[0], row[1], row[2])
