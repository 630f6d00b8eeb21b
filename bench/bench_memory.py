"""Memory: resident memory of `villagebeat run` (webhook mode) with 10,000 conversations open
at once, their state in PostgreSQL.

    python bench/bench_memory.py [--users 10000] [--steps 2] [--concurrency 40]

Each simulated officer (one village each, seeded in a scratch database) opens a flow and
leaves it half done: even ones a visit report, going the first 1..--steps steps of it
(/visit, then today's date, 2 hours, 3 households), odd ones a hazard report (/hazard,
waiting at the category). The updates go to the webhook as Telegram sends them, each user's
one after the other, --concurrency users at a time; the bot's Bot API calls go to a stub
that answers ok (common.StubBotApi).

RSS comes from /proc/<pid>/status: VmRSS after start-up, while and after opening the
conversations, and VmHWM for the peak since the process started. Goal: under 250 MB.
Uses DATABASE_URL's server (a scratch database), else an embedded one.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import asyncpg
from common import (
    WEBHOOK_PATH,
    Step,
    Webhook,
    converse,
    free_port,
    memory_kib,
    plain_url,
    scratch_database,
    seed_officers,
    start_webhook_bot,
    stub_bot_api,
    visit_report,
)
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.i18n import Translator
from storage.db import make_engine
from storage.migrate import upgrade

GOAL_MB = 250
SETTLE = 3.0  # seconds for start-up's last work (commands, webhook, first outbox pass)


def mb(kib: int) -> str:
    return f"{kib / 1024:.0f} MB"


def flow_for(index: int, steps: int, visit: list[Step]) -> list[Step]:
    if index % 2:
        return [("say", "/hazard")]
    return visit[: 1 + (index // 2) % steps]


async def main(users: int, steps: int, concurrency: int) -> int:
    visit = visit_report(Translator("zh"))[:4]
    steps = max(1, min(steps, len(visit)))
    async with scratch_database() as url, stub_bot_api() as stub:
        engine = make_engine(url, pool_size=4)
        await upgrade(engine)
        ids = await seed_officers(async_sessionmaker(engine, expire_on_commit=False), users)
        await engine.dispose()
        with tempfile.TemporaryDirectory(prefix="vb-memory-") as tmp:
            port = free_port()
            bot = await start_webhook_bot(
                database_url=url, api_url=stub.url, workdir=Path(tmp), port=port
            )
            try:
                await asyncio.sleep(SETTLE)
                started = memory_kib(bot.pid)
                print(f"after start-up:  RSS {mb(started)}", flush=True)
                hook = Webhook(
                    f"http://127.0.0.1:{port}{WEBHOOK_PATH}", connections=concurrency, stub=stub
                )
                queue: asyncio.Queue[int] = asyncio.Queue()
                for n in range(users):
                    queue.put_nowait(n)
                sent = 0
                sampled_peak = started
                began = time.perf_counter()

                async def user() -> None:
                    nonlocal sent, sampled_peak
                    while not queue.empty():
                        n = queue.get_nowait()
                        count = await converse(hook, stub, ids[n], flow_for(n, steps, visit))
                        sent += count
                        if (n + 1) % max(1, users // 5) == 0:
                            rss = memory_kib(bot.pid)
                            sampled_peak = max(sampled_peak, rss)
                            print(f"  {n + 1} conversations opened: RSS {mb(rss)}", flush=True)

                try:
                    await asyncio.gather(*(user() for _ in range(concurrency)))
                finally:
                    await hook.close()
                elapsed = time.perf_counter() - began
                opened = memory_kib(bot.pid)
                await asyncio.sleep(SETTLE)
                later = memory_kib(bot.pid)
                peak = memory_kib(bot.pid, "VmHWM")
            finally:
                await bot.terminate()
        conn = await asyncpg.connect(plain_url(url))
        try:
            open_states = await conn.fetchval(
                "SELECT count(*) FROM conversation_states WHERE state IS NOT NULL"
            )
        finally:
            await conn.close()
    print(
        f"opened {open_states} conversations ({users} users, {sent} updates) in "
        f"{elapsed:.0f} s ({sent / elapsed:.0f} updates/s)"
    )
    print(f"after opening:   RSS {mb(opened)} ({mb(later)} {SETTLE:.0f} s later)")
    print(f"peak:            RSS {mb(peak)} (VmHWM) (goal under {GOAL_MB} MB)")
    if open_states != users:
        print(f"WRONG: {open_states} conversations open in PostgreSQL, {users} expected")
        return 1
    return 0 if peak < GOAL_MB * 1024 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=2, help="how far into a visit report, 1-4")
    parser.add_argument("--concurrency", type=int, default=40, help="users at a time")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.users, args.steps, args.concurrency)))
