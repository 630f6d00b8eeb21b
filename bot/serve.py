"""`villagebeat run` and `villagebeat worker`: migrate, introduce the bot, start the
background work, then receive updates (`run`) or only wait (`worker`) until SIGTERM or
SIGINT. Both share one set-up, so the two kinds of process never drift apart."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramUnauthorizedError
from aiogram.types import User as TelegramUser
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import build_dispatcher, make_bot
from bot.menus import set_default_commands
from bot.runner import run_polling, run_webhook, sleep_unless_stopped
from bot.settings import Settings
from core.clock import system_clock
from scheduler.media import MediaDownloader
from scheduler.outbox import OutboxWorker
from scheduler.runner import run_scheduler
from storage import jobruns
from storage.db import Database, open_database
from storage.invites import prune_join_failures
from storage.meta import BOT_USERNAME, set_meta
from storage.migrate import upgrade
from storage.outbox import prune_chat_spacing
from storage.updates import prune_processed

log = logging.getLogger("villagebeat")
KEEP_UPDATE_IDS = timedelta(days=3)
KEEP_JOB_RUNS = timedelta(days=90)
HOUSEKEEPING_INTERVAL = 6 * 3600.0
GC_YOUNG = 10_000  # Python's default is 700


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Our own lines say what each run did; APScheduler's repeat them.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


async def _introduce(bot: Bot, stop: asyncio.Event) -> TelegramUser | None:
    """getMe, retried while the Bot API is unreachable; a bad token ends the run."""
    delay = 1.0
    while not stop.is_set():
        try:
            return await bot.me()
        except TelegramUnauthorizedError:
            raise
        except (TelegramAPIError, OSError) as exc:
            log.warning("Bot API not reachable (%s); retrying in %.0fs", exc, delay)
            await sleep_unless_stopped(stop, delay)
            delay = min(delay * 2, 30.0)
    return None


async def _housekeeping(sessions: async_sessionmaker[AsyncSession], stop: asyncio.Event) -> None:
    """Forget old update ids now and then (Telegram stops redelivering after a day), failed
    join links older than the guessing window counts, chats' outbox spacing long over, and
    scheduled runs older than 90 days (each job's latest kept)."""
    while not stop.is_set():
        try:
            now = system_clock()
            async with sessions() as session, session.begin():
                pruned = await prune_processed(session, older_than=now - KEEP_UPDATE_IDS)
                await prune_join_failures(session, older_than=now - KEEP_UPDATE_IDS)
                await prune_chat_spacing(session, older_than=now - KEEP_UPDATE_IDS)
                await jobruns.prune(session, older_than=now - KEEP_JOB_RUNS)
            if pruned:
                log.info("forgot %d old update ids", pruned)
        except Exception as exc:  # housekeeping must never stop the bot
            log.warning("housekeeping failed: %s", exc)
        await sleep_unless_stopped(stop, HOUSEKEEPING_INTERVAL)


@dataclass(frozen=True)
class Running:
    """What the shared set-up hands to the process's own work."""

    settings: Settings
    db: Database
    bot: Bot
    me: TelegramUser
    stop: asyncio.Event  # set on SIGTERM or SIGINT


async def serve(settings: Settings) -> int:
    """`villagebeat run`: receive updates, with the background work alongside unless
    RUN_BACKGROUND is off (a `villagebeat worker` does it then)."""
    return await _run_with(settings, _receive_updates, background=settings.run_background)


async def work(settings: Settings) -> int:
    """`villagebeat worker`: the background work only; no updates are received."""
    return await _run_with(settings, _until_stopped, background=True)


def start_background(
    bot: Bot, db: Database, settings: Settings, stop: asyncio.Event
) -> list[asyncio.Task[None]]:
    """The background work both `run` and `worker` do, each loop ending when `stop` is set.
    Several processes may run it against one database: each claims its own rows, and one
    of them at a time (the holder of the scheduler lock) schedules the jobs."""
    downloader = MediaDownloader(bot, db.sessions, settings.data_dir / "media", clock=system_clock)
    outbox = OutboxWorker(
        bot,
        db.sessions,
        db.engine,
        clock=system_clock,
        global_rate=settings.outbox_global_rate,
        chat_rate=settings.outbox_chat_rate,
    )
    log.info("background work: outbox delivery, photo downloads, housekeeping")
    tasks = [
        asyncio.create_task(_housekeeping(db.sessions, stop)),
        asyncio.create_task(downloader.run(stop)),
        asyncio.create_task(outbox.run(stop)),
    ]
    if settings.scheduler_enabled:
        log.info("background work: the scheduler, in whichever process holds its lock")
        tasks.append(asyncio.create_task(run_scheduler(db, settings, stop)))
    else:
        log.info("the scheduler is off (SCHEDULER_ENABLED=false)")
    return tasks


def tune_collector() -> None:
    """Once start-up is over. What it built (aiogram's and pydantic's types, the routers,
    SQLAlchemy's mappers: most of the heap, 290,000 objects) lives as long as the process:
    frozen out of the cyclic collector's way, so that its full collections under load walk
    only what updates made. And a collection only every GC_YOUNG new objects: an update makes
    hundreds (pydantic models, ORM states), nearly all freed at once by reference counting.
    Under load the collector took 10 % of the process's CPU before, under 0.5 % after."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


async def _receive_updates(running: Running) -> None:
    bot, settings, db = running.bot, running.settings, running.db
    await set_default_commands(bot, settings.default_locale)
    dp = build_dispatcher(settings, db.sessions)
    tune_collector()
    log.info("running as @%s", running.me.username)
    try:
        if settings.webhook_url:
            await run_webhook(bot, dp, settings, db.engine, running.stop)
        else:
            await run_polling(bot, dp, running.stop)
    finally:
        await dp.emit_shutdown(bot=bot)  # marks the last answers as sent


async def _until_stopped(running: Running) -> None:
    log.info("worker running as @%s; not receiving updates", running.me.username)
    await running.stop.wait()


async def _run_with(
    settings: Settings, main: Callable[[Running], Awaitable[None]], *, background: bool
) -> int:
    """Migrate, introduce the bot (a refused token ends the run with 1), start the
    background work, run `main` until it returns or a signal comes, then wind down."""
    configure_logging(settings.log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async with open_database(
        settings.database_url, settings.data_dir, pool_size=settings.database_pool_size
    ) as db:
        if await upgrade(db.engine):
            log.info("database migrated")
        bot = make_bot(settings)
        try:
            try:
                me = await _introduce(bot, stop)
            except TelegramUnauthorizedError:
                log.error("the Bot API refused BOT_TOKEN (401 Unauthorized)")
                return 1
            if me is None:
                return 0
            async with db.sessions() as session, session.begin():
                await set_meta(session, f"{BOT_USERNAME}:{me.id}", me.username or "")
            tasks = start_background(bot, db, settings, stop) if background else []
            if not background:
                log.info("background work left to `villagebeat worker` (RUN_BACKGROUND=false)")
            try:
                await main(Running(settings, db, bot, me, stop))
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await bot.session.close()
    log.info("stopped")
    return 0
