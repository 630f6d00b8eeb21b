"""Answers to the user, sent only after the update's transaction has committed.

Handlers add Bot API method objects (e.g. `message.answer(...)` without awaiting it); the
transaction middleware sends them once the changes they talk about are durable. They are
also stored with the update (`to_json`), so that if the process dies between commit and
answer, the update's redelivery sends them (`from_json`) instead of leaving the user
without one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiogram import Bot, methods
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramForbiddenError
from aiogram.methods import TelegramMethod

from bot.session import api_params, send_unread

log = logging.getLogger(__name__)

# Bot API method name -> aiogram method class, for answers read back from the database.
_METHODS: dict[str, type[TelegramMethod[Any]]] = {
    cls.__api_method__: cls
    for cls in vars(methods).values()
    if isinstance(cls, type) and issubclass(cls, TelegramMethod) and hasattr(cls, "__api_method__")
}


def _stored(bot: Bot, method: TelegramMethod[Any]) -> dict[str, Any] | None:
    """The method as the Bot API takes it in JSON (bot.session.api_params); None for one
    that cannot be stored, such as one that uploads a file (answers with uploads, such as a
    digest's chart, are not kept: on redelivery the user gets the rest)."""
    try:
        params = api_params(bot, method)
    except (TypeError, ValueError) as exc:
        log.warning("answer %s not stored: %s", method.__api_method__, exc)
        return None
    return None if params is None else {"method": method.__api_method__, "params": params}


class Replies:
    __slots__ = ("_methods", "_stored")

    def __init__(self) -> None:
        self._methods: list[tuple[TelegramMethod[Any], Callable[[Any], None] | None]] = []
        # Each method as `to_json` stored it (None: not storable), once it has.
        self._stored: list[dict[str, Any] | None] | None = None

    def add(self, *methods: TelegramMethod[Any]) -> None:
        self._methods.extend((m, None) for m in methods)
        self._stored = None

    def add_then(self, method: TelegramMethod[Any], sent: Callable[[Any], None]) -> None:
        """Add `method`; `sent(result)` runs once Telegram accepted it."""
        self._methods.append((method, sent))
        self._stored = None

    def __len__(self) -> int:
        return len(self._methods)

    def to_json(self, bot: Bot) -> list[dict[str, Any]]:
        """The answers as the Bot API takes them, for storing with the update; those that
        cannot be stored left out."""
        if self._stored is None:
            self._stored = [_stored(bot, method) for method, _ in self._methods]
        return [item for item in self._stored if item is not None]

    def take_webhook_answer(self, bot: Bot) -> dict[str, Any] | None:
        """Take out the answer that can go in the webhook's HTTP answer, where Telegram runs
        it on receipt, sparing a request of its own; as that answer's JSON. A button's
        acknowledgement if there is one (it shows as the end of the button's spinner, in no
        order with the messages), else the last answer, so that the rest, sent first, keep
        their order. Not an answer whose result is wanted (`add_then`): Telegram says nothing
        back about it; nor one that cannot be stored, such as an upload."""
        acks = [i for i, (m, _) in enumerate(self._methods) if isinstance(m, _ACK)]
        index = acks[0] if acks else len(self._methods) - 1
        if index < 0 or self._methods[index][1] is not None:
            return None
        self.to_json(bot)
        assert self._stored is not None
        stored = self._stored[index]
        if stored is None:
            return None
        del self._methods[index], self._stored[index]
        return {"method": stored["method"], **stored["params"]}

    @classmethod
    def from_json(cls, stored: list[dict[str, Any]]) -> Replies:
        """Answers kept by `to_json`; an entry this version cannot read is logged and left out."""
        replies = cls()
        for item in stored:
            try:
                method_class = _METHODS[item["method"]]
                replies.add(method_class.model_validate(item["params"]))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("cannot resend a stored answer %r: %s", item.get("method"), exc)
        return replies

    async def send(self, bot: Bot) -> None:
        stored = self._stored if self._stored is not None else [None] * len(self._methods)
        for (method, sent), kept in zip(self._methods, stored, strict=True):
            try:
                if sent is None:
                    # Stored, the method is its request's body already.
                    await send_unread(bot, method, None if kept is None else kept["params"])
                else:
                    sent(await bot(method))
            except TelegramForbiddenError:
                log.info("user blocked the bot; dropping %s", type(method).__name__)
                return
            except TelegramAPIError as exc:
                # The change is committed; a failed answer must not make it run again.
                level = logging.DEBUG if _stale_edit(method, exc) else logging.WARNING
                log.log(level, "answer %s failed: %s", type(method).__name__, exc)


_ACK = methods.AnswerCallbackQuery


# Taking the buttons off (or rewriting) a message the user deleted, or one already as wanted:
# nothing to tell the operator (cards and lists remember message ids that may be gone).
_STALE_EDITS = (methods.EditMessageReplyMarkup, methods.EditMessageText)
_STALE_REASONS = ("message to edit not found", "message is not modified")


def _stale_edit(method: TelegramMethod[Any], exc: TelegramAPIError) -> bool:
    return (
        isinstance(method, _STALE_EDITS)
        and isinstance(exc, TelegramBadRequest)
        and any(reason in exc.message for reason in _STALE_REASONS)
    )
