"""`villagebeat worker` as a child process: it delivers the outbox (woken by NOTIFY) without
receiving updates, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scheduler.outbox import LISTENER_NAME
from storage import outbox
from storage.models import OutboxMessage
from tests.botapi import BotApiServer
from tests.botproc import BotProcess
from tests.e2e import bot_process

pytestmark = pytest.mark.timeout(180)
# Methods only a process that receives updates calls.
RECEIVING = {"getUpdates", "setWebhook", "deleteWebhook", "setMyCommands"}


@pytest.fixture(scope="module")
async def worker(
    server: BotApiServer, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BotProcess]:
    data_dir = tmp_path_factory.mktemp("worker")
    async with bot_process(server, database_url, data_dir, command="worker") as process:
        await process.ready(server, "getMe")  # the token is checked before anything runs
        yield process


async def _listening(engine: AsyncEngine, timeout: float = 30.0) -> None:
    """Until the worker's delivery loop LISTENs, so that what follows shows NOTIFY at work
    (and neither its first look at start-up nor its fallback poll)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = :name AND query ILIKE 'LISTEN%'"
    )
    async with asyncio.timeout(timeout):
        while True:
            async with engine.connect() as conn:
                if await conn.scalar(query, {"name": LISTENER_NAME}):
                    return
            await asyncio.sleep(0.1)


async def test_worker_delivers_the_outbox_without_receiving_updates(
    server: BotApiServer,
    worker: BotProcess,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _listening(engine)
    user = server.user(language_code="zh")
    # The user has talked to the bot (else there is no chat to send to); with no `run`
    # process, the update stays with Telegram: the worker never asks for updates.
    await server.send_text(user, "/start")
    mark = server.mark()
    started = asyncio.get_running_loop().time()
    async with sessions() as s, s.begin():
        message_id = await outbox.enqueue(s, chat_id=user.id, text="工作进程送达的消息")
    call = await server.wait_for_call(
        "sendMessage", since=mark, chat_id=lambda c: str(c) == str(user.id), timeout=2.0
    )
    assert asyncio.get_running_loop().time() - started < 2.0
    assert call.params["text"] == "工作进程送达的消息"
    assert [m.text for m in server.messages_to(user)] == ["工作进程送达的消息"]
    async with asyncio.timeout(5):
        while True:
            async with sessions() as s:
                status = await s.scalar(
                    select(OutboxMessage.status).where(OutboxMessage.id == message_id)
                )
            if status == outbox.SENT:
                break
            await asyncio.sleep(0.05)
    assert RECEIVING.isdisjoint(c.method for c in server.calls), [c.method for c in server.calls]
    assert [u["message"]["text"] for u in server.pending_updates] == ["/start"]
    log = worker.log()
    assert "background work: outbox delivery, photo downloads, housekeeping" in log
    assert "not receiving updates" in log


async def test_bot_without_background_work_leaves_delivery_to_the_worker(
    server: BotApiServer,
    worker: BotProcess,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    data_dir = tmp_path_factory.mktemp("bot-only")
    async with bot_process(server, database_url, data_dir, RUN_BACKGROUND="false") as bot:
        await bot.ready(server, "deleteWebhook")
        user = server.user(language_code="en")
        await server.send_text(user, "/help")  # the bot answers its own users itself
        await server.wait_for_call("sendMessage", chat_id=lambda c: str(c) == str(user.id))
        mark = server.mark()
        async with sessions() as s, s.begin():
            for number in range(3):
                await outbox.enqueue(s, chat_id=user.id, text=f"通知 {number}")
        for number in range(3):
            await server.wait_for_call(
                "sendMessage", since=mark, text=f"通知 {number}", timeout=5.0
            )
        assert await bot.terminate() == 0
        log = bot.log()
    assert "RUN_BACKGROUND=false" in log and "outbox worker started" not in log
    sent = [
        c.params["text"]
        for c in server.calls
        if c.seq >= mark and c.method == "sendMessage" and str(c.params["chat_id"]) == str(user.id)
    ]
    assert sent == ["通知 0", "通知 1", "通知 2"]  # each once: only the worker delivered


async def test_worker_stops_on_sigterm(server: BotApiServer, worker: BotProcess) -> None:
    mark = server.mark()
    started = asyncio.get_running_loop().time()
    assert await worker.terminate(timeout=10) == 0
    assert asyncio.get_running_loop().time() - started < 10
    assert "outbox worker stopped" in worker.log() and worker.log().rstrip().endswith("stopped")
    assert RECEIVING.isdisjoint(c.method for c in server.calls if c.seq >= mark)
