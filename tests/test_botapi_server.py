"""Tests of the fake Bot API server, driven by a real aiogram Bot and by raw HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import (
    BotCommand,
    BotCommandScopeAllPrivateChats,
    BotCommandScopeChat,
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    KeyboardButton,
    MenuButtonWebApp,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    WebAppInfo,
)
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web

from tests.botapi import BotApiServer, SimUser
from tests.botapi.errors import (
    CONFLICT_OTHER_POLL,
    CONFLICT_WEBHOOK_ACTIVE,
    MESSAGE_NOT_MODIFIED,
    QUERY_TOO_OLD,
)

pytestmark = pytest.mark.timeout(30)

STRANGER = 424242
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest_asyncio.fixture(scope="module")
async def server() -> AsyncIterator[BotApiServer]:
    server = BotApiServer(webhook_retry_delay=0.05)
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(autouse=True)
async def fresh_state(server: BotApiServer) -> AsyncIterator[None]:
    await server.reset()
    yield
    assert server.internal_errors == []


@pytest_asyncio.fixture(scope="module")
async def bot(server: BotApiServer) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(server.url))
    bot = Bot(server.token, session=session)
    yield bot
    await session.close()


@pytest_asyncio.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture
async def known(server: BotApiServer) -> SimUser:
    """A user who has written to the bot, so the bot may write back."""
    user = server.user(id=777, first_name="Wang", username="wang_li")
    await server.send_text(user, "hi")
    return user


def _form_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


async def raw(
    http: aiohttp.ClientSession,
    server: BotApiServer,
    method: str,
    *,
    how: str = "form",
    token: str | None = None,
    **params: Any,
) -> tuple[int, dict[str, Any]]:
    """Call the API without aiogram: how is form, multipart, json or query."""
    url = f"{server.url}/bot{token or server.token}/{method}"
    if how == "json":
        request = http.post(url, json=params)
    elif how == "query":
        request = http.get(url, params={k: _form_value(v) for k, v in params.items()})
    else:
        form = aiohttp.FormData(default_to_multipart=how == "multipart")
        for key, value in params.items():
            form.add_field(key, _form_value(value))
        request = http.post(url, data=form)
    async with request as response:
        body = await response.json()
        assert body["ok"] is (response.status == 200)
        if not body["ok"]:
            assert body["error_code"] == response.status
        return response.status, body


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def inline(*rows: list[tuple[str, str]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=text, callback_data=data) for text, data in row]
            for row in rows
        ]
    )


# -- protocol ------------------------------------------------------------------------


async def test_get_me_through_aiogram(server: BotApiServer, bot: Bot) -> None:
    me = await bot.get_me()
    assert me.id == 123456
    assert me.is_bot
    assert me.username == "village_beat_bot"
    assert server.calls_of("getMe")[0].status == 200


async def test_unknown_token_is_unauthorized(
    server: BotApiServer, http: aiohttp.ClientSession
) -> None:
    status, body = await raw(http, server, "getMe", token="999:WRONG")
    assert (status, body["description"]) == (401, "Unauthorized")
    session = AiohttpSession(api=TelegramAPIServer.from_base(server.url))
    try:
        with pytest.raises(TelegramUnauthorizedError):
            await Bot("999:WRONGTOKEN", session=session).get_me()
    finally:
        await session.close()


async def test_unknown_method_is_not_found(
    server: BotApiServer, http: aiohttp.ClientSession
) -> None:
    status, body = await raw(http, server, "sendTelepathy", chat_id=1)
    assert (status, body["description"]) == (404, "Not Found")
    assert server.calls[-1].method == "sendTelepathy"


async def test_method_names_are_case_insensitive(
    server: BotApiServer, http: aiohttp.ClientSession, known: SimUser
) -> None:
    assert (await raw(http, server, "GETME"))[0] == 200
    status, body = await raw(http, server, "sendmessage", chat_id=known.id, text="x")
    assert status == 200
    assert body["result"]["text"] == "x"
    assert [c.method for c in server.calls] == ["getMe", "sendMessage"]


@pytest.mark.parametrize("how", ["form", "multipart", "json", "query"])
async def test_parameter_encodings(
    server: BotApiServer, http: aiohttp.ClientSession, known: SimUser, how: str
) -> None:
    markup = {"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}
    status, body = await raw(
        http,
        server,
        "sendMessage",
        how=how,
        chat_id=str(known.id),
        text="encoded",
        reply_markup=markup,
        disable_notification=True,
    )
    assert status == 200
    assert body["result"]["reply_markup"] == markup
    call = server.calls[-1]
    assert call.params["chat_id"] == known.id
    assert call.params["reply_markup"] == markup
    assert call.params["disable_notification"] is True


async def test_send_message_result_is_a_real_message(
    server: BotApiServer, bot: Bot, known: SimUser
) -> None:
    sent = await bot.send_message(
        known.id,
        "<b>Report</b> 😀 <i>received</i>, see /help",
        parse_mode="HTML",
        reply_markup=inline([("OK", "ok")]),
    )
    assert isinstance(sent, Message)
    assert sent.from_user is not None and sent.from_user.id == 123456
    assert sent.chat.id == known.id
    assert sent.message_id == 2  # the user's "hi" was message 1 in this chat
    assert sent.text == "Report 😀 received, see /help"
    entities = [(e.type, e.offset, e.length) for e in sent.entities or []]
    # The emoji counts as two UTF-16 code units.
    assert entities == [("bold", 0, 6), ("italic", 10, 8), ("bot_command", 24, 5)]
    [stored] = server.messages_to(known)
    assert stored.text == sent.text
    assert stored.buttons == ["OK"]
    assert stored.callback_data == ["ok"]


async def test_text_is_trimmed_like_telegram(bot: Bot, known: SimUser) -> None:
    sent = await bot.send_message(known.id, "  \n padded <b>bold</b>  \n", parse_mode="HTML")
    assert sent.text == "padded bold"
    assert sent.entities is not None
    assert (sent.entities[0].offset, sent.entities[0].length) == (7, 4)


async def test_length_limit_counts_utf16_units(bot: Bot, known: SimUser) -> None:
    await bot.send_message(known.id, "😀" * 2048)  # exactly 4096 UTF-16 code units
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(known.id, "😀" * 2049)


async def test_chat_must_have_written_first(server: BotApiServer, bot: Bot) -> None:
    user = server.user(first_name="Silent")
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(user.id, "hello?")
    await server.send_text(user, "/start")
    assert (await bot.send_message(user.id, "hello!")).text == "hello!"


async def test_blocked_user_gets_403_on_any_send(
    server: BotApiServer, bot: Bot, known: SimUser
) -> None:
    server.block(known)
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(known.id, "still there?")
    with pytest.raises(TelegramForbiddenError):
        await bot.send_chat_action(known.id, "typing")
    with pytest.raises(TelegramForbiddenError):
        await bot.send_photo(known.id, "https://example.com/a.jpg")
    assert server.calls[-1].status == 403
    server.unblock(known)
    await bot.send_message(known.id, "welcome back")


async def test_deactivated_user_and_unblock_by_writing(
    server: BotApiServer, bot: Bot, known: SimUser
) -> None:
    server.block(known)
    await server.send_text(known, "/start")  # writing to a blocked bot unblocks it
    await bot.send_message(known.id, "hello again")
    server.deactivate(known)
    with pytest.raises(TelegramForbiddenError, match="Forbidden: user is deactivated"):
        await bot.send_message(known.id, "anyone?")


async def test_inject_raw_update_and_log_out(server: BotApiServer, bot: Bot) -> None:
    group_id = -1001234567890
    group = {"id": group_id, "type": "supergroup", "title": "Village watch"}
    update = server.inject(
        {
            "message": {
                "message_id": 50,
                "date": 1_700_000_000,
                "chat": group,
                "from": {"id": 5, "is_bot": False, "first_name": "Officer"},
                "text": "/report@village_beat_bot",
            }
        }
    )
    [received] = await bot.get_updates()
    assert received.update_id == update["update_id"]
    assert received.message is not None and received.message.chat.type == "supergroup"
    reply = await bot.send_message(group_id, "noted", reply_to_message_id=50)
    assert reply.message_id == 51
    assert await bot.close() is True
    assert await bot.log_out() is True
    with pytest.raises(TelegramUnauthorizedError):
        await bot.get_me()


async def test_get_chat_and_chat_action(bot: Bot, known: SimUser) -> None:
    chat = await bot.get_chat(known.id)
    assert (chat.id, chat.type, chat.username) == (known.id, "private", "wang_li")
    assert await bot.send_chat_action(known.id, "typing") is True


# -- validation --------------------------------------------------------------------

U = "$USER"  # replaced by the id of a user who has written to the bot
BAD = "Bad Request: "
ENTITIES = "Bad Request: can't parse entities: "
INLINE_BUTTON = "Bad Request: can't parse inline keyboard button: "
REPLY_BUTTON = "Bad Request: can't parse keyboard button: "


def msg(text: str = "x", **extra: Any) -> dict[str, Any]:
    return {"chat_id": U, "text": text, **extra}


def html(text: str) -> dict[str, Any]:
    return msg(text, parse_mode="HTML")


def button(**fields: Any) -> dict[str, Any]:
    return msg(reply_markup={"inline_keyboard": [[{"text": "A", **fields}]]})


def keyboard(rows: Any, **extra: Any) -> dict[str, Any]:
    return msg(reply_markup={"keyboard": rows, **extra})


def commands(*pairs: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {"commands": [{"command": c, "description": d} for c, d in pairs], **extra}


def album(*media: dict[str, Any]) -> dict[str, Any]:
    return {"chat_id": U, "media": list(media)}


def photo(url: str = "https://e.com/1.jpg") -> dict[str, Any]:
    return {"type": "photo", "media": url}


# (id, method, params, the exact description of the 400 answer)
VALIDATION_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("no-chat", "sendMessage", {"text": "x"}, BAD + "chat_id is empty"),
    ("no-text", "sendMessage", {"chat_id": U}, BAD + "message text is empty"),
    ("empty-text", "sendMessage", msg(""), BAD + "message text is empty"),
    ("blank-text", "sendMessage", msg(" \n "), BAD + "message text is empty"),
    ("empty-after-html", "sendMessage", html("<b> </b>"), BAD + "message text is empty"),
    ("too-long", "sendMessage", msg("a" * 4097), BAD + "message is too long"),
    ("stranger", "sendMessage", msg(chat_id=STRANGER), BAD + "chat not found"),
    ("username", "sendMessage", msg(chat_id="@wang_li"), BAD + "chat not found"),
    ("parse-mode", "sendMessage", msg(parse_mode="html5"), BAD + "unsupported parse_mode"),
    (
        "html-tag",
        "sendMessage",
        html("<div>x</div>"),
        ENTITIES + 'Unsupported start tag "div" at byte offset 0',
    ),
    (
        "html-unclosed",
        "sendMessage",
        html("<b>x"),
        ENTITIES + 'Can\'t find end tag corresponding to start tag "b"',
    ),
    (
        "html-unbalanced",
        "sendMessage",
        html("<b><i>x</b></i>"),
        ENTITIES + 'Unmatched end tag at byte offset 7, expected "</i>", found "</b>"',
    ),
    (
        "html-stray-end",
        "sendMessage",
        html("x</b>"),
        ENTITIES + "Unexpected end tag at byte offset 1",
    ),
    (
        "html-bare-lt",
        "sendMessage",
        html("温度 < 5"),
        ENTITIES + 'Unsupported start tag "" at byte offset 7',
    ),
    (
        "html-span",
        "sendMessage",
        html("<span>x</span>"),
        ENTITIES + 'Tag "span" must have class "tg-spoiler" at byte offset 0',
    ),
    (
        "markdownv2-reserved",
        "sendMessage",
        msg("Price: 5.00", parse_mode="MarkdownV2"),
        ENTITIES + "Character '.' is reserved and must be escaped with the preceding '\\'",
    ),
    (
        "markdownv2-unclosed",
        "sendMessage",
        msg("a *b", parse_mode="MarkdownV2"),
        ENTITIES + "Can't find end of Bold entity at byte offset 2",
    ),
    (
        "markdown-unclosed",
        "sendMessage",
        msg("snake_case", parse_mode="Markdown"),
        ENTITIES + "Can't find end of the entity starting at byte offset 5",
    ),
    ("data-empty", "sendMessage", button(callback_data=""), BAD + "BUTTON_DATA_INVALID"),
    ("data-65-bytes", "sendMessage", button(callback_data="x" * 65), BAD + "BUTTON_DATA_INVALID"),
    # 22 Chinese characters are 66 bytes in UTF-8.
    ("data-multibyte", "sendMessage", button(callback_data="村" * 22), BAD + "BUTTON_DATA_INVALID"),
    (
        "button-text",
        "sendMessage",
        msg(reply_markup={"inline_keyboard": [[{"text": "", "callback_data": "a"}]]}),
        INLINE_BUTTON + "Text must be non-empty",
    ),
    (
        "button-no-action",
        "sendMessage",
        button(),
        INLINE_BUTTON + "Text buttons are unallowed in the inline keyboard",
    ),
    (
        "button-two-actions",
        "sendMessage",
        button(callback_data="a", url="https://e.com"),
        INLINE_BUTTON + "exactly one of the optional fields must be used, got url, callback_data",
    ),
    (
        "button-bad-url",
        "sendMessage",
        button(url="javascript:x"),
        BAD + "inline keyboard button URL 'javascript:x' is invalid: Wrong HTTP URL",
    ),
    (
        "inline-rows",
        "sendMessage",
        msg(reply_markup={"inline_keyboard": [{"text": "A", "callback_data": "a"}]}),
        BAD + 'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays',
    ),
    (
        "reply-rows",
        "sendMessage",
        keyboard(["Yes", "No"]),
        BAD + 'field "keyboard" of the ReplyKeyboardMarkup must be an Array of Arrays',
    ),
    (
        "reply-not-array",
        "sendMessage",
        keyboard("Yes"),
        BAD + 'field "keyboard" of the ReplyKeyboardMarkup must be an Array',
    ),
    (
        "reply-empty",
        "sendMessage",
        keyboard([[]]),
        BAD + "keyboard must contain at least one button",
    ),
    (
        "reply-button-text",
        "sendMessage",
        keyboard([[{"text": " "}]]),
        REPLY_BUTTON + "Text must be non-empty",
    ),
    (
        "reply-two-requests",
        "sendMessage",
        keyboard([[{"text": "Me", "request_contact": True, "request_location": True}]]),
        REPLY_BUTTON
        + "at most one of the optional fields can be used, got request_contact, request_location",
    ),
    (
        "reply-bool",
        "sendMessage",
        keyboard([["A"]], resize_keyboard="yes"),
        BAD + 'field "resize_keyboard" of the ReplyKeyboardMarkup must be of the type Boolean',
    ),
    (
        "markup-json",
        "sendMessage",
        msg(reply_markup="{not json"),
        BAD + "can't parse reply keyboard markup JSON object",
    ),
    ("markup-array", "sendMessage", msg(reply_markup=[]), BAD + "object expected as reply markup"),
    (
        "markup-unknown",
        "sendMessage",
        msg(reply_markup={"buttons": []}),
        BAD + "can't find reply markup",
    ),
    (
        "caption-long",
        "sendPhoto",
        {"chat_id": U, "photo": "https://e.com/a.jpg", "caption": "c" * 1025},
        BAD + "message caption is too long",
    ),
    ("no-photo", "sendPhoto", {"chat_id": U}, BAD + "there is no photo in the request"),
    (
        "bad-file-id",
        "sendPhoto",
        {"chat_id": U, "photo": "AgACnot-a-real-id"},
        BAD + "wrong file identifier/HTTP URL specified",
    ),
    (
        "missing-attach",
        "sendDocument",
        {"chat_id": U, "document": "attach://nothing"},
        BAD + "there is no document in the request",
    ),
    (
        "edit-missing",
        "editMessageText",
        {"chat_id": U, "message_id": 999, "text": "x"},
        BAD + "message to edit not found",
    ),
    (
        "edit-no-id",
        "editMessageText",
        {"chat_id": U, "text": "x"},
        BAD + "message identifier is not specified",
    ),
    (
        "edit-user-message",  # message 1 is the user's own "hi"
        "editMessageText",
        {"chat_id": U, "message_id": 1, "text": "x"},
        BAD + "message to edit not found",
    ),
    (
        "edit-reply-keyboard",
        "editMessageReplyMarkup",
        {"chat_id": U, "message_id": 1, "reply_markup": {"keyboard": [["A"]]}},
        BAD + "inline keyboard expected as reply markup",
    ),
    (
        "delete-missing",
        "deleteMessage",
        {"chat_id": U, "message_id": 999},
        BAD + "message to delete not found",
    ),
    ("callback-unknown", "answerCallbackQuery", {"callback_query_id": "12345"}, QUERY_TOO_OLD),
    (
        "callback-no-id",
        "answerCallbackQuery",
        {"text": "x"},
        BAD + 'parameter "callback_query_id" is required',
    ),
    (
        "commands-101",
        "setMyCommands",
        commands(*((f"c{i}", "d") for i in range(101))),
        BAD + "BOT_COMMANDS_TOO_MUCH",
    ),
    ("command-upper", "setMyCommands", commands(("Start", "d")), BAD + "BOT_COMMAND_INVALID"),
    ("command-dash", "setMyCommands", commands(("my-report", "d")), BAD + "BOT_COMMAND_INVALID"),
    (
        "command-33",
        "setMyCommands",
        commands(("c" * 33, "d")),
        BAD + "command length must not exceed 32",
    ),
    (
        "description-empty",
        "setMyCommands",
        commands(("start", " ")),
        BAD + "command description must be non-empty",
    ),
    (
        "description-257",
        "setMyCommands",
        commands(("start", "d" * 257)),
        BAD + "command description length must not exceed 256",
    ),
    (
        "description-missing",
        "setMyCommands",
        {"commands": [{"command": "start"}]},
        BAD + "can't parse BotCommand: Can't find field \"description\"",
    ),
    (
        "scope-type",
        "setMyCommands",
        commands(scope={"type": "everyone"}),
        BAD + "can't parse BotCommandScope: Unsupported type specified",
    ),
    (
        "scope-chat-unknown",
        "setMyCommands",
        commands(scope={"type": "chat", "chat_id": STRANGER}),
        BAD + "chat not found",
    ),
    (
        "scope-member-user",
        "getMyCommands",
        {"scope": {"type": "chat_member", "chat_id": U}},
        BAD + "can't parse BotCommandScope: Can't find field \"user_id\"",
    ),
    (
        "language-code",
        "setMyCommands",
        commands(language_code="zh-hans"),
        BAD + "invalid language code specified",
    ),
    ("album-1", "sendMediaGroup", album(photo()), BAD + "media group must contain 2-10 items"),
    (
        "album-11",
        "sendMediaGroup",
        album(*(photo(f"https://e.com/{i}.jpg") for i in range(11))),
        BAD + "too many messages to send as an album",
    ),
    (
        "album-mixed",
        "sendMediaGroup",
        album(photo(), {"type": "document", "media": "https://e.com/2.pdf"}),
        BAD + "Can't use the media of the specified type in the album",
    ),
    (
        "album-animation",
        "sendMediaGroup",
        album(*[{"type": "animation", "media": "https://e.com/1.gif"}] * 2),
        BAD + "can't parse InputMedia: type \"animation\" can't be used in sendMediaGroup",
    ),
    (
        "album-attach",
        "sendMediaGroup",
        album(photo("attach://gone"), photo("attach://gone")),
        BAD + "can't parse InputMedia: media not found",
    ),
    (
        "chat-action",
        "sendChatAction",
        {"chat_id": U, "action": "dancing"},
        BAD + "wrong parameter action in request",
    ),
    ("get-file", "getFile", {"file_id": "nope"}, BAD + "invalid file_id"),
    ("get-chat", "getChat", {"chat_id": STRANGER}, BAD + "chat not found"),
    (
        "latitude",
        "sendLocation",
        {"chat_id": U, "latitude": 91, "longitude": 116},
        BAD + "wrong location specified",
    ),
    ("no-longitude", "sendLocation", {"chat_id": U, "latitude": 9}, BAD + "longitude is empty"),
    (
        "webhook-secret",
        "setWebhook",
        {"url": "https://e.com/hook", "secret_token": "not allowed!"},
        BAD + "secret token contains unallowed characters",
    ),
    (
        "webhook-url",
        "setWebhook",
        {"url": "ftp://e.com/hook"},
        BAD + "bad webhook: Invalid URL specified",
    ),
    (
        "menu-button",
        "setChatMenuButton",
        {"menu_button": {"type": "web_app", "text": "Open", "web_app": {"url": "http://e.com"}}},
        BAD + "can't parse menu button: Only HTTPS links are allowed",
    ),
    (
        "int-field",
        "deleteMessage",
        {"chat_id": U, "message_id": "first"},
        BAD + 'field "message_id" must be of type Integer',
    ),
]


def _substitute(value: Any, user_id: int) -> Any:
    if value == U:
        return user_id
    if isinstance(value, dict):
        return {k: _substitute(v, user_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, user_id) for v in value]
    return value


@pytest.mark.parametrize(
    ("method", "params", "description"),
    [case[1:] for case in VALIDATION_CASES],
    ids=[case[0] for case in VALIDATION_CASES],
)
async def test_rejected_like_telegram(
    server: BotApiServer,
    http: aiohttp.ClientSession,
    known: SimUser,
    method: str,
    params: dict[str, Any],
    description: str,
) -> None:
    status, body = await raw(http, server, method, **_substitute(params, known.id))
    assert (status, body["description"]) == (400, description)
    assert server.calls[-1].status == 400
    assert server.messages_to(known) == []


async def test_edit_flow_and_not_modified(server: BotApiServer, bot: Bot, known: SimUser) -> None:
    sent = await bot.send_message(known.id, "Step 1", reply_markup=inline([("Next", "next")]))
    with pytest.raises(TelegramBadRequest) as error:
        await bot.edit_message_text(
            text="Step 1",
            chat_id=known.id,
            message_id=sent.message_id,
            reply_markup=inline([("Next", "next")]),
        )
    assert error.value.message == MESSAGE_NOT_MODIFIED
    edited = await bot.edit_message_text(
        text="Step 2",
        chat_id=known.id,
        message_id=sent.message_id,
        reply_markup=inline([("Done", "done")]),
    )
    assert isinstance(edited, Message)
    assert edited.edit_date is not None
    [current] = server.messages_to(known)
    assert (current.text, current.callback_data) == ("Step 2", ["done"])
    # Like Telegram, an edit without reply_markup drops the inline keyboard.
    await bot.edit_message_text(text="Step 3", chat_id=known.id, message_id=sent.message_id)
    assert server.last_message_to(known).buttons == []
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_reply_markup(chat_id=known.id, message_id=sent.message_id)
    await bot.edit_message_reply_markup(
        chat_id=known.id, message_id=sent.message_id, reply_markup=inline([("Again", "again")])
    )
    assert server.last_message_to(known).callback_data == ["again"]
    with pytest.raises(TelegramBadRequest, match="there is no caption in the message to edit"):
        await bot.edit_message_caption(chat_id=known.id, message_id=sent.message_id, caption="nope")


async def test_edit_caption_and_delete(server: BotApiServer, bot: Bot, known: SimUser) -> None:
    photo = await bot.send_photo(known.id, "https://example.com/p.jpg", caption="old")
    edited = await bot.edit_message_caption(
        chat_id=known.id, message_id=photo.message_id, caption="<i>new</i>", parse_mode="HTML"
    )
    assert isinstance(edited, Message)
    assert edited.caption == "new"
    with pytest.raises(TelegramBadRequest, match="there is no text in the message to edit"):
        await bot.edit_message_text(text="x", chat_id=known.id, message_id=photo.message_id)
    assert await bot.delete_message(known.id, photo.message_id) is True
    assert server.messages_to(known) == []
    assert server.messages_to(known, include_deleted=True)[0].deleted
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(known.id, photo.message_id)
    # Bots may delete what the user wrote in a private chat, but only for 48 hours.
    update = await server.send_text(known, "oops")
    server.advance_clock(49 * 3600)
    with pytest.raises(TelegramBadRequest, match="message can't be deleted for everyone"):
        await bot.delete_message(known.id, update["message"]["message_id"])


async def test_reply_to_missing_message(bot: Bot, known: SimUser) -> None:
    with pytest.raises(TelegramBadRequest, match="message to be replied not found"):
        await bot.send_message(known.id, "re", reply_to_message_id=99)
    reply = await bot.send_message(known.id, "re", reply_to_message_id=1)
    assert reply.reply_to_message is not None
    assert reply.reply_to_message.text == "hi"


# -- callback queries ----------------------------------------------------------------


async def test_click_answer_and_expiry(server: BotApiServer, bot: Bot, known: SimUser) -> None:
    sent = await bot.send_message(
        known.id, "Confirm?", reply_markup=inline([("Yes", "y"), ("No", "n")])
    )
    update = await server.click(known, "Yes")
    query = update["callback_query"]
    assert query["data"] == "y"
    assert query["message"]["message_id"] == sent.message_id
    assert query["from"]["id"] == known.id
    assert await bot.answer_callback_query(query["id"], text="Saved") is True
    assert server.callback_answer(update) == {"text": "Saved", "show_alert": False, "url": None}
    with pytest.raises(TelegramBadRequest) as error:
        await bot.answer_callback_query(query["id"])
    assert error.value.message == QUERY_TOO_OLD

    second = await server.press(known, sent.message_id, "n")
    with pytest.raises(TelegramBadRequest, match="MESSAGE_TOO_LONG"):
        await bot.answer_callback_query(second["callback_query"]["id"], text="x" * 201)
    server.advance_clock(15 * 60 + 1)
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(second["callback_query"]["id"])


async def test_press_refuses_buttons_not_on_the_message(
    server: BotApiServer, bot: Bot, known: SimUser
) -> None:
    sent = await bot.send_message(known.id, "Pick", reply_markup=inline([("A", "a")]))
    with pytest.raises(AssertionError, match="no button with callback_data='forged'"):
        await server.press(known, sent.message_id, "forged")
    with pytest.raises(AssertionError, match="has no message 99"):
        await server.press(known, 99, "a")
    forged = await server.press(known, sent.message_id, "forged", force=True)
    assert forged["callback_query"]["data"] == "forged"
    await bot.edit_message_text(text="Picked", chat_id=known.id, message_id=sent.message_id)
    with pytest.raises(AssertionError, match="current buttons carry"):
        await server.press(known, sent.message_id, "a")  # the keyboard is gone now
    stale = await server.press(known, 99, "a", force=True)
    assert stale["callback_query"]["message"]["date"] == 0  # an inaccessible message


async def test_click_reply_keyboard(server: BotApiServer, bot: Bot, known: SimUser) -> None:
    keyboard = ReplyKeyboardMarkup(
        keyboard=[
            [KeyboardButton(text="Report")],
            [
                KeyboardButton(text="Where am I", request_location=True),
                KeyboardButton(text="My phone", request_contact=True),
            ],
        ],
        resize_keyboard=True,
    )
    await bot.send_message(known.id, "Menu", reply_markup=keyboard)
    await bot.send_message(
        known.id,
        "Links",
        reply_markup=InlineKeyboardMarkup(
            inline_keyboard=[[InlineKeyboardButton(text="Site", url="https://example.com")]]
        ),
    )
    assert server.messages_to(known)[0].keyboard == ["Report", "Where am I", "My phone"]
    text = await server.click(known, "Report")
    assert text["message"]["text"] == "Report"
    location = await server.click(known, "Where am I", location=(30.5, 114.3))
    assert location["message"]["location"] == {"latitude": 30.5, "longitude": 114.3}
    contact = await server.click(known, "My phone")
    assert contact["message"]["contact"]["user_id"] == known.id
    with pytest.raises(AssertionError, match="is a url button"):
        await server.click(known, "Site")
    await bot.send_message(known.id, "Bye", reply_markup=ReplyKeyboardRemove())
    with pytest.raises(AssertionError, match="no button labelled 'Report'"):
        await server.click(known, "Report")


# -- commands and menu ---------------------------------------------------------------


async def test_commands_per_scope_and_language(
    server: BotApiServer, bot: Bot, known: SimUser
) -> None:
    await bot.set_my_commands([BotCommand(command="start", description="Start")])
    await bot.set_my_commands(
        [
            BotCommand(command="start", description="开始"),
            BotCommand(command="report", description="报告"),
        ],
        scope=BotCommandScopeAllPrivateChats(),
        language_code="zh",
    )
    await bot.set_my_commands(
        [BotCommand(command="/admin", description="Admin")],
        scope=BotCommandScopeChat(chat_id=known.id),
    )
    zh = await bot.get_my_commands(scope=BotCommandScopeAllPrivateChats(), language_code="zh")
    assert [c.command for c in zh] == ["start", "report"]
    assert await bot.get_my_commands(scope=BotCommandScopeAllPrivateChats()) == []
    assert server.commands_for(None, "") == [{"command": "start", "description": "Start"}]
    assert server.commands_for({"type": "chat", "chat_id": known.id}) == [
        {"command": "admin", "description": "Admin"}
    ]
    other = server.user(language_code="zh-hans")
    assert [c["command"] for c in server.visible_commands(other)] == ["start", "report"]
    assert [c["command"] for c in server.visible_commands(known)] == ["admin"]
    assert await bot.delete_my_commands(scope=BotCommandScopeChat(chat_id=known.id))
    assert [c["command"] for c in server.visible_commands(known)] == ["start", "report"]
    english = server.user(language_code="en")
    assert server.visible_commands(english) == [{"command": "start", "description": "Start"}]


async def test_chat_menu_button(bot: Bot, known: SimUser) -> None:
    assert (await bot.get_chat_menu_button(chat_id=known.id)).type == "commands"
    button = MenuButtonWebApp(text="Open", web_app=WebAppInfo(url="https://example.com/app"))
    assert await bot.set_chat_menu_button(chat_id=known.id, menu_button=button)
    current = await bot.get_chat_menu_button(chat_id=known.id)
    assert isinstance(current, MenuButtonWebApp)
    assert current.web_app.url == "https://example.com/app"


# -- faults and rate limits ----------------------------------------------------------


async def test_fail_next_429_surfaces_as_retry_after(
    server: BotApiServer, bot: Bot, known: SimUser
) -> None:
    server.fail_next("sendMessage", status=429, retry_after=7)
    with pytest.raises(TelegramRetryAfter) as error:
        await bot.send_message(known.id, "first")
    assert error.value.retry_after == 7
    assert server.calls[-1].response["parameters"] == {"retry_after": 7}
    assert server.calls[-1].description == "Too Many Requests: retry after 7"
    # The fault is used up, but this call ignores the announced 7 seconds.
    await bot.send_message(known.id, "too soon")
    assert [c.params["text"] for c in server.calls_inside_retry_after] == ["too soon"]
    assert server.rate_limit_violations == []  # injected, not a rate limit


async def test_fail_next_filters_and_defaults(
    server: BotApiServer, bot: Bot, known: SimUser
) -> None:
    other = server.user(first_name="Zhao")
    await server.send_text(other, "hi")
    server.fail_next("SENDMESSAGE", status=403, times=2, chat_id=known.id)
    await bot.send_message(other.id, "unaffected")
    for _ in range(2):
        with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
            await bot.send_message(known.id, "x")
    await bot.send_message(known.id, "recovered")
    server.fail_next("*", status=500)
    with pytest.raises(TelegramServerError, match="Internal Server Error"):
        await bot.get_me()
    server.fail_next("getMe", status=400, description="Bad Request: custom")
    with pytest.raises(TelegramBadRequest, match="custom"):
        await bot.get_me()
    assert [m.text for m in server.messages_to(known)] == ["recovered"]


async def test_rate_limits_per_chat(server: BotApiServer, bot: Bot, known: SimUser) -> None:
    server.set_rate_limits(per_chat_per_second=1.0, global_per_second=None)
    await bot.send_message(known.id, "one")
    with pytest.raises(TelegramRetryAfter) as error:
        await bot.send_message(known.id, "two")
    assert error.value.retry_after == 1
    [violation] = server.rate_limit_violations
    assert (violation.method, violation.chat_id, violation.scope) == (
        "sendMessage",
        known.id,
        "chat",
    )
    # Retrying before the announced window ends is refused and recorded.
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(known.id, "three")
    assert [c.params["text"] for c in server.calls_inside_retry_after] == ["three"]
    await asyncio.sleep(1.05)
    await bot.send_message(known.id, "four")
    assert [m.text for m in server.messages_to(known)] == ["one", "four"]


async def test_rate_limits_global(server: BotApiServer, bot: Bot) -> None:
    users = [server.user() for _ in range(3)]
    for user in users:
        await server.send_text(user, "hi")
    server.set_rate_limits(per_chat_per_second=None, global_per_second=2.0)
    await bot.send_message(users[0].id, "a")
    await bot.send_message(users[1].id, "b")
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(users[2].id, "c")
    assert server.rate_limit_violations[0].scope == "global"
    server.clear_rate_limits()
    await bot.send_message(users[2].id, "c")  # limits off: only recorded as inside the window
    assert len(server.calls_inside_retry_after) == 1


# -- getUpdates ----------------------------------------------------------------------


async def test_long_poll_wakes_on_new_update(server: BotApiServer, bot: Bot) -> None:
    user = server.user(first_name="Poller")
    started = time.monotonic()
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.1)
    assert not poll.done()
    update = await server.send_text(user, "/start ref_42")
    [received] = await poll
    assert time.monotonic() - started < 2
    assert received.update_id == update["update_id"]
    assert received.message is not None
    assert received.message.text == "/start ref_42"
    assert received.message.entities is not None
    assert received.message.entities[0].type == "bot_command"
    assert received.message.from_user is not None
    assert received.message.from_user.language_code == "zh-hans"


async def test_offsets_confirm_updates(server: BotApiServer, bot: Bot) -> None:
    user = server.user()
    sent = [await server.send_text(user, f"m{i}") for i in range(3)]
    ids = [u["update_id"] for u in sent]
    assert [u.update_id for u in await bot.get_updates(limit=2)] == ids[:2]
    assert [u.update_id for u in await bot.get_updates()] == ids  # nothing confirmed yet
    assert [u.update_id for u in await bot.get_updates(offset=ids[1])] == ids[1:]
    await server.wait_delivered(ids[0], timeout=0.1)
    with pytest.raises(AssertionError, match="handed out but not confirmed"):
        await server.wait_delivered(ids[2], timeout=0.05)
    assert await bot.get_updates(offset=ids[2] + 1) == []
    await server.wait_delivered(ids[2], timeout=0.1)
    assert server.pending_updates == []
    later = await server.send_text(user, "later")
    assert [u.update_id for u in await bot.get_updates(offset=-1)] == [later["update_id"]]


async def test_allowed_updates_are_honoured(server: BotApiServer, bot: Bot, known: SimUser) -> None:
    sent = await bot.send_message(known.id, "Q", reply_markup=inline([("A", "a")]))
    await bot.get_updates(offset=-1, allowed_updates=["message"])
    press = await server.press(known, sent.message_id, "a")
    text = await server.send_text(known, "typed")
    updates = await bot.get_updates(offset=text["update_id"])
    assert [u.update_id for u in updates] == [text["update_id"]]
    assert server.dropped_updates[-1] == press
    with pytest.raises(AssertionError, match="dropped"):
        await server.wait_delivered(press["update_id"], timeout=0.05)


async def test_concurrent_get_updates_conflict(
    server: BotApiServer, http: aiohttp.ClientSession
) -> None:
    first = asyncio.create_task(raw(http, server, "getUpdates", timeout=5))
    await asyncio.sleep(0.1)
    second = asyncio.create_task(raw(http, server, "getUpdates", timeout=5))
    status, body = await asyncio.wait_for(first, 2)
    assert (status, body["description"]) == (409, CONFLICT_OTHER_POLL)
    update = await server.send_text(server.user(), "wake up")
    status, body = await asyncio.wait_for(second, 2)
    assert status == 200
    assert body["result"][0]["update_id"] == update["update_id"]


async def test_redelivery_in_polling_mode(server: BotApiServer, bot: Bot) -> None:
    user = server.user()
    update = await server.send_text(user, "once")
    [got] = await bot.get_updates()
    assert await bot.get_updates(offset=got.update_id + 1) == []
    server.redeliver(update["update_id"])
    [again] = await bot.get_updates(offset=got.update_id + 1)
    assert again.update_id == update["update_id"]
    assert again.message is not None
    assert again.message.message_id == update["message"]["message_id"]
    assert await bot.get_updates(offset=again.update_id + 1) == []
    await server.wait_delivered(update["update_id"], timeout=0.1)


# -- webhook -------------------------------------------------------------------------


class Receiver:
    """A stand-in for the bot's webhook endpoint."""

    def __init__(self, answers: list[int | dict[str, Any]]) -> None:
        self.answers = answers
        self.seen: list[tuple[str | None, dict[str, Any]]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(
            (request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json())
        )
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, dict):
            return web.json_response(answer)
        return web.Response(status=answer)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_webhook_delivery_secret_and_retry(server: BotApiServer, bot: Bot) -> None:
    user = server.user()
    async with Receiver([500, 200]) as receiver:
        assert await bot.set_webhook(receiver.url, secret_token="s3cr3t-Token_1")
        update = await server.send_text(user, "via webhook")
        await server.wait_delivered(update["update_id"], timeout=5)
        assert [a.status for a in server.webhook_attempts] == [500, 200]
        assert receiver.seen == [("s3cr3t-Token_1", update), ("s3cr3t-Token_1", update)]
        info = await bot.get_webhook_info()
        assert info.url == receiver.url
        assert info.pending_update_count == 0
        assert (
            info.last_error_message == "Wrong response from the webhook: 500 Internal Server Error"
        )
        with pytest.raises(TelegramConflictError) as error:
            await bot.get_updates()
        assert error.value.message == CONFLICT_WEBHOOK_ACTIVE
        server.redeliver(update["update_id"])
        await server.wait_delivered(update["update_id"], timeout=5)
        assert [seen[1]["update_id"] for seen in receiver.seen] == [update["update_id"]] * 3
        assert await bot.delete_webhook()
    assert (await bot.get_webhook_info()).url == ""


