"""Delivery: messages through the outbox worker against the Bot API test server enforcing
Telegram's limits, first undisturbed, then with 429s injected and the worker SIGKILLed.

    python bench/bench_delivery.py [--messages 3000] [--chats 300] [--kills 3] [--floods 5]
                                   [--passes clean,faults] [--workers 1] [--seed 1]

The worker is `villagebeat worker` in a child process, as deployed (OUTBOX_GLOBAL_RATE and
OUTBOX_CHAT_RATE at their defaults, 30 and 1), talking to the project's Bot API test server
(tests/botapi) in this process, which enforces 1 message a second per chat and 30 overall
(set_rate_limits) and answers 429 when they are broken. The messages are queued with
storage.outbox.enqueue in one transaction, spread evenly over the chats, each text being
"outbox <its id>", so that the server's record says how often each message was sent.

- clean: no faults. The time from the first send to the last against the floor the limits
  allow (goal within 5%), rate-limit violations (0), duplicates (0). With `--workers 2` (or
  more) as many `villagebeat worker` processes share the database, as two deployed
  instances would, each with OUTBOX_GLOBAL_RATE set to its share of the 30; the per-chat
  spacing must hold between them (the shortest gap between two sends to one chat is
  printed).
- faults: `--floods` 429s with retry_after 1-5 s are injected at random moments
  (server.fail_next), and the worker is SIGKILLed `--kills` times, each a random while after
  it (re)started, and started again. After each kill, the sends in flight are the messages
  the server accepted but the dead worker had not yet recorded as sent; those, and only
  those, may be sent twice. Calls made inside a retry_after window must be 0. One worker
  only.

Uses DATABASE_URL's server (a scratch database), else an embedded one.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from common import Child, plain_url, scratch_database, spawn, villagebeat_env
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.db import make_engine
from storage.migrate import upgrade
from storage.outbox import CLAIM_LEASE, enqueue
from tests.botapi import BotApiServer
from tests.botapi.recording import Call

GLOBAL_RATE, CHAT_RATE = 30.0, 1.0  # Telegram's limits, the worker's defaults
STARTUP_TIMEOUT = 90.0


def duration(count: int, rate: float) -> float:
    """Seconds from the first to the last of `count` sends at `rate`, counted the way the
    worker and the test server count: at most floor(rate·span) sends in any `span`."""
    span = max(1.0, 1.0 / rate)
    per_span = max(1, math.floor(rate * span + 1e-9))
    return (math.ceil(count / per_span) - 1) * span


@dataclass
class Kill:
    at: float  # seconds after the commit
    in_flight: int  # accepted by the server, not recorded as sent by the worker
    claimed: int  # other messages the dead worker held, waiting for their lease to run out
    restart: float  # seconds from the kill until the new worker asked getMe


@dataclass
class Outcome:
    label: str
    messages: int
    committed: float
    sends: list[Call]  # sendMessage calls, in order
    violations: int
    inside_retry_after: int
    floods: int
    workers: int = 1
    kills: list[Kill] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    failed: bool = False  # a goal other than the time was missed (set by report)

    def report(self, floor: float) -> list[str]:
        ok = [c for c in self.sends if c.ok]
        if not ok:
            return [f"{self.label}: nothing was sent; outbox rows {dict(self.statuses)}"]
        per_message = Counter(message_id(c) for c in ok)
        duplicates = sum(n - 1 for n in per_message.values())
        refused = sum(1 for c in self.sends if c.status == 429)
        first, last = ok[0].at, ok[-1].at
        elapsed = last - first
        head = f"{self.label}:" if self.workers == 1 else f"{self.label} ({self.workers} workers):"
        if self.kills or self.floods:
            against = f"floor {floor:.1f} s without faults"
        else:
            against = f"floor {floor:.1f} s ({(elapsed / floor - 1) * 100:+.1f}%, goal within 5%)"
        lines = [
            f"{head} {self.messages} messages to {len(chats_of(ok))} chats, "
            f"first to last send {elapsed:.1f} s, {against}; commit to first send "
            f"{(first - self.committed) * 1000:.0f} ms",
            f"{head} rate-limit violations {self.violations}; calls inside a retry_after "
            f"window {self.inside_retry_after}; 429s answered {refused} "
            f"({self.floods} injected)",
        ]
        for n, kill in enumerate(self.kills, 1):
            lines.append(
                f"{head} SIGKILL {n} at {kill.at:.1f} s: {kill.in_flight} sends in flight; "
                f"{kill.claimed} more messages held by the dead worker until their "
                f"{CLAIM_LEASE.total_seconds():.0f} s lease ran out; new worker up after "
                f"{kill.restart:.1f} s"
            )
        in_flight = sum(k.in_flight for k in self.kills)
        lost = self.messages - len(per_message)
        self.failed = bool(
            self.violations or self.inside_retry_after or lost or duplicates > in_flight
        )
        goal = f"at most {in_flight}, the sends in flight at the kills" if self.kills else "0"
        lines.append(
            f"{head} duplicates {duplicates} (goal {goal}); never sent {lost}; "
            f"outbox rows {dict(self.statuses)}; "
            f"order kept in every chat: {'yes' if in_order(ok) else 'NO'}"
        )
        gaps = chat_gaps(ok)
        short = sum(1 for gap in gaps if gap < 1 / CHAT_RATE)
        lines.append(
            f"{head} shortest gap between two sends to one chat "
            f"{min(gaps, default=math.inf):.3f} s; {short} of {len(gaps)} gaps under "
            f"{1 / CHAT_RATE:g} s"
        )
        return lines


def message_id(call: Call) -> int:
    return int(str(call.params["text"]).split()[1])


def chats_of(calls: list[Call]) -> set[str]:
    return {str(c.chat_id) for c in calls}


def chat_gaps(ok: list[Call]) -> list[float]:
    """Seconds between consecutive accepted sends to the same chat."""
    last: dict[str, float] = {}
    gaps: list[float] = []
    for call in ok:
        chat = str(call.chat_id)
        if chat in last:
            gaps.append(call.at - last[chat])
        last[chat] = call.at
    return gaps


def in_order(ok: list[Call]) -> bool:
    """Each chat's messages first delivered in the order they were queued."""
    seen: dict[str, list[int]] = defaultdict(list)
    delivered: set[int] = set()
    for call in ok:
        if (mid := message_id(call)) not in delivered:
            delivered.add(mid)
            seen[str(call.chat_id)].append(mid)
    return all(ids == sorted(ids) for ids in seen.values())


