"""Sending the answers after commit: a failed answer is logged and the rest still go out;
an edit of a message that is gone (or already as wanted) is no warning; which answer goes in
a webhook's HTTP answer."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.exceptions import TelegramBadRequest
from aiogram.methods import (
    AnswerCallbackQuery,
    EditMessageReplyMarkup,
    EditMessageText,
    SendDocument,
    SendMessage,
    TelegramMethod,
)
from aiogram.types import BufferedInputFile, InlineKeyboardButton, InlineKeyboardMarkup

from bot.replies import Replies


class FlakyBot:
    """Answers like the Bot API would for messages 1 (deleted) and 2 (unchanged) and for a
    chat that does not exist."""

    session = None  # not bot.session.BotSession: answers go through __call__

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


BOT = Bot("42:TEST", default=DefaultBotProperties(parse_mode="HTML"))


def _remembered(result: Any) -> None:
    return None


def test_the_buttons_acknowledgement_rides_in_the_webhook_answer() -> None:
    """A button's acknowledgement shows in no order with the messages: it goes in the HTTP
    answer wherever it stands, the rest are sent in their order."""
    replies = Replies()
    edit = EditMessageReplyMarkup(chat_id=5, message_id=3)
    message = SendMessage(chat_id=5, text="下一步")
    replies.add(edit, AnswerCallbackQuery(callback_query_id="77", text="好"), message)
    assert replies.take_webhook_answer(BOT) == {
        "method": "answerCallbackQuery",
        "callback_query_id": "77",
        "text": "好",
    }
    assert [m for m, _ in replies._methods] == [edit, message]


def test_else_the_last_answer_rides_with_the_bots_defaults() -> None:
    replies = Replies()
    first = SendMessage(chat_id=5, text="一")
    markup = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="是", callback_data="v:yes")]]
    )
    replies.add(first, SendMessage(chat_id=5, text="<b>二</b>", reply_markup=markup))
    assert replies.take_webhook_answer(BOT) == {
        "method": "sendMessage",
        "chat_id": 5,
        "text": "<b>二</b>",
        "parse_mode": "HTML",  # the bot's default, as aiogram fills it in for a request
        "reply_markup": {"inline_keyboard": [[{"text": "是", "callback_data": "v:yes"}]]},
    }
    assert [m for m, _ in replies._methods] == [first]
    assert replies.take_webhook_answer(BOT) is not None
    assert replies.take_webhook_answer(BOT) is None  # nothing left
    assert len(replies) == 0


def test_answers_whose_result_is_wanted_or_that_upload_stay_requests() -> None:
    wanted = Replies()
    wanted.add_then(SendMessage(chat_id=5, text="相册"), _remembered)
    assert wanted.take_webhook_answer(BOT) is None
    assert len(wanted) == 1
    upload = Replies()
    upload.add(SendDocument(chat_id=5, document=BufferedInputFile(b"x", filename="a.xlsx")))
    assert upload.take_webhook_answer(BOT) is None
    assert len(upload) == 1
