"""The officer's and supervisor's inbox of villagers' requests, through the real Dispatcher,
HTTP, PostgreSQL and the outbox delivery worker."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import request_ui
from bot.app import build_dispatcher
from bot.i18n import Translator
from bot.request_ui import InboxCb
from core.requests import Actor, Event, Refusal, Routed
from core.tokens import village_payload
from storage import invites
from storage import requests as store
from storage.models import Assignment, OutboxMessage, Request, RequestEvent, Village
from tests.botapi import SimUser
from tests.botapi.state import SentMessage
from tests.factories import Directory
from tests.harness import Chat, make_settings

ZH, EN = Translator("zh"), Translator("en")
COUNTY = ZoneInfo("Asia/Shanghai")  # the settings' default time zone
WEEK = timedelta(days=7)


# --- people and requests ---------------------------------------------------------------------


async def _officer(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], badge: str = "012345", **kw: Any
) -> SimUser:
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_officer_invite(s, badge=badge, now=chat.clock(), ttl=WEEK)
    user = chat.server.user(**kw)
    await chat.say(user, f"/start {issued.payload}")
    return user


async def _supervisor(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], station: str, name: str, **kw: Any
) -> SimUser:
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_supervisor_invite(
            s, station_codes=[station], county_wide=False, name=name, now=chat.clock(), ttl=WEEK
        )
    user = chat.server.user(**kw)
    await chat.say(user, f"/start {issued.payload}")
    return user


async def _villager(chat: Chat, village: Village, **kw: Any) -> SimUser:
    """A villager who joined with the village's link: a real chat in the test server."""
    kw.setdefault("first_name", "李四")
    kw.setdefault("username", "lisi_secret")
    user = chat.server.user(**kw)
    t = EN if (user.language_code or "").startswith("en") else ZH
    await chat.say(user, f"/start {village_payload(village.join_token)}")
    await chat.click(user, t("join.yes"))
    return user


async def _request(
    chat: Chat,
    sessions: async_sessionmaker[AsyncSession],
    villager: SimUser,
    village: Village,
    body: str = "邻居家的狗天天夜里叫，影响休息，协商不成。",
    *,
    anonymous: bool = False,
    created_at: datetime | None = None,
    deliver: bool = True,
) -> int:
    """A request as the villager's flow stores it, with its notification to the handler."""
    async with sessions() as s, s.begin():
        routed = await store.route_for_village(s, village.id)
        assert isinstance(routed, Routed)
        saved = await store.create_request(
            s,
            store.NewRequest(
                draft_id=secrets.token_hex(8),
                villager_id=villager.id,
                village_id=village.id,
                category="dispute",
                body=body,
                photos=(),
                latitude=None,
                longitude=None,
                anonymous=anonymous,
                created_at=created_at or chat.clock(),
            ),
            routed,
        )
        view = await store.get_request(s, saved.id)
        assert view is not None
        await request_ui.new_request_to_handlers(s, view, make_settings())
    if deliver:
        await chat.deliver()
    return saved.id


async def _events(sessions: async_sessionmaker[AsyncSession], rid: int) -> list[RequestEvent]:
    async with sessions() as s:
        return list(
            await s.scalars(
                select(RequestEvent).where(RequestEvent.request_id == rid).order_by(RequestEvent.id)
            )
        )


async def _kinds(sessions: async_sessionmaker[AsyncSession], rid: int) -> list[str]:
    return [e.event for e in await _events(sessions, rid)]


async def _status(sessions: async_sessionmaker[AsyncSession], rid: int) -> str:
    async with sessions() as s:
        request = await s.get(Request, rid)
        assert request is not None
        return request.status


async def _queued(sessions: async_sessionmaker[AsyncSession], chat_id: int) -> int:
    async with sessions() as s:
        return int(
            await s.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.chat_id == chat_id)
            )
            or 0
        )


def _ref(rid: int) -> str:
    return f"R{rid:06d}"


def _answer(chat: Chat, update: dict[str, Any]) -> str | None:
    answer = chat.server.callback_answer(update)
    return None if answer is None else answer["text"]


def _buttons(message: SentMessage) -> dict[str, str]:
    markup = message.reply_markup or {}
    return {b["text"]: b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row}


