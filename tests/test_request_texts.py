"""How requests read, without a database: durations, the deadline line, cards that fit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.i18n import Translator
from bot.request_texts import (
    deadline_text,
    event_line,
    handler_card,
    span,
    villager_card,
    villager_label,
)
from bot.texts import MAX_MESSAGE
from core.requests import (
    Actor,
    DeadlineState,
    Event,
    HistoryEntry,
    RequestStatus,
    deadline_state,
    timeline_of,
)
from storage.requests import EventView, RequestView

ZH, EN = Translator("zh"), Translator("en")
TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


def _request(**kw: object) -> RequestView:
    values: dict[str, object] = {
        "id": 12,
        "villager_id": 5001,
        "village_id": 1,
        "village_name": "张庄村",
        "station_id": 1,
        "officer_id": 3,
        "officer_name": "王警官",
        "officer_badge": "012345",
        "supervisor_id": None,
        "supervisor_name": None,
        "category": "dispute",
        "body": "邻居占用我家宅基地",
        "latitude": None,
        "longitude": None,
        "anonymous": False,
        "status": RequestStatus.NEW,
        "department": None,
        "rating": None,
        "due_at": None,
        "due_clock": None,
        "created_at": T0,
        "villager_name": "李四",
    }
    values.update(kw)
    return RequestView(**values)  # type: ignore[arg-type]


def _event(event: Event, actor: Actor, at: datetime, **kw: object) -> EventView:
    values: dict[str, object] = {
        "id": 1,
        "at": at,
        "event": event,
        "actor": actor,
        "user_id": None,
        "officer_name": None,
        "supervisor_name": None,
        "body": None,
        "photos": (),
        "department": None,
        "rating": None,
    }
    values.update(kw)
    return EventView(**values)  # type: ignore[arg-type]


def _state(*entries: tuple[Event, Actor, timedelta], now: datetime) -> DeadlineState:
    history = [HistoryEntry(T0 + offset, event, actor) for event, actor, offset in entries]
    return deadline_state(timeline_of(history), now)


CREATED = (Event.CREATED, Actor.VILLAGER, timedelta(0))


@pytest.mark.parametrize(
    ("delta", "zh", "en"),
    [
        (timedelta(seconds=59), "0 分钟", "0 min"),
        (timedelta(minutes=25), "25 分钟", "25 min"),
        (timedelta(hours=3, minutes=10), "3 小时 10 分钟", "3 h 10 min"),
        (timedelta(days=2, hours=4, minutes=59), "2 天 4 小时", "2 d 4 h"),
        (timedelta(seconds=-5), "0 分钟", "0 min"),
    ],
)
def test_span(delta: timedelta, zh: str, en: str) -> None:
    assert (span(ZH, delta), span(EN, delta)) == (zh, en)


def test_deadline_line_running_overdue_paused_and_none() -> None:
    now = T0 + timedelta(hours=1)
    assert deadline_text(EN, _state(CREATED, now=now), now, TZ) == (
        "⏰ acceptance due 12-01 10:00 (23 h 0 min left)"
    )
    late = T0 + timedelta(hours=30)
    assert deadline_text(ZH, _state(CREATED, now=late), late, TZ) == (
        "❗ 受理已超时，时限 12-01 10:00（超出 6 小时 0 分钟）"
    )
    forwarded = (Event.FORWARDED, Actor.OFFICER, timedelta(hours=2))
    paused = _state(CREATED, forwarded, now=now)
    # The department's clock stands for the request while the officer's is paused.
    assert deadline_text(EN, paused, now, TZ).startswith("⏰ department's reply due 12-07 12:00")
    resolved = (Event.RESOLVED, Actor.OFFICER, timedelta(hours=2))
    assert deadline_text(EN, _state(CREATED, resolved, now=now), now, TZ) == EN(
        "request.deadline_none"
    )


def test_officer_never_sees_an_anonymous_villagers_name() -> None:
    named, anonymous = _request(), _request(anonymous=True, villager_name="")
    assert villager_label(ZH, named) == "李四"
    assert villager_label(ZH, anonymous) == ZH("request_who.anonymous")
    card = handler_card(EN, anonymous, [], _state(CREATED, now=T0), now=T0, tz=TZ)
    assert "李四" not in card and EN("request_who.anonymous") in card


def test_history_lines_name_each_side_as_the_reader_knows_them() -> None:
    reply = _event(Event.REPLIED, Actor.OFFICER, T0, officer_name="王警官", body="明天上午到现场")
    message = _event(Event.VILLAGER_MESSAGE, Actor.VILLAGER, T0, body="好的", photos=(("f", "u"),))
    assert event_line(ZH, reply, TZ, for_villager=True) == "11-30 10:00 王警官回复：明天上午到现场"
    assert event_line(EN, message, TZ, for_villager=True) == (
        "11-30 10:00 You added a message: 好的 📷 1"
    )
    assert event_line(EN, message, TZ, for_villager=False).startswith("11-30 10:00 Villager added")
    forwarded = _event(
        Event.FORWARDED, Actor.OFFICER, T0, officer_name="王警官", department="civil_affairs"
    )
    assert event_line(ZH, forwarded, TZ, for_villager=False) == "11-30 10:00 王警官转交民政部门"


def test_long_history_keeps_the_head_and_the_newest_entries_within_one_message() -> None:
    events = [_event(Event.CREATED, Actor.VILLAGER, T0)] + [
        _event(Event.VILLAGER_MESSAGE, Actor.VILLAGER, T0 + timedelta(minutes=i), body="长" * 2000)
        for i in range(1, 40)
    ]
    request = _request(body="长" * 2000)
    card = villager_card(ZH, request, events, tz=TZ)
    assert len(card) <= MAX_MESSAGE
    assert card.startswith("📨 R000012")
    assert card.rstrip().endswith("…")  # the newest entry, shortened, is the last line
    shown = card.count("您补充了内容")
    assert 0 < shown < 12  # fewer than HISTORY_SHOWN fit beside a 2000-character request
    assert ZH("request.history_more", count=40 - shown) in card
