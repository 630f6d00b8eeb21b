"""The Bot API methods: parameter checks, effects on the World and realistic results."""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import (
    BOT_BLOCKED,
    MESSAGE_NOT_MODIFIED,
    MESSAGE_TO_DELETE_NOT_FOUND,
    MESSAGE_TO_EDIT_NOT_FOUND,
    QUERY_TOO_OLD,
    USER_DEACTIVATED,
    ApiError,
    bad_request,
)
from .limits import RateLimiter
from .params import UploadedFile
from .state import (
    CALLBACK_QUERY_LIFETIME,
    DELETE_WINDOW,
    MAX_DOWNLOAD_SIZE,
    ChatState,
    FileRecord,
    StoredMessage,
    World,
    fake_jpeg,
)
from .textfmt import FormattedText, format_text
from .updates import UpdateQueue, WebhookConfig
from .validation import (
    check_callback_answer_text,
    check_caption_length,
    check_chat_action,
    check_commands,
    check_language_code,
    check_location,
    check_media_group,
    check_menu_button,
    check_reply_markup,
    check_scope,
    check_text_length,
    check_webhook_secret,
    check_webhook_url,
    require,
    scope_key,
)

Params = dict[str, Any]
Files = dict[str, UploadedFile]
Handler = Callable[[Params, Files], Awaitable[Any]]
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

MAX_UPLOAD = 50 * 1024 * 1024
_MEDIA_KEYS = ("photo", "document", "video", "audio", "animation", "voice")

# canonical method name -> handler attribute
_REGISTRY: dict[str, str] = {}


def api_method(name: str) -> Callable[[F], F]:
    def register(handler: F) -> F:
        _REGISTRY[name] = handler.__name__
        return handler

    return register


@dataclass
class _PendingFile:
    """A file to store once the call is known to succeed."""

    kind: str
    data: bytes
    file_name: str | None = None
    mime_type: str | None = None


FileSource = FileRecord | _PendingFile


