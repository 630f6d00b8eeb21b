"""Who is reminded of what, and the keys that make each reminder happen once.

A scheduled message carries a key naming its recipient, its period and its reason; the
outbox stores each key once, so a job run twice (or by two processes at once) sends nothing
twice. The keys are built here so that their periods are plain rules that can be tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from core.quota import Progress, Quota, behind_pace, shortfall
from core.schedule import week_of_month


@dataclass(frozen=True)
class QuotaNudge:
    behind: tuple[str, ...]  # the counters behind pace, in COUNTERS order: the reason
    missing: dict[str, int]  # what is still missing of every counter not yet met


def quota_nudge(
    quota: Quota, progress: Progress, today: date, *, absences: int, from_day: int
) -> QuotaNudge | None:
    """A nudge when the assignment is behind pace (core.quota.behind_pace), none before
    `from_day` of the month: early in the month the pace says too little to nag about."""
    if today.day < from_day:
        return None
    behind = behind_pace(quota, progress, today, absences=absences)
    if not behind:
        return None
    return QuotaNudge(tuple(behind), shortfall(quota, progress).missing())


def nudge_period(today: date) -> str:
    """The period a quota nudge counts in: the month and its week (days 1-7, 8-14, ...),
    e.g. '2026-11-w2'. A week of the month never spans two months, so February starts
    fresh on the 1st."""
    return f"{today:%Y-%m}-w{week_of_month(today)}"


def quota_nudge_key(officer_id: int, village_id: int, today: date, behind: tuple[str, ...]) -> str:
    """At most one nudge per officer, village, week of the month and set of counters behind:
    an officer who stays behind on the same counters hears about it once a week, and once
    more when a further counter falls behind (or a different one)."""
    reason = "+".join(behind)
    return f"quota-nudge:{officer_id}:{village_id}:{nudge_period(today)}:{reason}"


def village_day_key(officer_id: int, day: date) -> str:
    """One village-day reminder per officer and date."""
    return f"village-day:{officer_id}:{day.isoformat()}"