async def enqueue_all(
    sessions: async_sessionmaker[AsyncSession], chats: list[int], count: int
) -> None:
    """`count` messages round-robin over `chats`, in one transaction, as a job would."""
    async with sessions() as session, session.begin():
        for n in range(count):
            await enqueue(session, chat_id=chats[n % len(chats)], text="outbox ?")
        await session.execute(
            text(
                "UPDATE outbox_messages "
                "SET payload = jsonb_set(payload, '{text}', to_jsonb('outbox ' || id))"
            )
        )


class Worker:
    """`villagebeat worker` as a child process, restarted after each SIGKILL."""

    def __init__(
        self, server: BotApiServer, env: dict[str, str], workdir: Path, name: str = "worker"
    ) -> None:
        self.server, self.env, self.workdir, self.name = server, env, workdir, name
        self.child: Child | None = None

    async def start(self) -> None:
        mark = self.server.mark()
        self.child = await spawn(
            ["-m", "bot", "worker"], env=self.env, workdir=self.workdir, name=self.name
        )
        ready = asyncio.ensure_future(
            self.server.wait_for_call("getMe", since=mark, timeout=STARTUP_TIMEOUT)
        )
        exited = asyncio.ensure_future(self.child.proc.wait())
        await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            raise RuntimeError(f"the worker exited:\n{self.child.log()}")
        exited.cancel()
        ready.result()

    async def kill(self) -> None:
        assert self.child is not None
        await self.child.kill()

    async def stop(self) -> None:
        if self.child is not None:
            await self.child.terminate()


async def after_kill(dsn: str, server: BotApiServer) -> tuple[Counter[int], set[int], set[int]]:
    """Right after a worker was killed: how often the server accepted each message, the
    messages still pending, and those under a claim's lease."""
    await asyncio.sleep(0.3)  # a request that reached the server before the kill ends
    accepted = Counter(message_id(c) for c in server.calls_of("sendMessage") if c.ok)
    conn = await asyncpg.connect(dsn)
    try:
        pending = await conn.fetch("SELECT id FROM outbox_messages WHERE status = 'pending'")
        # A claim pushes not_before a lease ahead; a retry's backoff is far shorter.
        leased = await conn.fetch(
            "SELECT id FROM outbox_messages WHERE status = 'pending' "
            "AND not_before > now() + interval '60 seconds'"
        )
    finally:
        await conn.close()
    return accepted, {r["id"] for r in pending}, {r["id"] for r in leased}


