"""standings-refresh: the month's points and ranks of every officer, stored
(storage.standings) for /me and the digests of a scope to read.

Every 10 minutes, and on demand (`villagebeat jobs run standings-refresh`). In the first
days of a month the month before is refreshed too: the monthly digest and the weekly digest
of a week that ended the month still rank it. Safe to run twice: a refresh replaces the
month's rows under a lock.
"""

from __future__ import annotations

from datetime import timedelta

from core.quota import GRACE_DAYS
from scheduler.jobs import JobContext
from storage import standings


async def refresh_standings(ctx: JobContext) -> str:
    today = ctx.today
    months = [today]
    if today.day <= GRACE_DAYS:
        months.append(today.replace(day=1) - timedelta(days=1))
    done = []
    for month in months:
        async with ctx.sessions() as session, session.begin():
            stored = await standings.refresh(
                session,
                month=month,
                tz=ctx.settings.tz,
                table=ctx.settings.points,
                now=ctx.now,
            )
        done.append(f"{month:%Y-%m}: {stored} officers")
    return "standings refreshed, " + "; ".join(done)
