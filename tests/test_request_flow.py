"""A villager's side of requests through the real Dispatcher, HTTP and PostgreSQL: sending one,
/myrequests, adding messages, rating and "not solved"; what reaches the officer after delivery."""

from __future__ import annotations

import json
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import request_ui
from bot.app import build_dispatcher
from bot.flows.kit import FlowCb
from bot.i18n import Translator
from bot.request_ui import MyRequestCb, MyRequestPageCb
from core.requests import Actor, Event, RequestCategory, Routed
from core.tokens import village_payload
from storage import invites, villages
from storage import requests as store
from storage.models import OutboxMessage, Request, RequestEvent, SupervisorStation, User
from tests.botapi import BotApiServer, SimUser
from tests.botapi.state import SentMessage
from tests.factories import Directory
from tests.harness import Chat, make_settings, running_chat

ZH, EN = Translator("zh"), Translator("en")
WEEK = timedelta(days=7)
PHONE = "+8613800000000"


# --- helpers -------------------------------------------------------------------------------


async def _officer(chat: Chat, sessions: async_sessionmaker[AsyncSession], badge: str) -> SimUser:
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_officer_invite(s, badge=badge, now=chat.clock(), ttl=WEEK)
    officer = chat.server.user(first_name="警官")
    await chat.say(officer, f"/start {issued.payload}")
    return officer


async def _supervisor(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], station: str
) -> SimUser:
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_supervisor_invite(
            s, station_codes=[station], county_wide=False, name="刘所长", now=chat.clock(), ttl=WEEK
        )
    chief = chat.server.user(first_name="所长")
    await chat.say(chief, f"/start {issued.payload}")
    return chief


async def _villager(
    chat: Chat,
    directory: Directory,
    village: int = 0,
    *,
    phone: str | None = None,
    **kw: Any,
) -> SimUser:
    villager = chat.server.user(**kw)
    t = EN if kw.get("language_code") == "en" else ZH
    await chat.say(villager, f"/start {village_payload(directory.villages[village].join_token)}")
    await chat.click(villager, t("join.yes"))
    if phone is None:
        await chat.click(villager, t("join.skip_phone"))
    else:
        await chat.click(villager, t("join.share_phone"), phone=phone)
    return villager


async def _requests(sessions: async_sessionmaker[AsyncSession]) -> list[Request]:
    async with sessions() as s:
        return list(await s.scalars(select(Request).order_by(Request.id)))


async def _events(sessions: async_sessionmaker[AsyncSession]) -> list[RequestEvent]:
    async with sessions() as s:
        return list(await s.scalars(select(RequestEvent).order_by(RequestEvent.id)))


async def _outbox(sessions: async_sessionmaker[AsyncSession], chat_id: int) -> list[OutboxMessage]:
    async with sessions() as s:
        return list(
            await s.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.chat_id == chat_id)
                .order_by(OutboxMessage.id)
            )
        )


def _buttons(message: SentMessage) -> dict[str, str]:
    markup = message.reply_markup or {}
    return {b["text"]: b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row}


def _answer(chat: Chat, update: dict[str, Any]) -> str | None:
    answer = chat.server.callback_answer(update)
    return None if answer is None else answer["text"]


async def _press(chat: Chat, user: SimUser, message: SentMessage, label: str) -> dict[str, Any]:
    return await chat.send(
        await chat.server.press(user, message.message_id, _buttons(message)[label])
    )


async def _forge(chat: Chat, user: SimUser, data: str) -> dict[str, Any]:
    message_id = chat.server.last_message_to(user).message_id
    return await chat.send(await chat.server.press(user, message_id, data, force=True))


def _step(t: Translator, n: int) -> str:
    return t("flow.step", step=n, total=5)


async def _fill_to_summary(
    chat: Chat, villager: SimUser, t: Translator, text: str = "邻居家的狗天天夜里叫"
) -> None:
    await chat.say(villager, "/request")
    await chat.click(villager, t("request_category.dispute"))
    await chat.say(villager, text)
    await chat.click(villager, t("flow.no_photos"))
    await chat.click(villager, t("flow.skip"))
    await chat.click(villager, t("request_flow.with_name"))


async def _send(chat: Chat, villager: SimUser, t: Translator, text: str = "路灯坏了") -> None:
    await _fill_to_summary(chat, villager, t, text)
    await chat.click(villager, t("flow.submit"))


async def _seed(
    sessions: async_sessionmaker[AsyncSession],
    chat: Chat,
    villager: SimUser,
    directory: Directory,
    body: str,
    *,
    minutes_ago: int = 0,
) -> int:
    """A request stored straight through storage (no limits, no notifications)."""
    async with sessions() as s, s.begin():
        routed = await store.route_for_village(s, directory.villages[0].id)
        assert isinstance(routed, Routed)
        saved = await store.create_request(
            s,
            store.NewRequest(
                draft_id=secrets.token_hex(8),
                villager_id=villager.id,
                village_id=directory.villages[0].id,
                category=RequestCategory.OTHER.value,
                body=body,
                photos=[],
                latitude=None,
                longitude=None,
                anonymous=False,
                created_at=chat.clock() - timedelta(minutes=minutes_ago),
            ),
            routed,
        )
    return saved.id


