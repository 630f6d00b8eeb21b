"""The bot's Bot API session (bot.session): JSON bodies, uploads as forms, and answers sent
without reading their result, whose failures still raise as aiogram's would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramForbiddenError, TelegramRetryAfter
from aiogram.methods import SendDocument, SendMessage
from aiogram.types import BufferedInputFile, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiohttp import web

from bot.replies import Replies
from bot.session import BotSession, send_unread
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
