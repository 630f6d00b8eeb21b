"""An officer's month against the quota, per village, as short lines for the chat."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from bot.i18n import Translator
from core.quota import (
    COUNTERS,
    Progress,
    Quota,
    days_left,
    profile,
    resolve_quota,
)
from storage import visits

Month = dict[int, tuple[Quota, Progress, int]]


async def month_progress(
    session: AsyncSession,
    *,
    officer_id: int,
    village_ids: list[int],
    day: date,
    county_profile: str,
) -> Month:
    """For each village: (quota in force, progress in `day`'s month, absences recorded)."""
    [month] = await months_progress(
        session,
        officer_id=officer_id,
        village_ids=village_ids,
        days=(day,),
        county_profile=county_profile,
    )
    return month


async def months_progress(
    session: AsyncSession,
    *,
    officer_id: int,
    village_ids: list[int],
    days: Sequence[date],
    county_profile: str,
) -> list[Month]:
    """month_progress for the month of each of `days`, the overrides read once."""
    overrides = await visits.quota_overrides(session, village_ids)
    county = profile(county_profile)
    quotas = {
        village_id: resolve_quota(county, station, own)
        for village_id, (station, own) in overrides.items()
    }
    done = await visits.months_progress(session, officer_id=officer_id, months=days)
    months = []
    for day in days:
        of_month = done[day.replace(day=1)]
        result = {}
        for village_id in village_ids:
            p = of_month.get(village_id)
            progress = (
                Progress()
                if p is None
                else Progress(p.visit_days, p.households, p.patrols, p.problems_solved)
            )
            result[village_id] = (quotas[village_id], progress, 0 if p is None else p.absences)
        months.append(result)
    return months


def progress_line(t: Translator, quota: Quota, progress: Progress) -> str:
    """'3 of 4 days, 11 of 4 households': only the counters the quota asks for."""
    parts = [
        t(f"quota.{name}", done=getattr(progress, name), needed=getattr(quota, name))
        for name in COUNTERS
        if getattr(quota, name) > 0
    ]
    return t("quota.separator").join(parts)


def days_left_text(t: Translator, today: date) -> str:
    return t("quota.days_left", days=days_left(today))


def previous_month(day: date) -> date:
    return day.replace(day=1) - timedelta(days=1)
