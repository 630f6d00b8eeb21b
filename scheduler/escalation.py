"""request-deadlines. Being written."""

from __future__ import annotations

from scheduler.jobs import JobContext


async def request_deadlines(ctx: JobContext) -> str:
    raise NotImplementedError
