"""A villager's request end to end: `villagebeat run` as a child process against the Bot API
test server. The villager (Chinese) and the officer (English) talk to the bot over HTTP;
everything one side sends the other goes through the outbox and its delivery worker, and a
reply reaches the other side within two seconds."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.tokens import village_payload
from storage import invites
from storage.models import OutboxMessage, Request, RequestEvent
from tests.botapi import BotApiServer, SimUser
from tests.botapi.recording import Call
from tests.botproc import BotProcess
from tests.e2e import EN, REPLY_TIMEOUT, ZH, bot_process, click, say
from tests.factories import Directory

pytestmark = pytest.mark.timeout(240)
# The promise for interactive notifications on an idle system.
RELAY_LIMIT = 2.0


@pytest.fixture(scope="module")
async def bot(
    server: BotApiServer, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BotProcess]:
    async with bot_process(server, database_url, tmp_path_factory.mktemp("requests")) as process:
        await process.ready(server, "deleteWebhook")
        yield process


async def _people(
    server: BotApiServer, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> tuple[SimUser, SimUser]:
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_officer_invite(
            s, badge="012345", now=datetime.now(UTC), ttl=timedelta(days=7)
        )
    officer = server.user(first_name="Wang", language_code="en")
    await say(server, officer, f"/start {issued.payload}")
    villager = server.user(first_name="李四", username="lisi_1984", language_code="zh-hans")
    await say(server, villager, f"/start {village_payload(directory.villages[0].join_token)}")
    await click(server, villager, ZH("join.yes"))
    await click(server, villager, ZH("join.skip_phone"))
    return villager, officer


def _to(user: SimUser) -> object:
    return lambda chat_id: str(chat_id) == str(user.id)


async def _arrives(
    server: BotApiServer, user: SimUser, method: str, since: int, started: float
) -> tuple[Call, float]:
    """The next `method` call to `user` after mark `since`, and how long after `started`."""
    call = await server.wait_for_call(method, since=since, chat_id=_to(user), timeout=REPLY_TIMEOUT)
    return call, call.at - started


async def _act(
    server: BotApiServer, user: SimUser, label: str, other: SimUser, method: str = "sendMessage"
) -> tuple[Call, float]:
    """`user` presses `label`; what reaches `other` because of it, and after how long. Also
    waits until the press was applied and answered: the answers to `user` (a new card, say)
    and the message to `other` (through the outbox) go out in no fixed order."""
    mark = server.mark()
    started = server_now()
    update = await server.click(user, label)
    arrived = await _arrives(server, other, method, mark, started)
    await server.wait_delivered(update["update_id"], timeout=REPLY_TIMEOUT)
    return arrived


async def _until_asked(server: BotApiServer, user: SimUser, label: str, question: str) -> None:
    """Press `label` and wait for the message that asks `question` (not just the first
    answer: skipping the location sends a note before the next question)."""
    mark = server.mark()
    await server.click(user, label)
    await server.wait_for_call(
        "sendMessage", since=mark, chat_id=_to(user), text=lambda v: question in v
    )


def server_now() -> float:
    return time.monotonic()  # the clock the test server stamps calls with


async def test_request_relayed_both_ways_through_its_whole_life(
    server: BotApiServer,
    bot: BotProcess,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
) -> None:
    villager, officer = await _people(server, sessions, directory)

    # The villager's request, with a photo, reaches the officer as a card and the photo.
    await say(server, villager, "/request")
    await click(server, villager, ZH("request_category.dispute"))
    await say(server, villager, "邻居把垃圾堆在我家门口，协商不成")
    mark = server.mark()
    photo = await server.send_photo(villager)
    await server.wait_for_call("sendMessage", since=mark, chat_id=_to(villager))
    await click(server, villager, ZH("flow.photos_done"))
    await _until_asked(server, villager, ZH("flow.skip"), ZH("request_flow.ask_anonymous"))
    mark = server.mark()
    await server.click(villager, ZH("request_flow.with_name"))
    await server.wait_for_call(
        "sendMessage", since=mark, chat_id=_to(villager), text=lambda v: "📨" in v
    )
    card, delay = await _act(server, villager, ZH("flow.submit"), officer)
    async with sessions() as s:
        request = await s.scalar(select(Request))
    assert request is not None
    ref = f"R{request.id:06d}"
    assert card.params["text"].startswith(
        EN("request_note.new", ref=ref, village="张庄村", ack=24, answer=72)
    )
    assert "李四" in card.params["text"] and "lisi_1984" not in card.params["text"]
    assert str(villager.id) not in str(card.params)
    sent_photo = await server.wait_for_call("sendPhoto", chat_id=_to(officer))
    largest = max(photo["message"]["photo"], key=lambda p: p["width"])
    assert sent_photo.params["photo"] == largest["file_id"]
    assert delay < RELAY_LIMIT, f"the new request took {delay:.2f}s to reach the officer"
    answer = [m.text for m in server.messages_to(villager)][-1] or ""
    assert answer.startswith(ZH("request_flow.sent", ref=ref, who="王警官", hours=72)[:20])

    # Accept: the villager is told, in Chinese, by the officer's name.
    told, delay = await _act(server, officer, EN("request_button.accept"), villager)
    assert told.params["text"] == ZH("request_note.acknowledged", ref=ref, who="王警官")
    assert delay < RELAY_LIMIT

    # The officer's reply reaches the villager as a copy, within two seconds.
    await click(server, officer, EN("request_button.reply"))
    mark, started = server.mark(), server_now()
    await server.send_text(officer, "I will come by tomorrow at 10 to talk with both of you.")
    relayed, delay = await _arrives(server, villager, "sendMessage", mark, started)
    assert relayed.params["text"] == ZH(
        "request_note.reply",
        ref=ref,
        who="王警官",
        text="I will come by tomorrow at 10 to talk with both of you.",
    )
    assert "forward_from" not in str(relayed.params)
    assert delay < RELAY_LIMIT, f"the reply took {delay:.2f}s to reach the villager"
    print(f"\nreply relayed to the villager in {delay * 1000:.0f} ms")

    # The villager answers with a photo; the officer gets it as a copy.
    await click(server, villager, ZH("request_button.add_message"))
    mark, started = server.mark(), server_now()
    await server.send_photo(villager, caption="这是今天早上的情况")
    relayed, delay = await _arrives(server, officer, "sendPhoto", mark, started)
    assert relayed.params["caption"] == EN(
        "request_note.villager_message", ref=ref, who="李四", text="这是今天早上的情况"
    )
    assert delay < RELAY_LIMIT

    # Forwarded to a department and back, then resolved: the villager may rate it.
    await click(server, officer, EN("request_button.forward"))
    await click(server, officer, EN("department.township_government"))
    told, _ = await _act(server, officer, EN("flow.skip"), villager)
    assert told.params["text"].startswith(
        ZH("request_note.forwarded", ref=ref, department="乡镇人民政府", who="王警官")
    )
    told, _ = await _act(server, officer, EN("request_button.returned"), villager)
    assert told.params["text"].startswith("↩️")
    await click(server, officer, EN("request_button.resolve"))
    told, _ = await _act(server, officer, EN("flow.skip"), villager)
    assert ZH("request_note.rate") in told.params["text"]

    # "Not solved" reopens it and tells the officer; resolved again, the villager rates it.
    told, _ = await _act(server, villager, ZH("request_button.not_solved"), officer)
    assert told.params["text"] == EN("request_note.reopened", ref=ref, answer=72)
    await click(server, officer, EN("request_button.resolve"))
    await _act(server, officer, EN("flow.skip"), villager)
    told, _ = await _act(server, villager, ZH("request_button.star", rating=5), officer)
    assert told.params["text"] == EN("request_note.rated", ref=ref, rating=5)

    async with sessions() as s:
        events = list(await s.scalars(select(RequestEvent.event).order_by(RequestEvent.id)))
        final = await s.get(Request, request.id)
        pending = await s.scalar(select(OutboxMessage.id).where(OutboxMessage.status != "sent"))
    assert events == [
        "created",
        "acknowledged",
        "replied",
        "villager_message",
        "forwarded",
        "returned",
        "resolved",
        "reopened",
        "resolved",
        "rated",
    ]
    assert final is not None and (final.status, final.rating) == ("resolved", 5)
    assert pending is None  # everything queued was delivered, nothing failed


async def test_anonymous_request_and_the_open_request_limit(
    server: BotApiServer,
    bot: BotProcess,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
) -> None:
    villager, officer = await _people(server, sessions, directory)
    for number in range(5):
        await say(server, villager, "/request")
        await click(server, villager, ZH("request_category.other"))
        await say(server, villager, f"第 {number + 1} 件事：路灯坏了")
        await click(server, villager, ZH("flow.no_photos"))
        await _until_asked(server, villager, ZH("flow.skip"), ZH("request_flow.ask_anonymous"))
        mark = server.mark()
        await server.click(villager, ZH("request_flow.anonymous"))
        await server.wait_for_call(
            "sendMessage", since=mark, chat_id=_to(villager), text=lambda v: "📨" in v
        )
        card, _ = await _act(server, villager, ZH("flow.submit"), officer)
        assert EN("request_who.anonymous") in card.params["text"]
        assert "李四" not in str(card.params) and str(villager.id) not in str(card.params)
    # The sixth is refused politely before anything is typed; nothing reaches the officer.
    mark = server.mark()
    refusal = await say(server, villager, "/request")
    assert refusal.startswith("您有 5 件诉求正在办理")
    assert [
        c for c in server.calls if c.seq >= mark and str(c.params.get("chat_id")) == str(officer.id)
    ] == []
    async with sessions() as s:
        assert len(list(await s.scalars(select(Request.id)))) == 5
