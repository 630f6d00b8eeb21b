"""The visit report conversation through the real Dispatcher, HTTP and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import build_dispatcher
from bot.flows.kit import FlowCb
from bot.i18n import Translator
from storage import exports, invites
from storage.models import Assignment, Photo, VisitActivity, VisitReport
from tests.botapi import SimUser
from tests.factories import Directory
from tests.harness import Chat, make_settings

ZH, EN = Translator("zh"), Translator("en")


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


async def _reports(sessions: async_sessionmaker[AsyncSession]) -> list[VisitReport]:
    async with sessions() as s:
        return list(await s.scalars(select(VisitReport).order_by(VisitReport.id)))


async def _fill_to_summary(chat: Chat, officer: SimUser, t: Translator) -> None:
    await chat.say(officer, "/visit")
    await chat.click(officer, "张庄村")
    await chat.click(officer, t("visit.today"))
    await chat.say(officer, "2")
    await chat.say(officer, "3")
    await chat.click(officer, t("visit.activities_done"))
    await chat.click(officer, t("flow.skip"))
    await chat.click(officer, t("flow.no_photos"))
    await chat.click(officer, t("flow.skip"))


async def test_complete_visit_report_in_chinese(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    await chat.click(officer, ZH("button.visit"))
    assert chat.last_text(officer) == ZH("flow.step", step=1, total=8) + "\n" + ZH(
        "visit.ask_village"
    )
    await chat.click(officer, "张庄村")
    assert chat.last_text(officer).startswith(ZH("flow.step", step=2, total=8))
    await chat.click(officer, ZH("visit.today"))
    await chat.say(officer, "两个半小时")
    await chat.say(officer, "３户")
    await chat.click(officer, ZH("activity.patrol"))
    assert "次" in chat.last_text(officer)
    await chat.say(officer, "2次")
    await chat.click(officer, ZH("activity.household_visit"))
    await chat.click(officer, ZH("visit.activities_done"))
    await chat.click(officer, ZH("flow.send_location"), location=(34.1005, 113.2005))
    before = len(chat.server.messages_to(officer))
    for update in await chat.server.send_album(officer, 3):
        await chat.send(update)
    acks = chat.server.messages_to(officer)[before:]
    assert len(acks) == 1  # one answer for the album, edited as its photos arrived
    assert acks[0].text == ZH("flow.photos_received", count=3, limit=10)
    await chat.click(officer, ZH("flow.photos_done"))
    await chat.say(officer, "村里治安良好 👍")
    summary = chat.last_text(officer)
    for expected in (
        "张庄村",
        "2.5",
        "3",
        "巡逻巡查 ×2",
        "入户走访",
        "照片：3 张",
        "村里治安良好 👍",
        "米",
    ):
        assert expected in summary, expected
    await chat.click(officer, ZH("flow.submit"))

    saved = chat.last_text(officer)
    [report] = await _reports(sessions)
    assert saved.startswith(ZH("visit.saved", ref=f"V{report.id:06d}", village="张庄村"))
    assert "下村 1/4 天" in saved and "入户 3/4 户" in saved and "本月还剩" in saved
    assert (report.hours, report.households, report.far_from_village) == (Decimal("2.5"), 3, False)
    assert report.distance_m is not None and report.distance_m < 100
    async with sessions() as s:
        activities = dict((await s.execute(select(VisitActivity.code, VisitActivity.count))).all())
        photos = await s.scalar(select(func.count()).select_from(Photo))
    assert activities == {"patrol": 2, "household_visit": 1}
    assert photos == 3
    assert chat.keyboard_labels(officer)[0] == ZH("button.visit")  # back to the menu


async def test_single_village_skips_the_village_step_in_english(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "067890", language_code="en")
    await chat.say(officer, "/visit")
    assert chat.last_text(officer).startswith(EN("flow.step", step=2, total=8))
    await chat.click(officer, EN("visit.yesterday"))
    await chat.say(officer, "1.5 h")
    await chat.say(officer, "0")
    await chat.click(officer, EN("visit.activities_done"))
    await chat.click(officer, EN("flow.skip"))
    await chat.click(officer, EN("flow.no_photos"))
    await chat.click(officer, EN("flow.skip"))
    assert EN("visit.field.location", value=EN("visit.no_location")) in chat.last_text(officer)
    await chat.click(officer, EN("flow.submit"))
    assert "1 of 4 days" in chat.last_text(officer)
    [report] = await _reports(sessions)
    assert report.visit_date == chat.today() - timedelta(days=1)
    assert (report.latitude, report.distance_m) == (None, None)


async def test_wrong_input_at_every_step_keeps_the_step(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345", language_code="en")
    await chat.say(officer, "/visit")
    await chat.say(officer, "Zhangzhuang")  # a button is wanted
    assert chat.last_text(officer) == EN("flow.use_buttons")
    await chat.click(officer, "张庄村")

    await chat.say(officer, "someday")
    assert chat.last_text(officer) == EN("visit.bad_date")
    future = (chat.today() + timedelta(days=1)).isoformat()
    await chat.say(officer, future)
    assert chat.last_text(officer) == EN("visit.date_future")
    old = (chat.today() - timedelta(days=30)).isoformat()
    await chat.say(officer, old)
    assert chat.last_text(officer) == EN("visit.date_too_old", days=7)
    await chat.send(await chat.server.send_photo(officer))
    assert EN("visit.bad_date") in chat.texts(officer)[-2]
    await chat.say(officer, "today")

    for bad in ("abc", "13", "0", "3-4", "\x00", "x" * 4096, "🚓"):
        await chat.say(officer, bad)
        assert chat.last_text(officer) == EN("visit.bad_hours", low=Decimal("0.5"), high=12), bad
    await chat.send(await chat.server.send_sticker(officer))
    assert EN("visit.bad_hours", low=Decimal("0.5"), high=12) in chat.texts(officer)[-2]
    await chat.say(officer, "3 hours")

    for bad in ("-1", "501", "2.5", "many"):
        await chat.say(officer, bad)
        assert chat.last_text(officer) == EN("visit.bad_households", high=500), bad
    await chat.say(officer, "12 households")

    await chat.say(officer, "patrol")
    assert chat.last_text(officer) == EN("flow.use_buttons")
    await chat.click(officer, EN("activity.dispute_mediation"))
    await chat.say(officer, "0")
    assert chat.last_text(officer) == EN("visit.bad_count", high=999)
    await chat.say(officer, "1000")
    assert chat.last_text(officer) == EN("visit.bad_count", high=999)
    await chat.say(officer, "1")
    await chat.click(officer, EN("visit.activities_done"))

    await chat.say(officer, "at the village office")
    assert EN("visit.bad_location") in chat.texts(officer)[-2]
    await chat.click(officer, EN("flow.send_location"), location=(34.3, 113.5))  # ~30 km away
    assert chat.texts(officer)[-2].startswith("Note: this location is about")

    await chat.say(officer, "here is a photo")
    assert EN("visit.bad_photo") in chat.texts(officer)[-2]
    await chat.send(
        await chat.server.send_document(officer, "photo.jpg", b"\xff\xd8", mime_type="image/jpeg")
    )
    assert EN("visit.bad_photo") in chat.texts(officer)[-2]
    await chat.click(officer, EN("flow.no_photos"))

    await chat.say(officer, "n" * 2001)
    assert chat.last_text(officer) == EN("flow.text_too_long", limit=2000)
    await chat.say(officer, "\x00\x00")
    assert chat.last_text(officer) == EN("flow.text_empty")
    await chat.send(await chat.server.send_sticker(officer))
    assert EN("visit.bad_notes") in chat.texts(officer)[-2]
    await chat.say(officer, "all quiet")
    await chat.say(officer, "submit")  # typing at the summary
    assert chat.last_text(officer) == EN("flow.use_buttons")
    await chat.click(officer, EN("flow.submit"))
    [report] = await _reports(sessions)
    assert report.far_from_village and report.distance_m is not None and report.distance_m > 20_000
    assert report.notes == "all quiet"


async def test_double_submit_and_redelivery_store_one_report(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    await _fill_to_summary(chat, officer, ZH)
    summary = chat.server.last_message_to(officer)
    submit = next(cb for label, cb in _buttons(summary) if label == ZH("flow.submit"))
    first = await chat.server.press(officer, summary.message_id, submit)
    second = await chat.server.press(officer, summary.message_id, submit, force=True)
    await chat.send(first)
    await chat.send(first)  # the same update delivered again
    await chat.send(second)  # a second tap
    assert len(await _reports(sessions)) == 1
    assert chat.server.callback_answer(second)["text"] == ZH("callback.stale")  # type: ignore[index]


async def test_a_report_is_not_saved_once_the_village_is_no_longer_the_officers(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    """The assignment is checked again at Submit, in the report's own insert."""
    officer = await _officer(chat, sessions, "012345")
    await _fill_to_summary(chat, officer, ZH)
    async with sessions() as s, s.begin():
        await s.execute(delete(Assignment))  # reassigned by the county meanwhile
    await chat.click(officer, ZH("flow.submit"))
    assert chat.last_text(officer) == ZH("visit.submit_invalid")
    assert await _reports(sessions) == []


