"""The scheduler runtime: APScheduler firing each job's cron slots in the county's time zone,
while this process holds the scheduler lock (scheduler.leader).

- **Slots.** A firing runs its job for its slot, the fire time it stands for (the latest
  one due). The slot is claimed in `job_runs` first, so each slot runs at most once,
  whichever process gets there.
- **Catch-up.** On taking the lock, each job's latest slot within the misfire grace (`GRACE`)
  runs if it has no run yet, so a job missed while everything was down runs once, not once
  per missed tick. Older slots are left alone.
- **Failures.** A job that raises is logged with its name and recorded as failed with the
  error; the others go on. A failed (or interrupted) slot is tried again `RETRY_DELAY` later,
  for up to `RETRY_FOR` after its first attempt, and only while no later slot of the job has
  come (a later slot does the same work as of a later time). After that it stays failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.settings import Settings
from core.clock import Clock, system_clock
from scheduler.jobs import Job, JobContext, all_jobs
from scheduler.leader import Connect, Leader, connector
from storage import jobruns
from storage.db import Database

log = logging.getLogger(__name__)

GRACE = timedelta(hours=6)
RETRY_DELAY = timedelta(minutes=10)
RETRY_FOR = timedelta(hours=1)
_TICK = timedelta(microseconds=1)


def trigger_for(job: Job, settings: Settings) -> Any:
    return CronTrigger(**job.cron(settings), timezone=settings.tz)


def latest_slot(trigger: Any, *, now: datetime, since: datetime) -> datetime | None:
    """The trigger's last fire time after `since` and not after `now`, if any."""
    slot = None
    fire = trigger.get_next_fire_time(None, since + _TICK)
    while fire is not None and fire <= now:
        slot = fire
        fire = trigger.get_next_fire_time(fire, fire + _TICK)
    return slot


def cron_text(trigger: Any) -> str:
    """The trigger as crontab fields (minute hour day month weekday), seconds first when
    they are not 0."""
    fields = {field.name: str(field) for field in trigger.fields}
    text = " ".join(fields[n] for n in ("minute", "hour", "day", "month", "day_of_week"))
    return text if fields["second"] == "0" else f"{fields['second']} {text}"