def _card(chat: Chat, user: SimUser, rid: int) -> SentMessage:
    """The latest card of the request the user was sent."""
    head = f"📨 {_ref(rid)}"
    return [m for m in chat.server.messages_to(user) if (m.text or "").startswith(head)][-1]


async def _forge(chat: Chat, user: SimUser, action: str, rid: int) -> dict[str, Any]:
    """A press of a button the user was never shown."""
    message_id = chat.server.last_message_to(user).message_id
    data = InboxCb(action=action, request_id=rid).pack()
    return await chat.send(await chat.server.press(user, message_id, data, force=True))


def _text_of(chat: Chat, user: SimUser, message_id: int) -> str:
    """A message as it reads now (after edits)."""
    [message] = [m for m in chat.server.messages_to(user) if m.message_id == message_id]
    return message.text or ""


def _largest_photo(update: dict[str, Any]) -> tuple[str, str]:
    size = max(update["message"]["photo"], key=lambda p: p["width"] * p["height"])
    return size["file_id"], size["file_unique_id"]


def _nothing_identifying(chat: Chat, officer: SimUser, villager: SimUser) -> None:
    for text in chat.texts(officer):
        assert str(villager.id) not in text
        assert villager.username is None or villager.username not in text


# --- accept and reply --------------------------------------------------------------------------


async def test_accept_and_reply_with_text_and_photo_in_chinese(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions)
    villager = await _villager(chat, directory.villages[0])
    rid = await _request(chat, sessions, villager, directory.villages[0])
    ref = _ref(rid)

    notice = chat.server.last_message_to(officer)
    assert (notice.text or "").startswith(
        ZH("request_note.new", ref=ref, village="张庄村", ack=24, answer=72)
    )
    assert ZH("request.field_from", who="李四") in (notice.text or "")
    assert notice.buttons == [
        ZH("request_button.accept"),
        ZH("request_button.reply"),
        ZH("request_button.forward"),
        ZH("request_button.resolve"),
        ZH("request_button.close"),
        ZH("request_button.open"),
    ]

    accept = await chat.click(officer, ZH("request_button.accept"))
    assert _answer(chat, accept) == ZH("inbox.accepted", ref=ref)
    [_, acknowledged] = await _events(sessions, rid)
    assert (acknowledged.event, acknowledged.actor) == ("acknowledged", "officer")
    assert acknowledged.officer_id == directory.officers[0].id
    assert (acknowledged.user_id, acknowledged.supervisor_id) == (officer.id, None)
    assert chat.server.messages_to(officer)[-2].buttons == []  # the spent notification
    card = chat.server.last_message_to(officer)
    assert ZH("request.field_status", status=ZH("request_status.acknowledged")) in (card.text or "")
    assert card.buttons == [
        ZH("request_button.reply"),
        ZH("request_button.forward"),
        ZH("request_button.resolve"),
        ZH("request_button.close"),
    ]
    await chat.deliver()
    assert chat.last_text(villager) == ZH("request_note.acknowledged", ref=ref, who="王警官")

    await chat.click(officer, ZH("request_button.reply"))
    assert chat.last_text(officer) == ZH("inbox.ask_reply", ref=ref, limit=2000)
    assert chat.keyboard_labels(officer) == [ZH("flow.cancel")]
    await chat.say(officer, "您好，已收到。明天上午我到村里找双方一起协商。")
    assert chat.texts(officer)[-2] == ZH("inbox.reply_sent", ref=ref)
    assert chat.keyboard_labels(officer)[:2] == [ZH("button.visit"), ZH("button.hazard")]
    assert ZH("request_status.answered") in chat.last_text(officer)
    await chat.deliver()
    assert chat.last_text(villager) == ZH(
        "request_note.reply",
        ref=ref,
        who="王警官",
        text="您好，已收到。明天上午我到村里找双方一起协商。",
    )
    assert chat.server.last_message_to(villager).buttons == [
        ZH("request_button.add_message"),
        ZH("request_button.open"),
    ]

    await chat.click(officer, ZH("request_button.reply"))
    photo = await chat.server.send_photo(officer, caption="这是调解协议，请核对。")
    await chat.send(photo)
    file_id, unique_id = _largest_photo(photo)
    reply = (await _events(sessions, rid))[-1]
    assert (reply.event, reply.body, reply.photos) == (
        "replied",
        "这是调解协议，请核对。",
        [[file_id, unique_id]],
    )
    await chat.deliver()
    relayed = chat.server.last_message_to(villager)
    assert relayed.caption == ZH(
        "request_note.reply", ref=ref, who="王警官", text="这是调解协议，请核对。"
    )
    [sent] = [c for c in chat.server.calls_of("sendPhoto") if c.chat_id == villager.id]
    assert sent.params["photo"] == file_id
    assert await _kinds(sessions, rid) == ["created", "acknowledged", "replied", "replied"]
    _nothing_identifying(chat, officer, villager)


