"""Joining, menus and the common commands, through the real Dispatcher and HTTP."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.callbacks import JoinVillageCb
from bot.i18n import Translator
from core.roles import Role
from core.tokens import village_payload
from storage import invites
from storage.models import User, VillagerMembership
from tests.factories import Directory
from tests.harness import Chat

ZH, EN = Translator("zh"), Translator("en")
WEEK = timedelta(days=7)


async def _officer_invite(
    sessions: async_sessionmaker[AsyncSession], chat: Chat, **kw: object
) -> str:
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_officer_invite(
            s, badge=str(kw.get("badge", "012345")), now=chat.clock(), ttl=WEEK
        )
    return issued.payload


async def _user(sessions: async_sessionmaker[AsyncSession], uid: int) -> User | None:
    async with sessions() as s:
        return await s.get(User, uid)


async def test_stranger_is_told_how_to_join_in_their_language(chat: Chat) -> None:
    zh_user = chat.server.user(first_name="张三", language_code="zh-hans")
    en_user = chat.server.user(first_name="Ann", language_code="en-US")
    other = chat.server.user(first_name="Иван", language_code="ru")
    await chat.say(zh_user, "/start")
    await chat.say(en_user, "/start")
    await chat.say(other, "/start")
    assert chat.last_text(zh_user) == ZH("start.stranger")
    assert chat.last_text(en_user) == EN("start.stranger")
    assert chat.last_text(other) == ZH("start.stranger")  # DEFAULT_LOCALE
    assert chat.keyboard_labels(en_user) == [EN("button.help"), EN("button.language")]


async def test_officer_joins_with_invite(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    payload = await _officer_invite(sessions, chat)
    officer = chat.server.user(first_name="王", language_code="zh-hans")
    await chat.say(officer, f"/start {payload}")
    text = chat.last_text(officer)
    assert "王警官" in text and "012345" in text and "张庄村" in text and "李庄村" in text
    assert chat.keyboard_labels(officer) == [
        ZH(f"button.{name}")
        for name in (
            "visit",
            "hazard",
            "requests",
            "me",
            "hazards",
            "absence",
            "villages",
            "help",
            "language",
        )
    ]
    commands = [c["command"] for c in chat.server.visible_commands(officer)]
    assert commands == [
        "visit",
        "hazard",
        "requests",
        "me",
        "hazards",
        "absence",
        "villages",
        "help",
        "language",
        "cancel",
    ]
    user = await _user(sessions, officer.id)
    assert user is not None and user.role == Role.OFFICER
    assert user.officer_id == directory.officers[0].id

    await chat.say(officer, ZH("button.villages"))
    listing = chat.last_text(officer)
    assert (
        "https://t.me/village_beat_bot?start=" + village_payload(directory.villages[0].join_token)
        in listing
    )


async def test_used_expired_unknown_and_malformed_invites_bind_nothing(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    payload = await _officer_invite(sessions, chat)
    first, second = chat.server.user(), chat.server.user(language_code="en")
    await chat.say(first, f"/start {payload}")
    await chat.say(second, f"/start {payload}")
    assert chat.last_text(second) == EN("start.invite_used")

    async with sessions() as s, s.begin():
        stale, _ = await invites.create_officer_invite(
            s, badge="067890", now=chat.clock() - timedelta(days=8), ttl=WEEK
        )
    await chat.say(second, f"/start {stale.payload}")
    assert chat.last_text(second) == EN("start.invite_expired")
    await chat.say(second, "/start i-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    assert chat.last_text(second) == EN("start.invite_unknown")
    await chat.say(second, "/start ../../etc/passwd")
    assert chat.last_text(second) == EN("start.link_invalid")
    await chat.say(second, "/start " + "x" * 65)
    assert chat.last_text(second) == EN("start.link_invalid")
    user = await _user(sessions, second.id)
    assert user is not None and user.role == Role.STRANGER


async def test_replayed_start_creates_one_user_and_one_answer(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    payload = await _officer_invite(sessions, chat)
    officer = chat.server.user()
    update = await chat.say(officer, f"/start {payload}")
    await chat.send(update)
    await chat.send(update)
    assert len(chat.server.messages_to(officer)) == 1
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(User)) == 1


async def test_supervisor_joins_and_sees_scope(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_supervisor_invite(
            s, station_codes=["S01"], county_wide=False, name="刘所长", now=chat.clock(), ttl=WEEK
        )
    chief = chat.server.user(language_code="en")
    await chat.say(chief, f"/start {issued.payload}")
    assert chat.last_text(chief) == EN("start.supervisor_welcome", scope="城关派出所")
    await chat.say(chief, "/scope")
    assert chat.last_text(chief) == EN("scope.info", stations="城关派出所", villages=2, officers=2)
    assert chat.server.visible_commands(chief)[0]["command"] == "team"


async def test_villager_joins_confirms_and_shares_phone(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    villager = chat.server.user(first_name="李四")
    link = village_payload(directory.villages[0].join_token)
    await chat.say(villager, f"/start {link}")
    assert chat.last_text(villager) == ZH("join.confirm", village="张庄村", station="城关派出所")
    await chat.say(villager, "好的")  # typing instead of tapping
    assert chat.last_text(villager) == ZH("join.use_buttons")
    await chat.send(await chat.server.send_sticker(villager))
    assert chat.last_text(villager) == ZH("join.use_buttons")

    await chat.click(villager, ZH("join.yes"))
    assert chat.last_text(villager).startswith(
        ZH("join.joined", village="张庄村", officer="王警官")
    )
    await chat.say(villager, "/village")  # the phone number is optional: nothing holds the user
    assert chat.last_text(villager).startswith(
        ZH("village.info", village="张庄村", station="城关派出所", officer="王警官")[:8]
    )
    await chat.send(await chat.server.send_contact(villager, "+8613900000000", user_id=999))
    assert chat.last_text(villager) == ZH("join.phone_not_own")
    await chat.say(villager, "/village")
    await chat.send(await chat.server.send_contact(villager, "+8613800000000"))
    assert chat.last_text(villager) == ZH("join.phone_saved")
    assert chat.keyboard_labels(villager)[0] == ZH("button.request")

    user = await _user(sessions, villager.id)
    assert user is not None and (user.role, user.phone) == (Role.VILLAGER, "+8613800000000")
    await chat.say(villager, "/village")
    assert chat.last_text(villager) == ZH(
        "village.info", village="张庄村", station="城关派出所", officer="王警官"
    )


async def test_villager_declines_then_switches_village(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    villager = chat.server.user(language_code="en")
    await chat.say(villager, f"/start {village_payload(directory.villages[0].join_token)}")
    await chat.click(villager, EN("join.no"))
    assert chat.last_text(villager) == EN("join.declined")
    assert (await _user(sessions, villager.id)).role == Role.STRANGER  # type: ignore[union-attr]

    await chat.say(villager, f"/start {village_payload(directory.villages[0].join_token)}")
    await chat.click(villager, EN("join.yes"))
    await chat.click(villager, EN("join.skip_phone"))
    assert chat.last_text(villager) == EN("join.phone_skipped")
    await chat.say(villager, f"/start {village_payload(directory.villages[0].join_token)}")
    assert chat.last_text(villager) == EN("join.already", village="张庄村")

    await chat.say(villager, f"/start {village_payload(directory.villages[2].join_token)}")
    assert EN("join.switch_note", current="张庄村") in chat.last_text(villager)
    await chat.click(villager, EN("join.yes"))
    async with sessions() as s:
        current = await s.scalar(
            select(VillagerMembership.village_id).where(
                VillagerMembership.user_id == villager.id, VillagerMembership.left_at.is_(None)
            )
        )
    assert current == directory.villages[2].id


async def test_forged_and_stale_join_buttons_do_nothing(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    villager = chat.server.user()
    await chat.say(villager, f"/start {village_payload(directory.villages[0].join_token)}")
    offer = chat.server.last_message_to(villager)
    forged = JoinVillageCb(village_id=directory.villages[2].id, join=True).pack()
    update = await chat.server.press(villager, offer.message_id, forged, force=True)
    await chat.send(update)
    assert chat.server.callback_answer(update)["text"] == ZH("callback.stale")  # type: ignore[index]

    await chat.say(villager, "/cancel")
    assert chat.last_text(villager) == ZH("cancel.done")
    real = JoinVillageCb(village_id=directory.villages[0].id, join=True).pack()
    update = await chat.server.press(villager, offer.message_id, real, force=True)
    await chat.send(update)
    assert chat.server.callback_answer(update)["text"] == ZH("callback.stale")  # type: ignore[index]
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(VillagerMembership)) == 0


async def test_staff_cannot_join_as_villagers(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = chat.server.user()
    await chat.say(officer, f"/start {await _officer_invite(sessions, chat)}")
    await chat.say(officer, f"/start {village_payload(directory.villages[0].join_token)}")
    assert chat.last_text(officer) == ZH("join.not_for_staff")
    assert (await _user(sessions, officer.id)).role == Role.OFFICER  # type: ignore[union-attr]


async def test_language_switch_changes_texts_menu_and_commands(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = chat.server.user(language_code="zh-hans")
    await chat.say(officer, f"/start {await _officer_invite(sessions, chat)}")
    await chat.say(officer, ZH("button.language"))
    await chat.click(officer, "English")
    assert chat.last_text(officer) == EN("language.set")
    assert chat.keyboard_labels(officer)[0] == EN("button.visit")
    assert chat.server.visible_commands(officer)[0]["description"] == EN("cmd.visit")
    await chat.say(officer, "/help")
    assert chat.last_text(officer).startswith(EN("help.intro.officer"))
    await chat.say(officer, "/language")
    await chat.click(officer, "中文")
    assert chat.last_text(officer) == ZH("language.set")
    assert (await _user(sessions, officer.id)).locale == "zh"  # type: ignore[union-attr]


async def test_help_cancel_and_fallback(chat: Chat) -> None:
    user = chat.server.user(language_code="en")
    await chat.say(user, "/help")
    assert chat.last_text(user).startswith(EN("help.intro.stranger"))
    assert "/language" in chat.last_text(user)
    await chat.say(user, "/cancel")
    assert chat.last_text(user) == EN("cancel.nothing")
    await chat.say(user, "what is this?")
    assert chat.last_text(user) == EN("fallback.stranger")
    await chat.send(await chat.server.send_photo(user))
    assert chat.last_text(user) == EN("fallback.stranger")


async def test_officer_rebound_by_new_invite_only(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    old_phone, new_phone = chat.server.user(), chat.server.user()
    await chat.say(old_phone, f"/start {await _officer_invite(sessions, chat)}")
    await chat.say(new_phone, f"/start {await _officer_invite(sessions, chat)}")
    old_user, new_user = await _user(sessions, old_phone.id), await _user(sessions, new_phone.id)
    assert old_user is not None and old_user.role == Role.STRANGER
    assert new_user is not None and new_user.role == Role.OFFICER
    assert [c["command"] for c in chat.server.visible_commands(old_phone)] == [
        "start",
        "help",
        "language",
    ]


async def test_role_views_wait_for_the_flow_to_end(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    villager = chat.server.user(language_code="en")
    await chat.say(villager, f"/start {village_payload(directory.villages[0].join_token)}")
    await chat.click(villager, EN("join.yes"))
    await chat.say(villager, f"/start {village_payload(directory.villages[1].join_token)}")
    await chat.say(villager, "/village")  # mid-confirmation
    assert chat.last_text(villager) == EN("fallback.in_flow")
    await chat.say(villager, EN("button.village"))
    assert chat.last_text(villager) == EN("join.use_buttons")
    await chat.say(villager, "/cancel")
    await chat.say(villager, EN("button.village"))
    assert chat.last_text(villager).startswith("Your village: 张庄村")


async def test_guessing_links_is_cut_off_for_a_while(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    guesser = chat.server.user(language_code="en")
    guesses = [
        "i-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v-BBBBBBBBBBBBBBBBBBBBBB",
        "../../etc/passwd",
        "i-CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC",
        "x-DDDD",
    ]
    for guess in guesses:
        await chat.say(guesser, f"/start {guess}")
        assert chat.last_text(guesser) != EN("start.too_many_attempts", minutes=15)
    # The sixth link is not even looked at, a real invite included.
    payload = await _officer_invite(sessions, chat)
    await chat.say(guesser, f"/start {payload}")
    assert chat.last_text(guesser) == EN("start.too_many_attempts", minutes=15)
    user = await _user(sessions, guesser.id)
    assert user is not None and user.role == Role.STRANGER
    # Someone else is not affected, and after the window the guesser may try again.
    other = chat.server.user(language_code="en")
    await chat.say(other, f"/start {guesses[0]}")
    assert chat.last_text(other) == EN("start.invite_unknown")
    chat.clock.now += timedelta(minutes=16)
    await chat.say(guesser, f"/start {payload}")
    assert chat.last_text(guesser).startswith(
        EN("start.officer_welcome", name="王警官", badge="012345")[:20]
    )
