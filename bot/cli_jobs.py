"""`villagebeat jobs list|run`: the scheduled jobs, and running one by hand as of any time.

No aiogram here, nor in the jobs: this answers in well under two seconds.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from bot.cli import CommandError, _with_database

if TYPE_CHECKING:
    from storage.jobruns import JobRunView


def add_parser(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    jobs = commands.add_parser(
        "jobs",
        help="the scheduled jobs: list them, or run one now",
        description="The jobs `run` and `worker` schedule (one process at a time), with cron "
        "schedules in TIMEZONE.",
    )
    actions = jobs.add_subparsers(
        dest="jobs_action", metavar="ACTION", required=True, parser_class=parser_class
    )
    actions.add_parser(
        "list",
        help="each job's schedule, what it does and its last scheduled run",
        description="Each job's name, cron schedule (minute hour day month weekday, in "
        "TIMEZONE) and next run, what it does, and its last scheduled run when the database "
        "is reachable.",
    ).set_defaults(handler=_list)
    run = actions.add_parser(
        "run",
        help="run one job now, as if the clock read --at",
        description="Run one job once against the database, as if the clock read --at, and "
        "print what it did. What it sends goes through the outbox, delivered by whichever "
        "process runs delivery, and never twice: running a job again for the same period "
        "sends nothing new. It takes no scheduled slot.",
    )
    run.add_argument("name", metavar="NAME", help="the job, as `villagebeat jobs list` names it")
    run.add_argument(
        "--at",
        metavar="ISO-8601",
        help="the time to run as, e.g. 2026-03-10T09:00 (read in TIMEZONE) or "
        "2026-03-10T09:00+08:00; default: now",
    )
    run.set_defaults(handler=_run)


def parse_at(text: str, tz: ZoneInfo) -> datetime:
    """An ISO-8601 time; without an offset it is read in the county's time zone."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CommandError(
            f"--at: {text!r} is not an ISO-8601 time such as 2026-03-10T09:00 or "
            "2026-03-10T09:00+08:00"
        ) from None
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment


def _run(args: argparse.Namespace) -> None:
    from bot.settings import load_settings
    from scheduler.jobs import JobContext, all_jobs

    jobs = all_jobs()
    job = jobs.get(args.name)
    if job is None:
        raise CommandError(f"no job named {args.name!r}; the jobs are: {', '.join(jobs)}")
    at = None if args.at is None else parse_at(args.at, load_settings().tz)

    async def work(db: Any, settings: Any) -> str:
        from core.clock import system_clock

        now = system_clock() if at is None else at
        try:
            return await job.run(JobContext(db.sessions, settings, now=now))
        except Exception as exc:
            if type(exc).__module__.startswith(("sqlalchemy", "asyncpg")):
                raise  # reported as a database error
            raise CommandError(f"{job.name} failed: {type(exc).__name__}: {exc}") from exc

    print(_with_database(work))


def _list(args: argparse.Namespace) -> None:
    from bot.settings import load_settings
    from core.clock import system_clock
    from scheduler.jobs import all_jobs
    from scheduler.runner import cron_text, trigger_for

    settings = load_settings()
    jobs = all_jobs()

    async def work(db: Any, settings: Any) -> dict[str, JobRunView]:
        from storage.jobruns import last_runs

        async with db.sessions() as session:
            return await last_runs(session)

    runs: dict[str, JobRunView] | None = None
    try:
        runs = _with_database(work, migrate=False)  # reading only, as fast as it gets
    except CommandError as exc:
        print(f"villagebeat: last runs not shown: {exc}", file=sys.stderr)
    tz = settings.tz
    now = system_clock()
    print(f"times in {settings.timezone}; schedules as cron fields: minute hour day month weekday")
    for name, job in jobs.items():
        trigger = trigger_for(job, settings)
        upcoming = trigger.get_next_fire_time(None, now)
        print()
        print(f"{name}  {cron_text(trigger)}  next {_when(upcoming, tz)}")
        print(f"  {job.description}")
        if runs is not None:
            print(f"  last run: {_last(runs.get(name), tz)}")


def _when(moment: datetime | None, tz: ZoneInfo) -> str:
    return "never" if moment is None else moment.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _last(run: JobRunView | None, tz: ZoneInfo) -> str:
    if run is None:
        return "none yet"
    slot = _when(run.slot, tz)
    if run.finished_at is None:
        return f"{slot}, running since {_when(run.started_at, tz)}"
    state = "FAILED" if run.failed else "ok"
    return f"{slot}, {state} at {_when(run.finished_at, tz)}: {run.outcome}"