async def test_english_officer_anonymous_villager_and_an_album_reply(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, language_code="en")
    villager = await _villager(chat, directory.villages[1], language_code="en")
    rid = await _request(
        chat, sessions, villager, directory.villages[1], "Stolen bike", anonymous=True
    )
    ref = _ref(rid)
    assert EN("request.field_from", who="Anonymous villager") in chat.last_text(officer)

    await chat.click(officer, EN("request_button.open"))
    card = chat.last_text(officer)
    assert card.startswith(f"📨 {ref} · Dispute")
    assert EN("request.field_from", who="Anonymous villager") in card
    assert "⏰ acceptance due" in card and "(1 d 0 h left)" in card
    await chat.say(officer, "/requests")
    assert EN("inbox.item_from", who="Anonymous villager", village="李庄村") in chat.last_text(
        officer
    )

    await chat.click(officer, EN("request_button.reply"))
    album = await chat.server.send_album(officer, 3, caption="Is this your bike?")
    for update in album:
        await chat.send(update)
    [_, reply] = await _events(sessions, rid)
    assert reply.body == "Is this your bike?"
    assert reply.photos == [list(_largest_photo(u)) for u in album]
    assert chat.texts(officer).count(EN("inbox.reply_sent", ref=ref)) == 1
    await chat.deliver()
    photos = [c for c in chat.server.calls_of("sendPhoto") if c.chat_id == villager.id]
    assert [c.params["photo"] for c in photos] == [_largest_photo(u)[0] for u in album]
    captions = [m.caption for m in chat.server.messages_to(villager)[-3:]]
    assert captions == [
        EN("request_note.reply", ref=ref, who="Officer 王警官", text="Is this your bike?"),
        EN("request_note.reply_photo", ref=ref, who="Officer 王警官"),
        EN("request_note.reply_photo", ref=ref, who="Officer 王警官"),
    ]
    _nothing_identifying(chat, officer, villager)
    for text in chat.texts(officer):
        assert "李四" not in text


# --- forward, department reported back, resolve, close -----------------------------------------


