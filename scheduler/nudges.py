"""quota-nudges and village-day-reminders. Being written."""

from __future__ import annotations

from scheduler.jobs import JobContext


async def quota_nudges(ctx: JobContext) -> str:
    raise NotImplementedError


async def village_day_reminders(ctx: JobContext) -> str:
    raise NotImplementedError
