"""Deliver the outbox (storage.outbox) within Telegram's limits.

Woken at once by `NOTIFY outbox` (a dedicated asyncpg connection LISTENs, reconnecting when
it drops) and, as a fallback, every `idle_interval` seconds. Each pass claims due messages
in a short transaction (at most one per chat, leased so other workers keep off), sends each
outside any transaction and records the outcome in another short one.

Limits: at most `global_rate` sends a second overall, counted by this worker (processes
that share the database divide Telegram's 30 among them), and `chat_rate` a second per
chat, kept by every worker together: the outcome of a send is recorded with the moment its
chat may get the next one (1/`chat_rate` seconds after the answer), and whichever worker
claims that next message waits for the moment. Within the worker a send takes its place
from the moment it starts until the span after its answer arrived; Telegram counts it
somewhere in between, so no send can break a limit, whatever the network delay. A 429 stops
all of this worker's sending until its retry_after has passed, then the same message is
tried again.
Network errors and 5xx are retried with exponential backoff (capped) while other chats go
on; a 403 marks the user as having blocked the bot and drops the chat's pending messages;
a 400 fails the message with Telegram's reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import math
import time
from asyncio import FIRST_COMPLETED
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramRetryAfter,
)
from aiogram.methods import SendDocument, SendLocation, SendMessage, SendPhoto, TelegramMethod
from aiogram.types import BufferedInputFile, Message
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.clock import Clock
from storage.db import is_transient
from storage.outbox import (
    CHANNEL,
    CLAIM_LEASE,
    ClaimedMessage,
    claim_due,
    mark_blocked,
    mark_failed,
    mark_retry,
    mark_sent,
    next_due,
    release,
    renew_lease,
    space_chat,
)

log = logging.getLogger(__name__)

Connect = Callable[[], Awaitable[Any]]  # gives a new asyncpg connection
LISTENER_NAME = "villagebeat outbox"
_CALLS: dict[str, type[TelegramMethod[Message]]] = {
    "sendMessage": SendMessage,
    "sendPhoto": SendPhoto,
    "sendDocument": SendDocument,
    "sendLocation": SendLocation,
}
_UPLOADS = {"sendPhoto": "photo", "sendDocument": "document"}


class BadPayload(Exception):
    """The stored message cannot be made into a Bot API call."""


class SendWindow:
    """At most `count` sends in any `span` seconds (count/span being the rate)."""

    def __init__(self, rate: float) -> None:
        self.span = max(1.0, 1.0 / rate)
        self.count = max(1, math.floor(rate * self.span + 1e-9))
        self.active = 0  # sends under way
        self.holders = 0  # tasks between acquire and finish (waiting or sending)
        self._ends: deque[float] = deque()

    def wait_needed(self, now: float) -> float | None:
        """0 when a send may start now, else how long until one may; None when only a
        running send can make room."""
        while self._ends and self._ends[0] <= now - self.span:
            self._ends.popleft()
        if self.active + len(self._ends) < self.count:
            return 0.0
        return self._ends[0] + self.span - now if self._ends else None

    def idle(self, now: float) -> bool:
        self.wait_needed(now)  # forgets sends older than the span
        return self.holders == 0 and not self._ends

    def finish(self, now: float) -> None:
        self.active -= 1
        self.holders -= 1
        self._ends.append(now)


class Throttle:
    """The global and per-chat send windows, and the pause a 429 imposes on everything."""

    def __init__(self, global_rate: float, chat_rate: float) -> None:
        self.chat_rate = chat_rate
        self.paused_until = 0.0
        self._global = SendWindow(global_rate)
        self._chats: dict[int, SendWindow] = {}
        self._turn = asyncio.Lock()  # first come, first served for the global window
        self._changed = asyncio.Event()

    async def acquire(self, chat_id: int) -> None:
        chat = self._chats.setdefault(chat_id, SendWindow(self.chat_rate))
        chat.holders += 1  # keeps `prune` off this window while we wait on it
        try:
            await self._wait_for(chat)
            chat.active += 1
            try:
                async with self._turn:
                    await self._wait_for(self._global, pausable=True)
                    self._global.active += 1
                    self._global.holders += 1
            except BaseException:
                chat.active -= 1
                raise
        except BaseException:
            chat.holders -= 1
            raise

    def finish(self, chat_id: int) -> None:
        """Count a send whose answer has just arrived (or that failed)."""
        now = time.monotonic()
        self._global.finish(now)
        self._chats[chat_id].finish(now)
        self._pulse()

    def give_back(self, chat_id: int) -> None:
        """Return places taken for a send that was not made."""
        for window in (self._global, self._chats[chat_id]):
            window.active -= 1
            window.holders -= 1
        self._pulse()

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    def pause_left(self) -> float:
        return max(0.0, self.paused_until - time.monotonic())

    def prune(self) -> None:
        now = time.monotonic()
        for chat_id in [c for c, window in self._chats.items() if window.idle(now)]:
            del self._chats[chat_id]

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_for(self, window: SendWindow, *, pausable: bool = False) -> None:
        while True:
            changed = self._changed  # taken before looking, so no wake-up is lost
            now = time.monotonic()
            wait = window.wait_needed(now)
            if pausable and self.paused_until > now:
                wait = max(wait or 0.0, self.paused_until - now)
            if wait == 0.0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), wait)


def retry_delay(attempts: int, first: timedelta, cap: timedelta) -> timedelta:
    """The wait after the `attempts`-th failure: first, 2·first, 4·first, … at most cap."""
    exponent = min(max(attempts, 1) - 1, 30)
    return min(first * (1 << exponent), cap)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TelegramAPIError):
        return exc.message  # Telegram's own words, e.g. "Bad Request: chat not found"
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def build_call(message: ClaimedMessage) -> TelegramMethod[Message]:
    """The aiogram method for a stored message; uploads come from `storage.outbox.attachment`."""
    params = dict(message.payload)
    field = _UPLOADS.get(message.method)
    upload = params.get(field) if field else None
    try:
        if field and isinstance(upload, dict):
            data = base64.b64decode(str(upload["base64"]), validate=True)
            params[field] = BufferedInputFile(data, filename=str(upload["filename"]))
        return _CALLS[message.method].model_validate({**params, "chat_id": message.chat_id})
    except (KeyError, binascii.Error, ValidationError) as exc:
        raise BadPayload(_describe(exc)) from exc


def _uploaded(message: ClaimedMessage, sent: Message) -> dict[str, str] | None:
    """{field: file_id} for a file this message uploaded (see storage.outbox.mark_sent)."""
    field = _UPLOADS.get(message.method)
    if field is None or not isinstance(message.payload.get(field), dict):
        return None
    if sent.photo:
        return {field: sent.photo[-1].file_id}
    if sent.document is not None:
        return {field: sent.document.file_id}
    return None


def _listen_dsn(engine: AsyncEngine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class OutboxWorker:
    """Send outbox messages, woken by NOTIFY; several workers may share a database: each
    message is claimed by one of them at a time, and they keep each chat's spacing together.

    `database` is where to LISTEN: the application's engine, a DSN, or a function returning
    a new asyncpg connection.
    """

    def __init__(
        self,
        bot: Bot,
        sessions: async_sessionmaker[AsyncSession],
        database: AsyncEngine | str | Connect,
        *,
        clock: Clock,
        global_rate: float = 30.0,
        chat_rate: float = 1.0,
        batch: int = 100,
        idle_interval: float = 5.0,
        lease: timedelta = CLAIM_LEASE,
        send_timeout: float = 30.0,
        first_retry: timedelta = timedelta(seconds=1),
        max_retry: timedelta = timedelta(minutes=5),
        stop_grace: float = 5.0,
        keepalive: float = 30.0,
    ) -> None:
        if global_rate <= 0 or chat_rate <= 0:
            raise ValueError("rates must be positive")
        if batch < 1:
            raise ValueError("batch must be at least 1")
        if lease.total_seconds() <= 2 * send_timeout:
            raise ValueError("the claim lease must outlast a send")
        self.bot = bot
        self.sessions = sessions
        self.clock = clock
        self.throttle = Throttle(global_rate, chat_rate)
        # Between a send's answer and the next send to its chat, whichever worker makes it.
        self.chat_spacing = timedelta(seconds=1.0 / chat_rate)
        self.batch = batch
        self.idle_interval = idle_interval
        self.lease = lease
        self.send_timeout = send_timeout
        self.first_retry = first_retry
        self.max_retry = max_retry
        self.stop_grace = stop_grace
        self.keepalive = keepalive
        # Set while the LISTEN connection is up (tests wait for it).
        self.listening = asyncio.Event()
        self._connect = self._connector(database)
        self._wake = asyncio.Event()
        self._tasks: dict[asyncio.Task[None], int] = {}  # delivery task -> message id
        # Claimed messages not handed to Telegram yet, with their current lease end.
        self._unsent: dict[int, tuple[ClaimedMessage, datetime]] = {}

    @staticmethod
    def _connector(database: AsyncEngine | str | Connect) -> Connect:
        if callable(database):
            return database
        dsn = _listen_dsn(database) if isinstance(database, AsyncEngine) else database
        dsn = dsn.replace("postgresql+asyncpg://", "postgresql://", 1)

        async def connect() -> Any:
            return await asyncpg.connect(dsn, server_settings={"application_name": LISTENER_NAME})

        return connect

    # -- the loop -----------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim up to `batch` due messages (one per chat) and try each once, within the
        limits. Returns how many were claimed."""
        claimed = await self._claim(self.batch)
        outcomes = await asyncio.gather(
            *(self._deliver(message) for message in claimed), return_exceptions=True
        )
        for message, outcome in zip(claimed, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, asyncio.CancelledError):
                    raise outcome
                # The outcome could not be recorded: the lease runs out and it is tried again.
                log.error("outbox %s: delivery failed", message.id, exc_info=outcome)
        return len(claimed)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; an error is logged and the loop goes on.

        Sends under way when `stop` is set get `stop_grace` seconds to finish; messages not
        sent yet are handed back at once.
        """
        log.info("outbox worker started")
        listener = asyncio.create_task(self._listen(stop))
        try:
            while not stop.is_set():
                try:
                    wait = await self._pass()
                except Exception as exc:
                    if is_transient(exc):
                        log.warning("outbox pass failed: %s", _describe(exc))
                    else:
                        log.exception("outbox pass failed")
                    wait = self.idle_interval
                await self._sleep(stop, wait)
        finally:
            listener.cancel()
            await asyncio.wait({listener})
            await self._wind_down()
        log.info("outbox worker stopped")

    async def _pass(self) -> float:
        """Claim what there is room for; seconds until the next look unless woken sooner."""
        self._wake.clear()
        paused = self.throttle.pause_left()
        if paused > 0:
            return paused  # claiming now would only make leases run down
        self.throttle.prune()
        room = self.batch - len(self._tasks)
        if room <= 0:
            return self.idle_interval  # a finished send wakes the loop
        claimed = await self._claim(room)
        for message in claimed:
            task = asyncio.create_task(self._deliver(message))
            self._tasks[task] = message.id
            task.add_done_callback(self._done)
        if len(claimed) == room:
            return self.idle_interval
        async with self.sessions() as session:
            due = await next_due(session)
        # A past due time belongs to a message behind its chat's first one, or under a
        # lease: a finished send or a poll brings it.
        if due is not None and (ahead := (due - self.clock()).total_seconds()) > 0:
            return min(ahead, self.idle_interval)
        return self.idle_interval

    def _done(self, task: asyncio.Task[None]) -> None:
        message_id = self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            # The outcome could not be recorded: the lease runs out and it is tried again.
            log.error("outbox %s: delivery failed", message_id, exc_info=task.exception())
        self._wake.set()  # the chat's next message may be claimed now

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        if stop.is_set() or self._wake.is_set():
            return
        waits = {asyncio.create_task(stop.wait()), asyncio.create_task(self._wake.wait())}
        try:
            await asyncio.wait(waits, timeout=max(seconds, 0.0), return_when=FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
            await asyncio.wait(waits)

    async def _wind_down(self) -> None:
        """Cancel what has not been sent, give sends under way a grace period, hand back the
        unsent messages so that they are not held up until their leases end."""
        for task, message_id in list(self._tasks.items()):
            if message_id in self._unsent:
                task.cancel()
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=self.stop_grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        if self._unsent:
            try:
                async with self.sessions() as session, session.begin():
                    await release(session, messages=list(self._unsent.values()))
            except Exception:
                log.exception("could not hand back %d unsent messages", len(self._unsent))
            self._unsent.clear()

    async def _claim(self, limit: int) -> list[ClaimedMessage]:
        async with self.sessions() as session, session.begin():
            return await claim_due(session, now=self.clock(), limit=limit, lease=self.lease)

    # -- one message --------------------------------------------------------------------

    async def _deliver(self, message: ClaimedMessage) -> None:
        """Send one claimed message (retrying it after a 429) and record the outcome."""
        self._unsent[message.id] = (message, message.lease_until)
        try:
            await self._attempt(message)
        except asyncio.CancelledError:
            raise  # an unsent message stays in _unsent, for _wind_down to hand back
        except BaseException:
            self._unsent.pop(message.id, None)
            raise
        self._unsent.pop(message.id, None)

    async def _attempt(self, message: ClaimedMessage) -> None:
        try:
            call = build_call(message)
        except BadPayload as exc:
            log.error("outbox %s: cannot be sent: %s", message.id, exc)
            await self._record(mark_failed, message_id=message.id, error=str(exc))
            return
        await self._keep_spacing(message)
        lease_until = message.lease_until
        while True:
            held = await self._hold_lease(message, lease_until)
            if held is None:
                log.warning("outbox %s: lease lost before sending; left alone", message.id)
                return
            lease_until = held
            self._unsent[message.id] = (message, lease_until)
            await self.throttle.acquire(message.chat_id)
            if self.clock() + timedelta(seconds=self.send_timeout) >= lease_until:
                self.throttle.give_back(message.chat_id)  # waited long: renew first
                continue
            del self._unsent[message.id]
            outcome: Message | Exception
            try:
                outcome = await self._send(call)
            except Exception as exc:
                outcome = exc
            finally:
                self.throttle.finish(message.chat_id)
            # The chat's next message goes no sooner, whichever worker sends it.
            spaced = (message.chat_id, self.clock() + self.chat_spacing)
            if isinstance(outcome, TelegramRetryAfter):
                self.throttle.pause(outcome.retry_after)
                log.warning(
                    "outbox %s: flood control, all sending paused for %ss",
                    message.id,
                    outcome.retry_after,
                )
                self._unsent[message.id] = (message, lease_until)
                continue
            if isinstance(outcome, Exception):
                await self._record_failure(message, outcome, spaced)
                return
            await self._record(
                mark_sent,
                spaced=spaced,
                message_id=message.id,
                telegram_message_id=outcome.message_id,
                now=self.clock(),
                uploaded=_uploaded(message, outcome),
            )
            return

    async def _keep_spacing(self, message: ClaimedMessage) -> None:
        """Wait for the end of the chat's spacing after its last send, whichever worker made
        it (this worker's own windows count only its own sends)."""
        if message.send_after is not None:
            wait = (message.send_after - self.clock()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)

    async def _send(self, call: TelegramMethod[Message]) -> Message:
        # aiogram's own timeout covers the request; ours also covers a stuck connection.
        async with asyncio.timeout(self.send_timeout + 5):
            return await self.bot(call, request_timeout=math.ceil(self.send_timeout))

    async def _hold_lease(self, message: ClaimedMessage, lease_until: datetime) -> datetime | None:
        """The lease end, renewed when too little of it is left for a send; None when lost."""
        now = self.clock()
        if now + timedelta(seconds=2 * self.send_timeout) < lease_until:
            return lease_until
        until = now + self.lease
        async with self.sessions() as session, session.begin():
            renewed = await renew_lease(
                session, message=message, lease_until=lease_until, until=until
            )
        return until if renewed else None

    async def _record_failure(
        self, message: ClaimedMessage, exc: Exception, spaced: tuple[int, datetime]
    ) -> None:
        """Record a failed send; the chat is spaced as after a delivery (Telegram may have
        counted the call), unless it refuses the bot altogether."""
        error = _describe(exc)
        if isinstance(exc, TelegramForbiddenError):
            log.info("outbox %s: chat %s refuses the bot (%s)", message.id, message.chat_id, error)
            await self._record(mark_blocked, chat_id=message.chat_id, error=error, now=self.clock())
        elif isinstance(exc, TelegramBadRequest | TelegramEntityTooLarge | TelegramMigrateToChat):
            log.warning("outbox %s: refused by Telegram: %s", message.id, error)
            await self._record(mark_failed, spaced=spaced, message_id=message.id, error=error)
        else:  # network, 5xx, timeouts, 401/404 from a misconfigured API URL: try again
            delay = retry_delay(message.attempts, self.first_retry, self.max_retry)
            log.warning(
                "outbox %s: attempt %d failed (%s); next in %s",
                message.id,
                message.attempts,
                error,
                delay,
            )
            await self._record(
                mark_retry,
                spaced=spaced,
                message_id=message.id,
                error=error,
                retry_at=self.clock() + delay,
            )

    async def _record(
        self,
        mark: Callable[..., Awaitable[object]],
        *,
        spaced: tuple[int, datetime] | None = None,
        **values: Any,
    ) -> None:
        """Write an outcome, with the chat's spacing (chat id, next send at) when given, in
        one transaction; retried briefly while the database is away: a sent message whose
        outcome is lost would be sent again when its lease ends."""
        delay = 0.5
        for attempt in range(4):
            try:
                async with self.sessions() as session, session.begin():
                    await mark(session, **values)
                    if spaced is not None:
                        await space_chat(session, chat_id=spaced[0], until=spaced[1])
                return
            except Exception as exc:
                if attempt == 3 or not is_transient(exc):
                    raise
                log.warning("outbox: recording an outcome failed (%s); retrying", exc)
            await asyncio.sleep(delay)
            delay *= 2

    # -- LISTEN -------------------------------------------------------------------------

    async def _listen(self, stop: asyncio.Event) -> None:
        """Keep a connection LISTENing on the outbox channel; each notification wakes the
        loop. After a (re)connect the loop looks once, for what came while nobody listened."""
        delay = 0.5
        while not stop.is_set():
            try:
                if await self._listen_once(stop):
                    delay = 0.5  # it worked for a while: reconnect soon
                    log.warning("outbox listener: connection lost; reconnecting")
            except Exception as exc:
                log.warning("outbox listener: %s; retrying in %.1fs", _describe(exc), delay)
            await self._sleep_unless(stop, delay)
            delay = min(delay * 2, 30.0)

    async def _listen_once(self, stop: asyncio.Event) -> bool:
        """Listen on one connection until stop or until it is lost (then True)."""
        async with asyncio.timeout(30):
            conn = await self._connect()
        try:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CHANNEL, self._notified)
            self.listening.set()
            self._wake.set()
            await self._watch(conn, lost, stop)
            return lost.is_set()
        finally:
            self.listening.clear()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)

    def _notified(self, _conn: Any, _pid: int, _channel: str, _payload: str) -> None:
        self._wake.set()

    async def _watch(self, conn: Any, lost: asyncio.Event, stop: asyncio.Event) -> None:
        """Until stop or the connection ends; a query now and then finds a dead link."""
        while not (stop.is_set() or lost.is_set()):
            await self._sleep_unless(stop, self.keepalive, also=lost)
            if not (stop.is_set() or lost.is_set()):
                await asyncio.wait_for(conn.execute("SELECT 1"), 10)

    @staticmethod
    async def _sleep_unless(
        stop: asyncio.Event, seconds: float, *, also: asyncio.Event | None = None
    ) -> None:
        events = [stop] if also is None else [stop, also]
        waits = {asyncio.create_task(event.wait()) for event in events}
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
            await asyncio.wait(waits)