async def test_forward_with_a_note_back_then_resolve_asks_for_a_rating(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions)
    villager = await _villager(chat, directory.villages[0])
    rid = await _request(chat, sessions, villager, directory.villages[0], "低保申请一直没有消息")
    ref = _ref(rid)

    await chat.click(officer, ZH("request_button.forward"))
    picker = chat.server.last_message_to(officer)
    assert picker.text == ZH("inbox.ask_department", ref=ref)
    assert picker.buttons[:2] == [
        ZH("department.civil_affairs"),
        ZH("department.natural_resources"),
    ]
    await chat.say(officer, "民政")  # typed instead of tapped
    assert chat.last_text(officer) == ZH("flow.use_buttons")
    await chat.click(officer, ZH("department.civil_affairs"))
    assert chat.last_text(officer) == ZH(
        "inbox.ask_forward_note", ref=ref, department="民政部门", limit=2000
    )
    assert chat.keyboard_labels(officer) == [ZH("flow.skip"), ZH("flow.cancel")]
    await chat.send(await chat.server.send_sticker(officer))
    assert chat.last_text(officer) == ZH("inbox.note_text_only")
    await chat.say(officer, "已与民政所张主任对接，电话 0371-1234567")

    forwarded = (await _events(sessions, rid))[-1]
    assert (forwarded.event, forwarded.department, forwarded.body) == (
        "forwarded",
        "civil_affairs",
        "已与民政所张主任对接，电话 0371-1234567",
    )
    assert await _status(sessions, rid) == "forwarded"
    assert chat.texts(officer)[-2] == ZH("inbox.forwarded_done", ref=ref, department="民政部门")
    card = chat.last_text(officer)
    due = (chat.clock() + timedelta(days=7)).astimezone(COUNTY)
    assert (
        ZH(
            "request.deadline_running",
            clock="部门反馈",
            due=f"{due:%m-%d %H:%M}",
            left="7 天 0 小时",
        )
        in card
    )
    assert ZH("request.deadline_paused") in card
    assert chat.server.last_message_to(officer).buttons == [
        ZH("request_button.reply"),
        ZH("request_button.returned"),
        ZH("request_button.resolve"),
    ]
    await chat.deliver()
    assert chat.last_text(villager) == ZH(
        "request_note.forwarded", ref=ref, who="王警官", department="民政部门"
    )

    # While the department has it, it cannot be closed as not a police matter.
    refused = await _forge(chat, officer, request_ui.CLOSE, rid)
    assert _answer(chat, refused) == ZH("inbox.refused.at_department", ref=ref)
    again = await _forge(chat, officer, request_ui.FORWARD, rid)
    assert _answer(chat, again) == ZH("inbox.refused.already_forwarded", ref=ref)

    chat.clock.now += timedelta(days=2)
    back = await chat.click(officer, ZH("request_button.returned"))
    assert _answer(chat, back) == ZH("inbox.returned_done", ref=ref)
    returned = (await _events(sessions, rid))[-1]
    assert (returned.event, returned.department, returned.actor) == (
        "returned",
        "civil_affairs",
        "officer",
    )
    # The answer clock resumes with the 3 days minus the time before forwarding.
    assert "⏰ 答复时限" in chat.last_text(officer) and "还剩 3 天 0 小时" in chat.last_text(
        officer
    )
    await chat.deliver()
    assert chat.last_text(villager) == ZH(
        "request_note.returned", ref=ref, who="王警官", department="民政部门"
    )

    await chat.click(officer, ZH("request_button.resolve"))
    assert chat.last_text(officer) == ZH("inbox.ask_resolve_note", ref=ref, limit=2000)
    await chat.say(officer, "民政所已受理低保申请，下月起发放。")
    resolved = (await _events(sessions, rid))[-1]
    assert (resolved.event, resolved.body) == ("resolved", "民政所已受理低保申请，下月起发放。")
    assert chat.texts(officer)[-2] == ZH("inbox.resolved_done", ref=ref)
    assert chat.server.last_message_to(officer).buttons == []
    await chat.deliver()
    note = chat.server.last_message_to(villager)
    assert note.text == (
        ZH(
            "request_note.resolved_note",
            ref=ref,
            who="王警官",
            text="民政所已受理低保申请，下月起发放。",
        )
        + "\n\n"
        + ZH("request_note.rate")
    )
    assert note.buttons == [
        *(ZH("request_button.star", rating=n) for n in range(1, 6)),
        ZH("request_button.not_solved"),
        ZH("request_button.open"),
    ]
    late = await _forge(chat, officer, request_ui.REPLY, rid)
    assert _answer(chat, late) == ZH("inbox.refused.finished", ref=ref)


async def test_forward_without_a_note_and_resolve_without_a_message(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, language_code="en")
    villager = await _villager(chat, directory.villages[0], language_code="en")
    rid = await _request(chat, sessions, villager, directory.villages[0], "Broken street light")
    ref = _ref(rid)
    await chat.click(officer, EN("request_button.forward"))
    stale_picker = chat.server.last_message_to(officer)
    await chat.say(officer, "/cancel")
    await chat.click(officer, EN("request_button.forward"))
    # The first picker belongs to a conversation that was cancelled.
    old = await chat.server.press(
        officer, stale_picker.message_id, _buttons(stale_picker)[EN("department.power_supply")]
    )
    await chat.send(old)
    assert _answer(chat, old) == EN("callback.stale")
    await chat.click(officer, EN("department.power_supply"))
    await chat.click(officer, EN("flow.skip"))
    forwarded = (await _events(sessions, rid))[-1]
    assert (forwarded.event, forwarded.department, forwarded.body) == (
        "forwarded",
        "power_supply",
        None,
    )
    await chat.click(officer, EN("request_button.resolve"))
    await chat.click(officer, EN("flow.skip"))
    assert await _kinds(sessions, rid) == ["created", "forwarded", "resolved"]
    await chat.deliver()
    assert chat.texts(villager)[-2:] == [
        EN(
            "request_note.forwarded",
            ref=ref,
            who="Officer 王警官",
            department="Power supply company",
        ),
        EN("request_note.resolved", ref=ref, who="Officer 王警官")
        + "\n\n"
        + EN("request_note.rate"),
    ]
    assert EN("request_button.not_solved") in chat.server.last_message_to(villager).buttons