async def test_webhook_set_again_while_idle(server: BotApiServer, bot: Bot) -> None:
    """Two bot processes behind one URL both call setWebhook: the second call returns at once
    (on Python 3.11 the idle delivery loop could swallow its cancel, and the call hung), and
    one delivery loop remains."""
    user = server.user()
    async with Receiver([]) as receiver:
        assert await bot.set_webhook(receiver.url)
        await asyncio.sleep(0.05)  # the delivery loop is idle, waiting for an update
        async with asyncio.timeout(5):
            assert await bot.set_webhook(receiver.url)
        update = await server.send_text(user, "after the second setWebhook")
        await server.wait_delivered(update["update_id"], timeout=5)
        assert [seen[1]["update_id"] for seen in receiver.seen] == [update["update_id"]]
        await bot.delete_webhook()


async def test_webhook_parallel_delivers_chats_at_once_each_in_order() -> None:
    """webhook_parallel: as Telegram does, different chats at once, one chat's updates one at
    a time and in order, a failed one retried before the chat's next goes out."""
    in_flight: set[int] = set()
    overlaps: list[int] = []
    failing: dict[int, int] = {}  # chat -> answers of 500 still to give
    answered: list[tuple[int, str]] = []

    async def handle(request: web.Request) -> web.Response:
        message = (await request.json())["message"]
        chat = message["chat"]["id"]
        overlaps.append(-1 if chat in in_flight else len(in_flight) + 1)
        in_flight.add(chat)
        await asyncio.sleep(0.05)
        in_flight.discard(chat)
        if failing.get(chat):
            failing[chat] -= 1
            return web.Response(status=500)
        answered.append((chat, message["text"]))
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        async with BotApiServer(webhook_parallel=True) as server:
            users = [server.user() for _ in range(3)]
            failing[users[0].id] = 1
            updates = [await server.send_text(u, text) for text in ("1", "2", "3") for u in users]
            session = AiohttpSession(api=TelegramAPIServer.from_base(server.url))
            async with Bot(server.token, session=session) as bot:
                await bot.set_webhook(f"http://127.0.0.1:{runner.addresses[0][1]}/hook")
                for update in updates:
                    await server.wait_delivered(update["update_id"], timeout=10)
            attempts = Counter(a.update_id for a in server.webhook_attempts)
    finally:
        await runner.cleanup()
    assert -1 not in overlaps and max(overlaps) == 3
    for user in users:
        assert [text for chat, text in answered if chat == user.id] == ["1", "2", "3"]
    assert attempts[updates[0]["update_id"]] == 2 and sum(attempts.values()) == 10