async def _resolve(
    sessions: async_sessionmaker[AsyncSession],
    chat: Chat,
    directory: Directory,
    request_id: int,
    *,
    notify: bool = False,
) -> None:
    """The officer resolves the request (their inbox is tested elsewhere); `notify` also
    queues the villager's notification with the rating buttons, as the inbox does."""
    async with sessions() as s, s.begin():
        await store.record_event(
            s,
            request_id=request_id,
            event=Event.RESOLVED,
            actor=Actor.OFFICER,
            now=chat.clock(),
            officer_id=directory.officers[0].id,
        )
        if notify:
            view = await store.get_request(s, request_id)
            assert view is not None
            await request_ui.to_villager(s, view, "resolved", make_settings(), with_rating=True)


async def _card(chat: Chat, villager: SimUser, request_id: int) -> SentMessage:
    """Open the request's card from /myrequests."""
    await chat.say(villager, "/myrequests")
    await _press(
        chat,
        villager,
        chat.server.last_message_to(villager),
        _ref_button(chat, villager, request_id),
    )
    return chat.server.last_message_to(villager)


def _ref_button(chat: Chat, villager: SimUser, request_id: int) -> str:
    ref = store.reference(request_id)
    labels = chat.server.last_message_to(villager).buttons
    return next(label for label in labels if label.startswith(ref))


# --- sending a request ---------------------------------------------------------------------


