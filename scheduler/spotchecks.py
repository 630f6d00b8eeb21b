"""spot-checks. Being written."""

from __future__ import annotations

from scheduler.jobs import JobContext


async def draw_spot_checks(ctx: JobContext) -> str:
    raise NotImplementedError