async def test_webhook_keeps_order_and_retries_connection_errors(
    server: BotApiServer, bot: Bot
) -> None:
    user = server.user()
    async with Receiver([]) as receiver:
        closed_url = receiver.url
    first = await server.send_text(user, "1")
    second = await server.send_text(user, "2")
    await bot.set_webhook(closed_url)
    await eventually(lambda: len(server.webhook_attempts) >= 2)
    assert {a.update_id for a in server.webhook_attempts} == {first["update_id"]}
    assert all(a.error and a.status is None for a in server.webhook_attempts)
    assert len(server.webhook_attempts) >= 2
    assert (await bot.get_webhook_info()).pending_update_count == 2
    async with Receiver([]) as receiver:
        await bot.set_webhook(receiver.url)
        await server.wait_delivered(second["update_id"], timeout=5)
        assert [seen[1]["update_id"] for seen in receiver.seen] == [
            first["update_id"],
            second["update_id"],
        ]
        await bot.delete_webhook()


async def test_webhook_answer_with_a_method_is_executed(
    server: BotApiServer, bot: Bot, known: SimUser
) -> None:
    reply = {"method": "sendMessage", "chat_id": known.id, "text": "pong"}
    async with Receiver([reply]) as receiver:
        await bot.set_webhook(receiver.url, drop_pending_updates=True)
        assert server.pending_updates == []  # the "hi" from the fixture was dropped
        await server.send_text(known, "ping")
        call = await server.wait_for_call("sendMessage", chat_id=known.id, timeout=5)
        assert call.source == "webhook-reply"
        assert call.ok
        assert server.last_message_to(known).text == "pong"
        await bot.delete_webhook()


