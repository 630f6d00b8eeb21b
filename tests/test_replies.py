"""Sending the answers after commit: a failed answer is logged and the rest still go out;
an edit of a message that is gone (or already as wanted) is no warning."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest
from aiogram.methods import EditMessageReplyMarkup, EditMessageText, SendMessage, TelegramMethod

from bot.replies import Replies


class FlakyBot:
    """Answers like the Bot API would for messages 1 (deleted) and 2 (unchanged) and for a
    chat that does not exist."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, method: TelegramMethod[Any]) -> Any:
        self.calls.append(type(method).__name__)
        failure = {
            1: "Bad Request: message to edit not found",
            2: "Bad Request: message is not modified: specified new message content and "
            "reply markup are exactly the same",
        }.get(getattr(method, "message_id", 0))
        if getattr(method, "chat_id", None) == 404:
            failure = "Bad Request: chat not found"
        if failure:
            raise TelegramBadRequest(method=method, message=failure)
        return True


async def test_stale_edits_are_quiet_and_other_failures_warn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = FlakyBot()
    replies = Replies()
    replies.add(
        EditMessageReplyMarkup(chat_id=5, message_id=1),
        EditMessageText(chat_id=5, message_id=2, text="同"),
        SendMessage(chat_id=404, text="无人"),
        EditMessageReplyMarkup(chat_id=404, message_id=7),
        SendMessage(chat_id=5, text="好"),
    )
    with caplog.at_level(logging.DEBUG, logger="bot.replies"):
        await replies.send(cast(Bot, bot))
    assert bot.calls == [
        "EditMessageReplyMarkup",
        "EditMessageText",
        "SendMessage",
        "EditMessageReplyMarkup",
        "SendMessage",
    ]
    levels = [(record.levelname, record.getMessage().split(":")[0]) for record in caplog.records]
    assert levels == [
        ("DEBUG", "answer EditMessageReplyMarkup failed"),
        ("DEBUG", "answer EditMessageText failed"),
        ("WARNING", "answer SendMessage failed"),
        ("WARNING", "answer EditMessageReplyMarkup failed"),  # chat not found: not stale
    ]
