"""Faults around `villagebeat run` in webhook mode: PostgreSQL stopped and started again under
load, and the bot SIGKILLed in the middle of many conversations (issue 6, faults).

The database is an embedded PostgreSQL of this module's own (never the server other tests
share), so that it can be stopped; the Bot API test server redelivers on 5xx as Telegram does.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.i18n import Translator, catalogue
from core.roles import AssignmentKind
from core.tokens import new_village_token, village_payload
from storage import invites
from storage.db import make_engine
from storage.embedded import EmbeddedPostgres
from storage.migrate import upgrade
from storage.models import (
    Assignment,
    FailedUpdate,
    Officer,
    OutboxMessage,
    ProcessedUpdate,
    Request,
    RequestEvent,
    Station,
    User,
    Village,
    VisitReport,
)
from tests.botapi import BotApiServer, SimUser
from tests.botproc import BotProcess, free_port
from tests.e2e import bot_process

pytestmark = pytest.mark.timeout(240)
ZH = Translator("zh")
SECRET = "faults-secret_0123456789"
REPLY_TIMEOUT = 40.0
VILLAGES = 9  # V01…V09, officer 10000n resident in V0n; V09's officer takes the requests


def lead(key: str) -> str:
    """A catalogue text up to its first placeholder: what a message starts with."""
    return catalogue("zh")[key].split("{")[0]


# --- the module's own database, Bot API server and bot process ----------------------------------


@dataclass
class Database:
    embedded: EmbeddedPostgres
    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    villages: list[Village]


async def _seed(sessions: async_sessionmaker[AsyncSession]) -> list[Village]:
    async with sessions() as s, s.begin():
        station = Station(code="S01", name="城关派出所")
        s.add(station)
        await s.flush()
        villages = [
            Village(
                code=f"V{n:02d}",
                name=f"{n}号村",
                station_id=station.id,
                latitude=34.0 + n / 100,
                longitude=113.0,
                join_token=new_village_token(),
            )
            for n in range(1, VILLAGES + 1)
        ]
        officers = [Officer(badge=f"{100000 + n}", name=f"警官{n}") for n in range(1, VILLAGES + 1)]
        s.add_all([*villages, *officers])
        await s.flush()
        s.add_all(
            Assignment(officer_id=o.id, village_id=v.id, kind=AssignmentKind.RESIDENT.value)
            for o, v in zip(officers, villages, strict=True)
        )
    return villages


@pytest.fixture(scope="module")
async def db() -> AsyncIterator[Database]:
    with tempfile.TemporaryDirectory(prefix="vb-faults-") as tmp:
        embedded = EmbeddedPostgres(Path(tmp) / "pg")
        url = await embedded.start()
        engine = make_engine(url, pool_size=4)
        try:
            await upgrade(engine)
            sessions = async_sessionmaker(engine, expire_on_commit=False)
            yield Database(embedded, url, engine, sessions, await _seed(sessions))
        finally:
            await engine.dispose()
            await embedded.stop()


@pytest.fixture(scope="module")
async def api() -> AsyncIterator[BotApiServer]:
    # Redelivery backs off to 0.5 s at most (Telegram waits longer), to keep the test short.
    async with BotApiServer(webhook_retry_delay=0.1, webhook_max_retry_delay=0.5) as server:
        yield server


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
async def bot(
    api: BotApiServer, db: Database, port: int, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BotProcess]:
    env = {
        "WEBHOOK_URL": f"http://127.0.0.1:{port}/telegram/hook",
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_HOST": "127.0.0.1",
        "WEBHOOK_PORT": str(port),
    }
    async with bot_process(api, db.url, tmp_path_factory.mktemp("faults"), **env) as process:
        await process.ready(api, "setWebhook")
        yield process


async def _officer_link(db: Database, n: int) -> str:
    async with db.sessions() as s, s.begin():
        issued, _ = await invites.create_officer_invite(
            s, badge=f"{100000 + n}", now=datetime.now(UTC), ttl=timedelta(days=7)
        )
    return f"/start {issued.payload}"


# --- users going through their conversations ---------------------------------------------------


@dataclass(frozen=True)
class Step:
    act: str  # "say" or "click"
    arg: str
    expect: tuple[str, ...]  # how each message the bot answers with begins, in order


@dataclass
class Talk:
    """One user's conversation, a step at a time: send, then wait for the step's answer."""

    server: BotApiServer
    user: SimUser
    steps: list[Step]
    done: int = 0
    expected: list[str] = field(default_factory=list)

    async def send(self) -> int:
        """Send the next step; the mark to wait for its answer from."""
        mark = self.server.mark()
        step = self.steps[self.done]
        if step.act == "say":
            await self.server.send_text(self.user, step.arg)
        else:
            await self.server.click(self.user, step.arg)
        return mark

    async def answered(self, mark: int) -> None:
        step = self.steps[self.done]
        last, failed = step.expect[-1], ZH("error.failed")
        call = await self.server.wait_for(
            lambda c: (
                c.method == "sendMessage"
                and str(c.chat_id) == str(self.user.id)
                and (str(c.params["text"]).startswith(last) or c.params["text"] == failed)
            ),
            REPLY_TIMEOUT,
            since=mark,
        )
        assert call.params["text"] != failed, f"user {self.user.id} was told an update failed"
        self.expected.extend(step.expect)
        self.done += 1

    async def run(self, until: int | None = None) -> None:
        while self.done < (len(self.steps) if until is None else until):
            await self.answered(await self.send())

    def check_answers(self) -> None:
        """Every step answered once, in order: nothing lost, nothing doubled."""
        received = _texts_to(self.server, self.user)
        assert len(received) == len(self.expected), (self.user.first_name, received)
        for got, want in zip(received, self.expected, strict=True):
            assert got.startswith(want), (self.user.first_name, got, want)


def _visit_steps(n: int) -> list[Step]:
    """A visit report of an officer with one village: hours n, households n + 1."""

    def step(k: int) -> str:
        return ZH("flow.step", step=k, total=8)

    return [
        Step("say", "/visit", (step(2),)),
        Step("click", ZH("visit.today"), (step(3),)),
        Step("say", str(n), (step(4),)),
        Step("say", str(n + 1), (step(5),)),
        Step("click", ZH("visit.activities_done"), (step(6),)),
        Step("click", ZH("flow.skip"), (step(7),)),
        Step("click", ZH("flow.no_photos"), (step(8),)),
        Step("say", f"走访记录 {n}", (ZH("flow.summary_ready"), ZH("visit.summary_title"))),
        Step("click", ZH("flow.submit"), (lead("visit.saved"),)),
    ]


def _request_steps(village: Village, body: str) -> list[Step]:
    def step(k: int) -> str:
        return ZH("flow.step", step=k, total=5)

    return [
        Step("say", f"/start {village_payload(village.join_token)}", (lead("join.confirm"),)),
        Step("click", ZH("join.yes"), (lead("join.joined"),)),
        Step("click", ZH("join.skip_phone"), (ZH("join.phone_skipped"),)),
        Step("click", ZH("button.request"), (step(1),)),
        Step("click", ZH("request_category.safety"), (step(2),)),
        Step("say", body, (step(3),)),
        Step("click", ZH("flow.no_photos"), (step(4),)),
        Step("click", ZH("flow.skip"), (ZH("request_flow.location_skipped"), step(5))),
        Step(
            "click",
            ZH("request_flow.with_name"),
            (ZH("flow.summary_ready"), ZH("request_flow.summary_title")),
        ),
        Step("click", ZH("flow.submit"), (lead("request_flow.sent"),)),
    ]


async def _officer_talk(server: BotApiServer, db: Database, n: int) -> Talk:
    officer = server.user(first_name=f"警官{n}")
    join = Step("say", await _officer_link(db, n), (lead("start.officer_welcome"),))
    return Talk(server, officer, [join, *_visit_steps(n)])


async def _handler(server: BotApiServer, db: Database) -> SimUser:
    """V09's officer, who is sent the villagers' requests."""
    talk = await _officer_talk(server, db, VILLAGES)
    talk.steps = talk.steps[:1]
    await talk.run()
    return talk.user


# --- the checks ----------------------------------------------------------------------------------


@dataclass
class Tally:
    reports: dict[int, tuple[Decimal, int, str | None]]  # officer -> hours, households, notes
    requests: list[str]
    created_events: int
    outbox: list[tuple[int, str]]
    users: set[int]
    applied: set[int]
    failed: int


async def _tally(db: Database) -> Tally:
    async with db.sessions() as s:
        reports = {
            int(u): (h, n, notes)
            for u, h, n, notes in await s.execute(
                select(User.id, VisitReport.hours, VisitReport.households, VisitReport.notes).join(
                    User, User.officer_id == VisitReport.officer_id
                )
            )
        }
        count = await s.scalar(select(func.count()).select_from(VisitReport))
        assert count == len(reports), "more than one report for an officer"
        return Tally(
            reports=reports,
            requests=list(await s.scalars(select(Request.body))),
            created_events=int(
                await s.scalar(
                    select(func.count())
                    .select_from(RequestEvent)
                    .where(RequestEvent.event == "created")
                )
                or 0
            ),
            outbox=[
                (int(c), str(st))
                for c, st in await s.execute(select(OutboxMessage.chat_id, OutboxMessage.status))
            ],
            users=set(await s.scalars(select(User.id))),
            applied=set(await s.scalars(select(ProcessedUpdate.update_id))),
            failed=int(await s.scalar(select(func.count()).select_from(FailedUpdate)) or 0),
        )


class Health:
    """GET /healthz every 0.1 s, recording (time, status)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/healthz"
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(self.url, timeout=aiohttp.ClientTimeout(total=5)) as r:
                        self.samples.append((time.monotonic(), r.status))
                except (aiohttp.ClientError, TimeoutError):
                    self.samples.append((time.monotonic(), 0))
                await asyncio.sleep(0.1)

    def start(self) -> None:
        self._task = asyncio.create_task(self._probe())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def wait_for(self, status: int, since: float, timeout: float = 20.0) -> float:
        """When health first answered `status` after `since`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, seen in self.samples:
                if at >= since and seen == status:
                    return at
            await asyncio.sleep(0.05)
        answers = [s for at, s in self.samples if at >= since]
        raise AssertionError(f"/healthz never answered {status} in {timeout} s: {answers[-20:]}")


async def _update_waiting_on_lock(engine: AsyncEngine) -> int:
    """The sender of an update held up inside its transaction by a lock the test holds: its
    transaction already took the advisory lock keyed on the sender (storage.updates)."""
    query = text(
        "SELECT l.objid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND a.wait_event_type = 'Lock' "
        "AND a.datname = current_database()"
    )
    async with asyncio.timeout(REPLY_TIMEOUT):
        while True:
            async with engine.connect() as conn:
                found = (await conn.execute(query)).scalar()
            if found is not None:
                return int(found)
            await asyncio.sleep(0.05)


def _sender(update: dict[str, Any]) -> int:
    return int(next(v for k, v in update.items() if k != "update_id")["from"]["id"])


def _sent_messages(server: BotApiServer, since: int) -> int:
    return sum(1 for c in server.calls_of("sendMessage") if c.seq >= since)


def _texts_to(server: BotApiServer, user: SimUser) -> list[str]:
    return [
        str(c.params["text"])
        for c in server.calls_of("sendMessage")
        if str(c.chat_id) == str(user.id)
    ]


async def _outbox_sent(db: Database, count: int) -> None:
    """Wait until the delivery worker has sent `count` messages."""
    async with asyncio.timeout(REPLY_TIMEOUT):
        while True:
            async with db.sessions() as s:
                sent = await s.scalar(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.status == "sent")
                )
            if sent == count:
                return
            await asyncio.sleep(0.1)


# --- the tests ------------------------------------------------------------------------------------


async def test_postgres_restarted_under_load_applies_every_update_once(
    api: BotApiServer, bot: BotProcess, db: Database, port: int
) -> None:
    """Officers file visit reports and villagers send requests while PostgreSQL is stopped
    (pg_ctl stop -m fast, with an update inside its transaction) and started 2 s later."""
    known = set(api.queue.history)
    handler = await _handler(api, db)
    talks = [await _officer_talk(api, db, n) for n in range(1, 5)]
    for n in range(4):
        villager = api.user(first_name=f"村民{n}")
        talks.append(Talk(api, villager, _request_steps(db.villages[-1], f"村民{n}：河边护栏坏了")))
    total = sum(len(t.steps) for t in talks)
    health = Health(port)
    health.start()
    mark = api.mark()
    load = asyncio.gather(*(talk.run() for talk in talks))
    down = False
    try:
        async with asyncio.timeout(REPLY_TIMEOUT):
            while _sent_messages(api, mark) < total // 3:  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.02)
        # Hold the next update inside its transaction (a table lock), so that the stop cuts
        # off an update half done, not only the ones that come after.
        blocker = await asyncpg.connect(db.url.replace("postgresql+asyncpg", "postgresql"))
        await blocker.execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        held = await _update_waiting_on_lock(db.engine)
        cut_off = api.queue.pending[0].update_id  # in flight: popped once answered 2xx
        assert _sender(api.queue.pending[0].update) == held
        stopped, down = time.monotonic(), True
        await db.embedded.stop()
        blocker.terminate()
        # Keep sending while it is down: newcomers too, whose updates queue behind.
        strangers = [api.user(first_name=f"路人{n}") for n in range(3)]
        for stranger in strangers:
            await api.send_text(stranger, "/start")
        unhealthy = await health.wait_for(503, since=stopped)
        await asyncio.sleep(2.0)
        restarted, down = time.monotonic(), False
        await db.embedded.start()
        healthy = await health.wait_for(200, since=restarted)
        await load
    finally:
        load.cancel()
        await health.stop()
        if down:  # a failure above: leave the database up for the next test
            await db.embedded.start()
    for stranger in strangers:
        await api.wait_for_call("sendMessage", chat_id=stranger.id, timeout=REPLY_TIMEOUT)
    await _outbox_sent(db, 4)

    ours = set(api.queue.history) - known
    for update_id in ours:  # the last answers may come just before the HTTP answer
        await api.wait_delivered(update_id, timeout=REPLY_TIMEOUT)
    attempts = [a for a in api.webhook_attempts if a.update_id in ours]
    refused = {a.update_id for a in attempts if a.status is not None and a.status >= 500}
    print(
        f"\n{len(ours)} updates, PostgreSQL down {restarted - stopped:.1f} s; "
        f"{len(refused)} updates answered 5xx ({sum(a.status == 500 for a in attempts)} times); "
        f"/healthz 503 {unhealthy - stopped:.2f} s after the stop, "
        f"200 {healthy - restarted:.2f} s after the start"
    )
    # Answered 5xx while the database was away, delivered again, and finally accepted.
    assert cut_off in refused
    assert all(a.ok or a.status == 500 for a in attempts), attempts
    for update_id in ours:
        assert [a for a in attempts if a.update_id == update_id][-1].ok, update_id
    assert all(at < restarted + 3 for at, status in health.samples if status == 503)
    assert health.samples[0][1] == 200 and health.samples[-1][1] == 200

    tally = await _tally(db)
    assert ours <= tally.applied and tally.failed == 0  # a database outage is never a failure
    officers = [t.user.id for t in talks[:4]]
    assert {u: tally.reports[u] for u in officers} == {
        u: (Decimal(n), n + 1, f"走访记录 {n}") for n, u in enumerate(officers, start=1)
    }
    assert sorted(tally.requests) == sorted(f"村民{n}：河边护栏坏了" for n in range(4))
    assert tally.created_events == 4
    assert Counter(tally.outbox) == {(handler.id, "sent"): 4}
    notices = _texts_to(api, handler)[1:]  # after the welcome
    assert len(notices) == 4 and all(n.startswith(lead("request_note.new")) for n in notices)
    everyone = {handler.id, *(t.user.id for t in talks), *(s.id for s in strangers)}
    assert everyone <= tally.users
    for talk in talks:
        talk.check_answers()


async def test_sigkill_in_the_middle_of_conversations_loses_and_doubles_nothing(
    api: BotApiServer, bot: BotProcess, db: Database
) -> None:
    """Five users at different steps; one update is inside its transaction (held up by a
    table lock) when the bot is SIGKILLed, four more arrive while it is dead."""
    known = set(api.queue.history)
    before = await _tally(db)
    talks = [await _officer_talk(api, db, n) for n in range(5, 8)]
    for n in range(2):
        villager = api.user(first_name=f"新村民{n}")
        talks.append(Talk(api, villager, _request_steps(db.villages[-1], f"新村民{n}：路灯不亮")))
    cut = [2, 5, 9, 4, 8]  # steps done before the kill
    await asyncio.gather(*(t.run(until=k) for t, k in zip(talks, cut, strict=True)))

    async with db.engine.connect() as blocker:
        transaction = await blocker.begin()
        await blocker.execute(text("LOCK TABLE users IN ACCESS EXCLUSIVE MODE"))
        marks = [await talks[0].send()]
        in_flight = max(api.queue.history)
        assert await _update_waiting_on_lock(db.engine) == talks[0].user.id
        await bot.kill()
        marks += [await talk.send() for talk in talks[1:]]
        await transaction.rollback()
    killed = time.monotonic()
    mark = api.mark()
    await bot.start()
    await bot.ready(api, "setWebhook", since=mark)
    up = time.monotonic()

    async def carry_on(talk: Talk, mark: int) -> None:
        await talk.answered(mark)
        await talk.run()

    await asyncio.gather(*(carry_on(t, m) for t, m in zip(talks, marks, strict=True)))
    print(
        f"\nbot up {up - killed:.1f} s after the SIGKILL, every pending step answered "
        f"{time.monotonic() - up:.1f} s later"
    )

    ours = set(api.queue.history) - known
    for update_id in ours:
        await api.wait_delivered(update_id, timeout=REPLY_TIMEOUT)
    attempts = [a for a in api.webhook_attempts if a.update_id in ours]
    # The update in flight lost its connection and was delivered again (the ones behind it
    # wait in Telegram's queue, which delivers a bot's updates one at a time).
    in_flight_attempts = [a for a in attempts if a.update_id == in_flight]
    assert in_flight_attempts[0].error is not None and in_flight_attempts[-1].ok
    for update_id in ours:
        assert [a for a in attempts if a.update_id == update_id][-1].ok, update_id

    tally = await _tally(db)
    assert ours <= tally.applied and tally.failed == 0
    officers = [t.user.id for t in talks[:3]]
    assert {u: tally.reports[u] for u in officers} == {
        u: (Decimal(n), n + 1, f"走访记录 {n}") for n, u in enumerate(officers, start=5)
    }
    assert len(tally.reports) == len(before.reports) + 3
    new = sorted(set(tally.requests) - set(before.requests))
    assert new == sorted(f"新村民{n}：路灯不亮" for n in range(2))
    assert len(tally.requests) == len(before.requests) + 2
    assert tally.created_events == before.created_events + 2
    for talk in talks:
        talk.check_answers()
