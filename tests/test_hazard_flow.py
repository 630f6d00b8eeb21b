"""Hazard reports and closing them, through the real Dispatcher, HTTP and PostgreSQL."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.flows.hazard import HazardCb
from bot.i18n import LOCALES, Translator
from core.hazards import (
    DEFAULT_DEPARTMENTS,
    HazardCategory,
    HazardStatus,
    Severity,
    reinspection_due,
)
from storage import hazards, invites
from storage.models import Hazard, Photo
from tests.botapi import BotApiServer, SimUser
from tests.botapi.state import SentMessage
from tests.factories import Directory
from tests.harness import Chat, running_chat

ZH, EN = Translator("zh"), Translator("en")
COUNTY = ZoneInfo("Asia/Shanghai")  # the settings' default time zone


async def _officer(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], badge: str, **kw: str
) -> SimUser:
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_officer_invite(
            s, badge=badge, now=chat.clock(), ttl=timedelta(days=7)
        )
    user = chat.server.user(**kw)  # type: ignore[arg-type]
    await chat.say(user, f"/start {issued.payload}")
    return user


async def _hazards(sessions: async_sessionmaker[AsyncSession]) -> list[Hazard]:
    async with sessions() as s:
        return list(await s.scalars(select(Hazard).order_by(Hazard.id)))


async def _photos(sessions: async_sessionmaker[AsyncSession]) -> list[Photo]:
    async with sessions() as s:
        return list(await s.scalars(select(Photo).order_by(Photo.id)))


def _buttons(message: SentMessage) -> dict[str, str]:
    markup = message.reply_markup or {}
    return {b["text"]: b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row}


def _answer(chat: Chat, update: dict[str, Any]) -> str | None:
    answer = chat.server.callback_answer(update)
    return None if answer is None else answer["text"]


def _step(t: Translator, n: int) -> str:
    return t("flow.step", step=n, total=6)


async def _seed(
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    now: datetime,
    *,
    officer: int = 0,
    village: int = 0,
    severity: Severity = Severity.LOW,
    days_ago: float = 0,
    description: str = "村口变压器护栏缺失",
    photo: tuple[str, str] | None = None,
) -> int:
    reported = now - timedelta(days=days_ago)
    async with sessions() as s, s.begin():
        saved = await hazards.save_hazard(
            s,
            hazards.NewHazard(
                draft_id=secrets.token_hex(8),
                officer_id=directory.officers[officer].id,
                village_id=directory.villages[village].id,
                category=HazardCategory.ELECTRICAL.value,
                severity=severity.value,
                description=description,
                latitude=None,
                longitude=None,
                distance_m=None,
                reported_by=1,
                reported_at=reported,
                due_at=reinspection_due(reported, severity),
                photos=[photo or (f"file-{secrets.token_hex(4)}", secrets.token_hex(6))],
            ),
        )
    return saved.id


def _listed(chat: Chat, user: SimUser, hazard_id: int) -> SentMessage:
    """The /hazards message showing this hazard (the latest one)."""
    ref = f"H{hazard_id:06d}"
    return [m for m in chat.server.messages_to(user) if (m.text or "").startswith(ref)][-1]


async def _press(chat: Chat, user: SimUser, message: SentMessage, label: str) -> dict[str, Any]:
    return await chat.send(
        await chat.server.press(user, message.message_id, _buttons(message)[label])
    )


async def _fill_to_summary(chat: Chat, officer: SimUser, t: Translator) -> None:
    await chat.say(officer, "/hazard")
    await chat.click(officer, "张庄村")
    await chat.click(officer, t("hazard_category.fire"))
    await chat.click(officer, t("severity.low"))
    await chat.say(officer, "柴草堆在灶台旁")
    await chat.send(await chat.server.send_photo(officer))
    await chat.click(officer, t("flow.photos_done"))
    await chat.click(officer, t("flow.skip"))


# --- reporting -----------------------------------------------------------------------------


async def test_complete_high_severity_report_in_chinese_with_album_and_location(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    await chat.click(officer, ZH("button.hazard"))
    assert chat.last_text(officer) == _step(ZH, 1) + "\n" + ZH("hazard.ask_village")
    await chat.click(officer, "张庄村")
    assert chat.last_text(officer) == _step(ZH, 2) + "\n" + ZH("hazard.ask_category")
    assert chat.server.last_message_to(officer).buttons == [
        ZH(f"hazard_category.{c.value}") for c in HazardCategory
    ]
    await chat.click(officer, ZH("hazard_category.fire"))
    assert chat.last_text(officer).startswith(_step(ZH, 3))
    await chat.click(officer, ZH("severity.high"))
    assert chat.last_text(officer).startswith(_step(ZH, 4))
    await chat.say(officer, "村东加油站旁堆放大量秸秆，距民房不足5米 🔥")
    assert chat.last_text(officer).startswith(_step(ZH, 5))
    assert chat.keyboard_labels(officer) == [ZH("flow.photos_done"), ZH("flow.cancel")]

    before = len(chat.server.messages_to(officer))
    for update in await chat.server.send_album(officer, 3):
        await chat.send(update)
    acks = chat.server.messages_to(officer)[before:]
    assert [a.text for a in acks] == [ZH("flow.photos_received", count=3, limit=10)]
    await chat.click(officer, ZH("flow.photos_done"))
    assert chat.last_text(officer).startswith(_step(ZH, 6))
    await chat.click(officer, ZH("flow.send_location"), location=(34.1005, 113.2005))

    summary = chat.last_text(officer)
    for expected in (
        ZH("hazard.field.village", value="张庄村"),
        ZH("hazard.field.category", value="消防安全"),
        ZH("hazard.field.severity", value="高风险"),
        ZH("hazard.field.description", value="村东加油站旁堆放大量秸秆，距民房不足5米 🔥"),
        ZH("hazard.field.photos", value=3),
        "距村中心约",
    ):
        assert expected in summary, expected
    await chat.click(officer, ZH("flow.submit"))

    [hazard] = await _hazards(sessions)
    due = chat.clock() + timedelta(days=7)
    shanghai = due.astimezone(COUNTY)
    assert chat.last_text(officer) == (
        ZH("hazard.saved", ref=f"H{hazard.id:06d}", village="张庄村")
        + "\n"
        + ZH("hazard.due", due=f"{shanghai:%Y-%m-%d %H:%M}")
    )
    assert (hazard.category, hazard.severity, hazard.status) == ("fire", "high", "open")
    assert hazard.village_id == directory.villages[0].id
    assert hazard.officer_id == directory.officers[0].id and hazard.reported_by == officer.id
    assert hazard.reported_at == chat.clock() and hazard.due_at == due
    assert hazard.distance_m is not None and hazard.distance_m < 100
    photos = await _photos(sessions)
    assert [(p.hazard_id, p.role, p.position) for p in photos] == [
        (hazard.id, "evidence", i) for i in range(3)
    ]
    assert chat.keyboard_labels(officer)[:2] == [ZH("button.visit"), ZH("button.hazard")]


async def test_single_village_report_in_english_without_location(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "067890", language_code="en")
    await chat.say(officer, "/hazard")
    assert chat.last_text(officer) == _step(EN, 2) + "\n" + EN("hazard.ask_category")
    await chat.click(officer, EN("hazard_category.traffic"))
    await chat.click(officer, EN("severity.medium"))
    await chat.say(officer, "  Pothole on the bridge\r\n\r\n\r\n\r\nno warning sign  ")
    await chat.send(await chat.server.send_photo(officer))
    assert chat.last_text(officer) == EN("flow.photos_received", count=1, limit=10)
    await chat.click(officer, EN("flow.photos_done"))
    await chat.click(officer, EN("flow.skip"))
    summary = chat.last_text(officer)
    assert EN("hazard.field.location", value=EN("hazard.no_location")) in summary
    assert EN("hazard.field.severity", value="Medium") in summary
    await chat.click(officer, EN("flow.submit"))

    [hazard] = await _hazards(sessions)
    assert chat.last_text(officer) == EN("hazard.saved", ref=f"H{hazard.id:06d}", village="张庄村")
    assert hazard.description == "Pothole on the bridge\n\n\nno warning sign"
    assert (hazard.severity, hazard.due_at, hazard.latitude, hazard.distance_m) == (
        "medium",
        None,
        None,
        None,
    )
    assert len(await _photos(sessions)) == 1


async def test_at_least_one_photo_is_required(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "067890", language_code="en")
    await chat.say(officer, "/hazard")
    await chat.click(officer, EN("hazard_category.other"))
    await chat.click(officer, EN("severity.low"))
    await chat.say(officer, "Loose manhole cover")
    await chat.click(officer, EN("flow.photos_done"))
    assert chat.last_text(officer) == EN("hazard.photo_required")
    assert EN("flow.no_photos") not in chat.keyboard_labels(officer)
    await chat.say(officer, EN("flow.no_photos"))  # typed anyway: not a way out
    assert EN("hazard.bad_photo") in chat.texts(officer)[-2]
    await chat.send(await chat.server.send_photo(officer))
    await chat.click(officer, EN("flow.photos_done"))
    assert chat.last_text(officer).startswith(_step(EN, 6))


async def test_wrong_input_at_every_step_keeps_the_step(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345", language_code="en")
    await chat.say(officer, "/hazard")
    for wrong in (chat.server.send_text(officer, "Zhangzhuang"), chat.server.send_sticker(officer)):
        await chat.send(await wrong)
        assert chat.last_text(officer) == EN("flow.use_buttons")
    await chat.click(officer, "张庄村")
    category_prompt = chat.server.last_message_to(officer)

    await chat.say(officer, "fire")
    assert chat.last_text(officer) == EN("flow.use_buttons")
    await chat.send(await chat.server.send_photo(officer))
    assert chat.last_text(officer) == EN("flow.use_buttons")
    await chat.click(officer, EN("hazard_category.electrical"))
    await chat.say(officer, "🔴")
    assert chat.last_text(officer) == EN("flow.use_buttons")
    # A button of a step already answered does nothing.
    again = await _press(chat, officer, category_prompt, EN("hazard_category.fire"))
    assert _answer(chat, again) == EN("callback.stale")
    await chat.click(officer, EN("severity.high"))

    description_prompt = chat.last_text(officer)
    await chat.send(await chat.server.send_sticker(officer))
    assert chat.texts(officer)[-2:] == [EN("hazard.bad_description"), description_prompt]
    await chat.send(await chat.server.send_document(officer))
    assert chat.texts(officer)[-2:] == [EN("hazard.bad_description"), description_prompt]
    await chat.say(officer, "x" * 4096)
    assert chat.last_text(officer) == EN("flow.text_too_long", limit=1000)
    await chat.say(officer, "y" * 1001)
    assert chat.last_text(officer) == EN("flow.text_too_long", limit=1000)
    await chat.say(officer, "\x00\x00 \x00")
    assert chat.last_text(officer) == EN("flow.text_empty")
    await chat.say(officer, "🚓 🔥!!")
    assert chat.last_text(officer) == EN("hazard.description_no_words")
    await chat.say(officer, "/nonsense")
    assert chat.last_text(officer) == EN("fallback.in_flow")
    await chat.say(officer, "Bare wires\x00 hanging over the lane")
    assert chat.last_text(officer).startswith(_step(EN, 5))

    for wrong in (
        chat.server.send_text(officer, "photo coming"),
        chat.server.send_sticker(officer),
        chat.server.send_document(officer, "p.jpg", b"\xff\xd8", mime_type="image/jpeg"),
        chat.server.send_location(officer, 34.1, 113.2),
    ):
        await chat.send(await wrong)
        assert EN("hazard.bad_photo") in chat.texts(officer)[-2]
        assert chat.last_text(officer).startswith(_step(EN, 5))
    await chat.click(officer, EN("flow.photos_done"))
    assert chat.last_text(officer) == EN("hazard.photo_required")
    photo = await chat.server.send_photo(officer)
    await chat.send(photo)
    await chat.send(chat.server.inject({"message": {**photo["message"], "message_id": 999}}))
    assert chat.last_text(officer) == EN("flow.photo_duplicate")
    await chat.click(officer, EN("flow.photos_done"))

    for wrong in (
        chat.server.send_text(officer, "by the well"),
        chat.server.send_photo(officer),
        chat.server.send_sticker(officer),
    ):
        await chat.send(await wrong)
        assert EN("hazard.bad_location") in chat.texts(officer)[-2]
        assert chat.last_text(officer).startswith(_step(EN, 6))
    await chat.click(officer, EN("flow.send_location"), location=(34.3, 113.5))  # ~30 km away
    far = chat.texts(officer)[-3]
    assert far.startswith("Note: this location is about") and "(2000 m)" in far

    await chat.say(officer, "submit")
    assert chat.last_text(officer) == EN("flow.use_buttons")
    await chat.click(officer, EN("flow.submit"))
    [hazard] = await _hazards(sessions)
    assert hazard.description == "Bare wires hanging over the lane"
    assert hazard.category == "electrical" and hazard.severity == "high"
    assert hazard.distance_m is not None and hazard.distance_m > 20_000
    assert len(await _photos(sessions)) == 1


async def test_edit_fields_from_the_summary(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    await _fill_to_summary(chat, officer, ZH)
    await chat.click(officer, ZH("flow.edit"))
    assert chat.server.last_message_to(officer).buttons == [
        ZH(f"hazard.edit.{f}")
        for f in ("village", "category", "severity", "description", "photos", "location")
    ]
    await chat.click(officer, ZH("hazard.edit.severity"))
    await chat.click(officer, ZH("severity.high"))
    assert ZH("hazard.field.severity", value="高风险") in chat.last_text(officer)  # straight back

    await chat.click(officer, ZH("flow.edit"))
    await chat.click(officer, ZH("hazard.edit.description"))
    await chat.say(officer, "灶台旁堆放柴草，已提醒户主")
    assert ZH("hazard.field.description", value="灶台旁堆放柴草，已提醒户主") in chat.last_text(
        officer
    )

    await chat.click(officer, ZH("flow.edit"))
    await chat.click(officer, ZH("hazard.edit.photos"))
    assert ZH("hazard.photos_replaced") in chat.last_text(officer)
    await chat.click(officer, ZH("flow.photos_done"))
    assert chat.last_text(officer) == ZH("hazard.photo_required")  # the old photo is gone
    for update in await chat.server.send_album(officer, 2):
        await chat.send(update)
    await chat.click(officer, ZH("flow.photos_done"))
    assert ZH("hazard.field.photos", value=2) in chat.last_text(officer)

    await chat.click(officer, ZH("flow.edit"))
    await chat.click(officer, ZH("hazard.edit.location"))
    await chat.click(officer, ZH("flow.send_location"), location=(34.2001, 113.3001))
    await chat.click(officer, ZH("flow.edit"))
    await chat.click(officer, ZH("hazard.edit.village"))
    await chat.click(officer, "李庄村")
    summary = chat.last_text(officer)
    assert ZH("hazard.field.village", value="李庄村") in summary
    await chat.click(officer, ZH("flow.submit"))

    [hazard] = await _hazards(sessions)
    assert hazard.village_id == directory.villages[1].id
    assert hazard.severity == "high" and hazard.due_at is not None
    assert hazard.description == "灶台旁堆放柴草，已提醒户主"
    # The distance follows the village chosen after the location was given.
    assert hazard.distance_m is not None and hazard.distance_m < 100
    assert len(await _photos(sessions)) == 2


async def test_double_submit_and_redelivery_store_one_hazard(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    await _fill_to_summary(chat, officer, ZH)
    summary = chat.server.last_message_to(officer)
    submit = _buttons(summary)[ZH("flow.submit")]
    first = await chat.server.press(officer, summary.message_id, submit)
    second = await chat.server.press(officer, summary.message_id, submit, force=True)
    await chat.send(first)
    await chat.send(first)  # the same update delivered again
    await chat.send(second)  # a second tap
    assert len(await _hazards(sessions)) == 1
    assert len(await _photos(sessions)) == 1
    assert _answer(chat, second) == ZH("callback.stale")
    saved = [t for t in chat.texts(officer) if t.startswith("✅ 隐患已登记")]
    assert len(saved) == 1


async def test_cancel_and_buttons_of_an_older_draft(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    await chat.say(officer, "/hazard")
    await chat.click(officer, "张庄村")
    old = chat.server.last_message_to(officer)
    await chat.say(officer, "/cancel")
    assert chat.last_text(officer) == ZH("cancel.done")
    stale = await _press(chat, officer, old, ZH("hazard_category.fire"))
    assert _answer(chat, stale) == ZH("callback.stale")

    await chat.say(officer, "/hazard")
    await chat.click(officer, "李庄村")
    stale = await _press(chat, officer, old, ZH("hazard_category.fire"))  # older draft
    assert _answer(chat, stale) == ZH("callback.stale")
    assert chat.last_text(officer) == _step(ZH, 2) + "\n" + ZH("hazard.ask_category")
    await chat.click(officer, ZH("hazard_category.flood_geological"))
    await chat.click(officer, ZH("severity.medium"))
    await chat.say(officer, "河堤有裂缝")
    await chat.send(await chat.server.send_photo(officer))
    await chat.click(officer, ZH("flow.photos_done"))
    await chat.click(officer, ZH("flow.skip"))
    await chat.click(officer, ZH("flow.cancel"))  # the summary's inline Cancel
    assert chat.last_text(officer) == ZH("cancel.done")
    assert await _hazards(sessions) == []


async def test_only_officers_can_report_or_list(chat: Chat, directory: Directory) -> None:
    stranger = chat.server.user(language_code="en")
    await chat.say(stranger, "/hazard")
    assert chat.last_text(stranger) == EN("fallback.stranger")
    await chat.say(stranger, "/hazards")
    assert chat.last_text(stranger) == EN("fallback.stranger")
    forged = await chat.send(
        await chat.server.press(stranger, 1, HazardCb(action="fix", hazard_id=1).pack(), force=True)
    )
    assert _answer(chat, forged) == EN("callback.stale")


# --- /hazards --------------------------------------------------------------------------------


async def test_open_hazards_are_listed_oldest_first(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345", language_code="en")
    await chat.click(officer, EN("button.hazards"))
    assert chat.last_text(officer) == EN("hazard.none")

    now = chat.clock()
    recent = await _seed(sessions, directory, now, village=1, days_ago=1, description="A " * 100)
    overdue = await _seed(sessions, directory, now, severity=Severity.HIGH, days_ago=10)
    pending = await _seed(sessions, directory, now, severity=Severity.HIGH, days_ago=2)
    closed = await _seed(sessions, directory, now, days_ago=20)
    others = await _seed(sessions, directory, now, officer=1, days_ago=30)
    async with sessions() as s, s.begin():
        assert await hazards.close_hazard(
            s,
            hazard_id=closed,
            officer_id=directory.officers[0].id,
            how="health",
            note="交卫健",
            after_photo=None,
            now=now,
        )
        assert await hazards.count_open(s, officer_id=directory.officers[0].id) == 3

    before = len(chat.server.messages_to(officer))
    await chat.say(officer, "/hazards")
    sent = chat.server.messages_to(officer)[before:]
    assert sent[0].text == EN("hazard.list_title", count=3)
    listed = sent[1:]
    assert [m.text.split(" ")[0] for m in listed if m.text] == [
        f"H{overdue:06d}",
        f"H{pending:06d}",
        f"H{recent:06d}",
    ]
    assert all(f"H{closed:06d}" not in (m.text or "") for m in sent)
    assert all(f"H{others:06d}" not in (m.text or "") for m in sent)
    first, second, third = (m.text or "" for m in listed)
    assert "张庄村" in first and "Electrical safety" in first and "Severity: High" in first
    assert "(overdue)" in first and "Re-inspection due:" in first
    assert "Re-inspection due:" in second and "(overdue)" not in second
    assert "Re-inspection due:" not in third and "李庄村" in third
    assert ("A " * 39).strip() + "…" in third and ("A " * 41) not in third  # shortened
    reported = (now - timedelta(days=10)).astimezone(COUNTY)
    assert f"Reported: {reported:%Y-%m-%d}" in first
    for message in listed:
        assert message.buttons == [EN("hazard.rectified_button"), EN("hazard.hand_over_button")]


async def test_a_long_list_is_cut_and_says_so(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    for days in range(12):
        await _seed(sessions, directory, chat.clock(), days_ago=days)
    before = len(chat.server.messages_to(officer))
    await chat.click(officer, ZH("button.hazards"))
    sent = chat.server.messages_to(officer)[before:]
    assert len(sent) == 12  # title, ten hazards, the note
    assert sent[-1].text == ZH("hazard.list_more", shown=10, total=12)


# --- closing ---------------------------------------------------------------------------------


async def test_rectify_with_an_after_photo_and_a_note(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    report_photo = await chat.server.send_photo(officer)  # not sent to the bot yet
    largest = max(report_photo["message"]["photo"], key=lambda p: p["width"] * p["height"])
    hazard_id = await _seed(
        sessions,
        directory,
        chat.clock(),
        photo=(largest["file_id"], largest["file_unique_id"]),
    )
    await chat.say(officer, "/hazards")
    listing = _listed(chat, officer, hazard_id)
    press = await _press(chat, officer, listing, ZH("hazard.rectified_button"))
    assert chat.server.callback_answer(press) is not None and _answer(chat, press) is None
    assert chat.last_text(officer) == ZH("hazard.ask_after_photo", ref=f"H{hazard_id:06d}")
    assert chat.keyboard_labels(officer) == [ZH("flow.cancel")]

    await chat.say(officer, "已整改")
    assert chat.last_text(officer) == ZH("hazard.after_photo_needed")
    await chat.send(await chat.server.send_document(officer))
    assert chat.last_text(officer) == ZH("hazard.after_photo_needed")
    await chat.send(report_photo)  # the photo the hazard was reported with
    assert chat.last_text(officer) == ZH("hazard.after_same_photo")
    await chat.send(await chat.server.send_photo(officer))
    assert chat.last_text(officer) == ZH("hazard.ask_after_note", limit=1000)
    await chat.send(await chat.server.send_sticker(officer))
    assert chat.last_text(officer) == ZH("hazard.note_text_only")
    await chat.say(officer, "z" * 1001)
    assert chat.last_text(officer) == ZH("flow.text_too_long", limit=1000)
    await chat.say(officer, "已加装护栏，张贴警示标志")
    assert chat.last_text(officer) == ZH("hazard.rectified_done", ref=f"H{hazard_id:06d}")

    [hazard] = await _hazards(sessions)
    assert (hazard.status, hazard.closed_how) == ("rectified", "rectified")
    assert hazard.closing_note == "已加装护栏，张贴警示标志"
    assert hazard.closed_at == chat.clock()
    after = [p for p in await _photos(sessions) if p.role == "after"]
    assert len(after) == 1 and after[0].hazard_id == hazard_id
    assert after[0].file_unique_id != largest["file_unique_id"]
    assert _listed(chat, officer, hazard_id).buttons == []  # the listing lost its buttons
    await chat.say(officer, "/hazards")
    assert chat.last_text(officer) == ZH("hazard.none")


async def test_rectify_with_an_album_keeps_one_after_photo(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "067890", language_code="en")
    hazard_id = await _seed(sessions, directory, chat.clock(), officer=1)
    await chat.say(officer, "/hazards")
    await chat.click(officer, EN("hazard.rectified_button"))
    before = len(chat.server.messages_to(officer))
    for update in await chat.server.send_album(officer, 3):
        await chat.send(update)
    assert [m.text for m in chat.server.messages_to(officer)[before:]] == [
        EN("hazard.ask_after_note", limit=1000)
    ]
    await chat.send(await chat.server.send_photo(officer))  # not part of that album
    assert chat.last_text(officer) == EN("hazard.note_text_only")
    await chat.click(officer, EN("flow.skip"))
    assert chat.last_text(officer) == EN("hazard.rectified_done", ref=f"H{hazard_id:06d}")
    [hazard] = await _hazards(sessions)
    assert hazard.status == "rectified" and hazard.closing_note is None
    assert len([p for p in await _photos(sessions) if p.role == "after"]) == 1


async def test_hand_over_to_a_department_with_a_note(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345", language_code="en")
    hazard_id = await _seed(sessions, directory, chat.clock(), severity=Severity.HIGH)
    await chat.say(officer, "/hazards")
    await _press(chat, officer, _listed(chat, officer, hazard_id), EN("hazard.hand_over_button"))
    ref = f"H{hazard_id:06d}"
    assert chat.last_text(officer) == EN("hazard.ask_department", ref=ref)
    assert chat.server.last_message_to(officer).buttons == [
        EN(f"department.{code}") for code in DEFAULT_DEPARTMENTS
    ]
    await chat.say(officer, "power company")
    assert chat.last_text(officer) == EN("flow.use_buttons")
    await chat.click(officer, EN("department.power_supply"))
    assert chat.last_text(officer) == EN("hazard.ask_handover_note", limit=1000)
    await chat.send(await chat.server.send_photo(officer))
    assert chat.last_text(officer) == EN("hazard.note_text_only")
    await chat.say(officer, "\x00")
    assert chat.last_text(officer) == EN("flow.text_empty")
    await chat.say(officer, "Li Ming, county power office, will replace the pole on Friday")
    assert chat.last_text(officer) == EN(
        "hazard.handed_over_done", ref=ref, department=EN("department.power_supply")
    )
    [hazard] = await _hazards(sessions)
    assert (hazard.status, hazard.closed_how) == ("handed_over", "power_supply")
    assert hazard.closing_note == "Li Ming, county power office, will replace the pole on Friday"
    assert hazard.closed_at == chat.clock()
    assert [p.role for p in await _photos(sessions)] == ["evidence"]


async def test_departments_come_from_the_settings(
    botapi: BotApiServer, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    async with running_chat(
        botapi, sessions, departments="township_government, power_supply,township_government"
    ) as chat:
        officer = await _officer(chat, sessions, "012345")
        hazard_id = await _seed(sessions, directory, chat.clock())
        await chat.say(officer, "/hazards")
        await chat.click(officer, ZH("hazard.hand_over_button"))
        assert chat.server.last_message_to(officer).buttons == ["乡镇人民政府", "供电公司"]
        await chat.click(officer, "供电公司")
        await chat.say(officer, "供电所已到场")
        assert chat.last_text(officer) == ZH(
            "hazard.handed_over_done", ref=f"H{hazard_id:06d}", department="供电公司"
        )
    [hazard] = await _hazards(sessions)
    assert hazard.closed_how == "power_supply"


async def test_forged_hazard_buttons_change_nothing(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    intruder = await _officer(chat, sessions, "067890", language_code="en")
    # Officer A's hazard in 李庄村, a village officer B does not serve.
    hazard_id = await _seed(sessions, directory, chat.clock(), village=1)
    anchor = chat.server.last_message_to(intruder).message_id
    for action in ("fix", "hand"):
        forged = await chat.send(
            await chat.server.press(
                intruder, anchor, HazardCb(action=action, hazard_id=hazard_id).pack(), force=True
            )
        )
        assert _answer(chat, forged) == EN("callback.stale")
    unknown = await chat.send(
        await chat.server.press(
            intruder, anchor, HazardCb(action="fix", hazard_id=hazard_id + 99).pack(), force=True
        )
    )
    assert _answer(chat, unknown) == EN("callback.stale")
    garbage = await chat.send(await chat.server.press(intruder, anchor, "hz:fix:abc", force=True))
    assert _answer(chat, garbage) == EN("callback.stale")

    await chat.send(await chat.server.send_photo(intruder))  # no conversation was started
    assert chat.last_text(intruder) == EN("fallback.unknown")
    [hazard] = await _hazards(sessions)
    assert (hazard.status, hazard.closed_at) == ("open", None)
    assert [p.role for p in await _photos(sessions)] == ["evidence"]


async def test_a_department_button_of_another_conversation_is_stale(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    first = await _seed(sessions, directory, chat.clock(), days_ago=2)
    second = await _seed(sessions, directory, chat.clock(), days_ago=1)
    await chat.say(officer, "/hazards")
    await _press(chat, officer, _listed(chat, officer, first), ZH("hazard.hand_over_button"))
    old_departments = chat.server.last_message_to(officer)
    # Changing one's mind: the other hazard's button starts a new conversation.
    await _press(chat, officer, _listed(chat, officer, second), ZH("hazard.rectified_button"))
    stale = await _press(chat, officer, old_departments, ZH("department.health"))
    assert _answer(chat, stale) == ZH("callback.stale")
    forged = await chat.send(
        await chat.server.press(
            officer,
            old_departments.message_id,
            _buttons(old_departments)[ZH("department.health")].replace(":dept:0", ":dept:99"),
            force=True,
        )
    )
    assert _answer(chat, forged) == ZH("callback.stale")
    assert chat.last_text(officer) == ZH("hazard.ask_after_photo", ref=f"H{second:06d}")
    assert [h.status for h in await _hazards(sessions)] == ["open", "open"]


async def test_rectified_twice_closes_once(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    hazard_id = await _seed(sessions, directory, chat.clock())
    await chat.say(officer, "/hazards")
    listing = _listed(chat, officer, hazard_id)
    rectified = _buttons(listing)[ZH("hazard.rectified_button")]
    await _press(chat, officer, listing, ZH("hazard.rectified_button"))
    await _press(chat, officer, listing, ZH("hazard.rectified_button"))  # a second tap
    await chat.send(await chat.server.send_photo(officer))
    done = await chat.click(officer, ZH("flow.skip"))
    closed_at = (await _hazards(sessions))[0].closed_at

    await chat.send(done)  # the last update delivered again
    chat.clock.now += timedelta(hours=1)
    late = await chat.send(
        await chat.server.press(officer, listing.message_id, rectified, force=True)
    )
    ref = f"H{hazard_id:06d}"
    assert _answer(chat, late) == ZH(
        "hazard.already_closed", ref=ref, status=ZH("hazard_status.rectified")
    )
    await chat.send(await chat.server.send_photo(officer))
    assert chat.last_text(officer) == ZH("fallback.unknown")

    [hazard] = await _hazards(sessions)
    assert hazard.status == "rectified" and hazard.closed_at == closed_at
    assert len([p for p in await _photos(sessions) if p.role == "after"]) == 1
    assert chat.texts(officer).count(ZH("hazard.rectified_done", ref=ref)) == 1


async def test_two_officers_closing_the_same_hazard_close_it_once(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    resident = await _officer(chat, sessions, "012345")
    contact = await _officer(chat, sessions, "067890", language_code="en")
    # Reported by the contact officer in 张庄村, which the resident officer serves too.
    hazard_id = await _seed(sessions, directory, chat.clock(), officer=1)
    await chat.say(contact, "/hazards")
    await chat.click(contact, EN("hazard.rectified_button"))
    await chat.send(await chat.server.send_photo(contact))

    # The resident officer serves the village, so may close it too; it is not in their own
    # list (they did not report it), so the button is pressed directly.
    anchor = chat.server.last_message_to(resident).message_id
    await chat.send(
        await chat.server.press(
            resident, anchor, HazardCb(action="hand", hazard_id=hazard_id).pack(), force=True
        )
    )
    await chat.click(resident, ZH("department.township_government"))
    await chat.say(resident, "已交镇政府处理")
    assert chat.last_text(resident).startswith("↪️")

    await chat.click(contact, EN("flow.skip"))
    assert chat.last_text(contact) == EN("hazard.not_open", ref=f"H{hazard_id:06d}")
    [hazard] = await _hazards(sessions)
    assert (hazard.status, hazard.closed_how) == ("handed_over", "township_government")
    assert [p.role for p in await _photos(sessions)] == ["evidence"]


async def test_a_listing_button_does_not_break_into_another_flow(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    hazard_id = await _seed(sessions, directory, chat.clock())
    await chat.say(officer, "/hazards")
    listing = _listed(chat, officer, hazard_id)
    await chat.say(officer, "/hazard")
    await chat.click(officer, "张庄村")
    press = await _press(chat, officer, listing, ZH("hazard.rectified_button"))
    assert _answer(chat, press) == ZH("fallback.in_flow")
    await chat.click(officer, ZH("hazard_category.fire"))  # the report carries on
    assert chat.last_text(officer).startswith(_step(ZH, 3))
    assert (await _hazards(sessions))[0].status == "open"


# --- storage and catalogues ------------------------------------------------------------------


async def test_close_hazard_is_conditional(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    now = datetime.now().astimezone()
    hazard_id = await _seed(sessions, directory, now, village=1)
    a, b = directory.officers[0].id, directory.officers[1].id
    async with sessions() as s, s.begin():
        with pytest.raises(ValueError):
            await hazards.close_hazard(
                s,
                hazard_id=hazard_id,
                officer_id=a,
                how="rectified",
                note=None,
                after_photo=None,
                now=now,
            )
        assert not await hazards.close_hazard(
            s, hazard_id=hazard_id, officer_id=b, how="other", note="x", after_photo=None, now=now
        )
        assert await hazards.hazard_for(s, hazard_id=hazard_id, officer_id=b) is None
        first = await hazards.close_hazard(
            s,
            hazard_id=hazard_id,
            officer_id=a,
            how="rectified",
            note=None,
            after_photo=("f1", "u1"),
            now=now,
        )
        again = await hazards.close_hazard(
            s,
            hazard_id=hazard_id,
            officer_id=a,
            how="rectified",
            note=None,
            after_photo=("f2", "u2"),
            now=now + timedelta(days=1),
        )
        assert (first, again) == (True, False)
        assert await hazards.count_open(s, officer_id=a) == 0
        view = await hazards.hazard_for(s, hazard_id=hazard_id, officer_id=a)
        assert view is not None and view.status == HazardStatus.RECTIFIED
    assert [p.file_id for p in await _photos(sessions) if p.role == "after"] == ["f1"]


@pytest.mark.parametrize("locale", LOCALES)
def test_every_code_has_a_label(locale: str) -> None:
    t = Translator(locale)
    labels = [t(f"hazard_category.{c.value}") for c in HazardCategory]
    labels += [t(f"severity.{s.value}") for s in Severity]
    labels += [t(f"department.{d}") for d in DEFAULT_DEPARTMENTS]
    labels += [t(f"hazard_status.{s.value}") for s in HazardStatus]
    assert all(label.strip() for label in labels)
    assert len(set(labels[:9])) == 9


async def test_hazard_ids_beyond_the_column_are_refused(
    sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    async with sessions() as s:
        for forged in (0, -5, 2**31, 10**15):
            assert await hazards.hazard_for(s, hazard_id=forged, officer_id=1) is None