async def test_aiogram_webhook_end_to_end(server: BotApiServer, bot: Bot) -> None:
    router = Router()

    @router.message(F.text == "ping")
    async def ping(message: Message) -> Any:
        return message.answer("pong")  # not awaited: aiogram puts it in the webhook answer

    @router.message(F.text)
    async def other(message: Message) -> None:
        await message.answer(f"got {message.text}")

    dp = Dispatcher()
    dp.include_router(router)
    app = web.Application()
    handler = SimpleRequestHandler(dp, bot, handle_in_background=False, secret_token="right")
    handler.register(app, path="/hook")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    user = server.user()
    try:
        await bot.set_webhook(url, secret_token="wrong", allowed_updates=["message"])
        first = await server.send_text(user, "ping")
        await eventually(lambda: bool(server.webhook_attempts))
        assert server.webhook_attempts[0].status == 401  # aiogram refuses the wrong secret
        await bot.set_webhook(url, secret_token="right")
        second = await server.send_text(user, "hello")
        await server.wait_delivered(second["update_id"], timeout=5)
        await server.wait_delivered(first["update_id"], timeout=1)
        pong = await server.wait_for_call("sendMessage", text="pong", timeout=1)
        assert (pong.source, pong.chat_id) == ("webhook-reply", user.id)
        got = await server.wait_for_call("sendMessage", text="got hello", timeout=1)
        assert got.source == "http"
        assert [m.text for m in server.messages_to(user)] == ["pong", "got hello"]
        assert (await bot.get_webhook_info()).allowed_updates == ["message"]
        await bot.delete_webhook()
    finally:
        await runner.cleanup()


