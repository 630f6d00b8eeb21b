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
from aiogram.client.default import Default
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramForbiddenError
from aiogram.methods import TelegramMethod
from aiogram.types import InputFile
from pydantic_core import PydanticSerializationError

log = logging.getLogger(__name__)

# Bot API method name -> aiogram method class, for answers read back from the database.
_METHODS: dict[str, type[TelegramMethod[Any]]] = {
    cls.__api_method__: cls
    for cls in vars(methods).values()
    if isinstance(cls, type) and issubclass(cls, TelegramMethod) and hasattr(cls, "__api_method__")
}


# Stands for a value aiogram fills in from the bot's defaults when sending (parse mode, link
# previews, …): such fields are left out of what is stored, at any depth.
_DEFAULT = "\x00aiogram-default"


def _mark_default(value: Any) -> Any:
    if isinstance(value, Default):
        return _DEFAULT
    raise TypeError(f"cannot store a {type(value).__name__}")


def _without_defaults(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_defaults(v) for k, v in value.items() if v != _DEFAULT}
    if isinstance(value, list):
        return [_without_defaults(v) for v in value]
    return value


def _stored(method: TelegramMethod[Any]) -> dict[str, Any] | None:
    """The method as JSON; None for one that cannot be stored, such as one that uploads a
    file (answers with uploads, such as a digest's chart, are not kept: on redelivery the
    user gets the rest)."""
    if any(isinstance(value, InputFile) for _, value in method):
        return None
    try:
        params = method.model_dump(mode="json", exclude_none=True, fallback=_mark_default)
    except (TypeError, ValueError, PydanticSerializationError) as exc:
        log.warning("answer %s not stored: %s", method.__api_method__, exc)
        return None
    return {"method": method.__api_method__, "params": _without_defaults(params)}


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

    def take_webhook_answer(self, bot: Bot) -> dict[str, Any] | None:
        """Take out the answer that can go in the webhook's HTTP answer, where Telegram runs
        it on receipt, sparing a request of its own; as that answer's JSON. A button's
        acknowledgement if there is one (it shows as the end of the button's spinner, in no
        order with the messages), else the last answer, so that the rest, sent first, keep
        their order. Not an answer whose result is wanted (`add_then`): Telegram says nothing
        back about it; nor one that uploads a file."""
        acks = [i for i, (m, _) in enumerate(self._methods) if isinstance(m, _ACK)]
        index = acks[0] if acks else len(self._methods) - 1
        if index < 0 or self._methods[index][1] is not None:
            return None
        answer = webhook_answer(bot, self._methods[index][0])
        if answer is not None:
            del self._methods[index]
        return answer

    def to_json(self) -> list[dict[str, Any]]:
        stored = (_stored(method) for method, _ in self._methods)
        return [item for item in stored if item is not None]

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
                level = logging.DEBUG if _stale_edit(method, exc) else logging.WARNING
                log.log(level, "answer %s failed: %s", type(method).__name__, exc)


_ACK = methods.AnswerCallbackQuery


def webhook_answer(bot: Bot, method: TelegramMethod[Any]) -> dict[str, Any] | None:
    """`method` as the JSON of a webhook's HTTP answer, the bot's defaults filled in as
    aiogram does for a request; None for one that uploads a file (a request of its own)."""
    files: dict[str, Any] = {}
    answer: dict[str, Any] = {"method": method.__api_method__}
    for key, value in method.model_dump(warnings=False).items():
        prepared = bot.session.prepare_value(value, bot=bot, files=files, _dumps_json=False)
        if prepared is not None:
            answer[key] = prepared
    return None if files else answer


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
