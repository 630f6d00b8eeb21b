"""Test data helpers: small directories written straight through the models."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from core.roles import AssignmentKind
from core.tokens import new_village_token
from storage.models import Assignment, Officer, Station, Village


@dataclass
class Directory:
    station: Station
    other_station: Station
    villages: list[Village]
    officers: list[Officer]


async def seed_directory(session: AsyncSession) -> Directory:
    """Two stations; officer A resident in two villages, officer B contact in the first."""
    station = Station(code="S01", name="城关派出所")
    other = Station(code="S02", name="东关派出所")
    session.add_all([station, other])
    await session.flush()
    v1 = Village(
        code="V001",
        name="张庄村",
        station_id=station.id,
        latitude=34.1,
        longitude=113.2,
        join_token=new_village_token(),
    )
    v2 = Village(
        code="V002",
        name="李庄村",
        station_id=station.id,
        latitude=34.2,
        longitude=113.3,
        join_token=new_village_token(),
    )
    v3 = Village(
        code="V003",
        name="东关社区",
        station_id=other.id,
        latitude=None,
        longitude=None,
        join_token=new_village_token(),
    )
    a = Officer(badge="012345", name="王警官")
    b = Officer(badge="067890", name="赵警官")
    session.add_all([v1, v2, v3, a, b])
    await session.flush()
    session.add_all(
        [
            Assignment(officer_id=a.id, village_id=v1.id, kind=AssignmentKind.RESIDENT.value),
            Assignment(officer_id=a.id, village_id=v2.id, kind=AssignmentKind.RESIDENT.value),
            Assignment(officer_id=b.id, village_id=v1.id, kind=AssignmentKind.CONTACT.value),
        ]
    )
    await session.flush()
    return Directory(station=station, other_station=other, villages=[v1, v2, v3], officers=[a, b])