async def test_close_sends_the_explanation_and_ends_the_request(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions)
    villager = await _villager(chat, directory.villages[0])
    rid = await _request(chat, sessions, villager, directory.villages[0], "承包地边界有争议")
    ref = _ref(rid)
    await chat.click(officer, ZH("request_button.close"))
    for update, hint in [
        (chat.server.send_sticker(officer), ZH("inbox.close_text_only")),
        (chat.server.send_document(officer), ZH("inbox.close_text_only")),
        (chat.server.send_text(officer, ZH("flow.skip")), ZH("inbox.close_needs_text")),
        (chat.server.send_text(officer, "🙏🙏"), ZH("inbox.no_words")),
        (chat.server.send_text(officer, "\x00"), ZH("flow.text_empty")),
        (chat.server.send_text(officer, "地" * 4096), ZH("flow.text_too_long", limit=2000)),
    ]:
        await chat.send(await update)
        assert chat.last_text(officer) == hint
    assert await _kinds(sessions, rid) == ["created"]
    explanation = "土地承包纠纷请向镇农经站或土地承包仲裁委员会申请调解、仲裁。"
    await chat.say(officer, explanation)
    closed = (await _events(sessions, rid))[-1]
    assert (closed.event, closed.body, closed.actor) == (
        "closed_not_police",
        explanation,
        "officer",
    )
    assert await _status(sessions, rid) == "closed"
    assert chat.texts(officer)[-2] == ZH("inbox.closed_done", ref=ref)
    assert chat.server.last_message_to(officer).buttons == []
    await chat.deliver()
    assert chat.last_text(villager) == ZH(
        "request_note.closed", ref=ref, who="王警官", text=explanation
    )
    assert chat.server.last_message_to(villager).buttons == [ZH("request_button.open")]
    late = await _forge(chat, officer, request_ui.ACK, rid)
    assert _answer(chat, late) == ZH("inbox.refused.finished", ref=ref)
    assert await _kinds(sessions, rid) == ["created", "closed_not_police"]


# --- /requests: order, deadlines, pages --------------------------------------------------------


async def test_list_orders_by_deadline_shows_overdue_and_paused_and_pages(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions)
    villager = await _villager(chat, directory.villages[0])
    await chat.say(officer, "/requests")
    assert chat.last_text(officer) == ZH("inbox.none")
    t0 = chat.clock()
    # Ten requests, each sent ten minutes before the next; the last is forwarded at once.
    ids = [
        await _request(
            chat,
            sessions,
            villager,
            directory.villages[0],
            f"第{i}件事",
            created_at=t0 - timedelta(minutes=10 * (9 - i)),
            deliver=False,
        )
        for i in range(10)
    ]
    await chat.deliver()
    async with sessions() as s, s.begin():
        await store.record_event(
            s,
            request_id=ids[0],
            event=Event.FORWARDED,
            actor=Actor.OFFICER,
            now=t0,
            officer_id=directory.officers[0].id,
            department="health",
        )
    # 23 h 15 min later: the four sent at least 50 minutes before t0 are past acceptance.
    chat.clock.now = t0 + timedelta(hours=23, minutes=15)
    await chat.click(officer, ZH("button.requests"))
    listing = chat.server.last_message_to(officer)
    text = listing.text or ""
    assert text.startswith(
        ZH("inbox.list_title", count=10) + "\n" + ZH("inbox.page", page=1, pages=2)
    )
    page_one = [ids[i] for i in range(1, 9)]  # the oldest deadline first
    assert listing.buttons == [
        *(ZH("inbox.item_overdue", ref=_ref(r)) for r in page_one[:4]),
        *(ZH("inbox.item", ref=_ref(r)) for r in page_one[4:]),
        ZH("request_button.next"),
    ]
    assert [line.split(" · ")[0] for line in text.split("\n\n")[1:]] == [_ref(r) for r in page_one]

    def due(i: int) -> str:
        moment = t0 - timedelta(minutes=10 * (9 - i)) + timedelta(hours=24)
        return f"{moment.astimezone(COUNTY):%m-%d %H:%M}"

    assert ZH("request.deadline_overdue", clock="受理", due=due(1), late="35 分钟") in text
    assert ZH("request.deadline_overdue", clock="受理", due=due(4), late="5 分钟") in text
    assert ZH("request.deadline_running", clock="受理", due=due(5), left="5 分钟") in text
    assert ZH("inbox.item_from", who="李四", village="张庄村") in text
    assert "第1件事" in text and "第0件事" not in text

    await chat.click(officer, ZH("request_button.next"))
    edited = chat.server.last_message_to(officer)
    assert edited.message_id == listing.message_id  # the same message, turned to page 2
    assert ZH("inbox.page", page=2, pages=2) in (edited.text or "")
    assert edited.buttons == [
        ZH("inbox.item", ref=_ref(ids[9])),
        ZH("inbox.item", ref=_ref(ids[0])),
        ZH("request_button.previous"),
    ]
    assert ZH("request.deadline_paused") in (edited.text or "")
    await chat.click(officer, ZH("inbox.item", ref=_ref(ids[0])))
    card = chat.last_text(officer)
    assert card.startswith(f"📨 {_ref(ids[0])}")
    assert ZH("request.field_department", department=ZH("department.health")) in card
    assert ZH("request.deadline_paused") in card
    await chat.click(officer, ZH("request_button.previous"))
    assert ZH("inbox.page", page=1, pages=2) in _text_of(chat, officer, listing.message_id)

    # A forged page beyond the last shows the last; a negative one is refused.
    far = await chat.server.press(
        officer, listing.message_id, request_ui.InboxPageCb(page=99).pack(), force=True
    )
    await chat.send(far)
    assert ZH("inbox.page", page=2, pages=2) in _text_of(chat, officer, listing.message_id)
    negative = await chat.server.press(
        officer, listing.message_id, request_ui.InboxPageCb(page=-1).pack(), force=True
    )
    await chat.send(negative)
    assert _answer(chat, negative) == ZH("callback.stale")


