"""Answers to the user, sent only after the update's transaction has committed.

Handlers add Bot API method objects (e.g. `message.answer(...)` without awaiting it); the
transaction middleware sends them once the changes they talk about are durable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramForbiddenError
from aiogram.methods import TelegramMethod

log = logging.getLogger(__name__)


class Replies:
    __slots__ = ("_methods",)

    def __init__(self) -> None:
        self._methods: list[tuple[TelegramMethod[Any], Callable[[Any], None] | None]] = []

    def add(self, *methods: TelegramMethod[Any]) -> None:
        self._methods.extend((m, None) for m in methods)

    def add_then(self, method: TelegramMethod[Any], sent: Callable[[Any], None]) -> None:
        """Add `method`; `sent(result)` runs once Telegram accepted it."""
        self._methods.append((method, sent))

    def __len__(self) -> int:
        return len(self._methods)

    async def send(self, bot: Bot) -> None:
        for method, sent in self._methods:
            try:
                result = await bot(method)
                if sent is not None:
                    sent(result)
            except TelegramForbiddenError:
                log.info("user blocked the bot; dropping %s", type(method).__name__)
                return
            except TelegramAPIError as exc:
                # The change is committed; a failed answer must not make it run again.
                log.warning("answer %s failed: %s", type(method).__name__, exc)
