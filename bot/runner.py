"""Receiving updates: long polling or a webhook, both losing nothing on failure or restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from aiogram.types import Update
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.middlewares import WEBHOOK, WebhookAnswer
from bot.settings import Settings
from storage.db import is_transient

log = logging.getLogger(__name__)
POLL_TIMEOUT = 25
HANDLER_ATTEMPTS = 3
MAX_BACKOFF = 30.0


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early on stop. True when stopping."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


async def feed_with_retry(dp: Dispatcher, bot: Bot, update: Update, stop: asyncio.Event) -> bool:
    """Apply one update. Retries while the database is away; gives up on a failing handler
    after a few attempts. False means: stopping before it was applied."""
    attempt, delay = 0, 0.5
    while True:
        try:
            await dp.feed_update(bot, update)
            return True
        except Exception as exc:
            attempt += 1
            if not is_transient(exc) and attempt >= HANDLER_ATTEMPTS:
                log.exception("update %s failed %d times; skipped", update.update_id, attempt)
                return True
            log.warning("update %s failed (%s); retrying in %.1fs", update.update_id, exc, delay)
        if await sleep_unless_stopped(stop, delay):
            return False
        delay = min(delay * 2, MAX_BACKOFF)


def _sender(update: Update) -> int:
    event = update.event
    user = getattr(event, "from_user", None)
    if user is not None:
        return int(user.id)
    chat = getattr(event, "chat", None)
    return int(chat.id) if chat is not None else -update.update_id


async def process_batch(
    dp: Dispatcher, bot: Bot, updates: Iterable[Update], stop: asyncio.Event
) -> bool:
    """Each sender's updates strictly in order; different senders concurrently."""
    queues: dict[int, list[Update]] = {}
    for update in updates:
        queues.setdefault(_sender(update), []).append(update)

    async def drain(queue: list[Update]) -> bool:
        for update in queue:
            if not await feed_with_retry(dp, bot, update, stop):
                return False
        return True

    results = await asyncio.gather(*(drain(q) for q in queues.values()))
    return all(results)


async def _first(awaitable: Awaitable[Any], stop: asyncio.Event) -> tuple[bool, Any]:
    """Await `awaitable` unless stop comes first (then it is cancelled)."""
    task = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if task not in done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False, None
    stopper.cancel()
    return True, task.result()


async def run_polling(bot: Bot, dp: Dispatcher, stop: asyncio.Event) -> None:
    """Long polling that confirms an update's offset only after it was applied."""
    allowed = dp.resolve_used_update_types()
    await bot.delete_webhook(drop_pending_updates=False)
    offset: int | None = None
    delay = 1.0
    log.info("polling for updates")
    while not stop.is_set():
        try:
            finished, updates = await _first(
                bot.get_updates(
                    offset=offset,
                    timeout=POLL_TIMEOUT,
                    allowed_updates=allowed,
                    request_timeout=POLL_TIMEOUT + 10,
                ),
                stop,
            )
        except TelegramRetryAfter as exc:
            await sleep_unless_stopped(stop, exc.retry_after)
            continue
        except (TelegramNetworkError, TelegramServerError, OSError) as exc:
            log.warning("getUpdates failed (%s); retrying in %.0fs", exc, delay)
            await sleep_unless_stopped(stop, delay)
            delay = min(delay * 2, MAX_BACKOFF)
            continue
        if not finished:
            break
        delay = 1.0
        if updates and await process_batch(dp, bot, updates, stop):
            offset = updates[-1].update_id + 1
    log.info("polling stopped")


def health_handler(engine: AsyncEngine) -> Any:
    async def healthz(request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(2):
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except Exception as exc:  # any failure means: not healthy
            return web.json_response({"status": "unavailable", "error": str(exc)[:200]}, status=503)
        return web.json_response({"status": "ok"})

    return healthz


class WebhookHandler(SimpleRequestHandler):
    """aiogram's webhook handler (the secret checked, 401 without it), with two changes.

    The update is applied in the request's own task and the HTTP answer waits until it
    committed or failed, however long that takes. aiogram answers 200 after 55 s and
    finishes the update in the background, where a later failure would be lost; Telegram
    instead resends a slow update after a minute, and the resend waits for (and is
    deduplicated against) the first attempt.

    One of the update's answers may go in the HTTP answer, as JSON (see
    `bot.middlewares.WebhookAnswer`): Telegram runs it on receipt, one request fewer.
    """

    def __init__(self, dispatcher: Dispatcher, bot: Bot, secret_token: str) -> None:
        super().__init__(
            dispatcher=dispatcher,
            bot=bot,
            secret_token=secret_token,
            handle_in_background=False,
            **{WEBHOOK: True},
        )

    async def _handle_request(self, bot: Bot, request: web.Request) -> web.Response:
        update = Update.model_validate(
            await request.json(loads=bot.session.json_loads), context={"bot": bot}
        )
        result = await self.dispatcher.feed_update(bot, update, **self.data)
        if not isinstance(result, WebhookAnswer):
            return web.json_response({})
        response = web.json_response(result.answer)
        await response.prepare(request)
        await response.write_eof()
        result.written()
        return response


async def run_webhook(
    bot: Bot, dp: Dispatcher, settings: Settings, engine: AsyncEngine, stop: asyncio.Event
) -> None:
    """Serve the webhook; Telegram gets its answer only after the update committed, so a
    failure (answered 500) makes Telegram deliver the update again."""
    assert settings.webhook_url and settings.webhook_secret
    secret = settings.webhook_secret.get_secret_value()
    app = web.Application()
    WebhookHandler(dp, bot, secret).register(app, path=settings.webhook_path)
    app.router.add_get("/healthz", health_handler(engine))
    # No access log: a line per update cost 3 % of the process's CPU under load, and says
    # less than the proxy's own log (nginx, see the README) and ours.
    runner = web.AppRunner(app, shutdown_timeout=5, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host=settings.webhook_host, port=settings.webhook_port)
    await site.start()
    log.info(
        "webhook listening on %s:%s%s",
        settings.webhook_host,
        settings.webhook_port,
        settings.webhook_path,
    )
    try:
        await _register_webhook(bot, dp, settings.webhook_url, secret, stop)
        await stop.wait()
    finally:
        await runner.cleanup()


async def _register_webhook(
    bot: Bot, dp: Dispatcher, url: str, secret: str, stop: asyncio.Event
) -> None:
    """setWebhook, retried while the Bot API is unreachable or refuses for now: the app is
    already serving, and a passing failure must not end the process."""
    delay = 1.0
    while not stop.is_set():
        try:
            await bot.set_webhook(
                url,
                secret_token=secret,
                allowed_updates=dp.resolve_used_update_types(),
                drop_pending_updates=False,
            )
            return
        except TelegramRetryAfter as exc:
            await sleep_unless_stopped(stop, exc.retry_after)
        except (TelegramNetworkError, TelegramServerError, OSError, TimeoutError) as exc:
            log.warning("setWebhook failed (%s); retrying in %.0fs", exc, delay)
            await sleep_unless_stopped(stop, delay)
            delay = min(delay * 2, MAX_BACKOFF)
