"""The scheduler runtime: slots claimed once, catch-up, failures and retries, one leader at a
time with takeover, and `villagebeat jobs list|run`."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.settings import Settings
from scheduler.jobs import Job, JobContext, all_jobs
from scheduler.leader import SCHEDULER_LOCK, Leader, connector
from scheduler.runner import JobRuntime, cron_text, latest_slot, trigger_for
from storage import jobruns, outbox
from storage.models import JobRun, OutboxMessage
from tests.test_cli import villagebeat

SHANGHAI = ZoneInfo("Asia/Shanghai")
SETTINGS = Settings(_env_file=None, timezone="Asia/Shanghai")
TAKEOVER_LIMIT = 30.0


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if check():
                return
            await asyncio.sleep(0.02)


@dataclass
class Calls:
    """What a test job saw: who ran it, and the time it ran as."""

    seen: list[tuple[str, datetime]] = field(default_factory=list)

    def by(self, who: str) -> int:
        return sum(1 for runner, _ in self.seen if runner == who)


def recording(name: str, cron: dict[str, str], calls: Calls, who: str = "") -> Job:
    async def run(ctx: JobContext) -> str:
        calls.seen.append((who, ctx.now))
        return f"{name} ran"

    return Job(name, f"test job {name}", lambda s: cron, run)


def daily_at(moment: datetime) -> dict[str, str]:
    """Cron fields for every day at `moment`'s local minute: its latest slot is `moment`."""
    local = moment.astimezone(SHANGHAI)
    return {"hour": str(local.hour), "minute": str(local.minute)}


async def rows(sessions: async_sessionmaker[AsyncSession], name: str) -> list[jobruns.JobRunView]:
    async with sessions() as s:
        return await jobruns.runs_of(s, name=name)


def test_slots_and_schedules_of_the_job_table() -> None:
    jobs = all_jobs()
    assert list(jobs) == [
        "quota-nudges",
        "village-day-reminders",
        "request-deadlines",
        "weekly-digest",
        "monthly-digest",
        "spot-checks",
        "standings-refresh",
    ]
    texts = {name: cron_text(trigger_for(job, SETTINGS)) for name, job in jobs.items()}
    assert texts == {
        "quota-nudges": "0 9 10-31 * *",
        "village-day-reminders": "30 8 * * tue",
        "request-deadlines": "*/15 * * * *",
        "weekly-digest": "0 8 * * mon",
        "monthly-digest": "0 8 1 * *",
        "spot-checks": "10 8 * * mon",
        "standings-refresh": "*/10 * * * *",
    }
    nudges = trigger_for(jobs["quota-nudges"], SETTINGS)
    # From the 10th to the month's last day, whatever its length, in the county's time zone.
    feb = datetime(2026, 2, 28, 9, 30, tzinfo=SHANGHAI)
    assert latest_slot(nudges, now=feb, since=feb - timedelta(hours=6)) == datetime(
        2026, 2, 28, 9, 0, tzinfo=SHANGHAI
    )
    assert nudges.get_next_fire_time(None, feb) == datetime(2026, 3, 10, 9, 0, tzinfo=SHANGHAI)
    late = Settings(_env_file=None, nudge_from_day=28, village_day="wednesday")
    assert cron_text(trigger_for(jobs["quota-nudges"], late)) == "0 9 28-31 * *"
    assert cron_text(trigger_for(jobs["village-day-reminders"], late)) == "30 8 * * wed"

    deadlines = trigger_for(jobs["request-deadlines"], SETTINGS)
    now = datetime(2026, 3, 1, 0, 7, 30, tzinfo=SHANGHAI)
    # The latest quarter hour, across midnight and the month's end in UTC.
    assert latest_slot(deadlines, now=now, since=now - timedelta(hours=6)) == datetime(
        2026, 3, 1, 0, 0, tzinfo=SHANGHAI
    )
    assert latest_slot(deadlines, now=now, since=now - timedelta(minutes=5)) is None
    weekly = trigger_for(jobs["weekly-digest"], SETTINGS)
    monday = datetime(2026, 3, 2, 8, 0, tzinfo=SHANGHAI)
    assert latest_slot(weekly, now=monday, since=monday - timedelta(hours=6)) == monday
    assert (
        latest_slot(weekly, now=monday + timedelta(hours=7), since=monday + timedelta(hours=1))
        is None
    )


