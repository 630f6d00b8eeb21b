"""The update pipeline: one transaction per update, deduplicated and serialised per user."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.dispatcher.middlewares.user_context import EVENT_CONTEXT_KEY, EventContext
from aiogram.exceptions import TelegramAPIError
from aiogram.fsm.middleware import FSMContextMiddleware
from aiogram.methods import SendMessage
from aiogram.types import TelegramObject, Update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.i18n import Translator, pick_locale
from bot.replies import Replies
from core.roles import Role
from storage.db import driver_connection, is_transient
from storage.fsm import PostgresStorage
from storage.updates import (
    claim_update,
    clear_statement,
    keep_statement,
    record_failure,
    take_unsent_answers,
)
from storage.users import TelegramProfile, attach_user, keep_current, touch_user

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]
log = logging.getLogger(__name__)

# The sender's users row as UpdateTransaction read it (None: not there), for UserContext.
SENDER_ROW = "villagebeat_sender_row"

# Seconds after which the kept answers to an applied update are taken to be unsent by their
# process (it died), when the update is delivered again; a live process sends its answers
# within milliseconds of commit.
ANSWER_GRACE = 10.0

# Set in the handler data by the webhook (bot.runner.WebhookHandler): an answer may go in the
# update's HTTP answer.
WEBHOOK = "villagebeat_webhook"


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    """What an update fed through the webhook returns when one of its answers goes in the
    HTTP answer (`Replies.take_webhook_answer`): that answer's JSON, and what to call once
    the HTTP answer is written (the update's answers are then all sent)."""

    answer: dict[str, Any]
    written: Callable[[], None]


def _nothing() -> None:
    return None


class KeyedLocks:
    """In-process FIFO locks per key, dropped when nobody waits, so memory stays flat."""

    def __init__(self) -> None:
        self._locks: dict[int, _Held] = {}

    def hold(self, key: int) -> _Held:
        held = self._locks.get(key)
        if held is None:
            held = self._locks[key] = _Held(self._locks, key)
        return held


class _Held:
    """One key's lock and how many hold it or wait for it (an async context manager)."""

    __slots__ = ("_key", "_lock", "_locks", "_users")

    def __init__(self, locks: dict[int, _Held], key: int) -> None:
        self._locks, self._key = locks, key
        self._lock = asyncio.Lock()
        self._users = 0

    async def __aenter__(self) -> None:
        self._users += 1
        try:
            await self._lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
        self._leave()

    def _leave(self) -> None:
        self._users -= 1
        if not self._users:
            del self._locks[self._key]


class SentAnswers:
    """Marks answers as sent (`storage.updates.clear_statement`) a moment after they went
    out, many updates per statement, off the updates' own path: with the COMMIT of the next
    update applied (`take`), or after `delay` when none comes.

    Until then a redelivery of such an update would take its answers to be unsent, but only
    after ANSWER_GRACE, and Telegram redelivers only an update whose HTTP answer it did not
    get, while the answers go out before it. A clear that fails leaves answers behind that only
    such a redelivery reads; the housekeeping forgets them with the update ids.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, delay: float) -> None:
        self._sessions = sessions
        self.delay = delay
        self._pending: list[int] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, update_id: int) -> None:
        self.put_back([update_id])

    def take(self) -> list[int]:
        """The updates pending now, for a statement of the caller's; `put_back` them if it
        fails."""
        taken, self._pending = self._pending, []
        return taken

    def put_back(self, update_ids: list[int]) -> None:
        """Pending again (or for the first time), cleared with a later update or by the timer."""
        if update_ids:
            self._pending.extend(update_ids)
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._soon())

    async def _soon(self) -> None:
        await asyncio.sleep(self.delay)
        await self.flush()

    async def flush(self) -> None:
        """Clear whatever is pending now (also at shutdown, which stops the timer)."""
        timer, self._task = self._task, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        while self._pending:
            done = self.take()
            try:
                async with self._sessions() as session:
                    # A single statement: autocommit spares the BEGIN and COMMIT round trips.
                    await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                    await (await driver_connection(session)).execute(clear_statement(done))
            except Exception:
                log.exception("could not mark the answers to %d updates as sent", len(done))


class UpdateTransaction(BaseMiddleware):
    """Apply an update at most once, in one transaction with the conversation state.

    Registered before the FSM middleware, so state is read inside the transaction and
    after the per-user lock. Answers go out only after commit (see bot.replies). An
    exception rolls everything back and propagates, so the update is delivered again;
    one that keeps failing for a reason other than the database being away is set aside
    after `give_up_after` attempts (table failed_updates) and the user is told.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        fsm: FSMContextMiddleware,
        *,
        default_locale: str,
        give_up_after: int = 3,
        answer_grace: float = ANSWER_GRACE,
        clear_delay: float = 0.05,
    ) -> None:
        self._sessions = sessions
        self._answer_grace = answer_grace
        self._fsm = fsm
        assert isinstance(fsm.storage, PostgresStorage)
        self._storage = fsm.storage
        self.sent = SentAnswers(sessions, delay=clear_delay)
        self._default_locale = default_locale
        self._give_up_after = give_up_after
        self._locks = KeyedLocks()

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        context: EventContext = data[EVENT_CONTEXT_KEY]
        serial_key = context.user_id or context.chat_id
        bot: Bot = data["bot"]
        async with self._locks.hold(serial_key or 0):
            try:
                result, replies, fresh = await self._apply(handler, event, data, serial_key)
            except Exception as exc:
                if is_transient(exc) or not await self._set_aside(event, exc):
                    raise
                log.exception("update %s set aside after repeated failures", event.update_id)
                await self._apologise(bot, data)
                return UNHANDLED
            if not fresh:
                replies = await self._unsent(event.update_id)
            rider = replies.take_webhook_answer(bot) if data.get(WEBHOOK) else None
            await replies.send(bot)
            if rider is not None:
                # Marked as sent only once the HTTP answer is out: if Telegram does not get
                # it, the update comes again and its kept answers go out with it.
                written = partial(self.sent.add, event.update_id) if fresh else _nothing
                return WebhookAnswer(rider, written)
            if fresh and replies:
                self.sent.add(event.update_id)
        return result

    async def _apply(
        self,
        handler: Handler,
        event: Update,
        data: dict[str, Any],
        serial_key: int | None,
    ) -> tuple[Any, Replies, bool]:
        """Apply the update: its result, the answers to send once committed, and whether it
        was applied now (False for a redelivery of one applied before).

        A redelivered update that was applied before is not applied again (see `_unsent`).
        """
        sender = data.get("event_from_user")
        if sender is not None and sender.is_bot:
            sender = None
        key = None
        if sender is not None:
            context = self._fsm.resolve_event_context(data["bot"], data)
            key = None if context is None else context.key
        # The sender's account and conversation as this process last saw them, if it did:
        # the claim tests that they are still so (storage.fsm, condition_seen).
        seen = None
        if sender is not None and key is not None:
            seen = self._storage.condition_seen(key, sender.id)
        # Not `session.begin()`: the transaction ends with `commit_with`, and when anything
        # fails before, the session's close rolls it back.
        session = self._sessions()
        committed = False
        try:
            # Round trips: the BEGIN with the claim, the sender's account and conversation
            # (unless the claim found them as last seen), the handler's own statements, the
            # conversation's write and answers with COMMIT.
            claimed = await claim_update(
                session, event.update_id, serial_key=serial_key, condition=seen
            )
            if claimed is None:
                return UNHANDLED, Replies(), False
            replies = Replies()
            data["session"] = session
            data["replies"] = replies
            with self._storage.bind(claimed.began.driver):
                if sender is not None:
                    # After the claim's lock, so that both are as the sender's previous
                    # update left them.
                    if claimed.held:
                        assert key is not None
                        data[SENDER_ROW] = self._storage.use_seen(key, sender.id)
                    else:
                        data[SENDER_ROW] = await self._storage.read_with_user(key, sender.id)
                result = await handler(event, data)
                writes = self._storage.writes()
                if replies:
                    writes.append(keep_statement(event.update_id, replies.to_json(data["bot"])))
                # Answers of earlier updates, sent meanwhile, are marked so in the same round
                # trip.
                sent = self.sent.take()
                if sent:
                    writes.append(clear_statement(sent))
                try:
                    await claimed.began.commit_with(session, writes)
                except BaseException:
                    self.sent.put_back(sent)
                    raise
                self._storage.committed()
                committed = True
        finally:
            if committed:
                # Nothing is left to send: a plain close, which nothing can interrupt. (The
                # session's `async with` runs every close in a task of its own, shielded,
                # against a cancellation halfway through a rollback.)
                await session.close()
            else:
                await session.__aexit__(None, None, None)
        return result, replies, True

    async def _unsent(self, update_id: int) -> Replies:
        """The answers to a redelivered, applied update that nobody sent: its process died
        between commit and answer. While they are younger than `answer_grace` the process
        that kept them may be alive and sending them (the same update delivered twice at
        once), so this waits until they are cleared or the grace period is over."""
        pause = 0.02
        while True:
            async with self._sessions() as session, session.begin():
                unsent = await take_unsent_answers(session, update_id, grace=self._answer_grace)
            if not unsent.pending:
                if unsent.answers:
                    log.info("update %s was applied but not answered; answering", update_id)
                return Replies.from_json(unsent.answers or [])
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def _set_aside(self, event: Update, exc: Exception) -> bool:
        """Count the failure; True when the update is now dead. Raises nothing of its own."""
        try:
            async with self._sessions() as session, session.begin():
                return await record_failure(
                    session,
                    update_id=event.update_id,
                    payload=event.model_dump(mode="json", exclude_none=True),
                    error=f"{type(exc).__name__}: {exc}",
                    give_up_after=self._give_up_after,
                )
        except Exception:
            log.exception("could not record the failure of update %s", event.update_id)
            return False

    async def _apologise(self, bot: Bot, data: dict[str, Any]) -> None:
        sender = data.get("event_from_user")
        if sender is None:
            return
        t = Translator(pick_locale(None, sender.language_code, self._default_locale))
        try:
            await bot(SendMessage(chat_id=sender.id, text=t("error.failed")))
        except TelegramAPIError as exc:
            log.warning("could not tell user %s about a failed update: %s", sender.id, exc)


class UserContext(BaseMiddleware):
    """The sender's account, role and language for every handler."""

    def __init__(self, default_locale: str) -> None:
        self._default_locale = default_locale

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        sender = data.get("event_from_user")
        if sender is None or sender.is_bot:
            return await handler(event, data)
        profile = TelegramProfile(
            id=sender.id,
            first_name=sender.first_name,
            last_name=sender.last_name,
            username=sender.username,
            language_code=sender.language_code,
        )
        session = data["session"]
        if SENDER_ROW in data:
            row = data.pop(SENDER_ROW)
            found = None if row is None else attach_user(session, row)
            user = await keep_current(session, found, profile)
        else:
            user = await touch_user(session, profile)
        data["user"] = user
        data["role"] = Role(user.role)
        data["t"] = Translator(pick_locale(user.locale, user.language_code, self._default_locale))
        return await handler(event, data)
