"""What needs a supervisor's attention in a scope: requests past a deadline, hazards past
their re-inspection date, and visit reports that look doubtful (filed far from the village,
or with a photo used before). The scheduler's escalations and digests and the supervisors'
commands all read these, so they always agree.

A scope is a set of station ids (a subquery from storage.villages.stations_in_scope, or a
list), or None for the whole county.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, Select, any_, bindparam, exists, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from core.requests import DEFAULT_DEADLINES, Clock, DeadlineConfig, DeadlineState
from storage import requests as store
from storage.models import Hazard, Officer, Photo, Request, Station, Village, VisitReport

Scope = Select[Any] | Sequence[int] | None


def among(column: Any, ids: Sequence[int]) -> ColumnElement[bool]:
    """`column = ANY(:ids)`: one array parameter, however many ids (a county-wide scope
    has tens of thousands of officers, past the protocol's 32,767 parameters)."""
    condition: ColumnElement[bool] = column == any_(
        bindparam("ids", list(ids), type_=ARRAY(Integer), unique=True)
    )
    return condition


def in_scope(column: Any, scope: Scope) -> list[ColumnElement[bool]]:
    """The condition that a station id column is in the scope (none for the county)."""
    if scope is None:
        return []
    if isinstance(scope, Select):
        return [column.in_(scope)]
    return [column.in_(list(scope))]


@dataclass(frozen=True)
class OverdueRequest:
    request: store.RequestView
    state: DeadlineState
    overdue: tuple[Clock, ...]  # the clocks past due and not done, in core's order

    def due(self, clock: Clock) -> datetime:
        """When `clock` fell due (only for an overdue clock)."""
        for state in self.state.clocks():
            if state.clock is clock and state.due_at is not None:
                return state.due_at
        raise ValueError(f"{clock} is not overdue")


async def overdue_requests(
    session: AsyncSession,
    *,
    now: datetime,
    scope: Scope = None,
    config: DeadlineConfig = DEFAULT_DEADLINES,
) -> list[OverdueRequest]:
    """Open requests with at least one deadline past, the longest overdue first.

    The stored `due_at` (the first pending deadline) finds the candidates with an index;
    each one's deadlines are then computed from its history, which also tells whether
    more than one clock is overdue.
    """
    ids = list(
        await session.scalars(
            select(Request.id)
            .join(Village, Village.id == Request.village_id)
            .where(
                Request.status.in_(store.OPEN_VALUES),
                Request.due_at < now,
                *in_scope(Village.station_id, scope),
            )
            .order_by(Request.due_at, Request.id)
        )
    )
    if not ids:
        return []
    views = {view.id: view for view in await store.requests_by_ids(session, ids)}
    events = await store.histories(session, ids)
    result = []
    for request_id in ids:
        state = store.deadlines_of(events[request_id], now, config)
        if state.overdue:
            result.append(OverdueRequest(views[request_id], state, state.overdue))
    return result


@dataclass(frozen=True)
class OverdueHazard:
    id: int
    village_name: str
    station_name: str
    officer_id: int
    officer_name: str
    officer_badge: str
    category: str
    severity: str
    description: str
    reported_at: datetime
    due_at: datetime


async def overdue_hazards(
    session: AsyncSession, *, now: datetime, scope: Scope = None
) -> list[OverdueHazard]:
    """Open hazards whose re-inspection date has passed, the longest overdue first."""
    rows = await session.execute(
        select(
            Hazard.id,
            Village.name,
            Station.name,
            Officer.id,
            Officer.name,
            Officer.badge,
            Hazard.category,
            Hazard.severity,
            Hazard.description,
            Hazard.reported_at,
            Hazard.due_at,
        )
        .join(Village, Village.id == Hazard.village_id)
        .join(Station, Station.id == Village.station_id)
        .join(Officer, Officer.id == Hazard.officer_id)
        .where(Hazard.status == "open", Hazard.due_at < now, *in_scope(Village.station_id, scope))
        .order_by(Hazard.due_at, Hazard.id)
    )
    return [OverdueHazard(*row) for row in rows]


@dataclass(frozen=True)
class FlaggedVisit:
    id: int
    visit_date: date
    officer_id: int
    officer_name: str
    officer_badge: str
    village_name: str
    distance_m: int | None
    far_from_village: bool
    reused_photo: bool


async def flagged_visits(
    session: AsyncSession, *, first: date, last: date, scope: Scope = None
) -> list[FlaggedVisit]:
    """Visit reports dated `first`..`last` filed far from the village or with a photo used
    in another report, by date."""
    reused = exists().where(Photo.visit_report_id == VisitReport.id, Photo.reused)
    rows = await session.execute(
        select(
            VisitReport.id,
            VisitReport.visit_date,
            Officer.id,
            Officer.name,
            Officer.badge,
            Village.name,
            VisitReport.distance_m,
            VisitReport.far_from_village,
            reused,
        )
        .join(Village, Village.id == VisitReport.village_id)
        .join(Officer, Officer.id == VisitReport.officer_id)
        .where(
            VisitReport.visit_date >= first,
            VisitReport.visit_date <= last,
            VisitReport.far_from_village | reused,
            *in_scope(Village.station_id, scope),
        )
        .order_by(VisitReport.visit_date, VisitReport.id)
    )
    return [FlaggedVisit(*row) for row in rows]
