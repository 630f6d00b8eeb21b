"""/overdue for supervisors through the real Dispatcher, HTTP and PostgreSQL: requests past
a deadline and hazards past their re-inspection date in the supervisor's scope only, the
longest overdue first, each request opening its card; long lists split cleanly."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.i18n import Translator
from core.requests import Routed
from core.roles import Role
from storage import invites
from storage import requests as store
from storage.models import Hazard, User, Village
from tests.botapi import SimUser
from tests.botapi.state import SentMessage
from tests.factories import Directory
from tests.harness import Chat

ZH, EN = Translator("zh"), Translator("en")
NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # Friday 10:00 in Shanghai
VILLAGER = 5001
WEEK = timedelta(days=7)


async def _supervisor(
    chat: Chat,
    sessions: async_sessionmaker[AsyncSession],
    stations: list[str],
    name: str,
    **kw: str,
) -> SimUser:
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_supervisor_invite(
            s, station_codes=stations, county_wide=not stations, name=name, now=NOW, ttl=WEEK
        )
    user = chat.server.user(**kw)  # type: ignore[arg-type]
    await chat.say(user, f"/start {issued.payload}")
    return user


async def _request(
    sessions: async_sessionmaker[AsyncSession],
    village: Village,
    age: timedelta,
    body: str = "邻居占用我家宅基地",
) -> int:
    async with sessions() as s, s.begin():
        if await s.get(User, VILLAGER) is None:
            s.add(User(id=VILLAGER, role=Role.VILLAGER.value, first_name="李四"))
        routed = await store.route_for_village(s, village.id)
        assert isinstance(routed, Routed)
        saved = await store.create_request(
            s,
            store.NewRequest(
                draft_id=secrets.token_hex(8),
                villager_id=VILLAGER,
                village_id=village.id,
                category="dispute",
                body=body,
                photos=(),
                latitude=None,
                longitude=None,
                anonymous=False,
                created_at=NOW - age,
            ),
            routed,
        )
        return saved.id


async def _hazard(
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    village: Village,
    due: timedelta,
    description: str,
    status: str = "open",
) -> int:
    async with sessions() as s, s.begin():
        hazard = Hazard(
            draft_id=secrets.token_hex(8),
            officer_id=directory.officers[0].id,
            village_id=village.id,
            category="fire",
            severity="high",
            description=description,
            status=status,
            reported_by=VILLAGER,
            reported_at=NOW - due - WEEK,
            due_at=NOW - due,
        )
        s.add(hazard)
        await s.flush()
        return hazard.id


def _buttons(message: SentMessage) -> list[str]:
    markup = message.reply_markup or {}
    return [b["text"] for row in markup.get("inline_keyboard", []) for b in row]


async def test_overdue_in_scope_most_overdue_first(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    chat.clock.now = NOW
    v1, v2, v3 = directory.villages
    chief = await _supervisor(chat, sessions, ["S01"], "刘所长")
    other = await _supervisor(chat, sessions, ["S02"], "孙所长", language_code="en")
    late = await _request(sessions, v2, timedelta(hours=30))  # acceptance 6 h late
    later = await _request(sessions, v1, timedelta(days=4))  # acceptance 3 d, answer 1 d late
    await _request(sessions, v1, timedelta(hours=1))  # not due yet
    elsewhere = await _request(sessions, v3, timedelta(days=2))  # station S02's
    await _hazard(sessions, directory, v1, timedelta(days=2), "村口加油站旁堆放大量柴草")
    far = await _hazard(sessions, directory, v3, timedelta(days=1), "河堤有裂缝")
    await _hazard(sessions, directory, v2, timedelta(days=5), "已整改", status="rectified")

    await chat.say(chief, ZH("button.overdue"))
    message = chat.server.last_message_to(chief)
    assert message.text == "\n\n".join(
        [
            "⏰ 超时事项：诉求 2 件，隐患 1 处，超时最久的在前。",
            "【超时诉求】点击下方编号查看详情并处理：",
            f"❗ R{later:06d} · 张庄村 · 王警官（警号 012345）\n"
            "受理已超时 3 天 0 小时（时限 11-17 10:00）\n"
            "答复已超时 1 天 0 小时（时限 11-19 10:00）\n"
            "邻居占用我家宅基地",
            f"❗ R{late:06d} · 李庄村 · 王警官（警号 012345）\n"
            "受理已超时 6 小时 0 分钟（时限 11-20 04:00）\n"
            "邻居占用我家宅基地",
            "【逾期未复查的隐患】",
            "⚠️ H000001 · 张庄村 · 王警官（警号 012345）\n"
            "消防安全 · 高风险 · 复查已逾期 2 天 0 小时（应于 11-18 10:00 前）\n"
            "村口加油站旁堆放大量柴草",
        ]
    )
    assert _buttons(message) == [f"📋 R{later:06d}", f"📋 R{late:06d}"]
    await chat.click(chief, f"📋 R{later:06d}")
    assert chat.last_text(chief).startswith(f"📨 R{later:06d} · 矛盾纠纷")

    # The other station's supervisor sees only his own, in English.
    await chat.say(other, "/overdue")
    message = chat.server.last_message_to(other)
    assert message.text == "\n\n".join(
        [
            "⏰ Overdue: 1 request(s), 1 hazard(s), the longest overdue first.",
            "Requests past a deadline (tap a reference below to open it):",
            f"❗ R{elsewhere:06d} · 东关社区 · Supervisor 孙所长\n"
            "acceptance overdue by 1 d 0 h (due 11-19 10:00)\n"
            "邻居占用我家宅基地",
            "Hazards past their re-inspection date:",
            f"⚠️ H{far:06d} · 东关社区 · 王警官 (badge 012345)\n"
            "Fire safety · High · re-inspection overdue by 1 d 0 h (due 11-19 10:00)\n"
            "河堤有裂缝",
        ]
    )
    assert _buttons(message) == [f"📋 R{elsewhere:06d}"]
    await chat.click(other, f"📋 R{elsewhere:06d}")
    assert chat.last_text(other).startswith(f"📨 R{elsewhere:06d} · Dispute")

    county = await _supervisor(chat, sessions, [], "县局", language_code="en")
    await chat.say(county, "/overdue")
    assert chat.last_text(county).startswith(
        "⏰ Overdue: 3 request(s), 2 hazard(s), the longest overdue first."
    )


async def test_nothing_overdue_and_only_supervisors_ask(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    chat.clock.now = NOW
    chief = await _supervisor(chat, sessions, ["S02"], "孙所长", language_code="en")
    await _request(sessions, directory.villages[0], timedelta(days=4))  # not S02's
    await chat.say(chief, "/overdue")
    assert chat.last_text(chief) == (
        "✅ Nothing overdue in your area: no request past a deadline, "
        "no hazard past its re-inspection date."
    )
    zh_chief = await _supervisor(chat, sessions, ["S02"], "孙所长")
    await chat.say(zh_chief, "/overdue")
    assert chat.last_text(zh_chief) == "✅ 辖区内没有超时的诉求，也没有逾期未复查的隐患。"

    async with sessions() as s, s.begin():
        issued, _ = await invites.create_officer_invite(s, badge="012345", now=NOW, ttl=WEEK)
    officer = chat.server.user()
    await chat.say(officer, f"/start {issued.payload}")
    await chat.say(officer, "/overdue")
    assert chat.last_text(officer) == ZH("fallback.unknown")


async def test_a_long_list_is_split_between_items(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    chat.clock.now = NOW
    chief = await _supervisor(chat, sessions, ["S01"], "刘所长")
    rids = [
        await _request(sessions, directory.villages[0], timedelta(days=4, minutes=n), "吵" * 500)
        for n in range(60)
    ]
    before = len(chat.server.messages_to(chief))
    await chat.say(chief, "/overdue")
    messages = chat.server.messages_to(chief)[before:]
    assert len(messages) > 1
    seen = []
    for number, message in enumerate(messages):
        text = message.text or ""
        blocks = text.split("\n\n")
        if number + 1 < len(messages):  # cut only where the next item would not fit
            following = (messages[number + 1].text or "").split("\n\n")[0]
            assert len(text) <= 4096 < len(text) + 2 + len(following)
        refs = [b.split(" · ")[0].removeprefix("❗ ") for b in blocks if b.startswith("❗ ")]
        assert all(b.startswith(("❗ ", "⏰ ", "【")) for b in blocks)  # whole items only
        assert _buttons(message) == [f"📋 {ref}" for ref in refs]  # its own items' buttons
        seen += refs
    # The oldest first, every one once.
    assert seen == [f"R{rid:06d}" for rid in reversed(rids)]
    await chat.click(chief, f"📋 R{rids[0]:06d}")
    assert chat.last_text(chief).startswith(f"📨 R{rids[0]:06d}")
