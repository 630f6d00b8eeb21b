"""Faults in the update pipeline, in-process: every update delivered twice and every button
tapped twice, and handlers that raise now and then (issue 6, faults).

The bot process, PostgreSQL restarts and SIGKILL are in tests/test_faults_process.py.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiogram.types import TelegramObject, Update
from sqlalchemy import func, select, text
from sqlalchemy import update as update_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import build_dispatcher
from bot.i18n import Translator, catalogue
from bot.replies import Replies
from bot.runner import run_polling
from core.tokens import village_payload
from storage import invites
from storage.models import (
    Base,
    ConversationState,
    FailedUpdate,
    Hazard,
    OutboxMessage,
    Photo,
    ProcessedUpdate,
    Request,
    RequestEvent,
    VisitActivity,
    VisitReport,
)
from tests.botapi import BotApiServer, Call, SimUser
from tests.factories import Directory, seed_directory
from tests.harness import Chat, make_settings

ZH = Translator("zh")
WEEK = timedelta(days=7)
TABLES = [t.name for t in Base.metadata.sorted_tables]


def lead(t: Translator, key: str) -> str:
    """A catalogue text up to its first placeholder: what a message starts with."""
    return catalogue(t.locale)[key].split("{")[0]


async def _row_counts(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with sessions() as s:
        return {
            name: int(await s.scalar(text(f'SELECT count(*) FROM "{name}"')) or 0)
            for name in TABLES
        }


async def _directory_alone(sessions: async_sessionmaker[AsyncSession]) -> Directory:
    async with sessions() as s, s.begin():
        names = ", ".join(f'"{name}"' for name in TABLES)
        await s.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        return await seed_directory(s)


async def _officer_link(sessions: async_sessionmaker[AsyncSession], badge: str, chat: Chat) -> str:
    async with sessions() as s, s.begin():
        issued, _ = await invites.create_officer_invite(s, badge=badge, now=chat.clock(), ttl=WEEK)
    return f"/start {issued.payload}"


# --- every update twice, every button tapped twice ---------------------------------------------


class Deliveries:
    """How updates reach the bot: once each, or (`twice`) each one twice at the same moment,
    to two Dispatchers as two processes sharing the database would, and every button press
    followed by a second tap on the same button (a new update id)."""

    def __init__(
        self, chat: Chat, sessions: async_sessionmaker[AsyncSession], *, twice: bool
    ) -> None:
        self.chat, self.server, self.twice = chat, chat.server, twice
        self.other = build_dispatcher(make_settings(), sessions, clock=chat.clock)
        self.retaps = 0

    async def _deliver(self, update: dict[str, Any]) -> None:
        if not self.twice:
            await self.chat.feed(update)
            return
        bot = self.chat.bot
        await asyncio.gather(
            self.chat.feed(update),
            self.other.feed_update(bot, Update.model_validate(update, context={"bot": bot})),
        )

    async def say(self, user: SimUser, message: str) -> None:
        await self._deliver(await self.server.send_text(user, message))

    async def photo(self, user: SimUser) -> None:
        await self._deliver(await self.server.send_photo(user))

    async def click(self, user: SimUser, label: str, **kw: Any) -> None:
        update = await self.server.click(user, label, **kw)
        await self._deliver(update)
        query = update.get("callback_query")
        if self.twice and query is not None:
            self.retaps += 1
            again = await self.server.press(
                user, query["message"]["message_id"], query["data"], force=True
            )
            await self._deliver(again)


@dataclass
class FieldDay:
    officer: SimUser
    villager: SimUser


async def _field_day(
    d: Deliveries, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> FieldDay:
    """A visit report, a hazard, and a villager's request answered, resolved and rated."""
    chat, server = d.chat, d.server
    officer = server.user(first_name="王")
    await d.say(officer, await _officer_link(sessions, "012345", chat))

    await d.say(officer, "/visit")
    await d.click(officer, "张庄村")
    await d.click(officer, ZH("visit.today"))
    await d.say(officer, "2")
    await d.say(officer, "3")
    await d.click(officer, ZH("activity.patrol"))
    await d.click(officer, "2")  # patrols
    await d.click(officer, ZH("visit.activities_done"))
    await d.click(officer, ZH("flow.send_location"), location=(34.1005, 113.2005))
    await d.photo(officer)
    await d.click(officer, ZH("flow.photos_done"))
    await d.say(officer, "村里治安良好")
    await d.click(officer, ZH("flow.submit"))

    await d.say(officer, "/hazard")
    await d.click(officer, "张庄村")
    await d.click(officer, ZH("hazard_category.fire"))
    await d.click(officer, ZH("severity.high"))
    await d.say(officer, "柴草堆在灶台旁")
    await d.photo(officer)
    await d.click(officer, ZH("flow.photos_done"))
    await d.click(officer, ZH("flow.skip"))
    await d.click(officer, ZH("flow.submit"))

    villager = server.user(first_name="李四")
    await d.say(villager, f"/start {village_payload(directory.villages[0].join_token)}")
    await d.click(villager, ZH("join.yes"))
    await d.click(villager, ZH("join.skip_phone"))
    await d.click(villager, ZH("button.request"))
    await d.click(villager, ZH("request_category.dispute"))
    await d.say(villager, "邻居家的狗天天夜里叫，协商不成。")
    await d.click(villager, ZH("flow.no_photos"))
    await d.click(villager, ZH("flow.skip"))
    await d.click(villager, ZH("request_flow.with_name"))
    await d.click(villager, ZH("flow.submit"))
    await chat.deliver()

    await d.click(officer, ZH("request_button.accept"))
    await d.click(officer, ZH("request_button.reply"))
    await d.say(officer, "明天上午我到村里找双方协商。")
    await d.click(officer, ZH("request_button.resolve"))
    await d.say(officer, "双方已达成协议。")
    await chat.deliver()
    await d.click(villager, ZH("request_button.star", rating=5))
    await chat.deliver()
    return FieldDay(officer, villager)


