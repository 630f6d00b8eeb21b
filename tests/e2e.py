"""Shared steps of the end-to-end tests: a bot process against a Bot API test server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.i18n import Translator
from storage.models import ProcessedUpdate
from tests.botapi import DEFAULT_TOKEN, BotApiServer, SimUser
from tests.botproc import BotProcess

ZH, EN = Translator("zh"), Translator("en")
REPLY_TIMEOUT = 15.0


@asynccontextmanager
async def bot_process(
    server: BotApiServer, database_url: str, data_dir: Path, *, command: str = "run", **env: str
) -> AsyncIterator[BotProcess]:
    process = BotProcess(
        {
            "BOT_TOKEN": DEFAULT_TOKEN,
            "TELEGRAM_API_URL": server.url,
            "DATABASE_URL": database_url,
            "DATA_DIR": str(data_dir),
            "LOG_LEVEL": "INFO",
            "BOT_USERNAME": "",
            "WEBHOOK_URL": "",
            # Scheduled jobs would write messages of their own in the middle of a test's
            # conversation; the scheduler's tests turn it on.
            "SCHEDULER_ENABLED": "false",
            **env,
        },
        data_dir / "bot.log",
        command=command,
    )
    await process.start()
    try:
        yield process
    finally:
        if process.running:
            await process.terminate()


async def reply_to(server: BotApiServer, user: SimUser, since: int, **params: Any) -> str:
    """The text of the next message the bot sends to `user` after mark `since`."""
    call = await server.wait_for_call(
        "sendMessage",
        since=since,
        chat_id=lambda c: str(c) == str(user.id),
        timeout=REPLY_TIMEOUT,
        **params,
    )
    return str(call.params["text"])


async def say(server: BotApiServer, user: SimUser, message: str) -> str:
    mark = server.mark()
    await server.send_text(user, message)
    return await reply_to(server, user, mark)


async def click(server: BotApiServer, user: SimUser, label: str, **kwargs: Any) -> str:
    mark = server.mark()
    await server.click(user, label, **kwargs)
    return await reply_to(server, user, mark)


# Backends of update transactions held up by a lock: they already hold the per-user advisory
# lock (storage.updates), which tells them apart from the delivery worker or the scheduler
# waiting on the same table.
_UPDATES_WAITING = (
    "SELECT DISTINCT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
    "WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() "
    "AND a.wait_event_type = 'Lock' AND l.locktype = 'advisory' AND l.granted"
)


async def kill_waiting_backends(engine: AsyncEngine) -> int:
    """Terminate the bot's update transactions that wait on a lock: a database failure
    mid-update."""
    async with engine.connect() as conn:
        result = await conn.execute(
            text(f"SELECT pg_terminate_backend(pid) FROM ({_UPDATES_WAITING}) AS waiting")
        )
        return len(result.all())


async def wait_for_lock_waiter(engine: AsyncEngine, timeout: float = REPLY_TIMEOUT) -> None:
    """Until an update's transaction waits on a lock the test holds."""
    import asyncio

    async with asyncio.timeout(timeout):
        while True:
            async with engine.connect() as conn:
                waiting = (await conn.execute(text(_UPDATES_WAITING))).first()
            if waiting is not None:
                return
            await asyncio.sleep(0.05)


def messages_to(server: BotApiServer, user: SimUser, since: int) -> list[str]:
    """Texts of the messages the bot sent to `user` since mark `since`."""
    return [
        str(c.params.get("text"))
        for c in server.calls
        if c.seq >= since
        and c.method == "sendMessage"
        and str(c.params.get("chat_id")) == str(user.id)
    ]


async def answers_marked_sent(sessions: async_sessionmaker[AsyncSession], update_id: int) -> None:
    """Until the bot has marked the answers to `update_id` as sent (none kept any more)."""
    async with asyncio.timeout(REPLY_TIMEOUT):
        while True:
            async with sessions() as s:
                kept = await s.scalar(
                    select(ProcessedUpdate.answers).where(ProcessedUpdate.update_id == update_id)
                )
            if kept is None:
                return
            await asyncio.sleep(0.05)
