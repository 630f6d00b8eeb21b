"""Two `villagebeat worker` processes against one database: exactly one schedules; when it
is killed outright the other takes over within 30 s; SIGTERM releases the lock.

No job body runs here (the jobs are tested on their own): every slot of every job from the
misfire grace ago to an hour ahead is recorded as done before the processes start, so their
catch-up and their firings find nothing to do. That is itself the slot rule at work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.settings import Settings
from scheduler.jobs import all_jobs
from scheduler.leader import APPLICATION_NAME, SCHEDULER_LOCK
from scheduler.runner import GRACE, trigger_for
from storage.models import JobRun
from tests.botapi import BotApiServer
from tests.botproc import STARTUP_TIMEOUT, BotProcess
from tests.e2e import bot_process

pytestmark = pytest.mark.timeout(300)

LEADER = "this process is the scheduler leader now"
STANDING_BY = "standing by: another process holds the scheduler lock"
RELEASED = "released the scheduler lock"
TAKEN = "taken by the test"
TAKEOVER_LIMIT = 30.0
TIMEZONE = "Asia/Shanghai"


def _slots_to_take(now: datetime) -> list[dict[str, object]]:
    settings = Settings(_env_file=None, timezone=TIMEZONE)
    rows = []
    for name, job in all_jobs().items():
        trigger = trigger_for(job, settings)
        fire = trigger.get_next_fire_time(None, now - GRACE)
        while fire is not None and fire <= now + timedelta(hours=1):
            rows.append(
                {
                    "name": name,
                    "slot": fire,
                    "started_at": now,
                    "finished_at": now,
                    "outcome": TAKEN,
                }
            )
            fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
    return rows


async def _taken(engine: AsyncEngine) -> tuple[int, int]:
    """(rows the test recorded, rows in all)."""
    async with engine.connect() as conn:
        mine = await conn.scalar(
            select(func.count()).select_from(JobRun).where(JobRun.outcome == TAKEN)
        )
        every = await conn.scalar(select(func.count()).select_from(JobRun))
    return int(mine or 0), int(every or 0)


async def _log_says(process: BotProcess, line: str, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while line not in process.log():
            assert process.running, process.log()
            await asyncio.sleep(0.05)


async def _lock_holder(engine: AsyncEngine) -> int | None:
    key = SCHEDULER_LOCK & 0xFFFF_FFFF_FFFF_FFFF
    async with engine.connect() as conn:
        pid = await conn.scalar(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND objsubid = 1 AND classid = :high AND objid = :low"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"high": key >> 32, "low": key & 0xFFFF_FFFF},
        )
    return None if pid is None else int(pid)


@dataclass
class Pair:
    processes: list[BotProcess]
    slots: int  # rows recorded before the start

    def leaders(self) -> list[BotProcess]:
        return [p for p in self.processes if p.running and LEADER in p.log()]


@pytest.fixture(scope="module")
async def pair(
    server: BotApiServer,
    database_url: str,
    engine: AsyncEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Pair]:
    rows = _slots_to_take(datetime.now(UTC))
    async with engine.begin() as conn:
        await conn.execute(insert(JobRun), rows)
    try:
        async with AsyncExitStack() as stack:
            processes = [
                await stack.enter_async_context(
                    bot_process(
                        server,
                        database_url,
                        tmp_path_factory.mktemp(f"scheduler-{n}"),
                        command="worker",
                        TIMEZONE=TIMEZONE,
                        SCHEDULER_ENABLED="true",
                    )
                )
                for n in (1, 2)
            ]
            for process in processes:
                await process.ready(server, "getMe")
            yield Pair(processes, len(rows))
    finally:
        async with engine.begin() as conn:
            await conn.execute(delete(JobRun))


async def test_exactly_one_worker_schedules(pair: Pair, engine: AsyncEngine) -> None:
    first, second = pair.processes
    async with asyncio.timeout(STARTUP_TIMEOUT):
        while not all(LEADER in p.log() or STANDING_BY in p.log() for p in pair.processes):
            assert first.running and second.running, first.log() + second.log()
            await asyncio.sleep(0.1)
    [leader] = pair.leaders()
    [standby] = [p for p in pair.processes if p is not leader]
    assert STANDING_BY in standby.log() and LEADER not in standby.log()
    await _log_says(leader, "catch-up: 0 missed slot(s) run", 10)
    async with engine.connect() as conn:
        lock_connections = await conn.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"),
            {"name": APPLICATION_NAME},
        )
    assert lock_connections == 2  # both compete; one holds the lock
    assert await _lock_holder(engine) is not None
    assert await _taken(engine) == (pair.slots, pair.slots)  # no job ran


async def test_the_other_takes_over_when_the_leader_is_killed(
    pair: Pair, engine: AsyncEngine
) -> None:
    [leader] = pair.leaders()
    [standby] = [p for p in pair.processes if p is not leader]
    holder = await _lock_holder(engine)
    killed_at = time.monotonic()
    await leader.kill()  # SIGKILL: its connections close, and with them the lock
    await _log_says(standby, LEADER, TAKEOVER_LIMIT + 5)
    takeover = time.monotonic() - killed_at
    print(f"takeover after SIGKILL: {takeover:.2f}s")
    assert takeover < TAKEOVER_LIMIT
    new_holder = await _lock_holder(engine)
    assert new_holder is not None and new_holder != holder
    await _log_says(standby, "catch-up: 0 missed slot(s) run", 10)
    assert await _taken(engine) == (pair.slots, pair.slots)


async def test_sigterm_stops_scheduling_and_releases_the_lock(
    pair: Pair, engine: AsyncEngine
) -> None:
    [leader] = pair.leaders()
    assert await leader.terminate(timeout=15) == 0
    log = leader.log()
    assert "stopped scheduling" in log and RELEASED in log
    assert log.index("stopped scheduling") < log.index(RELEASED)
    assert log.rstrip().endswith("stopped")
    assert await _lock_holder(engine) is None
    assert await _taken(engine) == (pair.slots, pair.slots)