async def test_complete_request_in_chinese_with_album_and_location(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    villager = await _villager(chat, directory, first_name="李四", username="lisi_zz", phone=PHONE)
    await chat.click(villager, ZH("button.request"))
    assert chat.last_text(villager) == _step(ZH, 1) + "\n" + ZH("request_flow.ask_category")
    assert chat.server.last_message_to(villager).buttons == [
        ZH(f"request_category.{c.value}") for c in RequestCategory
    ]
    await chat.click(villager, ZH("request_category.safety"))
    assert chat.last_text(villager) == "第 2 步，共 5 步\n" + ZH(
        "request_flow.ask_text", limit=2000
    )
    assert chat.keyboard_labels(villager) == [ZH("flow.cancel")]
    await chat.say(villager, "村口桥下有人夜里偷挖河沙，已经挖出大坑，孩子们常在那里玩水 ⚠️")
    assert chat.last_text(villager).startswith(_step(ZH, 3))
    assert chat.keyboard_labels(villager) == [
        ZH("flow.photos_done"),
        ZH("flow.no_photos"),
        ZH("flow.cancel"),
    ]
    before = len(chat.server.messages_to(villager))
    for update in await chat.server.send_album(villager, 3):
        await chat.send(update)
    acks = chat.server.messages_to(villager)[before:]
    assert [a.text for a in acks] == [ZH("flow.photos_received", count=3, limit=10)]
    await chat.click(villager, ZH("flow.photos_done"))
    assert chat.last_text(villager) == _step(ZH, 4) + "\n" + ZH("request_flow.ask_location")
    await chat.click(villager, ZH("flow.send_location"), location=(34.1012, 113.2034))
    assert chat.texts(villager)[-2] == ZH("request_flow.location_saved")
    assert chat.keyboard_labels(villager) == []  # the location keyboard is gone
    assert chat.last_text(villager) == _step(ZH, 5) + "\n" + ZH("request_flow.ask_anonymous")
    await chat.click(villager, ZH("request_flow.with_name"))

    summary = chat.last_text(villager)
    for expected in (
        ZH("request.field_village", village="张庄村"),
        ZH("request_flow.field_category", category="安全隐患或线索"),
        "偷挖河沙",
        ZH("request.field_photos", count=3),
        ZH("request.field_location"),
        ZH("request_flow.field_named"),
    ):
        assert expected in summary, expected
    await chat.click(villager, ZH("flow.submit"))

    [request] = await _requests(sessions)
    ref = f"R{request.id:06d}"
    assert chat.last_text(villager) == ZH("request_flow.sent", ref=ref, who="王警官", hours=72)
    assert chat.keyboard_labels(villager)[:2] == [ZH("button.request"), ZH("button.myrequests")]
    assert chat.server.messages_to(villager)[-2].buttons == []  # the summary lost its buttons
    assert (request.category, request.status, request.anonymous) == ("safety", "new", False)
    assert request.village_id == directory.villages[0].id
    assert request.officer_id == directory.officers[0].id and request.supervisor_id is None
    assert (request.latitude, request.longitude) == (34.1012, 113.2034)
    assert request.villager_id == villager.id and request.created_at == chat.clock()
    assert request.due_at == chat.clock() + timedelta(hours=24) and request.due_clock == "ack"
    [created] = await _events(sessions)
    assert (created.event, created.actor, created.user_id) == ("created", "villager", villager.id)
    assert len(created.photos) == 3

    assert await chat.deliver() == 5  # the request, three photos, the location
    sent = chat.server.messages_to(officer)[-5:]
    note = sent[0].text or ""
    assert note.startswith(ZH("request_note.new", ref=ref, village="张庄村", ack=24, answer=72))
    assert "李四" in note and PHONE in note and "偷挖河沙" in note
    assert "lisi_zz" not in note and str(villager.id) not in note
    assert sent[0].buttons == [
        ZH(f"request_button.{b}")
        for b in ("accept", "reply", "forward", "resolve", "close", "open")
    ]
    photos = chat.server.calls_of("sendPhoto")
    assert [c.params["photo"] for c in photos] == [p[0] for p in created.photos]
    assert {c.chat_id for c in photos} == {officer.id}
    assert [c.params.get("caption") for c in photos] == [
        ZH("request.photo_caption", ref=ref, number=n, total=3) for n in (1, 2, 3)
    ]
    [location] = chat.server.calls_of("sendLocation")
    assert (location.chat_id, location.params["latitude"], location.params["longitude"]) == (
        officer.id,
        34.1012,
        113.2034,
    )


async def test_english_request_without_photos_or_location(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    villager = await _villager(chat, directory, 1, first_name="Ann", language_code="en")
    await chat.click(villager, EN("button.request"))
    await chat.click(villager, EN("request_category.registration"))
    await chat.say(villager, "  I need a certificate of residence\r\n\r\n\r\n\r\nfor my son  ")
    await chat.click(villager, EN("flow.no_photos"))
    assert chat.last_text(villager).startswith(_step(EN, 4))
    await chat.click(villager, EN("flow.skip"))
    assert chat.texts(villager)[-2] == EN("request_flow.location_skipped")
    await chat.click(villager, EN("request_flow.with_name"))
    summary = chat.last_text(villager)
    assert EN("request_flow.field_no_photos") in summary
    assert EN("request_flow.field_no_location") in summary
    await chat.click(villager, EN("flow.submit"))

    [request] = await _requests(sessions)
    ref = f"R{request.id:06d}"
    assert chat.last_text(villager) == EN(
        "request_flow.sent", ref=ref, who="Officer 王警官", hours=72
    )
    assert request.body == "I need a certificate of residence\n\n\nfor my son"
    assert (request.village_id, request.latitude) == (directory.villages[1].id, None)
    await chat.deliver()
    assert chat.server.calls_of("sendPhoto") == [] and chat.server.calls_of("sendLocation") == []
    note = chat.last_text(officer)
    assert note.startswith(ZH("request_note.new", ref=ref, village="李庄村", ack=24, answer=72))
    assert "Ann" in note and ZH("request.field_phone", phone="") not in note


async def test_anonymous_request_reveals_nothing_of_the_villager(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    villager = await _villager(
        chat, directory, first_name="李四", last_name="王", username="lisi_zz", phone=PHONE
    )
    await chat.say(villager, "/request")
    await chat.click(villager, ZH("request_category.safety"))
    await chat.say(villager, "村东头网吧有未成年人通宵上网")
    await chat.send(await chat.server.send_photo(villager))
    await chat.click(villager, ZH("flow.photos_done"))
    await chat.click(villager, ZH("flow.skip"))
    await chat.click(villager, ZH("request_flow.anonymous"))
    assert ZH("request_flow.field_anonymous") in chat.last_text(villager)
    await chat.click(villager, ZH("flow.submit"))
    [request] = await _requests(sessions)
    assert request.anonymous

    # The villager adds a message and a photo: relayed without them too.
    await _press(
        chat, villager, await _card(chat, villager, request.id), ZH("request_button.add_message")
    )
    await chat.say(villager, "今晚还有")
    await _press(
        chat, villager, await _card(chat, villager, request.id), ZH("request_button.add_message")
    )
    await chat.send(await chat.server.send_photo(villager, caption="门口照片"))

    queued = await _outbox(sessions, officer.id)
    assert len(queued) == 4  # the request, its photo, the message, the photo
    await chat.deliver()
    secrets_of_villager = (str(villager.id), "lisi_zz", "李四", PHONE, "13800000000")
    for row in queued:
        dumped = json.dumps(row.payload, ensure_ascii=False)
        for secret in secrets_of_villager:
            assert secret not in dumped, (secret, dumped)
    for call in chat.server.calls:
        if call.chat_id == officer.id:
            dumped = json.dumps(call.params, ensure_ascii=False)
            assert all(secret not in dumped for secret in secrets_of_villager), dumped
    received = [m.text or m.caption or "" for m in chat.server.messages_to(officer)[-4:]]
    assert ZH("request.field_from", who=ZH("request_who.anonymous")) in received[0]
    assert received[2] == ZH(
        "request_note.villager_message",
        ref=store.reference(request.id),
        who=ZH("request_who.anonymous"),
        text="今晚还有",
    )
    assert "门口照片" in received[3]


async def test_wrong_input_at_every_step_keeps_the_step(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _officer(chat, sessions, "012345")
    villager = await _villager(chat, directory, language_code="en")
    await chat.say(villager, "/request")
    older = chat.server.last_message_to(villager)  # a button of this draft, pressed later
    await chat.say(villager, "/cancel")
    assert chat.last_text(villager) == EN("cancel.done")

    await chat.say(villager, "/request")
    category_prompt = chat.server.last_message_to(villager)
    for wrong in (
        chat.server.send_text(villager, "dispute"),
        chat.server.send_photo(villager),
        chat.server.send_sticker(villager),
    ):
        await chat.send(await wrong)
        assert chat.last_text(villager) == EN("flow.use_buttons")
    stale = await _press(chat, villager, older, EN("request_category.dispute"))
    assert _answer(chat, stale) == EN("callback.stale")
    await chat.click(villager, EN("request_category.hardship"))
    again = await _press(chat, villager, category_prompt, EN("request_category.other"))
    assert _answer(chat, again) == EN("callback.stale")  # a step already answered

    text_prompt = chat.last_text(villager)
    for wrong in (
        chat.server.send_sticker(villager),
        chat.server.send_document(villager),
        chat.server.send_photo(villager, caption="look"),
    ):
        await chat.send(await wrong)
        assert chat.texts(villager)[-2:] == [EN("request_flow.bad_text"), text_prompt]
    await chat.say(villager, "x" * 4096)
    assert chat.last_text(villager) == EN("flow.text_too_long", limit=2000)
    await chat.say(villager, "y" * 2001)
    assert chat.last_text(villager) == EN("flow.text_too_long", limit=2000)
    await chat.say(villager, "\x00")
    assert chat.last_text(villager) == EN("flow.text_empty")
    await chat.say(villager, "🙏😭 !!")
    assert chat.last_text(villager) == EN("request_flow.text_no_words")
    await chat.say(villager, "/nonsense")
    assert chat.last_text(villager) == EN("fallback.in_flow")
    await chat.say(villager, "Our roof\x00 leaks and we are old; can someone help?")
    assert chat.last_text(villager).startswith(_step(EN, 3))

    for wrong in (
        chat.server.send_text(villager, "no photo"),
        chat.server.send_sticker(villager),
        chat.server.send_document(villager, "p.jpg", b"\xff\xd8", mime_type="image/jpeg"),
        chat.server.send_location(villager, 34.1, 113.2),
    ):
        await chat.send(await wrong)
        assert chat.texts(villager)[-2] == EN("request_flow.bad_photo")
        assert chat.last_text(villager).startswith(_step(EN, 3))
    await chat.click(villager, EN("flow.no_photos"))

    for wrong in (
        chat.server.send_text(villager, "near the well"),
        chat.server.send_photo(villager),
        chat.server.send_sticker(villager),
    ):
        await chat.send(await wrong)
        assert chat.texts(villager)[-2] == EN("request_flow.bad_location")
        assert chat.last_text(villager).startswith(_step(EN, 4))
    await chat.click(villager, EN("flow.skip"))

    for wrong in (
        chat.server.send_text(villager, "anonymous"),
        chat.server.send_sticker(villager),
    ):
        await chat.send(await wrong)
        assert chat.last_text(villager) == EN("flow.use_buttons")
    await chat.click(villager, EN("request_flow.anonymous"))
    await chat.say(villager, "submit")
    assert chat.last_text(villager) == EN("flow.use_buttons")
    assert await _requests(sessions) == []
    await chat.click(villager, EN("flow.submit"))
    [request] = await _requests(sessions)
    assert request.body == "Our roof leaks and we are old; can someone help?"
    assert (request.category, request.anonymous) == ("hardship", True)


async def test_edit_fields_from_the_summary(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _officer(chat, sessions, "012345")
    villager = await _villager(chat, directory)
    await _fill_to_summary(chat, villager, ZH)
    await chat.click(villager, ZH("flow.edit"))
    assert chat.server.last_message_to(villager).buttons == [
        ZH(f"request_flow.edit.{f}")
        for f in ("category", "text", "photos", "location", "anonymous")
    ]
    await chat.click(villager, ZH("request_flow.edit.category"))
    await chat.click(villager, ZH("request_category.other"))
    assert ZH("request_flow.field_category", category="其他") in chat.last_text(villager)

    await chat.click(villager, ZH("flow.edit"))
    await chat.click(villager, ZH("request_flow.edit.text"))
    await chat.say(villager, "邻居的狗咬伤了我家孩子")
    assert "邻居的狗咬伤了我家孩子" in chat.last_text(villager)

    await chat.click(villager, ZH("flow.edit"))
    await chat.click(villager, ZH("request_flow.edit.photos"))
    assert ZH("request_flow.photos_replaced") in chat.last_text(villager)
    for update in await chat.server.send_album(villager, 2):
        await chat.send(update)
    await chat.click(villager, ZH("flow.photos_done"))
    assert ZH("request.field_photos", count=2) in chat.last_text(villager)

    await chat.click(villager, ZH("flow.edit"))
    await chat.click(villager, ZH("request_flow.edit.location"))
    await chat.click(villager, ZH("flow.send_location"), location=(34.2, 113.3))
    assert ZH("request.field_location") in chat.last_text(villager)
    assert ZH("request_flow.location_saved") not in chat.texts(villager)  # straight back

    await chat.click(villager, ZH("flow.edit"))
    await chat.click(villager, ZH("request_flow.edit.anonymous"))
    await chat.click(villager, ZH("request_flow.anonymous"))
    assert ZH("request_flow.field_anonymous") in chat.last_text(villager)
    await chat.click(villager, ZH("flow.submit"))

    [request] = await _requests(sessions)
    assert (request.category, request.body) == ("other", "邻居的狗咬伤了我家孩子")
    assert (request.latitude, request.longitude, request.anonymous) == (34.2, 113.3, True)
    [created] = await _events(sessions)
    assert len(created.photos) == 2


async def test_summary_cancel_stores_nothing(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _officer(chat, sessions, "012345")
    villager = await _villager(chat, directory)
    await _fill_to_summary(chat, villager, ZH)
    await chat.click(villager, ZH("flow.cancel"))  # the summary's inline Cancel
    assert chat.last_text(villager) == ZH("cancel.done")
    assert chat.keyboard_labels(villager)[0] == ZH("button.request")
    assert await _requests(sessions) == []


async def test_double_submit_stores_one_request(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    villager = await _villager(chat, directory)
    await _fill_to_summary(chat, villager, ZH)
    summary = chat.server.last_message_to(villager)
    submit = _buttons(summary)[ZH("flow.submit")]
    first = await chat.server.press(villager, summary.message_id, submit)
    second = await chat.server.press(villager, summary.message_id, submit, force=True)
    await chat.send(first)
    await chat.send(first)  # the same update delivered again
    await chat.send(second)  # a second tap
    [request] = await _requests(sessions)
    ref = store.reference(request.id)
    assert _answer(chat, second) == ZH("request_flow.already_sent", ref=ref)
    assert len(await _events(sessions)) == 1
    assert len(await _outbox(sessions, officer.id)) == 1
    sent = [t for t in chat.texts(villager) if t.startswith("✅ 已提交")]
    assert sent == [ZH("request_flow.sent", ref=ref, who="王警官", hours=72)]


async def test_a_restart_mid_request_continues_at_the_same_step(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _officer(chat, sessions, "012345")
    villager = await _villager(chat, directory)
    await chat.say(villager, "/request")
    await chat.click(villager, ZH("request_category.dispute"))
    await chat.say(villager, "宅基地界线有争议")
    # A new Dispatcher with nothing in memory stands for the restarted process.
    chat.dp = build_dispatcher(make_settings(), sessions, clock=chat.clock)
    await chat.send(await chat.server.send_photo(villager))
    assert chat.last_text(villager) == ZH("flow.photos_received", count=1, limit=10)
    await chat.click(villager, ZH("flow.photos_done"))
    assert chat.last_text(villager).startswith(_step(ZH, 4))
    await chat.click(villager, ZH("flow.skip"))
    await chat.click(villager, ZH("request_flow.with_name"))
    await chat.click(villager, ZH("flow.submit"))
    [request] = await _requests(sessions)
    assert (request.category, request.body) == ("dispute", "宅基地界线有争议")
    assert len((await _events(sessions))[0].photos) == 1


# --- what is checked before and at Submit --------------------------------------------------


async def test_a_villager_without_a_village_is_told_to_join(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    villager = await _villager(chat, directory)
    async with sessions() as s, s.begin():
        await villages.leave_current_village(s, villager.id)
    await chat.say(villager, "/request")
    assert chat.last_text(villager) == ZH("request_flow.no_village")
    await chat.say(villager, "hello")  # no flow was started
    assert chat.last_text(villager) == ZH("fallback.unknown")


async def test_the_open_request_limit(
    botapi: BotApiServer, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    async with running_chat(botapi, sessions, request_max_open=2) as chat:
        await _officer(chat, sessions, "012345")
        villager = await _villager(chat, directory, language_code="en")
        await _send(chat, villager, EN, "The street light is broken")
        await _fill_to_summary(chat, villager, EN, "Someone dumps rubbish by the pond")
        seeded = await _seed(sessions, chat, villager, directory, "Loud music every night")
        first, _ = (r.id for r in await _requests(sessions))
        refs = f"{store.reference(seeded)}, {store.reference(first)}"  # newest first

        await chat.click(villager, EN("flow.submit"))  # checked again at Submit
        assert chat.last_text(villager) == EN("request_flow.too_many_open", count=2, refs=refs)
        assert len(await _requests(sessions)) == 2
        await _resolve(sessions, chat, directory, seeded)
        await chat.click(villager, EN("flow.submit"))  # the draft was kept
        assert len(await _requests(sessions)) == 3

        await chat.say(villager, "/request")
        third = (await _requests(sessions))[-1].id
        refs = f"{store.reference(third)}, {store.reference(first)}"
        assert chat.last_text(villager) == EN("request_flow.too_many_open", count=2, refs=refs)
        await chat.say(villager, "hello")  # nothing else happened: no flow was started
        assert chat.last_text(villager) == EN("fallback.unknown")


async def test_the_message_rate_limit(
    botapi: BotApiServer, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    async with running_chat(botapi, sessions, villager_messages_per_minute=3) as chat:
        officer = await _officer(chat, sessions, "012345")
        villager = await _villager(chat, directory)
        await _send(chat, villager, ZH)
        [request] = await _requests(sessions)
        for n in (1, 2):
            await _press(
                chat,
                villager,
                await _card(chat, villager, request.id),
                ZH("request_button.add_message"),
            )
            await chat.say(villager, f"补充 {n}")
        await _press(
            chat,
            villager,
            await _card(chat, villager, request.id),
            ZH("request_button.add_message"),
        )
        await chat.say(villager, "补充 3")
        until = (chat.clock() + timedelta(seconds=60)).astimezone(chat.tz)
        assert chat.last_text(villager) == ZH("request_flow.wait_until", time=f"{until:%H:%M:%S}")
        await chat.send(await chat.server.send_photo(villager))
        assert chat.last_text(villager) == ZH("request_flow.wait_until", time=f"{until:%H:%M:%S}")
        assert [e.body for e in await _events(sessions)] == ["路灯坏了", "补充 1", "补充 2"]
        assert len(await _outbox(sessions, officer.id)) == 3  # refused ones were not relayed

        await chat.say(villager, "/cancel")
        await _fill_to_summary(chat, villager, ZH, "又一件事")
        await chat.click(villager, ZH("flow.submit"))  # a new request counts too
        assert chat.last_text(villager) == ZH("request_flow.wait_until", time=f"{until:%H:%M:%S}")
        assert len(await _requests(sessions)) == 1
        await chat.say(villager, "/cancel")

        chat.clock.now += timedelta(seconds=60)
        await _press(
            chat,
            villager,
            await _card(chat, villager, request.id),
            ZH("request_button.add_message"),
        )
        await chat.say(villager, "补充 3")
        assert chat.last_text(villager) == ZH("request_flow.message_sent", who="王警官")
        assert [e.body for e in await _events(sessions)][-1] == "补充 3"
        await chat.deliver()
        relayed = [t for t in chat.texts(officer) if t.startswith("💬")]
        assert [t.rsplit("\n", 1)[-1] for t in relayed] == ["补充 1", "补充 2", "补充 3"]


async def test_the_rate_limit_applies_at_submit(
    botapi: BotApiServer, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    async with running_chat(botapi, sessions, villager_messages_per_minute=1) as chat:
        await _officer(chat, sessions, "012345")
        villager = await _villager(chat, directory, language_code="en")
        await _seed(sessions, chat, villager, directory, "Earlier one", minutes_ago=0)
        await _fill_to_summary(chat, villager, EN, "Second one")
        await chat.click(villager, EN("flow.submit"))
        until = (chat.clock() + timedelta(seconds=60)).astimezone(chat.tz)
        assert chat.last_text(villager) == EN("request_flow.wait_until", time=f"{until:%H:%M:%S}")
        assert len(await _requests(sessions)) == 1
        chat.clock.now += timedelta(seconds=61)
        await chat.click(villager, EN("flow.submit"))
        assert len(await _requests(sessions)) == 2


async def test_a_village_change_before_submit_stores_nothing(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _officer(chat, sessions, "012345")
    villager = await _villager(chat, directory)
    await _fill_to_summary(chat, villager, ZH)
    async with sessions() as s, s.begin():
        user = await s.get(User, villager.id)
        assert user is not None
        await villages.join_village(s, user, directory.villages[1].id)
    await chat.click(villager, ZH("flow.submit"))
    assert chat.last_text(villager) == ZH("request_flow.village_changed")
    assert await _requests(sessions) == []
    assert chat.server.messages_to(villager)[-2].buttons == []


async def test_a_village_without_officer_goes_to_the_supervisor_or_is_refused(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    villager = await _villager(chat, directory, 2, language_code="en")  # 东关社区: no officer
    await chat.say(villager, "/request")
    assert chat.last_text(villager) == EN("request_flow.unrouted", village="东关社区")
    assert "110" in chat.last_text(villager)
    await chat.say(villager, "hello")
    assert chat.last_text(villager) == EN("fallback.unknown")

    chief = await _supervisor(chat, sessions, "S02")
    await _fill_to_summary(chat, villager, EN, "A stranger keeps knocking on doors at night")
    await chat.click(villager, EN("flow.submit"))
    [request] = await _requests(sessions)
    assert request.officer_id is None and request.supervisor_id is not None
    who = EN("request_who.supervisor", name="刘所长")
    assert chat.last_text(villager) == EN(
        "request_flow.sent", ref=store.reference(request.id), who=who, hours=72
    )
    await chat.deliver()
    assert "A stranger keeps knocking" in chat.last_text(chief)

    # The station's supervisor goes away while a second request waits at its summary.
    await _fill_to_summary(chat, villager, EN, "The knocking goes on")
    async with sessions() as s, s.begin():
        await s.execute(delete(SupervisorStation))
    await chat.click(villager, EN("flow.submit"))
    assert chat.last_text(villager) == EN("request_flow.unrouted", village="东关社区")
    assert len(await _requests(sessions)) == 1
    assert chat.keyboard_labels(villager)[0] == EN("button.request")


async def test_only_villagers_send_requests(chat: Chat, directory: Directory) -> None:
    stranger = chat.server.user(language_code="en")
    await chat.say(stranger, "/request")
    assert chat.last_text(stranger) == EN("fallback.stranger")
    await chat.say(stranger, "/myrequests")
    assert chat.last_text(stranger) == EN("fallback.stranger")
    forged = await _forge(chat, stranger, MyRequestCb(action="open", request_id=1).pack())
    assert _answer(chat, forged) == EN("callback.stale")
    forged = await _forge(chat, stranger, FlowCb(flow="r", draft="0" * 16, action="submit").pack())
    assert _answer(chat, forged) == EN("callback.stale")


# --- /myrequests ---------------------------------------------------------------------------


async def test_my_requests_open_first_with_paging_and_cards(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _officer(chat, sessions, "012345")
    villager = await _villager(chat, directory, language_code="en")
    await chat.click(villager, EN("button.myrequests"))
    assert chat.last_text(villager) == EN("request_flow.my_none")

    ids = [await _seed(sessions, chat, villager, directory, f"Matter {n}") for n in range(7)]
    for request_id in ids[4:6]:
        await _resolve(sessions, chat, directory, request_id)
    order = [ids[6], ids[3], ids[2], ids[1], ids[0], ids[5], ids[4]]  # open first, newest first

    await chat.say(villager, "/myrequests")
    listing = chat.server.last_message_to(villager)
    text = listing.text or ""
    assert text.startswith(EN("request_flow.my_title", count=7))
    assert EN("request_flow.my_page", page=1, pages=2) in text
    assert [line.split(" ")[0] for line in text.splitlines() if line.startswith("R")] == [
        store.reference(i) for i in order[:5]
    ]
    new = EN("request_status.new")
    assert listing.buttons == [
        *(EN("request_flow.my_button", ref=store.reference(i), status=new) for i in order[:5]),
        EN("request_button.next"),
    ]
    await chat.click(villager, EN("request_button.next"))
    listing = chat.server.last_message_to(villager)  # the same message, edited
    assert EN("request_flow.my_page", page=2, pages=2) in (listing.text or "")
    resolved = EN("request_status.resolved")
    assert listing.buttons == [
        *(EN("request_flow.my_button", ref=store.reference(i), status=resolved) for i in order[5:]),
        EN("request_button.previous"),
    ]
    forged = await _forge(chat, villager, MyRequestPageCb(page=2).pack())
    assert _answer(chat, forged) == EN("callback.stale")
    forged = await _forge(chat, villager, MyRequestPageCb(page=-1).pack())
    assert _answer(chat, forged) == EN("callback.stale")

    await chat.click(
        villager, EN("request_flow.my_button", ref=store.reference(ids[5]), status=resolved)
    )
    card = chat.server.last_message_to(villager)
    assert (card.text or "").startswith(
        EN("request.ref_title", ref=store.reference(ids[5]), category=EN("request_category.other"))
    )
    assert EN("request.field_handler", who="Officer 王警官") in (card.text or "")
    assert card.buttons == [
        *(EN("request_button.star", rating=n) for n in range(1, 6)),
        EN("request_button.not_solved"),
    ]
    await chat.click(villager, EN("request_button.previous"))
    await chat.click(
        villager, EN("request_flow.my_button", ref=store.reference(ids[6]), status=new)
    )
    assert chat.server.last_message_to(villager).buttons == [EN("request_button.add_message")]


# --- adding messages -----------------------------------------------------------------------


async def test_adding_a_text_and_an_album_reaches_the_officer(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    villager = await _villager(chat, directory, first_name="李四", phone=PHONE)
    await _send(chat, villager, ZH)
    [request] = await _requests(sessions)
    ref = store.reference(request.id)

    await _press(
        chat, villager, await _card(chat, villager, request.id), ZH("request_button.add_message")
    )
    assert chat.last_text(villager) == ZH("request_flow.ask_message", ref=ref, limit=2000)
    assert chat.keyboard_labels(villager) == [ZH("flow.cancel")]
    for wrong in (chat.server.send_sticker(villager), chat.server.send_document(villager)):
        await chat.send(await wrong)
        assert chat.last_text(villager) == ZH("request_flow.bad_message")
    await chat.say(villager, "z" * 4096)
    assert chat.last_text(villager) == ZH("flow.text_too_long", limit=2000)
    await chat.say(villager, "\x00 ")
    assert chat.last_text(villager) == ZH("flow.text_empty")
    await chat.say(villager, "路灯在村委会门口，第三根")
    assert chat.last_text(villager) == ZH("request_flow.message_sent", who="王警官")
    assert chat.keyboard_labels(villager)[0] == ZH("button.request")

    await _press(
        chat, villager, await _card(chat, villager, request.id), ZH("request_button.add_message")
    )
    before = len(chat.server.messages_to(villager))
    for update in await chat.server.send_album(villager, 2, caption="白天拍的"):
        await chat.send(update)
    assert chat.texts(villager)[before:] == [ZH("request_flow.message_sent", who="王警官")]
    await chat.say(villager, "你好")  # the album is over: nothing is added any more
    assert chat.last_text(villager) == ZH("fallback.unknown")

    events = await _events(sessions)
    assert [(e.event, e.body, len(e.photos)) for e in events] == [
        ("created", "路灯坏了", 0),
        ("villager_message", "路灯在村委会门口，第三根", 0),
        ("villager_message", "白天拍的", 2),
    ]
    assert all(e.user_id == villager.id for e in events)

    await chat.deliver()
    received = chat.server.messages_to(officer)[-3:]
    assert received[0].text == ZH(
        "request_note.villager_message", ref=ref, who="李四", text="路灯在村委会门口，第三根"
    )
    assert received[0].buttons == [
        ZH(f"request_button.{b}")
        for b in ("accept", "reply", "forward", "resolve", "close", "open")
    ]
    assert received[1].caption == ZH(
        "request_note.villager_message", ref=ref, who="李四", text="白天拍的"
    )
    photos = [c.params["photo"] for c in chat.server.calls_of("sendPhoto")]
    assert photos == [p[0] for p in events[2].photos]


async def test_a_finished_request_takes_no_more_messages(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    villager = await _villager(chat, directory, language_code="en")
    await _send(chat, villager, EN)
    [request] = await _requests(sessions)
    ref = store.reference(request.id)
    card = await _card(chat, villager, request.id)
    await _press(chat, villager, card, EN("request_button.add_message"))
    await _resolve(sessions, chat, directory, request.id)  # meanwhile, the officer resolves it
    await chat.say(villager, "One more thing")
    assert chat.last_text(villager) == EN("request_flow.message_finished", ref=ref)
    press = await _press(chat, villager, card, EN("request_button.add_message"))
    assert _answer(chat, press) == EN("request_flow.message_finished", ref=ref)
    assert len(await _events(sessions)) == 2  # created, resolved
    assert len(await _outbox(sessions, officer.id)) == 1


async def test_add_message_while_another_flow_runs_keeps_that_flow(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    await _officer(chat, sessions, "012345")
    villager = await _villager(chat, directory)
    await _send(chat, villager, ZH)
    [request] = await _requests(sessions)
    card = await _card(chat, villager, request.id)
    await chat.say(villager, "/request")
    await chat.click(villager, ZH("request_category.other"))
    press = await _press(chat, villager, card, ZH("request_button.add_message"))
    assert _answer(chat, press) == ZH("fallback.in_flow")
    await chat.say(villager, "另一件事")
    assert chat.last_text(villager).startswith(_step(ZH, 3))  # the draft went on


# --- rating and "not solved" ---------------------------------------------------------------


async def test_rating_a_resolved_request_from_its_notification(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    villager = await _villager(chat, directory)
    await _send(chat, villager, ZH)
    [request] = await _requests(sessions)
    ref = store.reference(request.id)
    await _resolve(sessions, chat, directory, request.id, notify=True)
    await chat.deliver()
    note = chat.server.last_message_to(villager)
    assert note.buttons == [
        *(ZH("request_button.star", rating=n) for n in range(1, 6)),
        ZH("request_button.not_solved"),
        ZH("request_button.open"),
    ]
    star = _buttons(note)[ZH("request_button.star", rating=4)]
    await chat.click(villager, ZH("request_button.star", rating=4))
    assert chat.last_text(villager) == ZH("request_flow.rated", rating=4, who="王警官")
    assert chat.server.messages_to(villager)[-2].buttons == []  # the rating buttons are gone
    [stored] = await _requests(sessions)
    assert (stored.rating, stored.status) == (4, "resolved")
    assert [e.event for e in await _events(sessions)] == ["created", "resolved", "rated"]

    again = await chat.send(await chat.server.press(villager, note.message_id, star, force=True))
    assert _answer(chat, again) == ZH("request_flow.refused_already_rated", ref=ref)
    unsolved = MyRequestCb(action="unsolved", request_id=request.id).pack()
    again = await _forge(chat, villager, unsolved)
    assert _answer(chat, again) == ZH("request_flow.refused_already_rated", ref=ref)
    assert len(await _events(sessions)) == 3

    await chat.deliver()
    assert chat.last_text(officer) == ZH("request_note.rated", ref=ref, rating=4)
    card = await _card(chat, villager, request.id)
    assert ZH("request.field_rating", rating=4) in (card.text or "")
    assert card.buttons == []  # rated: nothing more to do


async def test_not_solved_reopens_and_invites_a_message(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    villager = await _villager(chat, directory, language_code="en")
    await _send(chat, villager, EN)
    [request] = await _requests(sessions)
    ref = store.reference(request.id)
    early = await _forge(
        chat, villager, MyRequestCb(action="rate", request_id=request.id, value=5).pack()
    )
    assert _answer(chat, early) == EN("request_flow.refused_not_resolved", ref=ref)

    await _resolve(sessions, chat, directory, request.id)
    card = await _card(chat, villager, request.id)
    await _press(chat, villager, card, EN("request_button.not_solved"))
    assert chat.last_text(villager) == EN(
        "request_flow.reopened", ref=ref, who="Officer 王警官", hours=72
    )
    assert chat.server.last_message_to(villager).buttons == [EN("request_button.add_message")]
    [stored] = await _requests(sessions)
    assert stored.status == "acknowledged" and stored.rating is None
    assert [e.event for e in await _events(sessions)] == ["created", "resolved", "reopened"]
    unsolved = _buttons(card)[EN("request_button.not_solved")]  # a second tap
    again = await chat.send(
        await chat.server.press(villager, card.message_id, unsolved, force=True)
    )
    assert _answer(chat, again) == EN("request_flow.refused_not_resolved", ref=ref)
    assert len(await _events(sessions)) == 3

    await chat.click(villager, EN("request_button.add_message"))
    await chat.say(villager, "The light is still off")
    assert chat.last_text(villager) == EN("request_flow.message_sent", who="Officer 王警官")
    await chat.deliver()
    texts = chat.texts(officer)
    assert ZH("request_note.reopened", ref=ref, answer=72) in texts
    assert texts[-1].endswith("The light is still off")


async def test_forged_buttons_for_another_villagers_request_change_nothing(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    owner = await _villager(chat, directory)
    other = await _villager(chat, directory, language_code="en")
    await _send(chat, owner, ZH)
    [request] = await _requests(sessions)
    await _resolve(sessions, chat, directory, request.id)
    await chat.say(other, "/myrequests")
    for action, value in (("open", 0), ("msg", 0), ("rate", 5), ("unsolved", 0)):
        data = MyRequestCb(action=action, request_id=request.id, value=value).pack()
        forged = await _forge(chat, other, data)
        assert _answer(chat, forged) == EN("callback.stale"), action
    for data in (
        MyRequestCb(action="rate", request_id=request.id, value=9).pack(),  # not a rating
        MyRequestCb(action="delete", request_id=request.id).pack(),
        MyRequestCb(action="open", request_id=2**40).pack(),
    ):
        forged = await _forge(chat, owner, data)
        assert _answer(chat, forged) == ZH("callback.stale"), data
    [stored] = await _requests(sessions)
    assert (stored.status, stored.rating) == ("resolved", None)
    assert len(await _events(sessions)) == 2
    assert len(await _outbox(sessions, officer.id)) == 1
