"""Inbound: complete visit reports by many officers at once, as webhook requests to
`villagebeat run`, against a bare aiogram echo bot on the same webhook path.

    python bench/bench_inbound.py [--officers 200] [--concurrency 40] [--rounds 5]

Each officer files one report per round: /visit → today → 2 (hours) → 3 (households) →
activities done → skip location → no photos → skip notes → Submit, 9 updates. Every officer
has a single village, so the village step is skipped (as it is for most resident officers).
One officer's updates go one after the other, each after the previous one's HTTP answer, as
Telegram sends them; `--concurrency` officers at a time (Telegram's default for a webhook is
40 connections). The bot runs as a child process, `villagebeat run` in webhook mode: its
webhook handler (aiogram's SimpleRequestHandler with the secret token, bot.runner), the real
Dispatcher, the PostgreSQL FSM storage, deduplication and the report writes, all in a
scratch database.

The baseline, in the same run: a bare aiogram bot in a child process, with MemoryStorage and
one message handler that answers the text, behind aiogram's SimpleRequestHandler on the same
path. It gets the same number of updates from the same client, all texts (a button press
becomes its label), and answers each with one sendMessage request, as aiogram's own echo
example does.

Both bots' Bot API calls go to a stub in this process that answers ok at once (common.
StubBotApi), not to the project's test server: the test server validates and records every
call, CPU time taken from the same two cores, while Telegram's own cost is not ours to
measure. The stub keeps each chat's last inline keyboard, so that officers press the
buttons the bot really sent. A method the bot gives in a webhook's HTTP answer is carried out
by the stub too, as Telegram would, and counted with the calls.

Each round runs the echo bot's pass, then villagebeat's; the ratio printed is the median of
the rounds' own ratios, the two passes of a round being seconds apart while the machine's
speed can drift over minutes.

At the end every report must be stored exactly once, every update recorded once, and no
update may have failed. Uses DATABASE_URL's server (a scratch database), else an embedded one.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from common import (
    BOT_TOKEN,
    WEBHOOK_PATH,
    WEBHOOK_SECRET,
    Child,
    Step,
    StubBotApi,
    Webhook,
    converse,
    cpu_seconds,
    free_port,
    parent_pid,
    percentile,
    plain_url,
    reaped_cpu_seconds,
    scratch_database,
    seed_officers,
    spawn,
    start_webhook_bot,
    stub_bot_api,
    text_update,
    visit_report,
    wait_healthy,
)
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.i18n import Translator
from storage.db import make_engine
from storage.migrate import upgrade

WARMUP_OFFICERS = 10
SCRIPT = str(Path(__file__).resolve())  # the child runs elsewhere


@dataclass
class Pass:
    label: str
    updates: int
    elapsed: float
    latencies: list[float]
    cpu: dict[str, float]  # seconds of CPU per process kind during the pass
    api_calls: Counter[str]  # Bot API calls by method
    in_answers: int  # of them, given in the webhook's HTTP answers

    @property
    def rate(self) -> float:
        return self.updates / self.elapsed

    def line(self) -> str:
        per_update = ", ".join(
            f"{kind} {seconds / self.updates * 1000:.2f}" for kind, seconds in self.cpu.items()
        )
        return (
            f"{self.label}: {self.updates} updates in {self.elapsed:.2f} s = "
            f"{self.rate:.0f} updates/s; p50 {percentile(self.latencies, 0.5) * 1000:.1f} ms, "
            f"p99 {percentile(self.latencies, 0.99) * 1000:.1f} ms; "
            f"{self.api_calls.total() / self.updates:.2f} Bot API calls/update "
            f"({', '.join(f'{m} {n / self.updates:.2f}' for m, n in self.api_calls.items())}; "
            f"{self.in_answers / self.updates:.2f} in HTTP answers); "
            f"CPU ms/update: {per_update}"
        )


# -- the baseline -------------------------------------------------------------------------


async def serve_echo(port: int, api_url: str) -> None:
    """The bare echo bot (run in a child process by --serve-echo)."""
    from aiogram import Bot, Dispatcher
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.types import Message
    from aiogram.webhook.aiohttp_server import SimpleRequestHandler
    from aiohttp import web

    bot = Bot(BOT_TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(api_url)))
    dp = Dispatcher()  # MemoryStorage

    @dp.message()
    async def echo(message: Message) -> None:
        await message.answer(message.text or "…")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    SimpleRequestHandler(
        dispatcher=dp, bot=bot, secret_token=WEBHOOK_SECRET, handle_in_background=False
    ).register(app, path=WEBHOOK_PATH)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    await bot.session.close()


async def start_echo_bot(api_url: str, workdir: Path, port: int) -> Child:
    child = await spawn(
        [SCRIPT, "--serve-echo", str(port), "--api", api_url],
        env={},
        workdir=workdir,
        name="echo",
    )
    await wait_healthy(f"http://127.0.0.1:{port}/healthz", child)
    return child


# -- load -----------------------------------------------------------------------------------


Conversation = Callable[[Webhook, int], Awaitable[int]]


def real_conversation(stub: StubBotApi, steps: list[Step]) -> Conversation:
    async def talk(hook: Webhook, user_id: int) -> int:
        return await converse(hook, stub, user_id, steps)

    return talk


def echo_conversation(steps: list[Step]) -> Conversation:
    async def talk(hook: Webhook, user_id: int) -> int:
        for _, value in steps:
            await hook.post(text_update(user_id, value))
        return len(steps)

    return talk


async def database_pids(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [r["pid"] for r in rows]


async def measure(
    label: str,
    url: str,
    users: list[int],
    conversation: Conversation,
    *,
    concurrency: int,
    child: Child,
    stub: StubBotApi,
    dsn: str | None = None,
) -> Pass:
    """All `users` through `conversation`, `concurrency` at a time."""
    hook = Webhook(url, connections=concurrency, stub=stub)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for user in users:
        queue.put_nowait(user)
    sent = 0

    async def officer() -> None:
        nonlocal sent
        while not queue.empty():
            count = await conversation(hook, queue.get_nowait())
            sent += count

    # PostgreSQL's backends for the bot's database, to see where the CPU goes; a backend
    # opened during the pass counts from zero, and one that ended during it is found in its
    # parent's (the postmaster's) time of ended children.
    pg_before = {pid: cpu_seconds(pid) for pid in await database_pids(dsn)} if dsn else {}
    postmaster = next((p for p in map(parent_pid, pg_before) if p is not None), None)
    reaped_before = reaped_cpu_seconds(postmaster) if postmaster else 0.0
    calls_before, answers_before = stub.calls.copy(), stub.in_answers.total()
    bot_before, own_before = cpu_seconds(child.pid), time.process_time()
    started = time.perf_counter()
    try:
        await asyncio.gather(*(officer() for _ in range(concurrency)))
    finally:
        await hook.close()
    elapsed = time.perf_counter() - started
    cpu = {"bot": cpu_seconds(child.pid) - bot_before}
    if dsn:
        pg_after = {pid: cpu_seconds(pid) for pid in await database_pids(dsn)}
        cpu["postgres"] = sum(s - pg_before.get(pid, 0.0) for pid, s in pg_after.items())
        if postmaster:
            ended = sum(s for pid, s in pg_before.items() if pid not in pg_after)
            cpu["postgres"] += reaped_cpu_seconds(postmaster) - reaped_before - ended
    cpu["load+stub"] = time.process_time() - own_before
    calls = stub.calls - calls_before
    in_answers = stub.in_answers.total() - answers_before
    return Pass(label, sent, elapsed, hook.latencies, cpu, calls, in_answers)


# -- the run --------------------------------------------------------------------------------


def cpu_ms(passes: list[Pass], kind: str) -> float:
    return sum(p.cpu[kind] for p in passes) / sum(p.updates for p in passes) * 1000


async def check_stored(
    dsn: str, *, officers: int, reports: int, most: int, updates: int
) -> list[str]:
    """Problems found in what the bot stored; empty when every report is there once."""
    conn = await asyncpg.connect(dsn)
    try:
        stored, drafts, filers = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT draft_id), count(DISTINCT officer_id) "
            "FROM visit_reports"
        )
        busiest = await conn.fetchval(
            "SELECT coalesce(max(n), 0) FROM "
            "(SELECT count(*) AS n FROM visit_reports GROUP BY officer_id) AS per_officer"
        )
        processed = await conn.fetchval("SELECT count(*) FROM processed_updates")
        failed = await conn.fetchval("SELECT count(*) FROM failed_updates")
        open_states = await conn.fetchval("SELECT count(*) FROM conversation_states")
    finally:
        await conn.close()
    problems = []
    if stored != reports or drafts != stored:
        problems.append(f"{stored} reports stored ({drafts} distinct drafts), {reports} filed")
    if filers != officers:
        problems.append(f"{filers} officers have reports, {officers} filed")
    if busiest > most:
        problems.append(f"an officer has {busiest} reports, {most} filed")
    if processed != updates:
        problems.append(f"{processed} updates recorded, {updates} sent")
    if failed:
        problems.append(f"{failed} updates failed (failed_updates)")
    if open_states:
        problems.append(f"{open_states} conversations left open")
    return problems


async def main(officers: int, concurrency: int, rounds: int) -> int:
    steps = visit_report(Translator("zh"))
    async with scratch_database() as url, stub_bot_api() as stub:
        engine = make_engine(url, pool_size=4)
        await upgrade(engine)
        users = await seed_officers(
            async_sessionmaker(engine, expire_on_commit=False), officers + WARMUP_OFFICERS
        )
        await engine.dispose()
        warmup, measured = users[:WARMUP_OFFICERS], users[WARMUP_OFFICERS:]
        dsn = plain_url(url)
        with tempfile.TemporaryDirectory(prefix="vb-inbound-") as tmp:
            workdir = Path(tmp)
            real_port, echo_port = free_port(), free_port()
            real = await start_webhook_bot(
                database_url=url, api_url=stub.url, workdir=workdir, port=real_port
            )
            echo = await start_echo_bot(stub.url, workdir, echo_port)
            real_url = f"http://127.0.0.1:{real_port}{WEBHOOK_PATH}"
            echo_url = f"http://127.0.0.1:{echo_port}{WEBHOOK_PATH}"
            real_talk, echo_talk = real_conversation(stub, steps), echo_conversation(steps)
            try:
                # Warm both up (imports, connection pool, caches), untimed.
                few = {"concurrency": WARMUP_OFFICERS, "stub": stub}
                await measure("warm-up", echo_url, warmup, echo_talk, child=echo, dsn=None, **few)
                await measure("warm-up", real_url, warmup, real_talk, child=real, dsn=dsn, **few)
                print(
                    f"{officers} officers, {len(steps)} updates per report, "
                    f"concurrency {concurrency}, {rounds} round(s)"
                )
                echos, reals = [], []
                load = {"concurrency": concurrency, "stub": stub}
                for n in range(1, rounds + 1):
                    echo_pass = await measure(
                        f"round {n} echo bot", echo_url, measured, echo_talk, child=echo, **load
                    )
                    print(echo_pass.line(), flush=True)
                    real_pass = await measure(
                        f"round {n} villagebeat",
                        real_url,
                        measured,
                        real_talk,
                        child=real,
                        dsn=dsn,
                        **load,
                    )
                    print(real_pass.line(), flush=True)
                    echos.append(echo_pass)
                    reals.append(real_pass)
            finally:
                status = await real.terminate()
                await echo.terminate()
            if status != 0:
                print(f"villagebeat exited with {status}:\n{real.log()}")
        problems = await check_stored(
            dsn,
            officers=officers + WARMUP_OFFICERS,
            reports=officers * rounds + WARMUP_OFFICERS,
            most=max(rounds, 1),
            updates=sum(p.updates for p in reals) + WARMUP_OFFICERS * len(steps),
        )
    echo_rate = statistics.median(p.rate for p in echos)
    real_rate = statistics.median(p.rate for p in reals)
    echo_lat = [x for p in echos for x in p.latencies]
    real_lat = [x for p in reals for x in p.latencies]
    # Each round's two passes run a few seconds apart; the machine's speed can drift more
    # than that between rounds, so the ratio is taken within each round first.
    ratios = [real.rate / echo.rate for echo, real in zip(echos, reals, strict=True)]
    print(f"echo bot:    {echo_rate:.0f} updates/s (median of rounds)")
    print(f"villagebeat: {real_rate:.0f} updates/s (median of rounds)")
    print(
        f"ratio:       {statistics.median(ratios):.2f} (median of the rounds' ratios: "
        f"{', '.join(f'{r:.2f}' for r in ratios)}; goal >= 0.5)"
    )
    print(
        f"CPU per update: echo bot {cpu_ms(echos, 'bot'):.1f} ms; villagebeat "
        f"{cpu_ms(reals, 'bot'):.1f} ms, its PostgreSQL backends {cpu_ms(reals, 'postgres'):.1f} ms"
    )
    for label, lat in (("echo bot", echo_lat), ("villagebeat", real_lat)):
        p50, p99 = percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000
        print(f"{label + ':':<12} p50 {p50:.1f} ms, p99 {p99:.1f} ms per update")
    if problems:
        print("STORED WRONGLY: " + "; ".join(problems))
        return 1
    print(f"stored: {officers * rounds} reports, each exactly once; every update recorded once")
    return 0


def parse_args() -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--officers", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=40, help="officers at a time")
    # Five by default: one round's ratio can stray by a third on a machine whose speed
    # drifts; the median of five is what the README reports.
    parser.add_argument("--rounds", type=int, default=5, help="reports per officer")
    parser.add_argument("--serve-echo", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--api", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    if args.serve_echo:
        asyncio.run(serve_echo(args.serve_echo, args.api))
    else:
        raise SystemExit(asyncio.run(main(args.officers, args.concurrency, args.rounds)))
