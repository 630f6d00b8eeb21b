"""`villagebeat run` as a webhook: secret checked, answered only after commit, /healthz."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.roles import Role
from core.tokens import village_payload
from storage import invites
from storage.models import ProcessedUpdate, User
from tests.botapi import BotApiServer
from tests.botproc import BotProcess, free_port
from tests.e2e import (
    EN,
    ZH,
    answers_marked_sent,
    bot_process,
    click,
    kill_waiting_backends,
    messages_to,
    reply_to,
    say,
    wait_for_lock_waiter,
)
from tests.factories import Directory

pytestmark = pytest.mark.timeout(180)
SECRET = "e2e-secret_0123456789"


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
async def bot(
    server: BotApiServer, database_url: str, port: int, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BotProcess]:
    env = {
        "WEBHOOK_URL": f"http://127.0.0.1:{port}/telegram/hook",
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_HOST": "127.0.0.1",
        "WEBHOOK_PORT": str(port),
    }
    # The Bot API is briefly unwell at start-up: the bot, already serving, keeps trying.
    server.fail_next("setWebhook", status=502, times=2)
    async with bot_process(
        server, database_url, tmp_path_factory.mktemp("webhook"), **env
    ) as process:
        mark = 0
        for _ in range(3):
            await process.ready(server, "setWebhook", since=mark)
            mark = server.calls_of("setWebhook")[-1].seq + 1
        yield process


async def test_webhook_registered_with_secret(
    server: BotApiServer, bot: BotProcess, port: int
) -> None:
    attempts = server.calls_of("setWebhook")
    assert [c.status for c in attempts] == [502, 502, 200]
    call = attempts[-1]
    assert call.params["url"] == f"http://127.0.0.1:{port}/telegram/hook"
    assert call.params["secret_token"] == SECRET
    assert not server.calls_of("getUpdates")


async def test_healthz(bot: BotProcess, port: int) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        assert response.status == 200
        assert (await response.json())["status"] == "ok"


async def test_wrong_secret_is_401_and_does_nothing(
    server: BotApiServer, bot: BotProcess, port: int, sessions: async_sessionmaker[AsyncSession]
) -> None:
    update = {
        "update_id": 990001,
        "message": {
            "message_id": 1,
            "date": 1,
            "chat": {"id": 4242, "type": "private"},
            "from": {"id": 4242, "is_bot": False, "first_name": "Eve"},
            "text": "/start",
        },
    }
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}):
            async with http.post(
                f"http://127.0.0.1:{port}/telegram/hook", json=update, headers=headers
            ) as r:
                assert r.status == 401
    async with sessions() as s:
        assert await s.get(User, 4242) is None
        assert await s.get(ProcessedUpdate, 990001) is None


async def test_roles_join_over_webhook(
    server: BotApiServer,
    bot: BotProcess,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
) -> None:
    async with sessions() as s, s.begin():
        officer_invite, _ = await invites.create_officer_invite(
            s, badge="067890", now=datetime.now(UTC), ttl=timedelta(days=7)
        )
        chief_invite, _ = await invites.create_supervisor_invite(
            s,
            station_codes=[],
            county_wide=True,
            name=None,
            now=datetime.now(UTC),
            ttl=timedelta(days=7),
        )
    officer = server.user(first_name="Zhao", language_code="en")
    assert (await say(server, officer, f"/start {officer_invite.payload}")).startswith(
        EN("start.officer_welcome", name="赵警官", badge="067890")
    )
    chief = server.user()
    assert await say(server, chief, f"/start {chief_invite.payload}") == ZH(
        "start.supervisor_welcome", scope=ZH("scope.county")
    )
    villager = server.user()
    await say(server, villager, f"/start {village_payload(directory.villages[2].join_token)}")
    answer = await click(server, villager, ZH("join.yes"))
    assert answer.startswith(ZH("join.joined", village="东关社区", officer=ZH("join.no_officer")))

    update = await server.send_text(chief, "/scope")
    await server.wait_delivered(update["update_id"])
    server.redeliver(update["update_id"])
    await server.wait_delivered(update["update_id"])
    scope_replies = [
        c
        for c in server.calls_of("sendMessage")
        if str(c.params["chat_id"]) == str(chief.id)
        and c.params["text"].startswith(ZH("scope.info")[:5])
    ]
    assert len(scope_replies) == 1
    async with sessions() as s:
        roles = dict((await s.execute(select(User.id, User.role))).all())
    assert roles == {
        officer.id: Role.OFFICER,
        chief.id: Role.SUPERVISOR,
        villager.id: Role.VILLAGER,
    }


async def test_answer_only_after_commit_and_failure_is_redelivered(
    server: BotApiServer,
    bot: BotProcess,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = server.user(language_code="en")
    async with engine.connect() as blocker:
        transaction = await blocker.begin()
        await blocker.execute(text("LOCK TABLE users IN ACCESS EXCLUSIVE MODE"))
        mark = server.mark()
        update = await server.send_text(user, "/start")
        await wait_for_lock_waiter(engine)
        # Telegram has no answer yet: the update's transaction has not committed.
        assert not [
            a for a in server.webhook_attempts if a.update_id == update["update_id"] and a.ok
        ]
        assert await kill_waiting_backends(engine) >= 1
        await asyncio.sleep(0.3)
        await transaction.rollback()
    assert await reply_to(server, user, mark) == EN("start.stranger")
    await server.wait_delivered(update["update_id"])
    attempts = [a for a in server.webhook_attempts if a.update_id == update["update_id"]]
    assert attempts[0].status == 500 and attempts[-1].ok
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(User).where(User.id == user.id)) == 1
    assert len(messages_to(server, user, mark)) == 1


async def test_an_answer_rides_in_the_http_answer_and_is_not_sent_again(
    server: BotApiServer, bot: BotProcess, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """/start's last answer (the chat's command menu) goes in the webhook's HTTP answer,
    where Telegram runs it, after the welcome, sent first; once the HTTP answer is written,
    the update's answers count as sent, so a redelivery sends nothing."""
    user = server.user(language_code="en")
    mark = server.mark()
    update = await server.send_text(user, "/start")
    assert await reply_to(server, user, mark) == EN("start.stranger")
    menu = await server.wait_for_call("setMyCommands", since=mark, timeout=5)
    assert menu.params["scope"]["chat_id"] == user.id and menu.source == "webhook-reply"
    welcome = [c for c in server.calls_of("sendMessage") if c.seq >= mark]
    assert [(c.chat_id, c.source) for c in welcome] == [(user.id, "http")]
    assert welcome[0].seq < menu.seq
    update_id = update["update_id"]
    await answers_marked_sent(sessions, update_id)
    server.redeliver(update_id)
    await server.wait_delivered(update_id)
    await asyncio.sleep(0.3)  # a method in the HTTP answer runs just after delivery
    assert messages_to(server, user, mark) == [EN("start.stranger")]


async def test_healthz_503_without_database(
    bot: BotProcess, port: int, server_url: str, database_url: str
) -> None:
    """Refuse new connections to the bot's database: health says 503, then recovers."""
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(urlunsplit(urlsplit(server_url)._replace(scheme="postgresql")))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            assert response.status == 503
            assert (await response.json())["status"] == "unavailable"
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        assert response.status == 200


async def test_sigterm_stops_cleanly(bot: BotProcess) -> None:
    assert await bot.terminate(timeout=10) == 0
    assert "stopped" in bot.log()
