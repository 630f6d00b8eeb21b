"""Update deduplication and the PostgreSQL FSM storage."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from aiogram import Bot
from aiogram.fsm.storage.base import StorageKey
from aiogram.methods import (
    AnswerCallbackQuery,
    EditMessageText,
    SendMediaGroup,
    SendMessage,
    SendPhoto,
)
from aiogram.types import (
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    ReplyKeyboardRemove,
    ReplyParameters,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.replies import Replies
from storage.db import driver_connection, literal
from storage.fsm import PostgresStorage, jsonb_text, storage_key
from storage.models import ConversationState, ProcessedUpdate, User
from storage.updates import (
    Unsent,
    claim_update,
    clear_statement,
    keep_statement,
    take_unsent_answers,
)
from storage.users import attach_user

KEY = StorageKey(bot_id=1, chat_id=42, user_id=42)


async def _flush(storage: PostgresStorage, session: AsyncSession) -> None:
    """Write the bound conversations' changes in the session's transaction."""
    for statement in storage.writes():
        await (await driver_connection(session)).execute(statement)


async def test_begin_and_commit_ride_with_the_first_and_last_statements(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The update's transaction: BEGIN goes out with the claim, COMMIT with the last
    statements, after the session's own changes were flushed; all of it commits at once."""
    async with sessions() as s, s.begin():
        claimed = await claim_update(s, 50, serial_key=42)
        assert claimed is not None
        began = claimed.began
        assert await began.driver.fetchval("SELECT count(*) FROM processed_updates") == 1
        s.add(User(id=42, role="stranger", first_name="王"))
        await began.commit_with(s, [keep_statement(50, ANSWERS)])
        # Committed: another connection sees it while this session is still open.
        async with sessions() as other:
            assert await other.get(User, 42) is not None
            kept = await other.get(ProcessedUpdate, 50)
            assert kept is not None and kept.answers == ANSWERS


async def test_a_failure_in_the_last_statements_commits_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with sessions() as s, s.begin():
            claimed = await claim_update(s, 51, serial_key=None)
            assert claimed is not None
            began = claimed.began
            s.add(User(id=43, role="stranger", first_name="李"))
            await began.commit_with(s, [keep_statement(51, ANSWERS), "SELECT 1 / 0"])
    async with sessions() as s:
        assert await s.get(User, 43) is None
        assert await s.get(ProcessedUpdate, 51) is None
    async with sessions() as s, s.begin():  # the connection went back to the pool clean
        assert await claim_update(s, 51, serial_key=None) is not None
        assert await s.scalar(_IDLE_IN_TRANSACTION) == 0


_IDLE_IN_TRANSACTION = text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
)


