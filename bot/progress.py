"""An officer's month against the quota, per village, as short lines for the chat."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from bot.i18n import Translator
from core.activities import PROBLEM_SOLVING, Activity
from core.quota import (
    COUNTERS,
    Progress,
    Quota,
    QuotaOverride,
    days_left,
    month_bounds,
    profile,
    resolve_quota,
)
from storage import visits
from storage.models import QuotaOverride as QuotaOverrideRow


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


async def month_progress(
    session: AsyncSession,
    *,
    officer_id: int,
    village_ids: list[int],
    day: date,
    county_profile: str,
) -> dict[int, tuple[Quota, Progress, int]]:
    """For each village: (quota in force, progress in `day`'s month, absences recorded)."""
    first, last = month_bounds(day)
    done = await visits.progress(
        session,
        officer_id=officer_id,
        first=first,
        last=last,
        problem_codes=[a.value for a in PROBLEM_SOLVING],
        patrol_code=Activity.PATROL.value,
    )
    overrides = await visits.quota_overrides(session, village_ids)
    county = profile(county_profile)
    result = {}
    for village_id in village_ids:
        station, own = overrides[village_id]
        quota = resolve_quota(county, _override(station), _override(own))
        p = done.get(village_id)
        progress = (
            Progress()
            if p is None
            else Progress(
                visit_days=p.visit_days,
                households=p.households,
                patrols=p.patrols,
                problems_solved=p.problems_solved,
            )
        )
        result[village_id] = (quota, progress, 0 if p is None else p.absences)
    return result


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