def _buttons(message: object) -> list[tuple[str, str]]:
    markup = getattr(message, "reply_markup", None) or {}
    return [
        (b["text"], b["callback_data"]) for row in markup.get("inline_keyboard", []) for b in row
    ]


async def test_edit_a_field_from_the_summary(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    await _fill_to_summary(chat, officer, ZH)
    await chat.click(officer, ZH("flow.edit"))
    await chat.click(officer, ZH("visit.edit.hours"))
    await chat.say(officer, "4")
    assert ZH("visit.field.hours", value="4") in chat.last_text(
        officer
    )  # straight back to the summary
    await chat.click(officer, ZH("flow.edit"))
    await chat.click(officer, ZH("visit.edit.village"))
    await chat.click(officer, "李庄村")
    assert ZH("visit.field.village", value="李庄村") in chat.last_text(officer)
    await chat.click(officer, ZH("flow.submit"))
    [report] = await _reports(sessions)
    assert report.hours == Decimal("4") and report.village_id == directory.villages[1].id


async def test_cancel_and_stale_buttons(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    await chat.say(officer, "/visit")
    old = chat.server.last_message_to(officer)
    await chat.click(officer, "张庄村")
    await chat.say(officer, "/cancel")
    assert chat.last_text(officer) == ZH("cancel.done")
    stale = await chat.server.press(officer, old.message_id, _buttons(old)[0][1])
    await chat.send(stale)
    assert chat.server.callback_answer(stale)["text"] == ZH("callback.stale")  # type: ignore[index]
    await chat.say(officer, "/visit")
    await chat.click(officer, "张庄村")
    # A button of an earlier step of the current draft does nothing either.
    again = await chat.server.press(
        officer,
        chat.server.messages_to(officer)[-2].message_id,
        _buttons(chat.server.messages_to(officer)[-2])[0][1],
    )
    await chat.send(again)
    assert chat.server.callback_answer(again)["text"] == ZH("callback.stale")  # type: ignore[index]
    assert await _reports(sessions) == []


async def test_the_summarys_cancel_drops_the_draft_and_its_buttons(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    await _fill_to_summary(chat, officer, ZH)
    summary = chat.server.last_message_to(officer)
    await chat.click(officer, ZH("flow.cancel"))
    assert chat.last_text(officer) == ZH("cancel.done")
    [taken] = [
        c
        for c in chat.server.calls_of("editMessageReplyMarkup")
        if c.params["message_id"] == summary.message_id
    ]
    assert not taken.params.get("reply_markup")  # no Submit left to press
    assert await _reports(sessions) == []


async def test_a_restart_mid_flow_continues_at_the_same_step(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    await chat.say(officer, "/visit")
    await chat.click(officer, "张庄村")
    await chat.click(officer, ZH("visit.today"))
    # A new Dispatcher with nothing in memory stands for the restarted process.
    chat.dp = build_dispatcher(make_settings(), sessions, clock=chat.clock)
    await chat.say(officer, "3")
    assert chat.last_text(officer).startswith(ZH("flow.step", step=4, total=8))
    await chat.say(officer, "1")
    await chat.click(officer, ZH("visit.activities_done"))
    await chat.click(officer, ZH("flow.skip"))
    await chat.click(officer, ZH("flow.no_photos"))
    await chat.click(officer, ZH("flow.skip"))
    await chat.click(officer, ZH("flow.submit"))
    [report] = await _reports(sessions)
    assert (report.hours, report.households) == (Decimal("3"), 1)


async def test_only_officers_can_file_visits(chat: Chat, directory: Directory) -> None:
    stranger = chat.server.user(language_code="en")
    await chat.say(stranger, "/visit")
    assert chat.last_text(stranger) == EN("fallback.stranger")


async def test_a_photo_reused_in_another_report_is_flagged(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    photo_update = await chat.server.send_photo(officer)

    async def report_with(update: dict[str, object]) -> None:
        await chat.say(officer, "/visit")
        await chat.click(officer, "张庄村")
        await chat.click(officer, ZH("visit.today"))
        await chat.say(officer, "1")
        await chat.say(officer, "1")
        await chat.click(officer, ZH("visit.activities_done"))
        await chat.click(officer, ZH("flow.skip"))
        await chat.send(update)
        await chat.click(officer, ZH("flow.photos_done"))
        await chat.click(officer, ZH("flow.skip"))
        await chat.click(officer, ZH("flow.submit"))

    await report_with(photo_update)
    # The same picture sent again (Telegram keeps its file_unique_id) in a second report.
    again = {"message": {**photo_update["message"], "message_id": 9999}}
    await report_with(chat.server.inject(again))
    async with sessions() as s:
        flags = list(await s.scalars(select(Photo.reused).order_by(Photo.id)))
    assert flags == [True, True]
    assert len(await _reports(sessions)) == 2


async def test_forged_village_buttons_do_nothing(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345", language_code="en")
    await chat.say(officer, "/visit")
    prompt = chat.server.last_message_to(officer)
    draft = FlowCb.unpack(_buttons(prompt)[0][1]).draft
    other_station_village = str(directory.villages[2].id)
    for forged in (other_station_village, "99999999999999", "²", "-1", "x"):
        data = FlowCb(flow="v", draft=draft, action="village", value=forged).pack()
        await chat.send(await chat.server.press(officer, prompt.message_id, data, force=True))
        assert chat.last_text(officer) == EN("callback.stale"), forged
    await chat.click(officer, "张庄村")  # the real buttons still work
    assert chat.last_text(officer).startswith(EN("flow.step", step=2, total=8))


async def test_the_export_shows_what_was_entered(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = await _officer(chat, sessions, "012345")
    await chat.say(officer, "/visit")
    await chat.click(officer, "李庄村")
    await chat.click(officer, ZH("visit.today"))
    await chat.say(officer, "3.5")
    await chat.say(officer, "7户")
    await chat.click(officer, ZH("activity.legal_publicity"))
    await chat.say(officer, "2")
    await chat.click(officer, ZH("activity.patrol"))
    await chat.say(officer, "1")
    await chat.click(officer, ZH("visit.activities_done"))
    await chat.click(officer, ZH("flow.send_location"), location=(34.2, 113.3))
    for update in await chat.server.send_album(officer, 2):
        await chat.send(update)
    await chat.click(officer, ZH("flow.photos_done"))
    await chat.say(officer, "宣传反诈")
    await chat.click(officer, ZH("flow.submit"))

    today = chat.clock().astimezone(ZoneInfo("Asia/Shanghai")).date()
    async with sessions() as s:
        rows = await exports.visit_rows(s, month=today, station_code="S01", tz="Asia/Shanghai")
    assert len(rows) == 1
    row = dict(zip(exports.VISIT_COLUMNS, rows[0], strict=True))
    assert row["officer_badge"] == "012345" and row["village_code"] == "V002"
    assert row["visit_date"] == today and row["hours"] == Decimal("3.5") and row["households"] == 7
    assert row["activities"] == "patrol:1;legal_publicity:2"
    assert row["distance_m"] == 0 and row["photos"] == 2 and row["notes"] == "宣传反诈"