# -- media and files -----------------------------------------------------------------


async def test_user_album_photos_and_download(server: BotApiServer, bot: Bot) -> None:
    user = server.user()
    album = await server.send_album(user, 3, caption="scene")
    messages = [u["message"] for u in album]
    assert len({m["media_group_id"] for m in messages}) == 1
    assert [u["update_id"] for u in album] == sorted(u["update_id"] for u in album)
    assert len({m["message_id"] for m in messages}) == 3
    assert [m.get("caption") for m in messages] == ["scene", None, None]
    file_ids = {size["file_id"] for m in messages for size in m["photo"]}
    assert len(file_ids) == 9
    updates = await bot.get_updates()
    assert [u.message.media_group_id for u in updates if u.message] == [
        messages[0]["media_group_id"]
    ] * 3
    largest = messages[1]["photo"][-1]
    file = await bot.get_file(largest["file_id"])
    assert file.file_size == len(server.file_data(largest["file_id"]))
    assert file.file_path is not None
    data = await bot.download_file(file.file_path)
    assert isinstance(data, BytesIO)
    assert data.getvalue() == server.file_data(largest["file_id"])


async def test_other_user_messages(server: BotApiServer, bot: Bot) -> None:
    user = server.user()
    location = await server.send_location(user, 31.2, 121.5)
    contact = await server.send_contact(user, "+8613900000000")
    sticker = await server.send_sticker(user)
    document = await server.send_document(user, "notes.txt", b"hello")
    photo = await server.send_photo(user, caption="broken fence")
    updates = {u.update_id: u for u in await bot.get_updates()}
    assert updates[location["update_id"]].message.location.latitude == 31.2  # type: ignore[union-attr]
    assert updates[contact["update_id"]].message.contact.user_id == user.id  # type: ignore[union-attr]
    assert updates[sticker["update_id"]].message.sticker.emoji == "👍"  # type: ignore[union-attr]
    doc = updates[document["update_id"]].message.document  # type: ignore[union-attr]
    assert doc is not None and (doc.file_name, doc.mime_type) == ("notes.txt", "text/plain")
    assert photo["message"]["caption"] == "broken fence"
    downloaded = await bot.download(doc.file_id)
    assert isinstance(downloaded, BytesIO)
    assert downloaded.getvalue() == b"hello"