async def test_a_claim_that_was_applied_before_ends_with_the_session(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s, s.begin():
        assert await claim_update(s, 52, serial_key=7) is not None
    async with sessions() as s, s.begin():
        assert await claim_update(s, 52, serial_key=7) is None
    async with sessions() as s:  # the session's commit ended that transaction
        assert await s.scalar(_IDLE_IN_TRANSACTION) == 0


@settings(
    database=None,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # only reads
)
@given(
    # Any text PostgreSQL can hold: no NUL, no lone surrogate (not UTF-8).
    text_value=st.text(
        alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
        max_size=30,
    )
    | st.sampled_from(["$q$", "a$q", "$q1$x$q$", "'; DROP TABLE users; --", "\\'", "$$"])
)
async def test_literals_read_back_as_they_were(
    text_value: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as s:
        db = await driver_connection(s)
        assert await db.fetchval(f"SELECT {literal(text_value)}::text") == text_value
        assert await db.fetchval(f"SELECT {literal(-(2**62))}::bigint") == -(2**62)
        assert await db.fetchval(f"SELECT {literal(None)}::text") is None


async def test_update_is_claimed_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s, s.begin():
        assert await claim_update(s, 10, serial_key=42) is not None
    async with sessions() as s, s.begin():
        assert await claim_update(s, 10, serial_key=42) is None
    async with sessions() as s, s.begin():
        assert await claim_update(s, 11, serial_key=None) is not None


async def test_rolled_back_claim_can_be_retried(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s, s.begin():
        assert await claim_update(s, 20, serial_key=42) is not None
        await s.rollback()
    async with sessions() as s, s.begin():
        assert await claim_update(s, 20, serial_key=42) is not None


async def test_concurrent_redelivery_waits_for_the_original(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    order: list[str] = []

    async def original() -> None:
        async with sessions() as s, s.begin():
            assert await claim_update(s, 30, serial_key=7) is not None
            await asyncio.sleep(0.3)
            order.append("original committed")

    async def redelivery() -> None:
        await asyncio.sleep(0.05)
        async with sessions() as s, s.begin():
            claimed = await claim_update(s, 30, serial_key=7) is not None
            order.append(f"redelivery claimed={claimed}")

    await asyncio.gather(original(), redelivery())
    assert order == ["original committed", "redelivery claimed=False"]


async def test_storage_outside_a_transaction(sessions: async_sessionmaker[AsyncSession]) -> None:
    storage = PostgresStorage(sessions)
    assert await storage.get_state(KEY) is None
    await storage.set_state(KEY, "Flow:step")
    await storage.set_data(KEY, {"village_id": 3, "note": "张庄 🚓"})
    fresh = PostgresStorage(sessions)
    assert await fresh.get_state(KEY) == "Flow:step"
    assert await fresh.get_data(KEY) == {"village_id": 3, "note": "张庄 🚓"}
    await fresh.set_state(KEY, None)
    await fresh.set_data(KEY, {})
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(ConversationState)) == 0


async def test_bound_writes_commit_with_the_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    storage = PostgresStorage(sessions)
    async with sessions() as s, s.begin():
        with storage.bind(await driver_connection(s)):
            await storage.set_state(KEY, "Flow:one")
            await storage.set_data(KEY, {"a": 1})
            assert await storage.get_state(KEY) == "Flow:one"
            await _flush(storage, s)
        await s.rollback()
    assert await storage.get_state(KEY) is None  # rolled back with everything else

    async with sessions() as s, s.begin():
        with storage.bind(await driver_connection(s)):
            await storage.set_state(KEY, "Flow:two")
            await storage.update_data(KEY, {"b": 2})
            await _flush(storage, s)
    assert await storage.get_state(KEY) == "Flow:two"
    assert await storage.get_data(KEY) == {"b": 2}


async def test_the_conversation_is_read_with_the_senders_account(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    storage = PostgresStorage(sessions)
    await storage.set_state(KEY, "Flow:one")
    await storage.set_data(KEY, {"a": 1})
    async with sessions() as s, s.begin():
        s.add(User(id=42, role="stranger", first_name="王", locale="zh"))
    other = StorageKey(bot_id=1, chat_id=43, user_id=43)
    async with sessions() as s, s.begin():
        with storage.bind(await driver_connection(s)):
            row = await storage.read_with_user(KEY, 42)
            assert row is not None
            assert (row["id"], row["first_name"], row["locale"]) == (42, "王", "zh")
            assert await storage.read_with_user(other, 43) is None  # no account yet
            assert await storage.read_with_user(None, 42) is not None  # no conversation key
            # The conversations came with the accounts: no further reads, and a change to
            # one is written like any other.
            await s.execute(text("DELETE FROM conversation_states"))
            assert await storage.get_state(KEY) == "Flow:one"
            assert await storage.get_data(KEY) == {"a": 1}
            assert await storage.get_state(other) is None
            await storage.set_state(other, "Flow:two")
            await _flush(storage, s)
    assert await storage.get_state(KEY) is None
    assert await storage.get_state(other) == "Flow:two"


async def test_an_account_read_through_the_driver_is_the_sessions_user(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """storage.users.attach_user: as if the session had loaded the row, no query."""
    async with sessions() as s, s.begin():
        s.add(User(id=42, role="stranger", first_name="王", locale="zh"))
    storage = PostgresStorage(sessions)
    async with sessions() as s, s.begin():
        with storage.bind(await driver_connection(s)):
            row = await storage.read_with_user(KEY, 42)
        assert row is not None
        user = attach_user(s, row)
        assert (user.first_name, user.locale, user.role) == ("王", "zh", "stranger")
        assert not s.is_modified(user) and not s.new and not s.dirty
        assert await s.get(User, 42) is user
        user.locale = "en"
        assert list(s.dirty) == [user]
    async with sessions() as s:
        assert (await s.get(User, 42)).locale == "en"  # type: ignore[union-attr]


async def test_the_driver_sees_what_the_session_has_pending(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Statements through the driver read the session's own changes, as its queries do."""
    async with sessions() as s, s.begin():
        s.add(User(id=44, role="stranger", first_name="赵"))
        db = await driver_connection(s)
        assert await db.fetchval("SELECT first_name FROM users WHERE id = 44") == "赵"


async def test_get_data_returns_a_copy(sessions: async_sessionmaker[AsyncSession]) -> None:
    storage = PostgresStorage(sessions)
    async with sessions() as s, s.begin():
        with storage.bind(await driver_connection(s)):
            await storage.set_data(KEY, {"items": 1})
            data = await storage.get_data(KEY)
            data["items"] = 99
            assert await storage.get_data(KEY) == {"items": 1}
            await _flush(storage, s)


async def _serve(
    storage: PostgresStorage,
    sessions: async_sessionmaker[AsyncSession],
    update_id: int,
    *,
    state: str | None = None,
    data: dict[str, Any] | None = None,
) -> tuple[bool, str | None, dict[str, Any], str | None]:
    """User 42's update as the pipeline applies it (bot.middlewares.UpdateTransaction):
    claimed with what `storage` saw of them, then their account and conversation used as
    seen or read again, then `state` and `data` written. What it found: whether the seen
    ones held, the conversation's state and data, the account's locale."""
    condition = storage.condition_seen(KEY, 42)
    async with sessions() as s:
        claimed = await claim_update(s, update_id, serial_key=42, condition=condition)
        assert claimed is not None
        with storage.bind(claimed.began.driver):
            if claimed.held:
                row = storage.use_seen(KEY, 42)
            else:
                row = await storage.read_with_user(KEY, 42)
            found = await storage.get_state(KEY), await storage.get_data(KEY)
            if state is not None or data is not None:
                await storage.set_state(KEY, state)
                await storage.set_data(KEY, data or {})
            await claimed.began.commit_with(s, storage.writes())
            storage.committed()
    return claimed.held, *found, None if row is None else row["locale"]


async def test_a_sender_seen_is_used_until_anyone_changes_them(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The pipeline's memory of a sender's account and conversation (storage.fsm): used while
    the database still holds them so, read again after any change by anyone, such as
    another process or the command line."""
    storage = PostgresStorage(sessions)
    assert storage.condition_seen(KEY, 42) is None  # never seen
    # First contact: no account, no conversation, both remembered as absent.
    assert await _serve(storage, sessions, 1) == (False, None, {}, None)
    assert await _serve(storage, sessions, 2, state="F:a", data={"步": 1}) == (True, None, {}, None)
    assert await _serve(storage, sessions, 3) == (True, "F:a", {"步": 1}, None)
    async with sessions() as s, s.begin():
        s.add(User(id=42, role="stranger", first_name="王", locale="zh"))
    assert await _serve(storage, sessions, 4) == (False, "F:a", {"步": 1}, "zh")
    assert await _serve(storage, sessions, 5) == (True, "F:a", {"步": 1}, "zh")
    async with sessions() as s, s.begin():
        await s.execute(text("UPDATE users SET locale = 'en' WHERE id = 42"))
    assert await _serve(storage, sessions, 6) == (False, "F:a", {"步": 1}, "en")
    async with sessions() as s, s.begin():  # the same state, other data
        await s.execute(text("""UPDATE conversation_states SET data = '{"步": 2}'"""))
    assert await _serve(storage, sessions, 7) == (False, "F:a", {"步": 2}, "en")
    async with sessions() as s, s.begin():  # the same data, another state
        await s.execute(text("UPDATE conversation_states SET state = 'F:b'"))
    assert await _serve(storage, sessions, 8) == (False, "F:b", {"步": 2}, "en")
    # Another process moves the conversation on: this one reads it, then uses it again.
    other = PostgresStorage(sessions)
    moved = await _serve(other, sessions, 9, state="F:c", data={"x": [1, {"b": 2, "a": 1}]})
    assert moved == (False, "F:b", {"步": 2}, "en")
    assert await _serve(storage, sessions, 10) == (False, "F:c", {"x": [1, {"a": 1, "b": 2}]}, "en")
    assert await _serve(storage, sessions, 11) == (True, "F:c", {"x": [1, {"a": 1, "b": 2}]}, "en")
    async with sessions() as s, s.begin():
        await s.execute(text("DELETE FROM conversation_states"))
    assert await _serve(storage, sessions, 12) == (False, None, {}, "en")
    assert storage.seen_used == 4


async def test_a_failed_update_leaves_what_was_seen_before_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    storage = PostgresStorage(sessions)
    await _serve(storage, sessions, 1, state="F:a", data={"n": 1})
    condition = storage.condition_seen(KEY, 42)
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with sessions() as s:
            claimed = await claim_update(s, 2, serial_key=42, condition=condition)
            assert claimed is not None and claimed.held
            with storage.bind(claimed.began.driver):
                storage.use_seen(KEY, 42)
                await storage.set_data(KEY, {"n": 2})
                await claimed.began.commit_with(s, [*storage.writes(), "SELECT 1 / 0"])
                storage.committed()
    assert await _serve(storage, sessions, 3) == (True, "F:a", {"n": 1}, None)


async def test_only_the_latest_senders_are_remembered(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    storage = PostgresStorage(sessions, senders_seen=2)
    for user_id in (41, 42, 43):
        key = StorageKey(bot_id=1, chat_id=user_id, user_id=user_id)
        async with sessions() as s, s.begin():
            with storage.bind(await driver_connection(s)):
                await storage.read_with_user(key, user_id)
    assert storage.condition_seen(KEY, 42) is not None
    assert storage.condition_seen(StorageKey(bot_id=1, chat_id=41, user_id=41), 41) is None
    other_chat = StorageKey(bot_id=1, chat_id=-100, user_id=42)  # the same sender in a group
    assert storage.condition_seen(other_chat, 42) is None


async def test_an_account_seen_too_long_ago_is_read_again(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    storage = PostgresStorage(sessions, seen_for=0.0)
    assert await _serve(storage, sessions, 1, state="F:a") == (False, None, {}, None)
    assert storage.condition_seen(KEY, 42) is None
    assert await _serve(storage, sessions, 2) == (False, "F:a", {}, None)


# Text jsonb takes: no NUL, no lone surrogates.
JSON_CHARACTERS = st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")
JSON_TEXT = st.text(JSON_CHARACTERS, max_size=12)
JSON_KEYS = st.text(JSON_CHARACTERS, max_size=6)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | JSON_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(JSON_KEYS, inner, max_size=5),
    max_leaves=12,
)


@settings(
    max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(value=st.dictionaries(JSON_KEYS, JSON_VALUES, max_size=6))
async def test_conversation_data_remembered_reads_as_postgresql_gives_it(
    value: dict[str, Any], sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Data remembered after a write hands out what a read would: the same values with the
    keys in jsonb's order."""
    async with sessions() as s:
        db = await driver_connection(s)
        stored = await db.fetchval(f"SELECT ({literal(jsonb_text(value))}::jsonb)::text")
    assert jsonb_text(value) == json.dumps(json.loads(stored))


ANSWERS = [{"method": "sendMessage", "params": {"chat_id": 42, "text": "好"}}]


async def _keep(sessions: async_sessionmaker[AsyncSession], update_id: int, age: float) -> None:
    async with sessions() as s, s.begin():
        assert await claim_update(s, update_id, serial_key=42) is not None
        await (await driver_connection(s)).execute(keep_statement(update_id, ANSWERS))
        await s.execute(
            text(
                "UPDATE processed_updates SET processed_at = processed_at - :age * interval '1s'"
                " WHERE update_id = :id"
            ),
            {"age": age, "id": update_id},
        )


async def test_unsent_answers_are_taken_once_after_the_grace_period(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _keep(sessions, 40, age=30)
    await _keep(sessions, 41, age=1)
    async with sessions() as s, s.begin():
        # applied without answers
        assert await claim_update(s, 42, serial_key=42) is not None
    async with sessions() as s, s.begin():
        assert await take_unsent_answers(s, 42, grace=10) == Unsent(None, pending=False)
        assert await take_unsent_answers(s, 41, grace=10) == Unsent(None, pending=True)
        assert await take_unsent_answers(s, 40, grace=10) == Unsent(ANSWERS, pending=False)
    async with sessions() as s, s.begin():
        assert await take_unsent_answers(s, 40, grace=10) == Unsent(None, pending=False)
        await (await driver_connection(s)).execute(clear_statement([41, 99]))  # sent by its process
        assert await take_unsent_answers(s, 41, grace=0) == Unsent(None, pending=False)


async def test_of_two_racing_redeliveries_one_gets_the_answers(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _keep(sessions, 50, age=30)

    async def taker(pause: float) -> list[dict[str, Any]] | None:
        async with sessions() as s, s.begin():
            taken = await take_unsent_answers(s, 50, grace=10)
            await asyncio.sleep(pause)  # the first holds its row lock a while
            return taken.answers

    first, second = await asyncio.gather(taker(0.3), taker(0.0))
    assert sorted([first, second], key=bool) == [None, ANSWERS]


def test_answers_survive_the_round_trip_through_json() -> None:
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="张庄村", callback_data="v:1:7")]]
    )
    replies = Replies()
    replies.add(
        SendMessage(chat_id=42, text="走访哪个村？", reply_markup=keyboard),
        AnswerCallbackQuery(callback_query_id="9"),
        SendPhoto(chat_id=42, photo=BufferedInputFile(b"png", filename="chart.png")),
        SendMediaGroup(
            chat_id=42,
            media=[InputMediaPhoto(media=BufferedInputFile(b"png", filename="a.png"))],
        ),
        EditMessageText(chat_id=42, message_id=3, text="已保存"),
        # Fields aiogram fills in from the bot's defaults, also nested ones, stay unset.
        SendMessage(chat_id=42, text="收到", reply_parameters=ReplyParameters(message_id=7)),
        # Fields the Bot API requires that have a single value, which aiogram gives them.
        SendMessage(chat_id=42, text="请核对以下内容：", reply_markup=ReplyKeyboardRemove()),
        SendMediaGroup(chat_id=42, media=[InputMediaPhoto(media="AgAD-photo-file-id")]),
    )
    bot = Bot("42:TEST")  # no defaults
    stored = json.loads(json.dumps(replies.to_json(bot)))  # as the database gives it back
    assert [item["method"] for item in stored] == [
        "sendMessage",
        "answerCallbackQuery",
        "editMessageText",
        "sendMessage",
        "sendMessage",
        "sendMediaGroup",
    ]  # uploads are not kept
    assert [item["params"] for item in stored[-3:]] == [
        {"chat_id": 42, "text": "收到", "reply_parameters": {"message_id": 7}},
        {"chat_id": 42, "text": "请核对以下内容：", "reply_markup": {"remove_keyboard": True}},
        {"chat_id": 42, "media": [{"type": "photo", "media": "AgAD-photo-file-id"}]},
    ]
    again = Replies.from_json([*stored, {"method": "noSuchMethod", "params": {}}])
    assert again.to_json(bot) == stored
    assert len(again) == 6


def test_conversation_keys_keep_their_stored_form() -> None:
    """Rows already in conversation_states are found again: the key's text never changes."""
    assert storage_key(KEY) == "1:42:42::default"
    topic = StorageKey(bot_id=1, chat_id=-5, user_id=42, thread_id=7, business_connection_id="b")
    assert storage_key(topic) == "1:-5:42:7:default:b"
