"""weekly-digest and monthly-digest. Being written."""

from __future__ import annotations

from scheduler.jobs import JobContext


async def weekly_digest(ctx: JobContext) -> str:
    raise NotImplementedError


async def monthly_digest(ctx: JobContext) -> str:
    raise NotImplementedError