async def wait_settled(dsn: str, limit: float) -> Counter[str]:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + limit
        while True:
            rows = await conn.fetch("SELECT status, count(*) FROM outbox_messages GROUP BY 1")
            statuses = Counter({r["status"]: r["count"] for r in rows})
            if not statuses["pending"] or time.monotonic() > deadline:
                return statuses
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def run_pass(
    label: str,
    url: str,
    sessions: async_sessionmaker[AsyncSession],
    *,
    messages: int,
    chats: int,
    kills: int,
    floods: int,
    rng: random.Random,
    floor: float,
    workers: int = 1,
) -> Outcome:
    dsn = plain_url(url)
    async with sessions() as session, session.begin():
        await session.execute(text("TRUNCATE outbox_messages"))
    async with BotApiServer() as server:
        server.set_rate_limits(per_chat_per_second=CHAT_RATE, global_per_second=GLOBAL_RATE)
        users = [server.user() for _ in range(chats)]
        for user in users:
            server.world.chat_of(user)  # the user has started the bot
        with tempfile.TemporaryDirectory(prefix="vb-delivery-") as tmp:
            env = villagebeat_env(database_url=url, api_url=server.url, data_dir=Path(tmp))
            # Telegram's overall limit divided among the processes, as deployed.
            env.update(
                OUTBOX_GLOBAL_RATE=str(GLOBAL_RATE / workers), OUTBOX_CHAT_RATE=str(CHAT_RATE)
            )
            others = [Worker(server, env, Path(tmp), f"worker-{n}") for n in range(2, workers + 1)]
            worker = Worker(server, env, Path(tmp))
            for started in [worker, *others]:
                await started.start()
            await enqueue_all(sessions, [u.id for u in users], messages)
            committed = time.monotonic()
            outcome = Outcome(label, messages, committed, [], 0, 0, floods, workers)

            async def flood(at: float, retry_after: int) -> None:
                await asyncio.sleep(at)
                server.fail_next("sendMessage", status=429, retry_after=retry_after)

            held: set[int] = set()  # leased by workers killed before
            counted: Counter[int] = Counter()  # sends already counted as in flight

            async def kill() -> None:
                await worker.kill()
                killed_at = time.monotonic()
                accepted, pending, leased = await after_kill(dsn, server)
                # Accepted by the server but not recorded as sent: sent again one day.
                in_flight = {i for i in pending if accepted[i] > counted[i]}
                counted.update({i: accepted[i] - counted[i] for i in in_flight})
                claimed = leased - in_flight - held
                held.update(claimed)
                await worker.start()
                outcome.kills.append(
                    Kill(
                        killed_at - committed,
                        len(in_flight),
                        len(claimed),
                        time.monotonic() - killed_at,
                    )
                )

            # Faults fall inside the undisturbed run's span; each kill comes a random while
            # after the worker (re)started, so that every worker gets to send.
            floods_done = asyncio.gather(
                *(flood(rng.uniform(0.05, 0.8) * floor, rng.randint(1, 5)) for _ in range(floods))
            )
            for _ in range(kills):
                await asyncio.sleep(rng.uniform(0.3, 1.0) * floor / (kills + 1))
                await kill()
            await floods_done
            limit = 2 * floor + (kills + 1) * CLAIM_LEASE.total_seconds() + 60
            outcome.statuses = await wait_settled(dsn, limit)
            for started in [worker, *others]:
                await started.stop()
        outcome.sends = server.calls_of("sendMessage")
        outcome.violations = len(server.rate_limit_violations)
        outcome.inside_retry_after = len(server.calls_inside_retry_after)
    return outcome


async def main(
    messages: int,
    chats: int,
    kills: int,
    floods: int,
    passes: list[str],
    seed: int,
    workers: int = 1,
) -> int:
    rng = random.Random(seed)
    floor = max(duration(messages, GLOBAL_RATE), duration(math.ceil(messages / chats), CHAT_RATE))
    print(
        f"{messages} messages to {chats} chats; limits {GLOBAL_RATE:.0f}/s overall, "
        f"{CHAT_RATE:.0f}/s per chat; floor {floor:.1f} s from the first send to the last; "
        f"{workers} worker process{'es' if workers > 1 else ''}"
    )
    failed = False
    async with scratch_database() as url:
        engine = make_engine(url, pool_size=4)
        await upgrade(engine)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        for label in passes:
            faulty = label == "faults"
            outcome = await run_pass(
                label,
                url,
                sessions,
                messages=messages,
                chats=chats,
                kills=kills if faulty else 0,
                floods=floods if faulty else 0,
                rng=rng,
                floor=floor,
                workers=workers,
            )
            for line in outcome.report(floor):
                print(line, flush=True)
            failed |= outcome.failed
        await engine.dispose()
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--chats", type=int, default=300)
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs in the faults pass")
    parser.add_argument("--floods", type=int, default=5, help="429s in the faults pass")
    parser.add_argument("--passes", default="clean,faults", help="clean, faults or both")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the database (clean)"
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.workers < 1 or (args.workers > 1 and "faults" in args.passes.split(",")):
        parser.error("--workers above 1 goes with --passes clean only")
    raise SystemExit(
        asyncio.run(
            main(
                args.messages,
                args.chats,
                args.kills,
                args.floods,
                args.passes.split(","),
                args.seed,
                args.workers,
            )
        )
    )