async def test_bot_uploads(server: BotApiServer, bot: Bot, known: SimUser) -> None:
    picture = b"\xff\xd8fake-jpeg-bytes\xff\xd9"
    photo = await bot.send_photo(known.id, BufferedInputFile(picture, "p.jpg"), caption="c")
    assert photo.photo is not None and len(photo.photo) == 3
    assert server.calls[-1].files  # the upload arrived as a file part
    file = await bot.get_file(photo.photo[-1].file_id)
    assert file.file_path is not None
    downloaded = await bot.download_file(file.file_path)
    assert isinstance(downloaded, BytesIO) and downloaded.getvalue() == picture
    again = await bot.send_photo(known.id, photo.photo[-1].file_id)
    assert again.photo is not None and again.photo[-1].file_id == photo.photo[-1].file_id
    document = await bot.send_document(known.id, BufferedInputFile(b"a,b\n", "export.csv"))
    assert document.document is not None
    assert (document.document.file_name, document.document.mime_type) == ("export.csv", "text/csv")
    with pytest.raises(TelegramBadRequest, match="can't use file of type Document as Photo"):
        await bot.send_photo(known.id, document.document.file_id)
    album = await bot.send_media_group(
        known.id,
        [
            InputMediaPhoto(
                media=BufferedInputFile(b"one", "1.jpg"), caption="<b>1</b>", parse_mode="HTML"
            ),
            InputMediaPhoto(media=BufferedInputFile(b"two", "2.jpg")),
        ],
    )
    assert len(album) == 2
    assert album[0].media_group_id == album[1].media_group_id is not None
    assert album[0].caption == "1"
    location = await bot.send_location(known.id, 39.9, 116.4)
    assert location.location is not None and location.location.latitude == 39.9
    assert [m.message_id for m in server.messages_to(known)] == list(range(2, 8))