async def test_every_update_twice_and_every_button_tapped_twice_records_nothing_twice(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    # Both days start from the same database: the directory alone (earlier tests' rows,
    # such as bot_meta written by a bot process, are cleared too).
    directory = await _directory_alone(sessions)
    once = Deliveries(chat, sessions, twice=False)
    await _field_day(once, sessions, directory)
    clean = await _row_counts(sessions)
    applied_once = len(chat.server.queue.history)

    directory = await _directory_alone(sessions)
    await chat.server.reset()
    twice = Deliveries(chat, sessions, twice=True)
    day = await _field_day(twice, sessions, directory)
    doubled = await _row_counts(sessions)

    # Every table holds what the same day holds when each update arrives once; the update
    # log has one row per distinct update id (the second taps are updates of their own).
    assert twice.retaps == 18  # every inline button pressed on the way
    assert doubled == {**clean, "processed_updates": applied_once + twice.retaps}
    assert doubled["processed_updates"] == len(chat.server.queue.history)

    async with sessions() as s:
        [report] = await s.scalars(select(VisitReport))
        activities = dict((await s.execute(select(VisitActivity.code, VisitActivity.count))).all())
        [hazard] = await s.scalars(select(Hazard))
        photos = Counter((await s.execute(select(Photo.visit_report_id, Photo.hazard_id))).all())
        [request] = await s.scalars(select(Request))
        events = list(await s.scalars(select(RequestEvent.event).order_by(RequestEvent.id)))
        outbox = list(await s.execute(select(OutboxMessage.chat_id, OutboxMessage.status)))
        states = list(await s.scalars(select(ConversationState.state)))
        failed = await s.scalar(select(func.count()).select_from(FailedUpdate))
    assert (report.hours, report.households, report.notes) == (Decimal(2), 3, "村里治安良好")
    assert activities == {"patrol": 2}
    assert hazard.severity == "high"
    assert photos == {(report.id, None): 1, (None, hazard.id): 1}
    assert (request.status, request.rating) == ("resolved", 5)
    assert events == ["created", "acknowledged", "replied", "resolved", "rated"]
    # The officer's notice of the request and of the rating; the villager's of acceptance,
    # reply and resolution: each sent once.
    assert sorted(outbox) == sorted(
        [(day.officer.id, "sent")] * 2 + [(day.villager.id, "sent")] * 3
    )
    assert all(state is None for state in states)  # every conversation ended
    assert failed == 0

    texts = chat.texts(day.officer) + chat.texts(day.villager)
    for key in ("visit.saved", "hazard.saved", "request_flow.sent", "inbox.reply_sent"):
        assert sum(t.startswith(lead(ZH, key)) for t in texts) == 1, key
    relayed = [t for t in chat.texts(day.villager) if t.startswith(lead(ZH, "request_note.reply"))]
    assert len(relayed) == 1


# --- 1 % of handler calls raising --------------------------------------------------------------

FAULT_RATE = 0.01  # of handler calls: half raise before the handler, half after it ran
POISON_RATE = 0.01  # of updates: raise on every attempt (a bug no retry cures)
SEED = 28  # chosen so that all three outcomes occur: see the assertion below
FAILED = ZH("error.failed")
REPLY_TIMEOUT = 20.0


class InjectedFault(RuntimeError):
    pass


class Faults:
    """Test-side middleware around every handler call. Each user has a seeded random stream
    of their own; one user's updates are handled one after another, so which calls fail
    does not depend on how the users' updates interleave."""

    def __init__(self, users: list[SimUser]) -> None:
        self.rngs = {u.id: random.Random(f"{SEED}:{n}") for n, u in enumerate(users)}
        self.poisoned: set[int] = set()
        self.seen: set[int] = set()
        self.injected: Counter[int] = Counter()  # update id -> calls made to fail
        self.after: set[int] = set()  # updates that failed after their handler ran
        self.calls = 0

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        update_id = data["event_update"].update_id
        rng = self.rngs[data["event_from_user"].id]
        self.calls += 1
        if update_id not in self.seen:
            self.seen.add(update_id)
            if rng.random() < POISON_RATE:
                self.poisoned.add(update_id)
        draw = rng.random()
        if update_id in self.poisoned or draw < FAULT_RATE / 2:
            self.injected[update_id] += 1
            raise InjectedFault(f"before the handler of update {update_id}")
        result = await handler(event, data)
        if draw < FAULT_RATE:
            self.injected[update_id] += 1
            self.after.add(update_id)
            raise InjectedFault(f"after the handler of update {update_id} ran")
        return result


@dataclass(frozen=True)
class Step:
    act: str  # "say" or "click"
    arg: str
    expect: tuple[str, ...]  # how each message the bot answers with begins, in order


@dataclass
class Talk:
    """One user going through their steps as a person would: each step waits for its answer,
    and a step the bot could not handle ("something went wrong") is simply sent again."""

    server: BotApiServer
    user: SimUser
    steps: list[Step]
    expected: list[str] = field(default_factory=list)
    told_failed: int = 0

    async def run(self) -> None:
        for step in self.steps:
            while True:
                mark = self.server.mark()
                if step.act == "say":
                    await self.server.send_text(self.user, step.arg)
                else:
                    await self.server.click(self.user, step.arg)
                if await self._answer(mark, step.expect[-1]) != FAILED:
                    self.expected.extend(step.expect)
                    break
                self.expected.append(FAILED)
                self.told_failed += 1

    async def _answer(self, mark: int, last: str) -> str:
        """The step's last answer, or the news that it failed."""

        def answers(call: Call) -> bool:
            text = str(call.params.get("text"))
            return (
                call.method == "sendMessage"
                and str(call.chat_id) == str(self.user.id)
                and (text == FAILED or text.startswith(last))
            )

        return str((await self.server.wait_for(answers, REPLY_TIMEOUT, since=mark)).params["text"])

    def received(self) -> list[str]:
        return [
            str(c.params["text"])
            for c in self.server.calls_of("sendMessage")
            if str(c.chat_id) == str(self.user.id)
        ]


def _visit_steps(village: str | None) -> list[Step]:
    def step(n: int) -> str:
        return ZH("flow.step", step=n, total=8)

    picked = [Step("click", village, (step(2),))] if village else []
    return [
        Step("say", "/visit", (step(1 if village else 2),)),
        *picked,
        Step("click", ZH("visit.today"), (step(3),)),
        Step("say", "2", (step(4),)),
        Step("say", "3", (step(5),)),
        Step("click", ZH("visit.activities_done"), (step(6),)),
        Step("click", ZH("flow.skip"), (step(7),)),
        Step("click", ZH("flow.no_photos"), (step(8),)),
        Step("click", ZH("flow.skip"), (ZH("flow.summary_ready"), ZH("visit.summary_title"))),
        Step("click", ZH("flow.submit"), (lead(ZH, "visit.saved"),)),
    ]


def _request_steps(n: int) -> list[Step]:
    def step(k: int) -> str:
        return ZH("flow.step", step=k, total=5)

    return [
        Step("click", ZH("button.request"), (step(1),)),
        Step("click", ZH("request_category.dispute"), (step(2),)),
        Step("say", f"第 {n} 件：邻居家的狗天天夜里叫。", (step(3),)),
        Step("click", ZH("flow.no_photos"), (step(4),)),
        Step("click", ZH("flow.skip"), (ZH("request_flow.location_skipped"), step(5))),
        Step(
            "click",
            ZH("request_flow.with_name"),
            (ZH("flow.summary_ready"), ZH("request_flow.summary_title")),
        ),
        Step("click", ZH("flow.submit"), (lead(ZH, "request_flow.sent"),)),
    ]


async def test_one_percent_of_handler_calls_raising_loses_no_update(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    server = chat.server
    officers = [server.user(first_name="王"), server.user(first_name="赵")]
    villagers = [server.user(first_name=f"村民{n}") for n in range(10)]
    faults = Faults([*officers, *villagers])
    chat.dp.message.middleware(faults)
    chat.dp.callback_query.middleware(faults)

    welcome = (lead(ZH, "start.officer_welcome"),)
    talks = [
        Talk(
            server,
            officers[0],
            [
                Step("say", await _officer_link(sessions, "012345", chat), welcome),
                *(s for name in ("张庄村", "李庄村", "张庄村") for s in _visit_steps(name)),
            ],
        ),
        Talk(
            server,
            officers[1],
            [
                Step("say", await _officer_link(sessions, "067890", chat), welcome),
                *(s for _ in range(3) for s in _visit_steps(None)),
            ],
        ),
    ]
    for n, villager in enumerate(villagers):
        village = directory.villages[n % 2]
        join = f"/start {village_payload(village.join_token)}"
        steps = [
            Step("say", join, (lead(ZH, "join.confirm"),)),
            Step("click", ZH("join.yes"), (lead(ZH, "join.joined"),)),
            Step("click", ZH("join.skip_phone"), (ZH("join.phone_skipped"),)),
            *_request_steps(1),
            Step("say", "/help", (ZH("help.intro.villager")[:10],)),
            *_request_steps(2),
            Step("say", "/myrequests", (lead(ZH, "request_flow.my_title"),)),
        ]
        talks.append(Talk(server, villager, steps))

    stop = asyncio.Event()
    polling = asyncio.create_task(run_polling(chat.bot, chat.dp, stop))
    try:
        await asyncio.gather(*(talk.run() for talk in talks))
        for update_id in server.queue.history:  # each one confirmed to Telegram (offset)
            await server.wait_delivered(update_id, timeout=REPLY_TIMEOUT)
    finally:
        stop.set()
        await polling

    # Every update sent is accounted for: applied exactly once, or set aside as dead.
    sent = {int(i): u for i, u in server.queue.history.items()}
    async with sessions() as s:
        applied = set(await s.scalars(select(ProcessedUpdate.update_id)))
        failed = {f.update_id: f for f in await s.scalars(select(FailedUpdate))}
        reports = await s.scalar(select(func.count()).select_from(VisitReport))
        requests = await s.scalar(select(func.count()).select_from(Request))
        events = Counter(await s.scalars(select(RequestEvent.event)))
        outbox = await s.scalar(select(func.count()).select_from(OutboxMessage))
    dead = {i for i, f in failed.items() if f.dead}
    print(
        f"\n{len(sent)} updates, {faults.calls} handler calls, {sum(faults.injected.values())} "
        f"made to fail: {len(faults.injected) - len(dead)} updates retried and applied "
        f"({len(faults.after)} failing after their handler ran), {len(dead)} set aside"
    )
    assert len(sent) >= 250
    assert applied.isdisjoint(dead) and applied | dead == set(sent)
    assert dead == faults.poisoned
    assert set(failed) == set(faults.injected)
    for update_id, record in failed.items():
        assert record.attempts == faults.injected[update_id], update_id
        assert record.error.startswith("InjectedFault: "), record.error
        assert record.payload["update_id"] == update_id
    # The seed makes all three outcomes happen (the draws are per user, so they are stable).
    assert dead and faults.after and set(faults.injected) - dead - faults.after

    # Each set-aside update was told to its sender once and sent again by them; nothing
    # else was answered twice or left unanswered.
    dead_by_user = Counter(
        sent[i]["message" if "message" in sent[i] else "callback_query"]["from"]["id"] for i in dead
    )
    for talk in talks:
        assert talk.told_failed == dead_by_user[talk.user.id]
        received = talk.received()
        assert len(received) == len(talk.expected), talk.user.first_name
        for got, want in zip(received, talk.expected, strict=True):
            assert got.startswith(want), (got, want)
    assert reports == 6 and requests == 20
    assert events == {"created": 20}
    assert outbox == 20  # the officer's notice of each request, once


# --- a process that dies between commit and answer ---------------------------------------------


class Killed(BaseException):
    """The process dying: nothing after it runs, not even `except Exception` blocks."""


async def test_an_update_applied_but_not_answered_is_answered_on_its_redelivery(
    chat: Chat,
    sessions: async_sessionmaker[AsyncSession],
    directory: Directory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    officer = chat.server.user(first_name="王")
    await chat.say(officer, await _officer_link(sessions, "012345", chat))
    update = await chat.server.send_text(officer, "/visit")
    before = len(chat.texts(officer))

    async def die(self: Replies, bot: Any) -> None:
        raise Killed

    with monkeypatch.context() as patched:
        patched.setattr(Replies, "send", die)
        with pytest.raises(Killed):
            await chat.feed(update)  # applied and committed; the answer never left
    assert len(chat.texts(officer)) == before
    async with sessions() as s, s.begin():
        # Time passes until Telegram delivers the update again (past the grace period in
        # which the process that applied it could still be sending its answers).
        kept = await s.execute(
            update_(ProcessedUpdate)
            .filter_by(**_id(update))
            .values(processed_at=ProcessedUpdate.processed_at - timedelta(minutes=1))
            .returning(ProcessedUpdate.answers)
        )
        assert kept.scalar_one() is not None

    await chat.feed(update)  # delivered again: not applied twice, but answered
    await chat.feed(update)  # and a third time: the answer is not sent twice
    asked = chat.texts(officer)[before:]
    assert asked == [ZH("flow.step", step=1, total=8) + "\n" + ZH("visit.ask_village")]
    await chat.click(officer, "张庄村")  # the resent keyboard works
    assert chat.texts(officer)[-1].startswith(ZH("flow.step", step=2, total=8))
    await _marked_sent(sessions, update)
    async with sessions() as s:
        states = list(await s.scalars(select(ConversationState.state)))
    assert len([s for s in states if s is not None]) == 1


async def test_answers_sent_by_a_live_process_are_not_sent_again_on_redelivery(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], directory: Directory
) -> None:
    officer = chat.server.user(first_name="王")
    update = await chat.server.send_text(officer, await _officer_link(sessions, "012345", chat))
    await chat.feed(update)
    answered = chat.texts(officer)
    assert answered
    await _marked_sent(sessions, update)
    await chat.feed(update)  # at once, and (below) long after
    async with sessions() as s, s.begin():
        stale = ProcessedUpdate.processed_at - timedelta(minutes=1)
        await s.execute(update_(ProcessedUpdate).values(processed_at=stale))
    await chat.feed(update)
    assert chat.texts(officer) == answered


async def _marked_sent(sessions: async_sessionmaker[AsyncSession], update: dict[str, Any]) -> None:
    """Wait until the answers to `update` are marked as sent (a moment after they went out,
    see bot.middlewares.SentAnswers)."""
    async with asyncio.timeout(5):
        while True:
            async with sessions() as s:
                kept = await s.scalar(select(ProcessedUpdate.answers).filter_by(**_id(update)))
            if kept is None:
                return
            await asyncio.sleep(0.02)


def _id(update: dict[str, Any]) -> dict[str, int]:
    return {"update_id": int(update["update_id"])}
