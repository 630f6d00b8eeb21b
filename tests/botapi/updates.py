"""The update queue: long polling with offsets, or webhook pushes with retries."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .errors import CONFLICT_OTHER_POLL, CONFLICT_WEBHOOK_ACTIVE, ApiError
from .params import UploadedFile, read_webhook_reply
from .recording import Pulse, WebhookAttempt

# Sent when allowed_updates is empty or was never given.
DEFAULT_EXCLUDED = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

WebhookReply = Callable[[dict[str, Any], dict[str, UploadedFile]], Awaitable[None]]


def update_type(update: dict[str, Any]) -> str:
    return next((key for key in update if key != "update_id"), "unknown")


def _chat_key(update: dict[str, Any]) -> Any:
    """The chat whose updates Telegram delivers one after another (else the update alone)."""
    payload = update.get(update_type(update))
    if isinstance(payload, dict):
        message = payload.get("message", payload)
        chat = message.get("chat") if isinstance(message, dict) else None
        if isinstance(chat, dict):
            return chat.get("id")
        sender = payload.get("from")
        if isinstance(sender, dict):
            return ("user", sender.get("id"))
    return ("update", update.get("update_id"))


@dataclass
class _Queued:
    update: dict[str, Any]
    # A redelivered update keeps its old id, so it must get past the offset filter once.
    forced: bool = False
    handed_out: bool = False

    @property
    def update_id(self) -> int:
        return int(self.update["update_id"])


@dataclass
class WebhookConfig:
    url: str
    secret_token: str | None = None
    max_connections: int = 40
    allowed_updates: list[str] | None = None
    last_error_date: int | None = None
    last_error_message: str | None = None


class UpdateQueue:
    def __init__(
        self,
        now: Callable[[], int],
        retry_delay: float = 0.2,
        max_retry_delay: float = 5.0,
        request_timeout: float = 10.0,
        parallel: bool = False,
    ) -> None:
        self.now = now
        # Webhook: one update at a time (False), or as Telegram does (True): each chat's
        # updates in order, one at a time, different chats at once up to max_connections.
        self.parallel = parallel
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.request_timeout = request_timeout
        self.pending: list[_Queued] = []
        self.delivered: set[int] = set()
        self.dropped: list[dict[str, Any]] = []
        self.history: dict[int, dict[str, Any]] = {}
        self.webhook_attempts: list[WebhookAttempt] = []
        self.allowed_updates: list[str] | None = None
        self.webhook: WebhookConfig | None = None
        self.on_webhook_reply: WebhookReply | None = None
        self.closing = False
        self.pulse = Pulse()
        self._next_update_id = 1
        self._poll_generation = 0
        self._worker: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- producing ------------------------------------------------------------------

    def push(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue a new update, giving it the next update_id unless it has one."""
        update = copy.deepcopy(update)
        if "update_id" not in update:
            update = {"update_id": self._next_update_id, **update}
        self._next_update_id = max(self._next_update_id, int(update["update_id"]) + 1)
        update_id = int(update["update_id"])
        self.history[update_id] = update
        if self._is_allowed(update):
            self.pending.append(_Queued(update))
            self.pulse.fire()
        else:
            self.dropped.append(update)
        return update

    def redeliver(self, update_id: int) -> None:
        update = self.history.get(update_id)
        if update is None:
            raise AssertionError(f"update {update_id} was never created")
        self.delivered.discard(update_id)
        self.pending.append(_Queued(copy.deepcopy(update), forced=True))
        self.pulse.fire()

    def _is_allowed(self, update: dict[str, Any]) -> bool:
        allowed = self.webhook.allowed_updates if self.webhook else self.allowed_updates
        kind = update_type(update)
        if allowed:
            return kind in allowed
        return kind not in DEFAULT_EXCLUDED

    def drop_pending(self) -> None:
        for item in self.pending:
            self.dropped.append(item.update)
        self.pending.clear()

    # -- long polling ---------------------------------------------------------------

    async def get_updates(
        self, offset: int | None, limit: int | None, poll_timeout: int | None, allowed: Any
    ) -> list[dict[str, Any]]:
        if self.webhook is not None:
            raise ApiError(409, CONFLICT_WEBHOOK_ACTIVE)
        self._poll_generation += 1
        generation = self._poll_generation
        self.pulse.fire()  # an older long poll still waiting now learns it was superseded
        if isinstance(allowed, list):
            self.allowed_updates = [str(kind) for kind in allowed]
        self._confirm(offset)
        limit = min(max(limit or 100, 1), 100)
        deadline = time.monotonic() + max(poll_timeout or 0, 0)
        while True:
            event = self.pulse.current()
            if generation != self._poll_generation:
                raise ApiError(409, CONFLICT_OTHER_POLL)
            if self.webhook is not None:
                raise ApiError(409, CONFLICT_WEBHOOK_ACTIVE)
            batch = self._take(offset, limit)
            if batch or self.closing:
                return batch
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            await Pulse.wait(event, remaining)

    def _confirm(self, offset: int | None) -> None:
        if not offset:
            return
        if offset < 0:
            keep = -offset
            for item in self.pending[:-keep]:
                self.dropped.append(item.update)
            self.pending = self.pending[-keep:]
            return
        kept: list[_Queued] = []
        for item in self.pending:
            if item.update_id < offset and (item.handed_out or not item.forced):
                if item.handed_out:
                    self.delivered.add(item.update_id)
                continue
            kept.append(item)
        if len(kept) != len(self.pending):
            self.pending = kept
            self.pulse.fire()

    def _take(self, offset: int | None, limit: int) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        for item in self.pending:
            if len(batch) >= limit:
                break
            if offset and offset > 0 and item.update_id < offset and not item.forced:
                continue
            item.handed_out = True
            batch.append(copy.deepcopy(item.update))
        return batch

    # -- webhook --------------------------------------------------------------------

    async def set_webhook(self, config: WebhookConfig, drop_pending: bool) -> None:
        self.webhook = config
        if drop_pending:
            self.drop_pending()
        for item in self.pending:
            item.handed_out = False
        self.pulse.fire()
        if self._worker is not None and self._worker is asyncio.current_task():
            return  # called from a webhook answer: the running worker picks the change up
        # Restart delivery at once with a fresh backoff, as after any setWebhook.
        await self._stop_worker()
        self._worker = asyncio.create_task(self._deliver_forever(), name="botapi-webhook")

    async def delete_webhook(self, drop_pending: bool) -> None:
        self.webhook = None
        if drop_pending:
            self.drop_pending()
        await self._stop_worker()
        self.pulse.fire()

    async def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is asyncio.current_task():
            return  # deleteWebhook from a webhook answer: the loop ends by itself
        if worker is not None and not worker.done():
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def close(self) -> None:
        self.closing = True
        self.pulse.fire()
        await self._stop_worker()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _deliver_forever(self) -> None:
        if self.parallel:
            await self._deliver_in_parallel()
            return
        delay = self.retry_delay
        # `closing` and the worker check too: on Python 3.11 wait_for() can swallow the cancel
        # that close() or a second setWebhook (_stop_worker) sends.
        me = asyncio.current_task()
        while self.webhook is not None and not self.closing and self._worker is me:
            event = self.pulse.current()
            if not self.pending:
                await Pulse.wait(event, 1.0)
                continue
            item = self.pending[0]
            if await self._post(self.webhook, item):
                delay = self.retry_delay
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)

    async def _post(self, config: WebhookConfig, item: _Queued) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Content-Type": "application/json"}
        if config.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = config.secret_token
        update_id = item.update_id
        try:
            async with self._session.post(
                config.url,
                data=json.dumps(item.update, ensure_ascii=False).encode(),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
            ) as response:
                status = response.status
                reason = response.reason or ""
                reply = await read_webhook_reply(response) if 200 <= status < 300 else None
        except (aiohttp.ClientError, TimeoutError) as e:
            error = f"{type(e).__name__}: {e}"
            self.webhook_attempts.append(WebhookAttempt(update_id, time.monotonic(), error=error))
            config.last_error_date = self.now()
            config.last_error_message = f"Connection failed: {error}"
            self.pulse.fire()
            return False
        self.webhook_attempts.append(WebhookAttempt(update_id, time.monotonic(), status=status))
        if not 200 <= status < 300:
            config.last_error_date = self.now()
            config.last_error_message = (
                f"Wrong response from the webhook: {status} {reason}".strip()
            )
            self.pulse.fire()
            return False
        for index, queued in enumerate(self.pending):
            if queued is item:
                del self.pending[index]
                break
        self.delivered.add(update_id)
        self.pulse.fire()
        if reply is not None and self.on_webhook_reply is not None:
            # Telegram executes a method given in the webhook answer and ignores its result.
            await self.on_webhook_reply(*reply)
        return True

    async def _deliver_in_parallel(self) -> None:
        """Each chat's first pending update on a connection of its own (up to max_connections),
        retried with backoff until answered 2xx before the chat's next one goes out."""
        me = asyncio.current_task()
        busy: set[Any] = set()
        lanes: set[asyncio.Task[None]] = set()

        def running() -> bool:
            return self.webhook is not None and not self.closing and self._worker is me

        async def lane(item: _Queued, chat: Any) -> None:
            delay = self.retry_delay
            try:
                while running() and self.webhook is not None:
                    if await self._post(self.webhook, item):
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_retry_delay)
            finally:
                busy.discard(chat)
                self.pulse.fire()

        try:
            while running() and self.webhook is not None:
                event = self.pulse.current()
                seen = set(busy)
                for item in list(self.pending):
                    if len(lanes) >= self.webhook.max_connections:
                        break
                    chat = _chat_key(item.update)
                    if chat in seen:  # only a chat's first pending update may go
                        continue
                    seen.add(chat)
                    busy.add(chat)
                    task = asyncio.create_task(lane(item, chat))
                    lanes.add(task)
                    task.add_done_callback(lanes.discard)
                await Pulse.wait(event, 1.0)
        finally:
            for task in list(lanes):
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)

    async def reset(self) -> None:
        """Forget every update and the webhook; update ids keep counting up."""
        await self.delete_webhook(drop_pending=True)
        self._poll_generation += 1  # long polls still waiting end with 409
        self.pending.clear()
        self.delivered.clear()
        self.dropped.clear()
        self.history.clear()
        self.webhook_attempts.clear()
        self.allowed_updates = None
        self.pulse.fire()

    # -- observation ----------------------------------------------------------------

    def pending_count(self) -> int:
        return len(self.pending)

    async def wait_delivered(self, update_id: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            event = self.pulse.current()
            if update_id in self.delivered:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(self._undelivered_report(update_id, timeout))
            await Pulse.wait(event, remaining)

    def _undelivered_report(self, update_id: int, timeout: float) -> str:
        lines = [f"update {update_id} was not delivered within {timeout}s"]
        if any(int(u["update_id"]) == update_id for u in self.dropped):
            allowed = self.webhook.allowed_updates if self.webhook else self.allowed_updates
            lines.append(f"it was dropped (allowed_updates={allowed} or drop_pending_updates)")
        pending = [item.update_id for item in self.pending]
        lines.append(f"pending update ids: {pending}")
        if self.webhook is not None:
            lines.append(
                f"webhook: {self.webhook.url}, last error: {self.webhook.last_error_message}"
            )
            attempts = [a for a in self.webhook_attempts if a.update_id == update_id]
            lines.append(f"attempts for it: {attempts[-5:]}")
        else:
            handed = [item.update_id for item in self.pending if item.handed_out]
            lines.append(f"polling; handed out but not confirmed: {handed}")
        return "\n".join(lines)
