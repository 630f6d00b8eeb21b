"""The update pipeline: failures set aside, one user's updates in order across processes,
blocked users remembered, old update ids forgotten."""

from __future__ import annotations

import asyncio
import gc
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiogram.types import Update
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.app import build_dispatcher
from bot.callbacks import JoinVillageCb
from bot.handlers import common
from bot.i18n import Translator
from bot.middlewares import KeyedLocks, SentAnswers, UpdateTransaction
from bot.serve import GC_YOUNG, tune_collector
from core.tokens import village_payload
from storage.db import is_transient, make_engine
from storage.models import FailedUpdate, ProcessedUpdate, User, VillagerMembership
from storage.updates import claim_update, keep_statement, prune_processed
from tests.e2e import wait_for_lock_waiter
from tests.factories import seed_directory
from tests.harness import Chat, make_settings

ZH, EN = Translator("zh"), Translator("en")


async def test_failing_update_is_retried_then_set_aside(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> str:
        raise RuntimeError("handler bug")

    monkeypatch.setattr(common, "help_text", broken)
    user = chat.server.user(language_code="en")
    update = await chat.server.send_text(user, "/help")
    for _ in range(2):  # delivered again each time, as Telegram would
        with pytest.raises(RuntimeError, match="handler bug"):
            await chat.feed(update)
    assert chat.texts(user) == []
    await chat.feed(update)  # third time: set aside, the user is told
    assert chat.texts(user) == [EN("error.failed")]
    async with sessions() as s:
        failed = await s.get(FailedUpdate, update["update_id"])
        assert failed is not None and (failed.attempts, failed.dead) == (3, True)
        assert "handler bug" in failed.error
        assert failed.payload["message"]["text"] == "/help"
        assert await s.get(ProcessedUpdate, update["update_id"]) is None

    monkeypatch.undo()  # the next update of the same user is not blocked by the dead one
    await chat.say(user, "/help")
    assert chat.last_text(user).startswith(EN("help.intro.stranger"))


async def test_one_users_updates_apply_in_order_across_processes(
    chat: Chat, sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    """Two dispatchers (as two processes) share the database; the second update of a user
    waits for the first to commit, so it sees the conversation step the first one set."""
    async with sessions() as s, s.begin():
        directory = await seed_directory(s)
    other_process = build_dispatcher(make_settings(), sessions, clock=chat.clock)
    villager = chat.server.user()
    await chat.say(villager, "/help")
    anchor = chat.server.last_message_to(villager).message_id
    first = await chat.server.send_text(
        villager, f"/start {village_payload(directory.villages[0].join_token)}"
    )
    join = JoinVillageCb(village_id=directory.villages[0].id, join=True).pack()
    second = await chat.server.press(villager, anchor, join, force=True)

    async with engine.connect() as blocker:
        transaction = await blocker.begin()
        await blocker.execute(text("LOCK TABLE users IN ACCESS EXCLUSIVE MODE"))
        applying_first = asyncio.create_task(chat.feed(first))
        await wait_for_lock_waiter(engine)
        applying_second = asyncio.create_task(
            other_process.feed_update(
                chat.bot, Update.model_validate(second, context={"bot": chat.bot})
            )
        )
        await asyncio.sleep(0.3)
        assert not applying_first.done() and not applying_second.done()
        await transaction.rollback()
    await asyncio.gather(applying_first, applying_second)
    assert chat.server.callback_answer(second)["text"] == ZH("join.joined_short")  # type: ignore[index]
    async with sessions() as s:
        member = await s.scalar(select(VillagerMembership.village_id))
    assert member == directory.villages[0].id


async def test_blocking_and_unblocking_is_remembered(
    chat: Chat, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = chat.server.user()
    await chat.say(user, "/start")

    def membership(status: str, old: str) -> dict[str, object]:
        def member(state: str) -> dict[str, object]:
            extra = {"until_date": 0} if state == "kicked" else {}
            return {
                "user": {"id": 1, "is_bot": True, "first_name": "bot"},
                "status": state,
                **extra,
            }

        return {
            "my_chat_member": {
                "chat": user.chat(),
                "from": user.to_dict(),
                "date": 1_700_000_000,
                "old_chat_member": member(old),
                "new_chat_member": member(status),
            }
        }

    await chat.feed(chat.server.inject(membership("kicked", "member")))
    async with sessions() as s:
        assert (await s.get(User, user.id)).blocked_at is not None  # type: ignore[union-attr]
    await chat.feed(chat.server.inject(membership("member", "kicked")))
    async with sessions() as s:
        assert (await s.get(User, user.id)).blocked_at is None  # type: ignore[union-attr]


async def test_old_update_ids_are_pruned(sessions: async_sessionmaker[AsyncSession]) -> None:
    for update_id in (1, 2, 3):
        async with sessions() as s, s.begin():
            await claim_update(s, update_id, serial_key=None)
    async with sessions() as s, s.begin():
        await s.execute(
            text(
                "UPDATE processed_updates SET processed_at = now() - interval '5 days'"
                " WHERE update_id < 3"
            )
        )
    async with sessions() as s, s.begin():
        pruned = await prune_processed(s, older_than=datetime.now(UTC) - timedelta(days=3))
    assert pruned == 2
    async with sessions() as s:
        assert list(await s.scalars(select(ProcessedUpdate.update_id))) == [3]
        assert await s.scalar(select(func.count()).select_from(ProcessedUpdate)) == 1


class _Orig(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__("x")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (OperationalError("SELECT 1", {}, _Orig(None)), True),
        (DBAPIError("SELECT 1", {}, _Orig("57P01")), True),  # admin shutdown
        (DBAPIError("SELECT 1", {}, _Orig("08006")), True),  # connection failure
        (DBAPIError("SELECT 1", {}, _Orig("40P01")), True),  # deadlock
        (IntegrityError("INSERT", {}, _Orig("23505")), False),  # a bug, not the surroundings
        (ConnectionRefusedError(), True),
        # Raised by the statements run on the driver's connection (storage.db).
        (asyncpg.AdminShutdownError("terminating connection"), True),
        (asyncpg.DeadlockDetectedError("deadlock detected"), True),
        (asyncpg.ConnectionDoesNotExistError("connection was closed"), True),
        (asyncpg.UniqueViolationError("duplicate key"), False),
        (asyncpg.CheckViolationError("violates check constraint"), False),
        (RuntimeError("bug"), False),
        (KeyError("missing"), False),
    ],
)
def test_transient_failures_are_told_apart(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


async def test_answers_are_marked_sent_together_and_at_shutdown(
    sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    for update_id in (1, 2, 3, 4):
        async with sessions() as s, s.begin():
            claimed = await claim_update(s, update_id, serial_key=None)
            assert claimed is not None
            began = claimed.began
            await began.commit_with(s, [keep_statement(update_id, [{"method": "sendMessage"}])])

    async def kept() -> list[int]:
        async with sessions() as s:
            rows = await s.scalars(
                select(ProcessedUpdate.update_id)
                .where(ProcessedUpdate.answers.is_not(None))
                .order_by(ProcessedUpdate.update_id)
            )
            return list(rows)

    soon = SentAnswers(sessions, delay=0.05)
    soon.add(1)
    soon.add(2)
    assert await kept() == [1, 2, 3, 4]  # not on the update's path
    await asyncio.sleep(0.3)
    assert await kept() == [3, 4]

    later = SentAnswers(sessions, delay=3600)
    later.add(3)
    await later.flush()  # as the dispatcher's shutdown does: no waiting for the timer
    assert await kept() == [4]
    await later.flush()  # nothing pending: nothing to do

    broken = SentAnswers(async_sessionmaker(), delay=0)  # bound to no database
    broken.add(4)
    await broken.flush()  # logged, not raised: the answers are out either way
    assert "could not mark the answers to 1 updates as sent" in caplog.text
    assert await kept() == [4]


async def test_sent_answers_are_marked_with_the_next_updates_commit(
    chat: Chat, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Answers that went out are marked as sent in the COMMIT round trip of the next update
    applied, with no statement of their own."""
    transaction = next(
        m for m in chat.dp.update.outer_middleware if isinstance(m, UpdateTransaction)
    )
    transaction.sent.delay = 3600  # no timer: only an update's commit marks them

    async def kept(update: dict[str, object]) -> bool:
        async with sessions() as s:
            row = await s.get(ProcessedUpdate, update["update_id"])
            assert row is not None
            return row.answers is not None

    user = chat.server.user(language_code="en")
    first = await chat.say(user, "/help")
    assert await kept(first)  # sent, not marked yet
    second = await chat.say(chat.server.user(), "/help")
    assert not await kept(first)
    assert await kept(second)
    await transaction.sent.flush()
    assert not await kept(second)


def test_the_collector_is_tuned_once_start_up_is_over() -> None:
    threshold = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_freeze_count() > 10_000  # this process's start-up: modules, types
        assert gc.get_threshold() == (GC_YOUNG, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def test_per_user_locks_are_fifo_and_forgotten() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def hold(key: int, name: str, pause: float) -> None:
        async with locks.hold(key):
            order.append(f"{name} in")
            await asyncio.sleep(pause)
            order.append(f"{name} out")

    await asyncio.gather(hold(1, "a", 0.05), hold(1, "b", 0), hold(2, "x", 0), hold(1, "c", 0))
    assert [o for o in order if o[0] in "abc"] == [
        "a in",
        "a out",
        "b in",
        "b out",
        "c in",
        "c out",
    ]
    assert order.index("x out") < order.index("a out")  # another key did not wait
    assert locks._locks == {}  # nobody holds or waits: nothing kept


async def test_the_pool_keeps_its_connections_through_bursts_beyond_its_size(
    database_url: str,
) -> None:
    """Three times the pool's size of transactions at once, twice: the first burst opens
    the pool's connections, and nothing is closed and opened again (an overflow connection
    would be, each one costing a server backend and its statements prepared again)."""
    engine = make_engine(database_url, pool_size=3)
    opened: list[int] = []
    event.listen(engine.sync_engine, "connect", lambda *args: opened.append(1))
    seen: set[int] = set()
    busiest = 0
    running = 0

    async def transaction() -> None:
        nonlocal busiest, running
        async with engine.connect() as conn:
            running += 1
            busiest = max(busiest, running)
            seen.add(await conn.scalar(text("SELECT pg_backend_pid()")))
            await asyncio.sleep(0.02)
            running -= 1

    try:
        await asyncio.gather(*(transaction() for _ in range(9)))
        assert len(opened) == 3 and busiest == 3
        first = set(seen)
        await asyncio.gather(*(transaction() for _ in range(9)))
        assert len(opened) == 3 and seen == first
    finally:
        await engine.dispose()
