"""The bot's Bot API session (bot.session): JSON bodies, uploads as forms, and answers sent
without reading their result, whose failures still raise as aiogram's would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramForbiddenError, TelegramRetryAfter
from aiogram.methods import (
    AnswerCallbackQuery,
    BanChatMember,
    EditMessageReplyMarkup,
    EditMessageText,
    SendDocument,
    SendLocation,
    SendMediaGroup,
    SendMessage,
    SetMyCommands,
    TelegramMethod,
)
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    InputMediaVideo,
    KeyboardButton,
    LinkPreviewOptions,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    ReplyParameters,
)
from aiohttp import web

from bot.replies import Replies
from bot.session import BotSession, _dumped, _prepared, api_params, send_unread
from tests.botapi import DEFAULT_TOKEN, BotApiServer

KEYBOARD = InlineKeyboardMarkup(
    inline_keyboard=[[InlineKeyboardButton(text="今天", callback_data="f:v:1:date:2026-12-02")]]
)


@pytest.fixture
async def captured() -> AsyncIterator[tuple[str, list[tuple[str, str, bytes]]]]:
    """A Bot API stand-in that records each request's method, content type and body."""
    seen: list[tuple[str, str, bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((request.match_info["method"], request.content_type, await request.read()))
        result = {"message_id": 1, "date": 0, "chat": {"id": 5, "type": "private"}}
        return web.json_response({"ok": True, "result": result})

    app = web.Application()
    app.router.add_post("/bot{token}/{method}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


async def test_answers_go_as_json_and_uploads_as_forms(
    captured: tuple[str, list[tuple[str, str, bytes]]],
) -> None:
    url, seen = captured
    session = BotSession(api=TelegramAPIServer.from_base(url))
    bot = Bot(DEFAULT_TOKEN, session=session, default=DefaultBotProperties(parse_mode="HTML"))
    try:
        sent = await bot(SendMessage(chat_id=5, text="<b>好</b>", reply_markup=KEYBOARD))
        await send_unread(bot, SendMessage(chat_id=5, text="再见"))
        document = BufferedInputFile(b"xlsx", filename="week.xlsx")
        await bot(SendDocument(chat_id=5, document=document, caption="周报"))
    finally:
        await bot.session.close()
    assert isinstance(sent, Message) and sent.message_id == 1
    (first, first_type, first_body), (_, _, second_body), (third, third_type, _) = seen
    assert (first, first_type) == ("sendMessage", "application/json")
    assert json.loads(first_body) == {
        "chat_id": 5,
        "text": "<b>好</b>",
        "parse_mode": "HTML",  # the bot's default, filled in as aiogram does
        "reply_markup": {
            "inline_keyboard": [[{"text": "今天", "callback_data": "f:v:1:date:2026-12-02"}]]
        },
    }
    assert json.loads(second_body) == {"chat_id": 5, "text": "再见", "parse_mode": "HTML"}
    assert (third, third_type) == ("sendDocument", "multipart/form-data")


async def test_unread_answers_fail_as_aiogram_would(botapi: BotApiServer) -> None:
    bot = Bot(DEFAULT_TOKEN, session=BotSession(api=TelegramAPIServer.from_base(botapi.url)))
    user = botapi.user()
    await botapi.send_text(user, "/start")  # the chat exists once the user wrote
    try:
        await send_unread(bot, SendMessage(chat_id=user.id, text="第一条"))
        assert botapi.last_message_to(user).text == "第一条"
        botapi.fail_next("sendMessage", status=429, retry_after=3)
        with pytest.raises(TelegramRetryAfter) as flood:
            await send_unread(bot, SendMessage(chat_id=user.id, text="第二条"))
        assert flood.value.retry_after == 3
        botapi.block(user)
        with pytest.raises(TelegramForbiddenError):
            await send_unread(bot, SendMessage(chat_id=user.id, text="第三条"))
    finally:
        await bot.session.close()
    texts: list[Any] = [m.text for m in botapi.messages_to(user)]
    assert texts == ["第一条"]


async def test_kept_answers_go_out_as_kept(
    captured: tuple[str, list[tuple[str, str, bytes]]],
) -> None:
    """bot.replies sends an answer it stored as JSON from that JSON, the bot's defaults
    filled in; the same body as one dumped afresh."""
    url, seen = captured
    session = BotSession(api=TelegramAPIServer.from_base(url))
    bot = Bot(DEFAULT_TOKEN, session=session, default=DefaultBotProperties(parse_mode="HTML"))
    answer = SendMessage(chat_id=5, text="<b>好</b>", reply_markup=KEYBOARD)
    try:
        stored = Replies()
        stored.add(answer)
        stored.to_json(bot)
        await stored.send(bot)
        fresh = Replies()  # never stored: dumped for the request
        fresh.add(answer)
        await fresh.send(bot)
    finally:
        await bot.session.close()
    (_, kept_type, kept), (_, _, dumped) = seen
    assert kept_type == "application/json"
    assert (
        json.loads(kept)
        == json.loads(dumped)
        == {
            "chat_id": 5,
            "text": "<b>好</b>",
            "parse_mode": "HTML",
            "reply_markup": {
                "inline_keyboard": [[{"text": "今天", "callback_data": "f:v:1:date:2026-12-02"}]]
            },
        }
    )


# The answers the bot sends all the time: pydantic's JSON dump renders them.
USUAL: list[TelegramMethod[Any]] = [
    SendMessage(chat_id=5, text="第 3 步", reply_markup=KEYBOARD),
    SendMessage(chat_id=5, text="好", reply_markup=ReplyKeyboardRemove()),
    SendMessage(chat_id=5, text="说明？", reply_markup=ForceReply(input_field_placeholder="…")),
    SendMessage(
        chat_id=5,
        text="菜单",
        reply_markup=ReplyKeyboardMarkup(
            keyboard=[[KeyboardButton(text="📍 发送位置", request_location=True)]],
            resize_keyboard=True,
            is_persistent=True,
        ),
    ),
    EditMessageText(chat_id=5, message_id=9, text="已保存", reply_markup=None),
    EditMessageReplyMarkup(chat_id=5, message_id=9),
    AnswerCallbackQuery(callback_query_id="7", text="已选", show_alert=False),
    SendLocation(chat_id=5, latitude=34.1, longitude=113.2),
]
ANSWERS: list[TelegramMethod[Any]] = [
    *USUAL,
    SendMessage(chat_id=5, text="回复", reply_parameters=ReplyParameters(message_id=3)),
    SendMessage(
        chat_id=5, text="无预览", link_preview_options=LinkPreviewOptions(is_disabled=True)
    ),
    SendMessage(chat_id=5, text="<b>粗</b>", parse_mode="HTML", disable_notification=False),
    SendMediaGroup(chat_id=5, media=[InputMediaPhoto(media="AgAD-file-id", caption="图")]),
    SendMediaGroup(chat_id=5, media=[InputMediaPhoto(media=BufferedInputFile(b"p", "a.png"))]),
    *(  # a duration or a date below the top level, where no default sends it the long way
        SendMediaGroup(
            chat_id=5,
            media=[InputMediaVideo(media="AgAD-video", parse_mode="HTML", start_timestamp=at)],
        )
        for at in (timedelta(seconds=5), datetime(2027, 1, 1, tzinfo=UTC))
    ),
    SendDocument(chat_id=5, document=BufferedInputFile(b"xlsx", filename="week.xlsx")),
    BanChatMember(chat_id=-100, user_id=5, until_date=datetime(2027, 1, 1, tzinfo=UTC)),
    SetMyCommands(commands=[BotCommand(command="visit", description="走访")]),
]


@pytest.mark.parametrize(
    "defaults",
    [
        DefaultBotProperties(),
        DefaultBotProperties(
            parse_mode="HTML", link_preview_is_disabled=True, protect_content=True
        ),
    ],
)
@pytest.mark.parametrize("answer", ANSWERS, ids=lambda m: type(m).__name__)
def test_answers_as_json_are_what_aiogram_sends(
    answer: TelegramMethod[Any], defaults: DefaultBotProperties
) -> None:
    """api_params's quick path (pydantic's JSON dump) gives exactly aiogram's own rendering
    of a request (its walk over every value), the bot's defaults included; None for an
    upload."""
    bot = Bot(DEFAULT_TOKEN, default=defaults)
    assert api_params(bot, answer) == _prepared(bot, answer)


def test_the_usual_answers_take_the_quick_path() -> None:
    bot = Bot(DEFAULT_TOKEN, default=DefaultBotProperties(parse_mode="HTML"))
    for answer in USUAL:
        assert _dumped(bot, answer) is not None, answer
