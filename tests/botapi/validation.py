"""Parameter checks shared by the method handlers.

Each check raises ApiError with the status and wording Telegram would use; where the
real Bot API is more lenient than its documentation (e.g. a button with several action
fields), the documented rule is enforced so that such calls are caught in tests.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from .errors import MESSAGE_TEXT_EMPTY, ApiError, bad_request
from .textfmt import utf16_len

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA_BYTES = 64
MAX_CALLBACK_ANSWER = 200
MAX_BUTTONS = 100
MAX_COMMANDS = 100

INLINE_BUTTON_KINDS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
REPLY_BUTTON_KINDS = (
    "request_users",
    "request_chat",
    "request_contact",
    "request_location",
    "request_poll",
    "web_app",
)
SCOPE_TYPES = frozenset(
    {
        "default",
        "all_private_chats",
        "all_group_chats",
        "all_chat_administrators",
        "chat",
        "chat_administrators",
        "chat_member",
    }
)
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_COMMAND_RE = re.compile(r"^[a-z0-9_]+$")
_LANGUAGE_RE = re.compile(r"^[a-z]{2}$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")

ScopeKey = tuple[str, int | str | None, int | None]


def require(params: dict[str, Any], name: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        if name == "chat_id":
            raise bad_request("chat_id is empty")
        raise bad_request(f'parameter "{name}" is required')
    return value


def check_text_length(text: str) -> None:
    if not text:
        raise ApiError(400, MESSAGE_TEXT_EMPTY)
    if utf16_len(text) > MAX_TEXT:
        raise bad_request("message is too long")


def check_caption_length(caption: str) -> None:
    if utf16_len(caption) > MAX_CAPTION:
        raise bad_request("message caption is too long")


def _check_url(url: Any, what: str) -> None:
    if not isinstance(url, str) or not url:
        raise bad_request(f"{what} URL must be non-empty")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "tg", "ton") or (
        parts.scheme in ("http", "https") and not parts.netloc
    ):
        raise bad_request(f"{what} URL '{url}' is invalid: Wrong HTTP URL")


def check_reply_markup(value: Any, *, inline_only: bool = False) -> dict[str, Any] | None:
    """Validate and normalise a reply_markup; None means "no markup"."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request("object expected as reply markup")
    if "inline_keyboard" in value:
        return {"inline_keyboard": _check_inline_keyboard(value["inline_keyboard"])}
    if inline_only:
        raise bad_request("inline keyboard expected as reply markup")
    if "keyboard" in value:
        return _check_reply_keyboard(value)
    for key, kind in (("remove_keyboard", "ReplyKeyboardRemove"), ("force_reply", "ForceReply")):
        if key in value:
            if value[key] is not True:
                raise bad_request(f'field "{key}" of the {kind} must be true')
            _check_bool_fields(value, kind, ("selective",))
            return dict(value)
    raise bad_request("can't find reply markup")


def _check_bool_fields(value: dict[str, Any], kind: str, names: tuple[str, ...]) -> None:
    for name in names:
        if name in value and not isinstance(value[name], bool):
            raise bad_request(f'field "{name}" of the {kind} must be of the type Boolean')


def _check_inline_keyboard(rows: Any) -> list[list[dict[str, Any]]]:
    if not isinstance(rows, list):
        raise bad_request('field "inline_keyboard" of the InlineKeyboardMarkup must be an Array')
    result: list[list[dict[str, Any]]] = []
    count = 0
    for row in rows:
        if not isinstance(row, list):
            raise bad_request(
                'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'
            )
        result.append([_check_inline_button(button) for button in row])
        count += len(row)
    if count > MAX_BUTTONS:
        raise bad_request("reply markup is too long")
    return [row for row in result if row]