async def test_a_slot_runs_once_whichever_runtime_claims_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    calls = Calls()
    slot = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    job = recording("race", daily_at(slot), calls)
    first = JobRuntime({"race": job}, sessions, SETTINGS)
    second = JobRuntime({"race": job}, sessions, SETTINGS)
    ran = await asyncio.gather(*(rt.attempt("race", slot) for rt in (first, second, first, second)))
    assert sorted(ran) == [False, False, False, True]
    assert len(calls.seen) == 1
    [run] = await rows(sessions, "race")
    assert (run.slot, run.outcome, run.failed) == (slot, "race ran", False)
    assert run.finished_at is not None
    assert not await second.attempt("race", slot)  # done is done
    assert len(calls.seen) == 1


async def test_catch_up_runs_the_latest_missed_slot_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = datetime(2026, 3, 10, 11, 30, tzinfo=SHANGHAI)
    calls = {name: Calls() for name in ("hourly", "daily", "night", "done")}
    jobs = {
        "hourly": recording("hourly", {"minute": "0"}, calls["hourly"]),  # 06:00 … 11:00 missed
        "daily": recording("daily", {"hour": "9", "minute": "0"}, calls["daily"]),
        "night": recording("night", {"hour": "2", "minute": "0"}, calls["night"]),  # > 6 h ago
        "done": recording("done", {"minute": "0"}, calls["done"]),
    }
    async with sessions() as s, s.begin():
        eleven = datetime(2026, 3, 10, 11, 0, tzinfo=SHANGHAI)
        assert await jobruns.claim(s, name="done", slot=eleven, now=eleven)
        await jobruns.finish(s, name="done", slot=eleven, outcome="ok", failed=False, now=eleven)
    runtime = JobRuntime(jobs, sessions, SETTINGS, clock=lambda: now)

    assert await runtime.catch_up() == 2
    assert [run.slot for run in await rows(sessions, "hourly")] == [
        datetime(2026, 3, 10, 11, 0, tzinfo=SHANGHAI)
    ]
    assert [run.slot for run in await rows(sessions, "daily")] == [
        datetime(2026, 3, 10, 9, 0, tzinfo=SHANGHAI)
    ]
    assert await rows(sessions, "night") == []
    assert len(await rows(sessions, "done")) == 1
    assert {name: [when for _, when in c.seen] for name, c in calls.items()} == {
        "hourly": [now],  # the job runs as of the real time, for its slot
        "daily": [now],
        "night": [],
        "done": [],
    }
    # Restarting again runs nothing: every latest slot has its run.
    assert await JobRuntime(jobs, sessions, SETTINGS, clock=lambda: now).catch_up() == 0
    assert sum(len(c.seen) for c in calls.values()) == 2


