"""`villagebeat run`: migrate, then receive updates until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
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
from storage.db import open_database
from storage.meta import BOT_USERNAME, set_meta
from storage.migrate import upgrade
from storage.updates import prune_processed

log = logging.getLogger("villagebeat")
KEEP_UPDATE_IDS = timedelta(days=3)
HOUSEKEEPING_INTERVAL = 6 * 3600.0


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


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
    """Forget old update ids now and then; Telegram stops redelivering after a day."""
    while not stop.is_set():
        try:
            async with sessions() as session, session.begin():
                pruned = await prune_processed(session, older_than=system_clock() - KEEP_UPDATE_IDS)
            if pruned:
                log.info("forgot %d old update ids", pruned)
        except Exception as exc:  # housekeeping must never stop the bot
            log.warning("housekeeping failed: %s", exc)
        await sleep_unless_stopped(stop, HOUSEKEEPING_INTERVAL)


async def serve(settings: Settings) -> int:
    configure_logging(settings.log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async with open_database(settings.database_url, settings.data_dir) as db:
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
            await set_default_commands(bot, settings.default_locale)
            dp = build_dispatcher(settings, db.sessions)
            log.info("running as @%s", me.username)
            downloader = MediaDownloader(
                bot, db.sessions, settings.data_dir / "media", clock=system_clock
            )
            outbox = OutboxWorker(
                bot,
                db.sessions,
                db.engine,
                clock=system_clock,
                global_rate=settings.outbox_global_rate,
                chat_rate=settings.outbox_chat_rate,
            )
            background = [
                asyncio.create_task(_housekeeping(db.sessions, stop)),
                asyncio.create_task(downloader.run(stop)),
                asyncio.create_task(outbox.run(stop)),
            ]
            try:
                if settings.webhook_url:
                    await run_webhook(bot, dp, settings, db.engine, stop)
                else:
                    await run_polling(bot, dp, stop)
            finally:
                stop.set()
                await asyncio.gather(*background, return_exceptions=True)
        finally:
            await bot.session.close()
    log.info("stopped")
    return 0