def _check_inline_button(button: Any) -> dict[str, Any]:
    def fail(message: str) -> ApiError:
        return bad_request(f"can't parse inline keyboard button: {message}")

    if not isinstance(button, dict):
        raise fail("InlineKeyboardButton must be an Object")
    text = button.get("text")
    if not isinstance(text, str):
        raise fail('Field "text" must be of type String')
    if not text.strip():
        raise fail("Text must be non-empty")
    kinds = [kind for kind in INLINE_BUTTON_KINDS if kind in button]
    if not kinds:
        raise fail("Text buttons are unallowed in the inline keyboard")
    if len(kinds) > 1:
        raise fail(f"exactly one of the optional fields must be used, got {', '.join(kinds)}")
    kind = kinds[0]
    if kind == "callback_data":
        data = button["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode("utf-8")) <= 64:
            raise bad_request("BUTTON_DATA_INVALID")
    elif kind == "url":
        _check_url(button["url"], "inline keyboard button")
    elif kind == "web_app":
        web_app = button["web_app"]
        url = web_app.get("url") if isinstance(web_app, dict) else None
        if not isinstance(url, str) or not url.startswith("https://"):
            raise bad_request(
                f"inline keyboard button Web App URL '{url}' is invalid: "
                "Only HTTPS links are allowed"
            )
    return {key: value for key, value in button.items() if value is not None}


def _check_reply_keyboard(value: dict[str, Any]) -> dict[str, Any]:
    rows = value["keyboard"]
    if not isinstance(rows, list):
        raise bad_request('field "keyboard" of the ReplyKeyboardMarkup must be an Array')
    result: list[list[dict[str, Any]]] = []
    for row in rows:
        if not isinstance(row, list):
            raise bad_request(
                'field "keyboard" of the ReplyKeyboardMarkup must be an Array of Arrays'
            )
        if row:
            result.append([_check_reply_button(button) for button in row])
    if not result:
        raise bad_request("keyboard must contain at least one button")
    if sum(len(row) for row in result) > MAX_BUTTONS:
        raise bad_request("reply markup is too long")
    _check_bool_fields(
        value,
        "ReplyKeyboardMarkup",
        ("resize_keyboard", "one_time_keyboard", "is_persistent", "selective"),
    )
    placeholder = value.get("input_field_placeholder")
    if placeholder is not None and (not isinstance(placeholder, str) or len(placeholder) > 64):
        raise bad_request("input field placeholder is too long")
    return {**value, "keyboard": result}


def _check_reply_button(button: Any) -> dict[str, Any]:
    def fail(message: str) -> ApiError:
        return bad_request(f"can't parse keyboard button: {message}")

    if isinstance(button, str):
        button = {"text": button}
    if not isinstance(button, dict):
        raise fail("KeyboardButton must be a String or an Object")
    text = button.get("text")
    if not isinstance(text, str):
        raise fail('Field "text" must be of type String')
    if not text.strip():
        raise fail("Text must be non-empty")
    kinds = [kind for kind in REPLY_BUTTON_KINDS if button.get(kind) not in (None, False)]
    if len(kinds) > 1:
        raise fail(f"at most one of the optional fields can be used, got {', '.join(kinds)}")
    return {key: value for key, value in button.items() if value is not None}


def inline_buttons(markup: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not markup or "inline_keyboard" not in markup:
        return []
    return [button for row in markup["inline_keyboard"] for button in row]


def reply_buttons(markup: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not markup or "keyboard" not in markup:
        return []
    return [button for row in markup["keyboard"] for button in row]


def check_commands(value: Any) -> list[dict[str, str]]:
    if value is None:
        raise bad_request('parameter "commands" is required')
    if not isinstance(value, list):
        raise bad_request("expected an Array of BotCommand")
    if len(value) > MAX_COMMANDS:
        raise bad_request("BOT_COMMANDS_TOO_MUCH")
    result: list[dict[str, str]] = []
    for item in value:
        if not isinstance(item, dict):
            raise bad_request("can't parse BotCommand: expected an Object")
        for field in ("command", "description"):
            if field not in item:
                raise bad_request(f"can't parse BotCommand: Can't find field \"{field}\"")
            if not isinstance(item[field], str):
                raise bad_request(
                    f'can\'t parse BotCommand: Field "{field}" must be of type String'
                )
        # tdlib trims both fields and accepts a leading slash.
        command = item["command"].strip().removeprefix("/")
        description = item["description"].strip()
        if not command:
            raise bad_request("command must be non-empty")
        if len(command) > 32:
            raise bad_request("command length must not exceed 32")
        if not _COMMAND_RE.match(command):
            raise bad_request("BOT_COMMAND_INVALID")
        if not description:
            raise bad_request("command description must be non-empty")
        if len(description) > 256:
            raise bad_request("command description length must not exceed 256")
        result.append({"command": command, "description": description})
    return result


def check_scope(value: Any) -> dict[str, Any]:
    if value is None:
        return {"type": "default"}
    if not isinstance(value, dict):
        raise bad_request("can't parse BotCommandScope: expected an Object")
    kind = value.get("type")
    if kind not in SCOPE_TYPES:
        raise bad_request("can't parse BotCommandScope: Unsupported type specified")
    if kind in ("chat", "chat_administrators", "chat_member"):
        chat_id = value.get("chat_id")
        if chat_id is None or chat_id == "":
            raise bad_request("can't parse BotCommandScope: Can't find field \"chat_id\"")
        if kind == "chat_member" and not isinstance(value.get("user_id"), int):
            raise bad_request("can't parse BotCommandScope: Can't find field \"user_id\"")
    return dict(value)


def scope_key(scope: dict[str, Any] | None) -> ScopeKey:
    scope = scope or {"type": "default"}
    chat_id = scope.get("chat_id")
    if isinstance(chat_id, str) and re.fullmatch(r"-?\d+", chat_id):
        chat_id = int(chat_id)
    user_id = scope.get("user_id")
    return (str(scope["type"]), chat_id, user_id if isinstance(user_id, int) else None)


def check_language_code(value: Any) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not _LANGUAGE_RE.match(value):
        raise bad_request("invalid language code specified")
    return value


def check_chat_action(value: Any) -> str:
    if value is None or value == "":
        raise bad_request('parameter "action" is required')
    if not isinstance(value, str) or value.lower() not in CHAT_ACTIONS:
        raise bad_request("wrong parameter action in request")
    return value.lower()


def check_callback_answer_text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    if utf16_len(text) > MAX_CALLBACK_ANSWER:
        raise bad_request("MESSAGE_TOO_LONG")
    return text


def check_location(latitude: Any, longitude: Any) -> tuple[float, float]:
    if latitude is None:
        raise bad_request("latitude is empty")
    if longitude is None:
        raise bad_request("longitude is empty")
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise bad_request("wrong location specified")
    return float(latitude), float(longitude)


def check_media_group(value: Any) -> list[dict[str, Any]]:
    if value is None:
        raise bad_request('parameter "media" is required')
    if not isinstance(value, list):
        raise bad_request("expected an Array of InputMedia")
    if len(value) < 2:
        raise bad_request("media group must contain 2-10 items")
    if len(value) > 10:
        raise bad_request("too many messages to send as an album")
    kinds: set[str] = set()
    for item in value:
        if not isinstance(item, dict):
            raise bad_request("can't parse InputMedia: expected an Object")
        kind = item.get("type")
        if kind == "animation":
            raise bad_request(
                "can't parse InputMedia: type \"animation\" can't be used in sendMediaGroup"
            )
        if kind not in ("photo", "video", "document", "audio"):
            raise bad_request(f'can\'t parse InputMedia: type "{kind}" is unsupported')
        if not isinstance(item.get("media"), str) or not item["media"]:
            raise bad_request("can't parse InputMedia: media not found")
        kinds.add(kind)
    # Documents and audio can only be grouped with their own kind.
    if len(kinds) > 1 and kinds & {"document", "audio"}:
        raise bad_request("Can't use the media of the specified type in the album")
    return value


def check_webhook_secret(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _SECRET_RE.match(value):
        raise bad_request("secret token contains unallowed characters")
    return value


def check_webhook_url(url: str, *, require_https: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise bad_request("bad webhook: Invalid URL specified")
    if require_https and parts.scheme != "https":
        raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")


def check_menu_button(value: Any) -> dict[str, Any]:
    if value is None:
        return {"type": "default"}
    if not isinstance(value, dict):
        raise bad_request("can't parse menu button: expected an Object")
    kind = value.get("type")
    if kind in ("default", "commands"):
        return {"type": kind}
    if kind == "web_app":
        if not isinstance(value.get("text"), str) or not value["text"]:
            raise bad_request("can't parse menu button: Text must be non-empty")
        web_app = value.get("web_app")
        url = web_app.get("url") if isinstance(web_app, dict) else None
        if not isinstance(url, str) or not url.startswith("https://"):
            raise bad_request("can't parse menu button: Only HTTPS links are allowed")
        return {"type": "web_app", "text": value["text"], "web_app": {"url": url}}
    raise bad_request("can't parse menu button: Unsupported type specified")
