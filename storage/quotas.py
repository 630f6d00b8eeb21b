"""Quota overrides per station or per village, set by the operator."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.quota import COUNTERS, QuotaOverride
from storage.models import QuotaOverride as QuotaOverrideRow
from storage.models import Station, Village


class UnknownScopeError(LookupError):
    pass


@dataclass(frozen=True)
class OverrideView:
    scope: str  # "station" or "village"
    code: str
    name: str
    override: QuotaOverride


async def _scope_id(
    session: AsyncSession, *, station: str | None, village: str | None
) -> tuple[str, int]:
    model, code = (Station, station) if station is not None else (Village, village)
    found = await session.scalar(select(model.id).where(model.code == code))
    if found is None:
        kind = "station" if station is not None else "village"
        raise UnknownScopeError(f"no {kind} with code {code!r}")
    return ("station_id" if station is not None else "village_id"), found


async def set_override(
    session: AsyncSession, *, station: str | None, village: str | None, override: QuotaOverride
) -> None:
    """Replace the station's or village's override (QuotaOverride validates its values)."""
    column, scope_id = await _scope_id(session, station=station, village=village)
    values = {"profile": override.profile, **{c: getattr(override, c) for c in COUNTERS}}
    stmt = insert(QuotaOverrideRow).values({column: scope_id, **values})
    await session.execute(
        stmt.on_conflict_do_update(index_elements=[getattr(QuotaOverrideRow, column)], set_=values)
    )


async def clear_override(
    session: AsyncSession, *, station: str | None, village: str | None
) -> bool:
    column, scope_id = await _scope_id(session, station=station, village=village)
    result = await session.execute(
        delete(QuotaOverrideRow).where(getattr(QuotaOverrideRow, column) == scope_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def list_overrides(session: AsyncSession) -> list[OverrideView]:
    rows = await session.execute(
        select(QuotaOverrideRow, Station.code, Station.name, Village.code, Village.name)
        .outerjoin(Station, Station.id == QuotaOverrideRow.station_id)
        .outerjoin(Village, Village.id == QuotaOverrideRow.village_id)
        .order_by(Station.code.nulls_last(), Village.code)
    )
    views = []
    for row, s_code, s_name, v_code, v_name in rows:
        override = QuotaOverride(profile=row.profile, **{c: getattr(row, c) for c in COUNTERS})
        if s_code is not None:
            views.append(OverrideView("station", s_code, s_name, override))
        else:
            views.append(OverrideView("village", v_code, v_name, override))
    return views
