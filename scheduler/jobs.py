"""The scheduled jobs: their names, when they run (cron fields in the county's time zone),
and what they do.

A job is an async function of a JobContext. It opens its own sessions, reads the clock only
through `ctx.now` (the time it runs as: its slot, or `villagebeat jobs run --at`), writes
what it produces to the outbox (never to Telegram directly), and is safe to run twice: every
message carries a dedup key naming its recipient, period and reason. It returns one line
saying what it did. No aiogram here: `villagebeat jobs run` runs jobs from the shell.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.settings import Settings
from core.schedule import deliver_at


@dataclass(frozen=True)
class JobContext:
    sessions: async_sessionmaker[AsyncSession]
    settings: Settings
    now: datetime  # aware

    @property
    def today(self) -> date:
        """The county's date at `now`."""
        return self.now.astimezone(self.settings.tz).date()

    @property
    def send_at(self) -> datetime:
        """When what the job writes may be sent: `now`, or the end of the quiet hours."""
        return deliver_at(self.now, self.settings.tz, self.settings.quiet)


JobFn = Callable[[JobContext], Awaitable[str]]
# APScheduler CronTrigger fields (minute, hour, day, day_of_week, …) for the settings.
CronFn = Callable[[Settings], dict[str, str]]


@dataclass(frozen=True)
class Job:
    name: str
    description: str
    cron: CronFn
    run: JobFn


def all_jobs() -> dict[str, Job]:
    """Every job by name, in the order `villagebeat jobs list` shows them."""
    from scheduler import digests, escalation, nudges, spotchecks, standings

    jobs = [
        Job(
            "quota-nudges",
            "nudge officers behind the pace of their monthly quota (daily 09:00 from "
            "NUDGE_FROM_DAY)",
            lambda s: {"day": f"{s.nudge_from_day}-31", "hour": "9", "minute": "0"},
            nudges.quota_nudges,
        ),
        Job(
            "village-day-reminders",
            "remind officers on the morning of the weekly village day (VILLAGE_DAY, 08:30)",
            lambda s: {"day_of_week": s.village_day[:3], "hour": "8", "minute": "30"},
            nudges.village_day_reminders,
        ),
        Job(
            "request-deadlines",
            "escalate requests past their deadlines to supervisors and remind the officer "
            "(every 15 minutes)",
            lambda s: {"minute": "*/15"},
            escalation.request_deadlines,
        ),
        Job(
            "weekly-digest",
            "each supervisor's weekly digest with chart and workbook (Monday 08:00)",
            lambda s: {"day_of_week": "mon", "hour": "8", "minute": "0"},
            digests.weekly_digest,
        ),
        Job(
            "monthly-digest",
            "each supervisor's digest of the month before, with the ranking (the 1st, 08:00)",
            lambda s: {"day": "1", "hour": "8", "minute": "0"},
            digests.monthly_digest,
        ),
        Job(
            "spot-checks",
            "draw each supervisor's weekly sample of visit reports to verify (Monday 08:10)",
            lambda s: {"day_of_week": "mon", "hour": "8", "minute": "10"},
            spotchecks.draw_spot_checks,
        ),
        Job(
            "standings-refresh",
            "store the month's points and ranks of every officer, read by /me and the "
            "digests (every 10 minutes)",
            lambda s: {"minute": "*/10"},
            standings.refresh_standings,
        ),
    ]
    return {job.name: job for job in jobs}