async def test_a_failing_job_is_recorded_retried_and_does_not_stop_the_others(
    sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scheduler")
    slot = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
    attempts = {"broken": 0, "flaky": 0}

    async def broken(ctx: JobContext) -> str:
        attempts["broken"] += 1
        raise RuntimeError("boom")

    async def flaky(ctx: JobContext) -> str:
        attempts["flaky"] += 1
        if attempts["flaky"] == 1:
            raise ConnectionError("supervisor table away")
        return "flaky ran"

    calls = Calls()
    jobs = {
        "broken": Job("broken", "always fails", lambda s: daily_at(slot), broken),
        "flaky": Job("flaky", "fails once", lambda s: daily_at(slot), flaky),
        "fine": recording("fine", daily_at(slot), calls),
    }
    runtime = JobRuntime(
        jobs,
        sessions,
        SETTINGS,
        retry_delay=timedelta(seconds=0.3),
        retry_for=timedelta(seconds=1.5),
    )
    await runtime.start()
    try:
        await until(lambda: attempts["flaky"] == 2 and len(calls.seen) == 1)
        [fine] = await rows(sessions, "fine")
        assert (fine.outcome, fine.failed) == ("fine ran", False)
        [recovered] = await rows(sessions, "flaky")
        assert (recovered.outcome, recovered.failed) == ("flaky ran", False)
        await until(lambda: "broken: slot" in caplog.text and "no more retries" in caplog.text)
    finally:
        await runtime.stop(clean=True)
    [failed] = await rows(sessions, "broken")
    assert (failed.slot, failed.failed, failed.outcome) == (slot, True, "RuntimeError: boom")
    # Retried 0.3 s after each failure while that is within 1.5 s of the first attempt
    # (at most 4 retries), then left failed.
    assert 2 <= attempts["broken"] <= 5, attempts
    assert attempts["flaky"] == 2 and len(calls.seen) == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any(r.getMessage().startswith("broken: slot") and r.exc_info for r in errors)
    assert any(r.getMessage().startswith("flaky: slot") for r in errors)
    assert not runtime.scheduling


async def test_a_later_slot_supersedes_a_failed_one(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = datetime(2026, 3, 10, 11, 20, tzinfo=SHANGHAI)
    calls = Calls()
    runtime = JobRuntime(
        {"quarter": recording("quarter", {"minute": "*/15"}, calls)},
        sessions,
        SETTINGS,
        clock=lambda: now,
    )
    old = datetime(2026, 3, 10, 11, 0, tzinfo=SHANGHAI)
    async with sessions() as s, s.begin():
        await jobruns.claim(s, name="quarter", slot=old, now=old)
        await jobruns.finish(s, name="quarter", slot=old, outcome="x", failed=True, now=old)
    assert not await runtime.attempt("quarter", old)  # 11:15 has come since
    assert await runtime.catch_up() == 1
    assert [
        (r.slot.astimezone(SHANGHAI).minute, r.failed) for r in await rows(sessions, "quarter")
    ] == [
        (0, True),
        (15, False),
    ]


@dataclass
class Node:
    """One scheduling process: its leader election and its runtime."""

    name: str
    leader: Leader
    runtime: JobRuntime
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.stop.clear()
        self.task = asyncio.create_task(
            self.leader.run(self.stop, self.runtime.start, self.runtime.stop)
        )

    async def halt(self) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 15)


@pytest.fixture
async def nodes(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[tuple[Node, Node, Calls]]:
    calls = Calls()
    made = []
    for name in ("A", "B"):
        job = recording("tick", {"second": "*"}, calls, who=name)
        runtime = JobRuntime(
            {"tick": job},
            sessions,
            SETTINGS,
            grace=timedelta(seconds=30),
            retry_delay=timedelta(seconds=1),
        )
        leader = Leader(connector(engine), retry_interval=1.0, check_interval=0.5)
        made.append(Node(name, leader, runtime))
    yield made[0], made[1], calls
    for node in made:
        if node.task is not None and not node.task.done():
            await node.halt()


async def _lock_holder(engine: AsyncEngine) -> int | None:
    """The server process holding the scheduler lock (a bigint key is stored as its high
    and low 32 bits)."""
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


async def test_one_leader_at_a_time_and_takeover_when_its_connection_dies(
    nodes: tuple[Node, Node, Calls],
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="scheduler")
    a, b, calls = nodes
    a.start()
    await until(lambda: a.leader.leading and a.runtime.scheduling)
    b.start()
    await until(lambda: "standing by" in caplog.text)
    await until(lambda: calls.by("A") >= 3)
    assert not b.leader.leading and not b.runtime.scheduling and calls.by("B") == 0
    assert await _lock_holder(engine) == a.leader.pid

    # The leader's connection dies (as when its process is killed): it stops scheduling
    # at once, and the other takes over.
    assert a.leader.pid is not None
    killed_at = time.monotonic()
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": a.leader.pid})
    await until(lambda: not a.runtime.scheduling, timeout=1.0)
    by_a = calls.by("A")
    await until(lambda: b.leader.leading, timeout=TAKEOVER_LIMIT)
    takeover = time.monotonic() - killed_at
    print(f"takeover after the leader's connection died: {takeover:.2f}s")
    assert takeover < TAKEOVER_LIMIT
    # Noticed by the connection's close or by the periodic check, whichever comes first.
    assert re.search(
        r"lost the scheduler lock \((its connection was closed|connection check failed: .*)\);"
        " stopped scheduling",
        caplog.text,
    )
    await until(lambda: calls.by("B") >= 3)
    assert calls.by("A") == by_a  # nothing ran in A after it lost the lock
    await asyncio.sleep(1.5)  # A reconnects and stands by again
    assert not a.leader.leading and b.leader.leading
    assert await _lock_holder(engine) == b.leader.pid

    # A clean stop releases the lock at once, and A takes over.
    stopped_at = time.monotonic()
    await b.halt()
    assert "released the scheduler lock" in caplog.text
    await until(lambda: a.leader.leading, timeout=TAKEOVER_LIMIT)
    print(f"takeover after a clean stop: {time.monotonic() - stopped_at:.2f}s")
    by_b = calls.by("B")
    await until(lambda: calls.by("A") >= by_a + 2)
    await a.halt()
    assert await _lock_holder(engine) is None
    assert calls.by("B") == by_b

    # Each slot ran at most once across both processes (a run cut off by the lost lock may
    # have claimed a slot without running it).
    runs = await rows(sessions, "tick")
    assert len(calls.seen) <= len(runs) <= len(calls.seen) + 1
    assert all(run.finished_at is not None for run in runs)
    assert sum(run.failed for run in runs) <= 1


async def test_a_run_cut_off_by_the_lost_lock_runs_again_under_the_new_leader(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    slot = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
    started: list[str] = []
    cancelled: list[str] = []
    release = asyncio.Event()

    def slow(who: str) -> Job:
        async def run(ctx: JobContext) -> str:
            started.append(who)
            try:
                await release.wait()
            except asyncio.CancelledError:
                cancelled.append(who)
                raise
            return f"finished by {who}"

        return Job("slow", "waits", lambda s: daily_at(slot), run)

    made = [
        Node(
            who,
            Leader(connector(engine), retry_interval=0.5, check_interval=0.5),
            JobRuntime({"slow": slow(who)}, sessions, SETTINGS, retry_delay=timedelta(seconds=0.5)),
        )
        for who in ("A", "B")
    ]
    a, b = made
    try:
        a.start()
        await until(lambda: started == ["A"])  # the catch-up runs the slot
        b.start()
        await asyncio.sleep(0.3)
        assert a.leader.pid is not None
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": a.leader.pid})
        await until(lambda: cancelled == ["A"], timeout=2)
        await until(lambda: started == ["A", "B"], timeout=TAKEOVER_LIMIT)
        [run] = await rows(sessions, "slow")
        assert run.finished_at is None  # running again, in B
        release.set()
        await until(lambda: b.runtime.running == 0)
        [run] = await rows(sessions, "slow")
        assert (run.outcome, run.failed) == ("finished by B", False)
    finally:
        release.set()
        for node in made:
            if node.task is not None:
                await node.halt()


async def test_runs_left_unfinished_are_marked_and_retried(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    slot = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)
    async with sessions() as s, s.begin():
        await jobruns.claim(s, name="orphan", slot=slot, now=slot)  # its process died
    calls = Calls()
    runtime = JobRuntime(
        {"orphan": recording("orphan", daily_at(slot), calls)},
        sessions,
        SETTINGS,
        retry_delay=timedelta(seconds=0.3),
    )
    await runtime.start()
    try:
        await until(lambda: len(calls.seen) == 1)
        await until(lambda: runtime.running == 0)
    finally:
        await runtime.stop(clean=True)
    [run] = await rows(sessions, "orphan")
    assert (run.outcome, run.failed, run.started_at) == ("orphan ran", False, slot)


# -- villagebeat jobs -------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
# `villagebeat` with this module's job table instead of the real one.
WITH_TEST_JOBS = (
    "import atexit, sys; "
    "atexit.register(lambda: print("
    "'AIOGRAM-IMPORTED' if 'aiogram' in sys.modules else '', file=sys.stderr)); "
    "import scheduler.jobs as jobs; import tests.test_scheduler as t; "
    "jobs.all_jobs = t.cli_jobs; from bot.cli import main; main(sys.argv[1:])"
)


async def _stamp(ctx: JobContext) -> str:
    async with ctx.sessions() as s, s.begin():
        queued = await outbox.enqueue(
            s,
            chat_id=424242,
            text=f"as of {ctx.now.isoformat()}",
            dedup_key=f"stamp:{ctx.today.isoformat()}",
            not_before=ctx.send_at,
        )
    return f"as of {ctx.now.isoformat()}: {'1 message' if queued else 'nothing new'} queued"


async def _explode(ctx: JobContext) -> str:
    raise ValueError("no supervisors table")


def cli_jobs() -> dict[str, Job]:
    return {
        "stamp": Job("stamp", "queues one message a day", lambda s: {"minute": "0"}, _stamp),
        "explode": Job("explode", "always fails", lambda s: {"minute": "0"}, _explode),
    }


def with_test_jobs(*args: str, env: dict[str, str]) -> Any:
    import os
    import subprocess

    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", WITH_TEST_JOBS, *args],
        env=full_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_jobs_run_as_of_a_given_time(
    db_env: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    def run(at: str, **env: str) -> str:
        result = with_test_jobs("jobs", "run", "stamp", "--at", at, env={**db_env, **env})
        assert result.returncode == 0, result.stderr
        assert "AIOGRAM-IMPORTED" not in result.stderr
        return str(result.stdout)

    # 23:59 on the 10th in Shanghai, then 00:01 on the 11th (still the 10th in UTC).
    assert run("2026-03-10T15:59:00+00:00") == "as of 2026-03-10T15:59:00+00:00: 1 message queued\n"
    assert run("2026-03-10T16:01:00Z") == "as of 2026-03-10T16:01:00+00:00: 1 message queued\n"
    # No offset: read in TIMEZONE; the same county day as the run before, so nothing new.
    assert run("2026-03-11T10:00") == "as of 2026-03-11T10:00:00+08:00: nothing new queued\n"
    assert (
        run("2026-03-12T10:00", TIMEZONE="America/New_York")
        == "as of 2026-03-12T10:00:00-04:00: 1 message queued\n"  # daylight time since the 8th
    )
    async with sessions() as s:
        queued = (
            await s.execute(
                select(OutboxMessage.dedup_key, OutboxMessage.not_before).order_by(OutboxMessage.id)
            )
        ).all()
        taken = await s.scalar(select(func.count()).select_from(JobRun))
    eight = datetime(2026, 3, 11, 8, 0, tzinfo=SHANGHAI)  # the end of the quiet hours
    assert [tuple(row) for row in queued] == [
        ("stamp:2026-03-10", eight),
        ("stamp:2026-03-11", eight),
        ("stamp:2026-03-12", datetime(2026, 3, 12, 14, 0, tzinfo=UTC)),
    ]
    assert taken == 0  # a manual run takes no slot


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["nudges"], 1, "villagebeat: no job named 'nudges'; the jobs are: stamp, explode"),
        (
            ["stamp", "--at", "2026-13-01"],
            1,
            "villagebeat: --at: '2026-13-01' is not an ISO-8601 time such as 2026-03-10T09:00 "
            "or 2026-03-10T09:00+08:00",
        ),
        (["stamp", "--at", "tomorrow"], 1, "villagebeat: --at: 'tomorrow' is not an ISO-8601"),
        (["explode"], 1, "villagebeat: explode failed: ValueError: no supervisors table"),
        ([], 2, "villagebeat jobs run: the following arguments are required: NAME"),
    ],
)
def test_jobs_run_refuses_in_one_line(
    db_env: dict[str, str], args: list[str], code: int, message: str
) -> None:
    result = with_test_jobs("jobs", "run", *args, env=db_env)
    assert result.returncode == code
    lines = [line for line in result.stderr.splitlines() if line.strip() and "AIOGRAM" not in line]
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert result.stdout == ""


async def test_jobs_list_shows_schedules_and_last_runs(
    db_env: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    slot = datetime(2026, 3, 10, 9, 0, tzinfo=SHANGHAI)
    async with sessions() as s, s.begin():
        for name, slot_, outcome, failed in (
            ("quota-nudges", slot - timedelta(days=1), "2 nudges queued", False),
            ("quota-nudges", slot, "4 nudges queued", False),
            ("weekly-digest", slot - timedelta(days=1, hours=1), "ValueError: no font", True),
        ):
            await jobruns.claim(s, name=name, slot=slot_, now=slot_)
            done = slot_ + timedelta(seconds=3)
            await jobruns.finish(s, name=name, slot=slot_, outcome=outcome, failed=failed, now=done)
        await jobruns.claim(s, name="request-deadlines", slot=slot, now=slot)

    started = time.monotonic()
    result = villagebeat("jobs", "list", env=db_env)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "AIOGRAM-IMPORTED" not in result.stderr
    assert elapsed < 2.0
    blocks = result.stdout.split("\n\n")
    assert blocks[0] == (
        "times in Asia/Shanghai; schedules as cron fields: minute hour day month weekday"
    )
    shown = {block.split()[0]: block.splitlines() for block in blocks[1:]}
    assert list(shown) == list(all_jobs())
    for name, job in all_jobs().items():
        assert shown[name][1] == f"  {job.description}"
    assert shown["quota-nudges"][0].startswith("quota-nudges  0 9 10-31 * *  next 20")
    assert (
        shown["quota-nudges"][2]
        == "  last run: 2026-03-10 09:00, ok at 2026-03-10 09:00: 4 nudges queued"
    )
    assert shown["weekly-digest"][2] == (
        "  last run: 2026-03-09 08:00, FAILED at 2026-03-09 08:00: ValueError: no font"
    )
    assert shown["request-deadlines"][0].startswith("request-deadlines  */15 * * * *  next 20")
    assert (
        shown["request-deadlines"][2]
        == "  last run: 2026-03-10 09:00, running since 2026-03-10 09:00"
    )
    assert shown["monthly-digest"][2] == "  last run: none yet"


def test_jobs_list_without_the_database(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nothing", "TIMEZONE": "Europe/Berlin"}
    result = villagebeat("jobs", "list", env=env, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("times in Europe/Berlin;")
    assert "weekly-digest  0 8 * * mon  next" in result.stdout and "last run" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "villagebeat: last runs not shown: cannot reach the database"
    )


@pytest.mark.parametrize("args", [["jobs"], ["jobs", "list"], ["jobs", "run"]])
def test_jobs_commands_have_help(args: list[str]) -> None:
    result = villagebeat(*args, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: villagebeat " + " ".join(args))
    assert "AIOGRAM-IMPORTED" not in result.stderr


async def test_old_runs_are_pruned_but_each_jobs_latest(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = datetime(2026, 12, 2, 8, tzinfo=UTC)
    slots = {
        "often": [now - timedelta(days=d) for d in (200, 120, 91, 30, 0)],
        "monthly": [now - timedelta(days=d) for d in (150, 120)],  # its latest is old too
    }
    async with sessions() as s, s.begin():
        for name, times in slots.items():
            for slot in times:
                assert await jobruns.claim(s, name=name, slot=slot, now=slot)
    async with sessions() as s, s.begin():
        assert await jobruns.prune(s, older_than=now - timedelta(days=90)) == 4
    assert [r.slot for r in await rows(sessions, "often")] == slots["often"][3:]
    assert [r.slot for r in await rows(sessions, "monthly")] == slots["monthly"][1:]
    async with sessions() as s, s.begin():
        assert await jobruns.prune(s, older_than=now - timedelta(days=90)) == 0