# --- supervisors ---------------------------------------------------------------------------------


async def test_supervisor_handles_a_request_from_a_village_without_an_officer(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    chief = await _supervisor(chat, sessions, "S02", "孙所长", language_code="en")
    villager = await _villager(chat, directory.villages[2])
    rid = await _request(chat, sessions, villager, directory.villages[2], "路口红绿灯坏了")
    ref = _ref(rid)
    assert chat.last_text(chief).startswith(
        EN("request_note.new", ref=ref, village="东关社区", ack=24, answer=72)
    )
    await chat.say(chief, "/requests")
    assert chat.last_text(chief).startswith(EN("inbox.list_title", count=1))
    assert EN("inbox.item_from", who="李四", village="东关社区") in chat.last_text(chief)
    await chat.click(chief, EN("inbox.item", ref=ref))
    await chat.click(chief, EN("request_button.accept"))
    acknowledged = (await _events(sessions, rid))[-1]
    assert (acknowledged.event, acknowledged.actor, acknowledged.officer_id) == (
        "acknowledged",
        "supervisor",
        None,
    )
    assert acknowledged.supervisor_id is not None and acknowledged.user_id == chief.id
    await chat.click(chief, EN("request_button.reply"))
    await chat.say(chief, "已通知交警中队，今天修复。")
    await chat.deliver()
    assert chat.texts(villager)[-2:] == [
        ZH("request_note.acknowledged", ref=ref, who="督导人员孙所长"),
        ZH("request_note.reply", ref=ref, who="督导人员孙所长", text="已通知交警中队，今天修复。"),
    ]
    _nothing_identifying(chat, chief, villager)


async def test_station_supervisor_steps_in_while_the_officer_is_typing(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions)
    chief = await _supervisor(chat, sessions, "S01", "刘所长")
    other_chief = await _supervisor(chat, sessions, "S02", "孙所长")
    villager = await _villager(chat, directory.villages[0])
    rid = await _request(chat, sessions, villager, directory.villages[0])
    ref = _ref(rid)
    assert not any(ref in text for text in chat.texts(chief))  # routed to the officer
    await chat.say(chief, "/requests")
    assert chat.last_text(chief) == ZH("inbox.none")

    await chat.click(officer, ZH("request_button.reply"))  # the officer starts typing

    opened = await _forge(chat, chief, request_ui.OPEN, rid)  # e.g. from an escalation
    assert chat.server.callback_answer(opened) == {"text": None, "show_alert": False, "url": None}
    assert chat.last_text(chief).startswith(f"📨 {ref}")
    outside = await _forge(chat, other_chief, request_ui.OPEN, rid)
    assert _answer(chat, outside) == ZH("callback.stale")

    await chat.click(chief, ZH("request_button.resolve"))
    await chat.say(chief, "已现场调解，双方达成协议。")
    resolved = (await _events(sessions, rid))[-1]
    assert (resolved.event, resolved.actor, resolved.user_id) == (
        "resolved",
        "supervisor",
        chief.id,
    )

    # The officer's reply comes too late: nothing is recorded or sent.
    await chat.say(officer, "我明天过去看看。")
    assert chat.last_text(officer) == ZH("inbox.refused.finished", ref=ref)
    assert await _kinds(sessions, rid) == ["created", "resolved"]
    await chat.deliver()
    assert chat.last_text(villager).startswith(
        ZH(
            "request_note.resolved_note",
            ref=ref,
            who="督导人员刘所长",
            text="已现场调解，双方达成协议。",
        )
    )
    assert not any("我明天过去看看" in text for text in chat.texts(villager))


# --- rights, taps and interruptions ------------------------------------------------------------


async def test_forged_buttons_of_requests_not_ones_own_do_nothing(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _officer(chat, sessions)
    contact = await _officer(chat, sessions, "067890", language_code="en")
    villager = await _villager(chat, directory.villages[0])
    rid = await _request(chat, sessions, villager, directory.villages[0])
    queued = await _queued(sessions, villager.id)
    for action in (*request_ui.HANDLER_ACTIONS, "delete"):
        pressed = await _forge(chat, contact, action, rid)
        assert _answer(chat, pressed) == EN("callback.stale"), action
    for rid_forged in (rid + 1, 0, 2**31):
        pressed = await _forge(chat, contact, request_ui.ACK, rid_forged)
        assert _answer(chat, pressed) == EN("callback.stale")
    # A villager pressing an officer's button fares no better.
    pressed = await _forge(chat, villager, request_ui.ACK, rid)
    assert _answer(chat, pressed) == ZH("callback.stale")
    assert await _kinds(sessions, rid) == ["created"]
    assert await _queued(sessions, villager.id) == queued


async def test_double_tap_on_accept_records_once(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions)
    villager = await _villager(chat, directory.villages[0])
    rid = await _request(chat, sessions, villager, directory.villages[0])
    notice = chat.server.last_message_to(officer)
    accept = _buttons(notice)[ZH("request_button.accept")]
    first = await chat.server.press(officer, notice.message_id, accept)
    second = await chat.server.press(officer, notice.message_id, accept, force=True)
    await chat.send(first)
    await chat.send(first)  # the same update delivered again
    await chat.send(second)
    assert _answer(chat, first) == ZH("inbox.accepted", ref=_ref(rid))
    assert _answer(chat, second) == ZH("inbox.refused.already_acknowledged", ref=_ref(rid))
    assert await _kinds(sessions, rid) == ["created", "acknowledged"]
    before = len(chat.server.messages_to(villager))
    await chat.deliver()
    assert len(chat.server.messages_to(villager)) == before + 1


async def test_a_cancelled_reply_sends_nothing(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions)
    villager = await _villager(chat, directory.villages[0])
    rid = await _request(chat, sessions, villager, directory.villages[0])
    queued = await _queued(sessions, villager.id)
    await chat.click(officer, ZH("request_button.reply"))
    await chat.say(officer, "/cancel")
    assert chat.last_text(officer) == ZH("cancel.done")
    await chat.say(officer, "这句话不是回复")
    assert chat.last_text(officer) == ZH("fallback.unknown")
    assert await _kinds(sessions, rid) == ["created"]
    assert await _queued(sessions, villager.id) == queued


async def test_wrong_input_keeps_the_reply_waiting(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, language_code="en")
    villager = await _villager(chat, directory.villages[0])
    rid = await _request(chat, sessions, villager, directory.villages[0])
    await chat.click(officer, EN("request_button.reply"))
    for update, hint in [
        (chat.server.send_sticker(officer), EN("inbox.reply_text_or_photo")),
        (chat.server.send_document(officer), EN("inbox.reply_text_or_photo")),
        (chat.server.send_location(officer, 34.1, 113.2), EN("inbox.reply_text_or_photo")),
        (chat.server.send_text(officer, "a" * 4096), EN("flow.text_too_long", limit=2000)),
        (chat.server.send_text(officer, "\x00"), EN("flow.text_empty")),
        (chat.server.send_text(officer, "👍👍"), EN("inbox.no_words")),
        (chat.server.send_photo(officer, caption="🙂"), EN("inbox.no_words")),
        (chat.server.send_text(officer, "/visit"), EN("fallback.in_flow")),
    ]:
        await chat.send(await update)
        assert chat.last_text(officer) == hint
    # Another flow's buttons are refused without losing the reply.
    pressed = await _forge(chat, officer, request_ui.ACK, rid)
    assert _answer(chat, pressed) == EN("inbox.accepted", ref=_ref(rid))
    assert await _kinds(sessions, rid) == ["created", "acknowledged"]
    await chat.say(officer, "Noted\x00, I will call you today.")
    reply = (await _events(sessions, rid))[-1]
    assert (reply.event, reply.body) == ("replied", "Noted, I will call you today.")


async def test_an_inbox_button_during_another_flow_changes_nothing(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions)
    villager = await _villager(chat, directory.villages[0])
    rid = await _request(chat, sessions, villager, directory.villages[0])
    notice = chat.server.last_message_to(officer)
    await chat.say(officer, "/hazard")
    pressed = await chat.send(
        await chat.server.press(
            officer, notice.message_id, _buttons(notice)[ZH("request_button.accept")]
        )
    )
    assert _answer(chat, pressed) == ZH("fallback.in_flow")
    assert await _kinds(sessions, rid) == ["created"]
    await chat.click(officer, "张庄村")  # the hazard report carries on
    assert chat.last_text(officer).startswith(ZH("flow.step", step=2, total=6))


async def test_a_restart_in_the_middle_of_a_reply_continues(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions)
    villager = await _villager(chat, directory.villages[0])
    rid = await _request(chat, sessions, villager, directory.villages[0])
    await chat.click(officer, ZH("request_button.reply"))
    # A new Dispatcher with nothing in memory stands for the restarted process.
    chat.dp = build_dispatcher(make_settings(), sessions, clock=chat.clock)
    await chat.say(officer, "重启后继续回复。")
    assert chat.texts(officer)[-2] == ZH("inbox.reply_sent", ref=_ref(rid))
    await chat.deliver()
    assert chat.last_text(villager) == ZH(
        "request_note.reply", ref=_ref(rid), who="王警官", text="重启后继续回复。"
    )


def test_every_refusal_has_a_text() -> None:
    for t in (ZH, EN):
        for code in Refusal:
            assert "R000001" in t(f"inbox.refused.{code.value}", ref="R000001")


async def test_a_reply_to_a_request_passed_to_someone_else_meanwhile_is_not_sent(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions)
    contact = await _officer(chat, sessions, "067890")
    villager = await _villager(chat, directory.villages[0])
    rid = await _request(chat, sessions, villager, directory.villages[0])
    await chat.click(officer, ZH("request_button.reply"))
    # The directory changes while the officer types: the contact officer takes the village.
    async with sessions() as s, s.begin():
        await s.execute(
            delete(Assignment).where(
                Assignment.officer_id == directory.officers[0].id,
                Assignment.village_id == directory.villages[0].id,
            )
        )
        moved = await store.reroute_open_requests(
            s, village_ids=[directory.villages[0].id], now=chat.clock()
        )
    assert [m.request_id for m in moved.moved] == [rid]
    queued = await _queued(sessions, villager.id)
    await chat.say(officer, "我马上过去。")
    assert chat.last_text(officer) == ZH("inbox.not_yours", ref=_ref(rid))
    assert chat.keyboard_labels(officer)[:2] == [ZH("button.visit"), ZH("button.hazard")]
    assert await _kinds(sessions, rid) == ["created", "reassigned"]
    assert await _queued(sessions, villager.id) == queued
    # The new handler can act on it; the old one no longer can.
    old = await _forge(chat, officer, request_ui.ACK, rid)
    assert _answer(chat, old) == ZH("callback.stale")
    taken = await _forge(chat, contact, request_ui.ACK, rid)
    assert _answer(chat, taken) == ZH("inbox.accepted", ref=_ref(rid))