class JobRuntime:
    """Fires the jobs' slots while started; `start` on taking the scheduler lock, `stop` on
    giving it up."""

    def __init__(
        self,
        jobs: Mapping[str, Job],
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        clock: Clock = system_clock,
        grace: timedelta = GRACE,
        retry_delay: timedelta = RETRY_DELAY,
        retry_for: timedelta = RETRY_FOR,
        stop_grace: float = 5.0,
    ) -> None:
        self.jobs = dict(jobs)
        self.sessions = sessions
        self.settings = settings
        self.clock = clock
        self.grace = grace
        self.retry_delay = retry_delay
        self.retry_for = retry_for
        self.stop_grace = stop_grace
        self.triggers = {name: trigger_for(job, settings) for name, job in self.jobs.items()}
        self._scheduler: Any = None
        self._stopping = False
        self._running: set[asyncio.Task[Any]] = set()

    @property
    def scheduling(self) -> bool:
        return self._scheduler is not None

    @property
    def running(self) -> int:
        """Runs under way."""
        return len(self._running)

    async def start(self) -> None:
        """Mark runs a dead leader left unfinished, then fire every job's cron slots and
        catch up on missed ones."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler  # not for `jobs list`

        self._stopping = False
        await self._recover()
        scheduler = AsyncIOScheduler(
            timezone=self.settings.tz,
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int(self.grace.total_seconds()),
            },
        )
        for name, trigger in self.triggers.items():
            scheduler.add_job(self._scheduled, trigger, args=(self._fire, name), id=name, name=name)
        scheduler.add_job(self._scheduled, args=(self.catch_up,), id="catch-up")  # at once
        scheduler.start()
        self._scheduler = scheduler
        log.info("scheduling %d jobs in %s", len(self.jobs), self.settings.timezone)

    async def stop(self, clean: bool) -> None:
        """Stop firing. On a clean stop, runs under way get `stop_grace` seconds to finish;
        otherwise (the lock is lost) they are cancelled at once."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        self._stopping = True  # the catch-up starts no further job
        if clean and self._running:
            scheduler.pause()
            await asyncio.wait(set(self._running), timeout=self.stop_grace)
        scheduler.shutdown(wait=False)  # cancels what still runs
        if self._running:
            await asyncio.wait(set(self._running), timeout=self.stop_grace)
        log.info("stopped scheduling")

    async def catch_up(self) -> int:
        """Run each job's latest slot within the grace that has not run (or is due for a
        retry). Returns how many ran."""
        now = self.clock()
        ran = 0
        for name, trigger in self.triggers.items():
            if self._stopping:
                break
            slot = latest_slot(trigger, now=now, since=now - self.grace)
            if slot is not None and await self.attempt(name, slot):
                ran += 1
        log.info("catch-up: %d missed slot(s) run", ran)
        return ran

    async def attempt(self, name: str, slot: datetime) -> bool:
        """Run `name` for `slot` unless another run has it, it is done, or a later slot has
        come. True when the job ran (successfully or not)."""
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            return await self._attempt(self.jobs[name], slot)
        finally:
            self._running.discard(task)

    @staticmethod
    async def _scheduled(work: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """What APScheduler runs: being cancelled (scheduling stopped) ends it quietly."""
        with contextlib.suppress(asyncio.CancelledError):
            await work(*args)

    async def _fire(self, name: str) -> None:
        now = self.clock()
        slot = latest_slot(self.triggers[name], now=now, since=now - self.grace)
        if slot is not None:
            await self.attempt(name, slot)

    async def _recover(self) -> None:
        try:
            async with self.sessions() as session, session.begin():
                interrupted = await jobruns.mark_interrupted(session, now=self.clock())
        except Exception as exc:  # the slots stay unfinished; the next leader marks them
            log.warning("could not look for interrupted runs: %s", exc)
            return
        for run in interrupted:
            log.warning("%s: the run of slot %s was interrupted", run.name, self._at(run.slot))

    async def _attempt(self, job: Job, slot: datetime) -> bool:
        now = self.clock()
        if latest_slot(self.triggers[job.name], now=now, since=slot) is not None:
            return False  # a later slot has come and does the work
        try:
            first = await self._claim(job.name, slot, now)
        except Exception as exc:
            log.warning("%s: could not claim slot %s (%s)", job.name, self._at(slot), exc)
            if slot + self.grace > now + self.retry_delay:
                self._retry(job.name, slot, now + self.retry_delay)
            return False
        if first is None:
            return False
        try:
            outcome, failed = await self._run(job, slot)
        except asyncio.CancelledError:
            # Stopped mid-run: say so if the database lets us (the next leader marks it
            # interrupted otherwise), and stop.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._finish(job.name, slot, jobruns.INTERRUPTED, True, self.clock()), 2
                )
            raise
        finished = self.clock()
        await self._finish(job.name, slot, outcome, failed, finished)
        if failed:
            self._plan_retry(job.name, slot, first=first, failed_at=finished)
        return True

    async def _claim(self, name: str, slot: datetime, now: datetime) -> datetime | None:
        """Take the slot: new, or failed and due for a retry. The time of its first attempt,
        or None when it is not ours to run (a retry is planned if one is due later)."""
        async with self.sessions() as session, session.begin():
            if await jobruns.claim(session, name=name, slot=slot, now=now):
                return now
            if await jobruns.reclaim_failed(
                session,
                name=name,
                slot=slot,
                failed_before=now - self.retry_delay,
                window=self.retry_for - self.retry_delay,
            ):
                run = await jobruns.get_run(session, name=name, slot=slot)
                assert run is not None
                log.info("%s: retrying slot %s", name, self._at(slot))
                return run.started_at
            run = await jobruns.get_run(session, name=name, slot=slot)
        if run is not None and run.failed and run.finished_at is not None:
            self._plan_retry(name, slot, first=run.started_at, failed_at=run.finished_at)
        return None

    def _plan_retry(
        self, name: str, slot: datetime, *, first: datetime, failed_at: datetime
    ) -> None:
        """Try a failed slot again `retry_delay` after it failed, while that is less than
        `retry_for` after its first attempt (the condition `jobruns.reclaim_failed` checks)."""
        retry_at = failed_at + self.retry_delay
        if retry_at < first + self.retry_for:
            self._retry(name, slot, retry_at)
        else:
            log.warning("%s: slot %s failed; no more retries", name, self._at(slot))

    async def _run(self, job: Job, slot: datetime) -> tuple[str, bool]:
        log.info("%s: running slot %s", job.name, self._at(slot))
        try:
            outcome = await job.run(JobContext(self.sessions, self.settings, now=self.clock()))
        except Exception as exc:
            log.exception("%s: slot %s failed", job.name, self._at(slot))
            return f"{type(exc).__name__}: {exc}", True
        log.info("%s: slot %s done: %s", job.name, self._at(slot), outcome)
        return outcome, False

    async def _finish(
        self, name: str, slot: datetime, outcome: str, failed: bool, now: datetime
    ) -> None:
        try:
            async with self.sessions() as session, session.begin():
                await jobruns.finish(
                    session, name=name, slot=slot, outcome=outcome, failed=failed, now=now
                )
        except Exception as exc:  # left unfinished: the next leader marks it interrupted
            log.warning("%s: could not record slot %s (%s)", name, self._at(slot), exc)

    def _at(self, moment: datetime) -> str:
        return moment.astimezone(self.settings.tz).isoformat(timespec="seconds")

    def _retry(self, name: str, slot: datetime, at: datetime) -> None:
        if self._scheduler is None:
            return
        log.info("%s: slot %s will be tried again at %s", name, self._at(slot), self._at(at))
        self._scheduler.add_job(
            self._scheduled,
            "date",
            run_date=at,
            args=(self.attempt, name, slot),
            id=f"retry {name} {slot.isoformat()}",
            replace_existing=True,
        )


async def run_scheduler(
    db: Database,
    settings: Settings,
    stop: asyncio.Event,
    *,
    jobs: Mapping[str, Job] | None = None,
    connect: Connect | None = None,
) -> None:
    """Compete for the scheduler lock until `stop`; schedule the jobs while holding it."""
    try:
        runtime = JobRuntime(all_jobs() if jobs is None else jobs, db.sessions, settings)
    except Exception:
        log.exception("cannot load the scheduled jobs; this process does not schedule")
        return
    leader = Leader(connect or connector(db.engine))
    await leader.run(stop, runtime.start, runtime.stop)