class Methods:
    def __init__(
        self, world: World, queue: UpdateQueue, limits: RateLimiter, require_https: bool
    ) -> None:
        self.world = world
        self.queue = queue
        self.limits = limits
        self.require_https = require_https

    @staticmethod
    def canonical(name: str) -> str | None:
        lowered = name.lower()
        return next((known for known in _REGISTRY if known.lower() == lowered), None)

    def handler(self, canonical: str) -> Handler:
        handler: Handler = getattr(self, _REGISTRY[canonical])
        return handler

    # -- helpers --------------------------------------------------------------------

    def _writable_chat(self, p: Params) -> ChatState:
        chat = self.world.known_chat(require(p, "chat_id"))
        if chat.deactivated:
            raise ApiError(403, USER_DEACTIVATED)
        if chat.blocked:
            raise ApiError(403, BOT_BLOCKED)
        return chat

    def _admit(self, chat: ChatState) -> None:
        self.limits.admit(chat.id, time.monotonic())

    @staticmethod
    def _text(p: Params) -> FormattedText:
        text = p.get("text")
        if not isinstance(text, str) or not text:
            check_text_length("")
        formatted = format_text(str(text), p.get("parse_mode"), p.get("entities"))
        check_text_length(formatted.text)
        return formatted

    @staticmethod
    def _caption(value: Any, parse_mode: Any, entities: Any) -> FormattedText:
        if not isinstance(value, str) or not value:
            return FormattedText("")
        formatted = format_text(value, parse_mode, entities)
        check_caption_length(formatted.text)
        return formatted

    @staticmethod
    def _text_fields(formatted: FormattedText, key: str, entities_key: str) -> dict[str, Any]:
        if not formatted.text:
            return {}
        fields: dict[str, Any] = {key: formatted.text}
        if formatted.entities:
            fields[entities_key] = formatted.entities
        return fields

    def _reply_to(self, chat: ChatState, p: Params) -> dict[str, Any] | None:
        reply = p.get("reply_parameters")
        message_id = p.get("reply_to_message_id")
        allow_missing = bool(p.get("allow_sending_without_reply"))
        if isinstance(reply, dict):
            message_id = reply.get("message_id")
            allow_missing = bool(reply.get("allow_sending_without_reply", allow_missing))
        if message_id is None:
            return None
        stored = chat.messages.get(message_id) if isinstance(message_id, int) else None
        if stored is None or stored.deleted:
            if allow_missing:
                return None
            raise bad_request("message to be replied not found")
        original = copy.deepcopy(stored.message)
        original.pop("reply_to_message", None)
        return original

    def _resolve_file(self, value: Any, files: Files, field: str, kind: str) -> FileSource:
        upload: UploadedFile | None = files.get(field) if field else None
        if isinstance(value, str) and value.startswith("attach://"):
            upload = files.get(value.removeprefix("attach://"))
            if upload is None:
                raise bad_request(f"there is no {field or kind} in the request")
        if upload is not None:
            if not upload.data:
                raise bad_request("file must be non-empty")
            if len(upload.data) > MAX_UPLOAD:
                raise ApiError(413, "Request Entity Too Large")
            return _PendingFile(kind, upload.data, upload.filename, upload.content_type)
        if not isinstance(value, str) or not value:
            raise bad_request(f"there is no {field or kind} in the request")
        if value.startswith(("http://", "https://")):
            name = value.rstrip("/").rpartition("/")[2] or None
            data = fake_jpeg() if kind == "photo" else b"downloaded from " + value.encode()
            return _PendingFile(kind, data, name if kind != "photo" else None)
        record = self.world.files.by_id.get(value)
        if record is None:
            raise bad_request("wrong file identifier/HTTP URL specified")
        if record.kind != kind:
            raise bad_request(f"can't use file of type {record.kind.title()} as {kind.title()}")
        return record

    def _materialize(self, source: FileSource) -> dict[str, Any]:
        """Store a pending file and describe it as message content."""
        files = self.world.files
        if isinstance(source, _PendingFile):
            if source.kind == "photo":
                record = files.add_photo(source.data)[-1]
            else:
                mime = source.mime_type
                if mime == "application/octet-stream":
                    mime = None
                record = files.add(
                    source.kind, source.data, file_name=source.file_name, mime_type=mime
                )
        else:
            record = source
        if record.kind == "photo":
            return {"photo": files.photo_sizes(record)}
        described = record.as_document()
        if record.kind == "video":
            described.update(width=640, height=480, duration=1)
        elif record.kind == "audio":
            described["duration"] = 1
        return {record.kind: described}

    def _store_bot_message(
        self,
        chat: ChatState,
        content: dict[str, Any],
        markup: dict[str, Any] | None,
        reply_to: dict[str, Any] | None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": chat.allocate_message_id(),
            "from": dict(self.world.bot_user),
            "chat": dict(chat.chat),
            "date": self.world.now(),
        }
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        message.update(content)
        if markup and markup.get("inline_keyboard"):
            message["reply_markup"] = markup
        stored = StoredMessage(message=message, from_bot=True, markup=markup)
        chat.messages[stored.message_id] = stored
        if markup and "keyboard" in markup:
            chat.reply_keyboard_message_id = stored.message_id
        elif markup and "remove_keyboard" in markup:
            chat.reply_keyboard_message_id = None
        return copy.deepcopy(message)

    def _message_to_edit(self, p: Params) -> tuple[ChatState, StoredMessage]:
        if p.get("inline_message_id"):
            raise bad_request("MESSAGE_ID_INVALID")
        chat_id = require(p, "chat_id")
        message_id = p.get("message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        chat = self.world.known_chat(chat_id)
        stored = self.world.bot_message(chat.id, message_id)
        if stored is None:
            raise ApiError(400, MESSAGE_TO_EDIT_NOT_FOUND)
        return chat, stored

    def _finish_edit(self, stored: StoredMessage, markup: dict[str, Any] | None) -> dict[str, Any]:
        message = stored.message
        stored.markup = markup
        if markup and markup.get("inline_keyboard"):
            message["reply_markup"] = markup
        else:
            message.pop("reply_markup", None)
        message["edit_date"] = self.world.now()
        return copy.deepcopy(message)

    # -- identity -------------------------------------------------------------------

    @api_method("getMe")
    async def get_me(self, p: Params, files: Files) -> Any:
        return {
            **self.world.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    @api_method("close")
    async def close(self, p: Params, files: Files) -> Any:
        return True

    @api_method("logOut")
    async def log_out(self, p: Params, files: Files) -> Any:
        return True

    # -- updates --------------------------------------------------------------------

    @api_method("getUpdates")
    async def get_updates(self, p: Params, files: Files) -> Any:
        return await self.queue.get_updates(
            p.get("offset"), p.get("limit"), p.get("timeout"), p.get("allowed_updates")
        )

    @api_method("setWebhook")
    async def set_webhook(self, p: Params, files: Files) -> Any:
        url = p.get("url") or ""
        drop = bool(p.get("drop_pending_updates"))
        if not url:
            await self.queue.delete_webhook(drop)
            return True
        check_webhook_url(str(url), require_https=self.require_https)
        secret = check_webhook_secret(p.get("secret_token"))
        allowed = p.get("allowed_updates")
        if allowed is not None and not isinstance(allowed, list):
            raise bad_request("can't parse allowed updates JSON object")
        max_connections = p.get("max_connections") or 40
        if not 1 <= max_connections <= 100:
            raise bad_request("max_connections must be between 1 and 100")
        previous = self.queue.webhook
        if allowed is None and previous is not None:
            allowed = previous.allowed_updates
        config = WebhookConfig(str(url), secret, max_connections, allowed)
        await self.queue.set_webhook(config, drop)
        return True

    @api_method("deleteWebhook")
    async def delete_webhook(self, p: Params, files: Files) -> Any:
        await self.queue.delete_webhook(bool(p.get("drop_pending_updates")))
        return True

    @api_method("getWebhookInfo")
    async def get_webhook_info(self, p: Params, files: Files) -> Any:
        config = self.queue.webhook
        info: dict[str, Any] = {
            "url": config.url if config else "",
            "has_custom_certificate": False,
            "pending_update_count": self.queue.pending_count(),
        }
        if config is not None:
            info["max_connections"] = config.max_connections
            info["ip_address"] = "127.0.0.1"
            if config.allowed_updates:
                info["allowed_updates"] = config.allowed_updates
            if config.last_error_date is not None:
                info["last_error_date"] = config.last_error_date
                info["last_error_message"] = config.last_error_message
        return info

    # -- sending --------------------------------------------------------------------

    @api_method("sendMessage")
    async def send_message(self, p: Params, files: Files) -> Any:
        require(p, "chat_id")
        formatted = self._text(p)
        markup = check_reply_markup(p.get("reply_markup"))
        chat = self._writable_chat(p)
        reply_to = self._reply_to(chat, p)
        self._admit(chat)
        content = self._text_fields(formatted, "text", "entities")
        return self._store_bot_message(chat, content, markup, reply_to)

    async def _send_media(self, p: Params, files: Files, field: str, kind: str) -> Any:
        require(p, "chat_id")
        source = self._resolve_file(p.get(field), files, field, kind)
        caption = self._caption(p.get("caption"), p.get("parse_mode"), p.get("caption_entities"))
        markup = check_reply_markup(p.get("reply_markup"))
        chat = self._writable_chat(p)
        reply_to = self._reply_to(chat, p)
        self._admit(chat)
        content = self._materialize(source)
        content.update(self._text_fields(caption, "caption", "caption_entities"))
        return self._store_bot_message(chat, content, markup, reply_to)

    @api_method("sendPhoto")
    async def send_photo(self, p: Params, files: Files) -> Any:
        return await self._send_media(p, files, "photo", "photo")

    @api_method("sendDocument")
    async def send_document(self, p: Params, files: Files) -> Any:
        return await self._send_media(p, files, "document", "document")

    @api_method("sendMediaGroup")
    async def send_media_group(self, p: Params, files: Files) -> Any:
        require(p, "chat_id")
        items = check_media_group(p.get("media"))
        prepared: list[tuple[FileSource, FormattedText]] = []
        for item in items:
            try:
                source = self._resolve_file(item["media"], files, "", str(item["type"]))
            except ApiError as e:
                if "there is no" in e.description:
                    raise bad_request("can't parse InputMedia: media not found") from e
                raise
            caption = self._caption(
                item.get("caption"), item.get("parse_mode"), item.get("caption_entities")
            )
            prepared.append((source, caption))
        chat = self._writable_chat(p)
        reply_to = self._reply_to(chat, p)
        self._admit(chat)
        group_id = str(secrets.randbelow(10**18) + 10**17)
        sent = []
        for source, caption in prepared:
            content = self._materialize(source)
            content["media_group_id"] = group_id
            content.update(self._text_fields(caption, "caption", "caption_entities"))
            sent.append(self._store_bot_message(chat, content, None, reply_to))
        return sent

    @api_method("sendLocation")
    async def send_location(self, p: Params, files: Files) -> Any:
        require(p, "chat_id")
        latitude, longitude = check_location(p.get("latitude"), p.get("longitude"))
        markup = check_reply_markup(p.get("reply_markup"))
        chat = self._writable_chat(p)
        reply_to = self._reply_to(chat, p)
        self._admit(chat)
        location: dict[str, Any] = {"latitude": latitude, "longitude": longitude}
        for key in ("horizontal_accuracy", "live_period", "heading"):
            if p.get(key) is not None:
                location[key] = p[key]
        return self._store_bot_message(chat, {"location": location}, markup, reply_to)

    @api_method("sendContact")
    async def send_contact(self, p: Params, files: Files) -> Any:
        require(p, "chat_id")
        contact = {
            "phone_number": require(p, "phone_number"),
            "first_name": require(p, "first_name"),
        }
        if p.get("last_name"):
            contact["last_name"] = p["last_name"]
        markup = check_reply_markup(p.get("reply_markup"))
        chat = self._writable_chat(p)
        reply_to = self._reply_to(chat, p)
        self._admit(chat)
        return self._store_bot_message(chat, {"contact": contact}, markup, reply_to)

    @api_method("sendChatAction")
    async def send_chat_action(self, p: Params, files: Files) -> Any:
        require(p, "chat_id")
        check_chat_action(p.get("action"))
        self._writable_chat(p)
        return True

    # -- editing --------------------------------------------------------------------

    @api_method("editMessageText")
    async def edit_message_text(self, p: Params, files: Files) -> Any:
        formatted = self._text(p)
        markup = check_reply_markup(p.get("reply_markup"), inline_only=True)
        _, stored = self._message_to_edit(p)
        message = stored.message
        if "text" not in message:
            raise bad_request("there is no text in the message to edit")
        entities = formatted.entities
        if (
            message.get("text") == formatted.text
            and message.get("entities", []) == entities
            and _same_markup(stored.markup, markup)
        ):
            raise ApiError(400, MESSAGE_NOT_MODIFIED)
        message["text"] = formatted.text
        message.pop("entities", None)
        if entities:
            message["entities"] = entities
        return self._finish_edit(stored, markup)

    @api_method("editMessageCaption")
    async def edit_message_caption(self, p: Params, files: Files) -> Any:
        caption = self._caption(p.get("caption"), p.get("parse_mode"), p.get("caption_entities"))
        markup = check_reply_markup(p.get("reply_markup"), inline_only=True)
        _, stored = self._message_to_edit(p)
        message = stored.message
        if not any(key in message for key in _MEDIA_KEYS):
            raise bad_request("there is no caption in the message to edit")
        if (
            message.get("caption", "") == caption.text
            and message.get("caption_entities", []) == caption.entities
            and _same_markup(stored.markup, markup)
        ):
            raise ApiError(400, MESSAGE_NOT_MODIFIED)
        message.pop("caption", None)
        message.pop("caption_entities", None)
        message.update(self._text_fields(caption, "caption", "caption_entities"))
        return self._finish_edit(stored, markup)

    @api_method("editMessageReplyMarkup")
    async def edit_message_reply_markup(self, p: Params, files: Files) -> Any:
        markup = check_reply_markup(p.get("reply_markup"), inline_only=True)
        _, stored = self._message_to_edit(p)
        if _same_markup(stored.markup, markup):
            raise ApiError(400, MESSAGE_NOT_MODIFIED)
        return self._finish_edit(stored, markup)

    @api_method("deleteMessage")
    async def delete_message(self, p: Params, files: Files) -> Any:
        chat = self.world.known_chat(require(p, "chat_id"))
        message_id = require(p, "message_id")
        stored = chat.messages.get(message_id)
        if stored is None or stored.deleted:
            raise ApiError(400, MESSAGE_TO_DELETE_NOT_FOUND)
        if self.world.now() - int(stored.message["date"]) > DELETE_WINDOW:
            raise bad_request("message can't be deleted for everyone")
        stored.deleted = True
        return True

    # -- callback queries and commands ------------------------------------------------

    @api_method("answerCallbackQuery")
    async def answer_callback_query(self, p: Params, files: Files) -> Any:
        query_id = str(require(p, "callback_query_id"))
        text = check_callback_answer_text(p.get("text"))
        state = self.world.callbacks.get(query_id)
        if (
            state is None
            or state.answered
            or self.world.now() - state.created_at > CALLBACK_QUERY_LIFETIME
        ):
            raise ApiError(400, QUERY_TOO_OLD)
        state.answered = True
        state.answer = {"text": text, "show_alert": bool(p.get("show_alert")), "url": p.get("url")}
        return True

    def _command_scope(self, p: Params) -> tuple[dict[str, Any], str]:
        scope = check_scope(p.get("scope"))
        language_code = check_language_code(p.get("language_code"))
        if "chat_id" in scope:
            chat_id = scope["chat_id"]
            if isinstance(chat_id, str) and chat_id.lstrip("-").isdigit():
                chat_id = int(chat_id)
            self.world.known_chat(chat_id)
        return scope, language_code

    @api_method("setMyCommands")
    async def set_my_commands(self, p: Params, files: Files) -> Any:
        commands = check_commands(p.get("commands"))
        scope, language_code = self._command_scope(p)
        self.world.commands.set(scope_key(scope), language_code, commands)
        return True

    @api_method("deleteMyCommands")
    async def delete_my_commands(self, p: Params, files: Files) -> Any:
        scope, language_code = self._command_scope(p)
        self.world.commands.set(scope_key(scope), language_code, [])
        return True

    @api_method("getMyCommands")
    async def get_my_commands(self, p: Params, files: Files) -> Any:
        scope, language_code = self._command_scope(p)
        return self.world.commands.get(scope_key(scope), language_code)

    @api_method("setChatMenuButton")
    async def set_chat_menu_button(self, p: Params, files: Files) -> Any:
        button = check_menu_button(p.get("menu_button"))
        if p.get("chat_id") is None:
            self.world.default_menu_button = button
            return True
        chat = self.world.known_chat(p["chat_id"])
        if chat.chat.get("type") != "private":
            raise bad_request("menu button can be set only in private chats")
        chat.menu_button = None if button["type"] == "default" else button
        return True

    @api_method("getChatMenuButton")
    async def get_chat_menu_button(self, p: Params, files: Files) -> Any:
        if p.get("chat_id") is not None:
            chat = self.world.known_chat(p["chat_id"])
            if chat.menu_button is not None:
                return dict(chat.menu_button)
        button = self.world.default_menu_button
        return {"type": "commands"} if button["type"] == "default" else dict(button)

    # -- files and chats ------------------------------------------------------------

    @api_method("getFile")
    async def get_file(self, p: Params, files: Files) -> Any:
        record = self.world.files.by_id.get(str(require(p, "file_id")))
        if record is None:
            raise bad_request("invalid file_id")
        if len(record.data) > MAX_DOWNLOAD_SIZE:
            raise bad_request("file is too big")
        return record.as_file()

    @api_method("getChat")
    async def get_chat(self, p: Params, files: Files) -> Any:
        chat = self.world.known_chat(require(p, "chat_id"))
        return {
            **chat.chat,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": True,
                "limited_gifts": True,
                "unique_gifts": True,
                "premium_subscription": True,
                "gifts_from_channels": True,
            },
        }


def _same_markup(current: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    def inline(markup: dict[str, Any] | None) -> Any:
        return (markup or {}).get("inline_keyboard") or None

    return bool(inline(current) == inline(new))