# -- recording -----------------------------------------------------------------------


async def test_wait_for_call_since_mark(server: BotApiServer, bot: Bot, known: SimUser) -> None:
    await bot.send_message(known.id, "before")
    mark = server.mark()

    async def later() -> None:
        await asyncio.sleep(0.05)
        await bot.send_message(known.id, "after")

    task = asyncio.create_task(later())
    call = await server.wait_for_call("sendMessage", since=mark, chat_id=str(known.id), timeout=2)
    await task
    assert call.params["text"] == "after"
    first = await server.wait_for(lambda c: c.method == "sendMessage", timeout=0.1)
    assert first.params["text"] == "before"
    with pytest.raises(AssertionError, match=r"(?s)sendMessage\(text='never'\).*recent calls"):
        await server.wait_for_call("sendMessage", text="never", timeout=0.05)
    server.clear_calls()
    assert server.calls == []


# -- end to end with aiogram's dispatcher -----------------------------------------


def echo_router() -> Router:
    router = Router()

    @router.message(F.text)
    async def echo(message: Message) -> None:
        await message.answer(f"echo: {message.text}", reply_markup=inline([("Like", "like")]))

    @router.callback_query(F.data == "like")
    async def like(query: CallbackQuery) -> None:
        await query.answer("Liked")

    return router


