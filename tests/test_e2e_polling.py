"""`villagebeat run` in polling mode, driven over HTTP as people would use it."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.roles import Role
from core.tokens import village_payload
from storage import invites
from storage.models import Photo, User
from tests.botapi import BotApiServer
from tests.botproc import BotProcess
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


@pytest.fixture(scope="module")
async def bot(
    server: BotApiServer, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BotProcess]:
    async with bot_process(server, database_url, tmp_path_factory.mktemp("polling")) as process:
        # getUpdates is recorded only when its long poll ends; deleteWebhook comes just before.
        await process.ready(server, "deleteWebhook")
        yield process


async def _invite(sessions: async_sessionmaker[AsyncSession], **kw: object) -> str:
    async with sessions() as s, s.begin():
        if kw.get("kind") == "supervisor":
            issued, _ = await invites.create_supervisor_invite(
                s,
                station_codes=["S01"],
                county_wide=False,
                name=None,
                now=datetime.now(UTC),
                ttl=timedelta(days=7),
            )
        else:
            issued, _ = await invites.create_officer_invite(
                s, badge="012345", now=datetime.now(UTC), ttl=timedelta(days=7)
            )
    return issued.payload


async def test_startup_sets_default_commands(server: BotApiServer, bot: BotProcess) -> None:
    zh = server.commands_for({"type": "default"}, "zh")
    en = server.commands_for({"type": "default"}, "en")
    assert [c["command"] for c in zh] == ["start", "help", "language"]
    assert en[0]["description"] == EN("cmd.start")


async def test_three_roles_join(
    server: BotApiServer,
    bot: BotProcess,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
) -> None:
    officer = server.user(first_name="王", language_code="zh-hans")
    answer = await say(server, officer, f"/start {await _invite(sessions)}")
    assert answer.startswith(ZH("start.officer_welcome", name="王警官", badge="012345"))

    chief = server.user(first_name="Liu", language_code="en")
    answer = await say(server, chief, f"/start {await _invite(sessions, kind='supervisor')}")
    assert answer == EN("start.supervisor_welcome", scope="城关派出所")

    villager = server.user(first_name="李")
    answer = await say(
        server, villager, f"/start {village_payload(directory.villages[1].join_token)}"
    )
    assert answer == ZH("join.confirm", village="李庄村", station="城关派出所")
    answer = await click(server, villager, ZH("join.yes"))
    assert answer.startswith(ZH("join.joined", village="李庄村", officer="王警官"))
    answer = await click(server, villager, ZH("join.skip_phone"))
    assert answer == ZH("join.phone_skipped")

    async with sessions() as s:
        roles = dict((await s.execute(select(User.id, User.role))).all())
    assert roles == {
        officer.id: Role.OFFICER,
        chief.id: Role.SUPERVISOR,
        villager.id: Role.VILLAGER,
    }


async def test_replayed_start_and_reused_invite(
    server: BotApiServer,
    bot: BotProcess,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
) -> None:
    payload = await _invite(sessions)
    officer = server.user()
    mark = server.mark()
    update = await server.send_text(officer, f"/start {payload}")
    await reply_to(server, officer, mark)
    server.redeliver(update["update_id"])
    await server.wait_delivered(update["update_id"])
    thief = server.user(language_code="en")
    assert await say(server, thief, f"/start {payload}") == EN("start.invite_used")
    welcomes = [
        c for c in server.calls_of("sendMessage") if str(c.params["chat_id"]) == str(officer.id)
    ]
    assert len(welcomes) == 1
    async with sessions() as s:
        assert (
            await s.scalar(select(func.count()).select_from(User).where(User.id == officer.id)) == 1
        )
        assert (await s.get(User, thief.id)).role == Role.STRANGER  # type: ignore[union-attr]


async def test_database_failure_mid_update_is_retried_once(
    server: BotApiServer,
    bot: BotProcess,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
) -> None:
    user = server.user(language_code="en")
    async with engine.connect() as blocker:
        transaction = await blocker.begin()
        await blocker.execute(text("LOCK TABLE users IN ACCESS EXCLUSIVE MODE"))
        mark = server.mark()
        await server.send_text(user, "/help")
        await wait_for_lock_waiter(engine)
        assert messages_to(server, user, mark) == []
        assert await kill_waiting_backends(engine) >= 1
        await asyncio.sleep(0.3)
        await transaction.rollback()
    answer = await reply_to(server, user, mark)
    assert answer.startswith(EN("help.intro.stranger"))
    await asyncio.sleep(0.5)
    assert len(messages_to(server, user, mark)) == 1


async def test_sigkill_mid_conversation_loses_nothing(
    server: BotApiServer,
    bot: BotProcess,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
) -> None:
    villager = server.user(language_code="en")
    await say(server, villager, f"/start {village_payload(directory.villages[0].join_token)}")
    # Done with /start: its answer went out and is recorded as sent. (A kill between the two
    # would have its redelivery send the answer again; see tests/test_faults.py.)
    await answers_marked_sent(sessions, max(server.queue.history))
    await bot.kill()  # the user is at the confirmation step, which only the database knows
    mark = server.mark()
    await server.click(villager, EN("join.yes"))
    await bot.start()
    await bot.ready(server, "deleteWebhook", since=mark)
    answer = await reply_to(server, villager, mark)
    assert answer.startswith(EN("join.joined", village="张庄村", officer="王警官"))
    await click(server, villager, EN("join.share_phone"), phone="+8613700000000")
    async with sessions() as s:
        user = await s.get(User, villager.id)
    assert user is not None and (user.role, user.phone) == (Role.VILLAGER, "+8613700000000")


async def test_visit_report_with_photo_is_stored_and_downloaded(
    server: BotApiServer,
    bot: BotProcess,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
) -> None:
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_officer_invite(
            s, badge="067890", now=datetime.now(UTC), ttl=timedelta(days=7)
        )
    officer = server.user(language_code="en")
    await say(server, officer, f"/start {issued.payload}")
    await say(server, officer, "/visit")  # one village: straight to the date
    await click(server, officer, EN("visit.today"))
    await say(server, officer, "2")
    await say(server, officer, "4")
    await click(server, officer, EN("visit.activities_done"))
    await click(server, officer, EN("flow.skip"))
    mark = server.mark()
    photo = await server.send_photo(officer)
    await reply_to(server, officer, mark)
    await click(server, officer, EN("flow.photos_done"))
    mark = server.mark()
    await server.click(officer, EN("flow.skip"))
    summary = EN("visit.summary_title")
    await server.wait_for_call("sendMessage", since=mark, text=lambda v: v.startswith(summary))
    saved = await click(server, officer, EN("flow.submit"))
    assert saved.startswith("✅ Saved as V") and "1 of 4 days, 4 of 4 households" in saved

    largest = max(photo["message"]["photo"], key=lambda p: p["width"])
    expected = hashlib.sha256(server.file_data(largest["file_id"])).hexdigest()
    media = bot.data_dir / "media" / expected[:2] / f"{expected}.jpg"
    # The downloader writes the file, then records it: wait for the record.
    stored = None
    async with asyncio.timeout(20):
        while stored is None:
            async with sessions() as s:
                stored = await s.scalar(select(Photo.sha256))
            if stored is None:
                await asyncio.sleep(0.2)
    assert stored == expected
    assert media.exists()


async def test_sigterm_stops_within_seconds(
    server: BotApiServer, bot: BotProcess, tmp_path: Path
) -> None:
    started = asyncio.get_running_loop().time()
    assert await bot.terminate(timeout=10) == 0
    assert asyncio.get_running_loop().time() - started < 10
    assert "stopped" in bot.log()
