"""Scheduled runs in `job_runs`: one row per (job, slot), so that a slot runs at most once
whichever process gets there first, and a missed or failed slot can be found.

A row is claimed before the job runs (`finished_at` empty while it runs) and finished with
the job's outcome line, or `failed` and the error. Times are passed in, never read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from storage.models import JobRun

INTERRUPTED = "interrupted: the process running it stopped"


@dataclass(frozen=True)
class JobRunView:
    name: str
    slot: datetime
    started_at: datetime  # the first attempt
    finished_at: datetime | None  # None while running (or when its process died)
    outcome: str | None
    failed: bool


def _view(row: JobRun) -> JobRunView:
    return JobRunView(row.name, row.slot, row.started_at, row.finished_at, row.outcome, row.failed)


async def claim(session: AsyncSession, *, name: str, slot: datetime, now: datetime) -> bool:
    """Take the slot for this transaction's process; False when any process took it before."""
    claimed = await session.scalar(
        insert(JobRun)
        .values(name=name, slot=slot, started_at=now)
        .on_conflict_do_nothing(index_elements=[JobRun.name, JobRun.slot])
        .returning(JobRun.name)
    )
    return claimed is not None


async def reclaim_failed(
    session: AsyncSession,
    *,
    name: str,
    slot: datetime,
    failed_before: datetime,
    window: timedelta,
) -> bool:
    """Take a failed slot again for a retry: only when it failed no later than
    `failed_before`, and less than `window` after its first attempt. The row update is
    atomic, so two processes cannot both retry it."""
    claimed = await session.scalar(
        update(JobRun)
        .where(
            JobRun.name == name,
            JobRun.slot == slot,
            JobRun.failed,
            JobRun.finished_at <= failed_before,
            JobRun.finished_at < JobRun.started_at + window,
        )
        .values(failed=False, finished_at=None, outcome=None)
        .returning(JobRun.name)
    )
    return claimed is not None


async def finish(
    session: AsyncSession,
    *,
    name: str,
    slot: datetime,
    outcome: str,
    failed: bool,
    now: datetime,
) -> None:
    await session.execute(
        update(JobRun)
        .where(JobRun.name == name, JobRun.slot == slot)
        .values(finished_at=now, outcome=outcome, failed=failed)
    )


async def mark_interrupted(session: AsyncSession, *, now: datetime) -> list[JobRunView]:
    """Runs left unfinished (their process died or lost the scheduler lock mid-run) become
    failed, so that the retry rule applies to them. Only the scheduler lock's holder may
    call this: nobody else runs scheduled jobs."""
    rows = await session.scalars(
        update(JobRun)
        .where(JobRun.finished_at.is_(None))
        .values(failed=True, finished_at=now, outcome=INTERRUPTED)
        .returning(JobRun)
    )
    return [_view(row) for row in rows]


async def get_run(session: AsyncSession, *, name: str, slot: datetime) -> JobRunView | None:
    row = await session.get(JobRun, (name, slot), populate_existing=True)
    return None if row is None else _view(row)


async def last_runs(session: AsyncSession) -> dict[str, JobRunView]:
    """Each job's run of its latest slot."""
    rows = await session.scalars(
        select(JobRun).distinct(JobRun.name).order_by(JobRun.name, JobRun.slot.desc())
    )
    return {row.name: _view(row) for row in rows}


async def runs_of(session: AsyncSession, *, name: str) -> list[JobRunView]:
    """Every recorded run of one job, oldest slot first."""
    rows = await session.scalars(select(JobRun).where(JobRun.name == name).order_by(JobRun.slot))
    return [_view(row) for row in rows]


async def prune(session: AsyncSession, *, older_than: datetime) -> int:
    """Forget the runs of slots before `older_than`, except each job's latest slot (the
    catch-up and `jobs list` read it, and a monthly job's may be a month old): the table
    would otherwise grow by every slot of every job (144 a day for standings-refresh)."""
    later = aliased(JobRun)
    result = await session.execute(
        delete(JobRun).where(
            JobRun.slot < older_than,
            exists().where(later.name == JobRun.name, later.slot > JobRun.slot),
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