async def test_dispatcher_polling_end_to_end(server: BotApiServer, bot: Bot) -> None:
    dp = Dispatcher()
    dp.include_router(echo_router())
    user = server.user()
    polling = asyncio.create_task(
        dp.start_polling(bot, polling_timeout=1, handle_signals=False, close_bot_session=False)
    )
    try:
        update = await server.send_text(user, "你好")
        call = await server.wait_for_call("sendMessage", chat_id=user.id, timeout=5)
        assert call.params["text"] == "echo: 你好"
        await server.wait_delivered(update["update_id"], timeout=5)
        click = await server.click(user, "Like")
        await server.wait_for_call("answerCallbackQuery", timeout=5)
        assert server.callback_answer(click) == {"text": "Liked", "show_alert": False, "url": None}
        allowed = server.calls_of("getUpdates")[-1].params["allowed_updates"]
        assert sorted(allowed) == ["callback_query", "message"]
    finally:
        await dp.stop_polling()
        with contextlib.suppress(asyncio.CancelledError):
            await polling


async def test_cli_prints_url_and_serves(http: aiohttp.ClientSession) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.botapi",
        "--port",
        "0",
        "--token",
        "42:CLI",
        cwd=PROJECT_ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stdin is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
        assert line.startswith("Bot API listening on http://127.0.0.1:")
        url = line.split()[-1]
        async with http.get(f"{url}/bot42:CLI/getMe") as response:
            assert (await response.json())["result"]["id"] == 42
        process.stdin.write(b"hello\n")
        await process.stdin.drain()
        async with http.get(f"{url}/bot42:CLI/getUpdates", params={"timeout": "5"}) as response:
            assert (await response.json())["result"][0]["message"]["text"] == "hello"
    finally:
        process.terminate()
        await process.wait()
