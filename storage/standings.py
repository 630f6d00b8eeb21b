"""The month's standings, stored: every officer's points and ranks, written by the
standings-refresh job so that /me and a station's digest read a rank instead of computing
the whole county's points (seconds at province scale).

A refresh replaces the month's rows with scores.standings for the county, in one
transaction, under a lock: two refreshes at once run one after the other, and either
leaves a complete month. What is stored is only a cache of that computation: each point
still traces to its record through scores.month_items.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Date, DateTime, delete, func, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.quota import month_bounds
from storage import locks, scores
from storage.models import MonthStanding


async def refresh(
    session: AsyncSession,
    *,
    month: date,
    tz: ZoneInfo,
    table: Mapping[str, int],
    now: datetime,
) -> int:
    """Replace `month`'s month of standings with the county's as computed now; returns
    the number of officers stored. One INSERT … SELECT (scores.county_ranking): the
    county's points and ranks never pass through the process. Flushes, never commits: the
    caller's transaction makes the month's rows appear at once."""
    await session.execute(select(func.pg_advisory_xact_lock(locks.STANDINGS_REFRESH)))
    first = month_bounds(month)[0]
    await session.execute(delete(MonthStanding).where(MonthStanding.month == first))
    ranked = scores.county_ranking(month, tz, table).subquery("ranked")
    stored = await session.execute(
        insert(MonthStanding).from_select(
            [
                "month",
                "officer_id",
                "station_id",
                "points",
                "station_rank",
                "station_size",
                "county_rank",
                "county_size",
                "refreshed_at",
            ],
            select(
                literal(first, Date),
                *ranked.c,
                literal(now, DateTime(timezone=True)),
            ),
        )
    )
    return int(stored.rowcount or 0)  # type: ignore[attr-defined]


async def refreshed_at(session: AsyncSession, *, month: date) -> datetime | None:
    """When `month`'s standings were last refreshed (None: never)."""
    return await session.scalar(
        select(func.max(MonthStanding.refreshed_at)).where(
            MonthStanding.month == month_bounds(month)[0]
        )
    )
