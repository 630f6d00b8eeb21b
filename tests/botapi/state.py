"""Everything the fake Telegram remembers: chats, messages, files, callback queries, commands."""

from __future__ import annotations

import copy
import itertools
import mimetypes
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import CHAT_NOT_FOUND, ApiError
from .validation import ScopeKey, inline_buttons, reply_buttons

CALLBACK_QUERY_LIFETIME = 15 * 60
DELETE_WINDOW = 48 * 3600
MAX_DOWNLOAD_SIZE = 20 * 1024 * 1024


@dataclass(frozen=True)
class SimUser:
    """A simulated Telegram user talking to the bot in a private chat."""

    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        user: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.last_name:
            user["last_name"] = self.last_name
        if self.username:
            user["username"] = self.username
        if self.language_code:
            user["language_code"] = self.language_code
        return user

    def chat(self) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": self.id, "type": "private", "first_name": self.first_name}
        if self.last_name:
            chat["last_name"] = self.last_name
        if self.username:
            chat["username"] = self.username
        return chat


@dataclass
class StoredMessage:
    message: dict[str, Any]
    from_bot: bool
    # The full reply_markup as sent; Message objects only ever show inline keyboards.
    markup: dict[str, Any] | None = None
    deleted: bool = False

    @property
    def message_id(self) -> int:
        return int(self.message["message_id"])


@dataclass(frozen=True)
class SentMessage:
    """A bot message as it currently looks in the chat (after edits)."""

    message_id: int
    chat_id: int
    date: int
    text: str | None
    caption: str | None
    entities: list[dict[str, Any]]
    reply_markup: dict[str, Any] | None
    edit_date: int | None
    deleted: bool
    raw: dict[str, Any]

    @classmethod
    def of(cls, stored: StoredMessage) -> SentMessage:
        message = copy.deepcopy(stored.message)
        return cls(
            message_id=int(message["message_id"]),
            chat_id=int(message["chat"]["id"]),
            date=int(message["date"]),
            text=message.get("text"),
            caption=message.get("caption"),
            entities=message.get("entities") or message.get("caption_entities") or [],
            reply_markup=copy.deepcopy(stored.markup),
            edit_date=message.get("edit_date"),
            deleted=stored.deleted,
            raw=message,
        )

    @property
    def buttons(self) -> list[str]:
        """Labels of the inline buttons, row by row."""
        return [str(button["text"]) for button in inline_buttons(self.reply_markup)]

    @property
    def callback_data(self) -> list[str]:
        return [
            str(button["callback_data"])
            for button in inline_buttons(self.reply_markup)
            if "callback_data" in button
        ]

    @property
    def keyboard(self) -> list[str]:
        """Labels of the reply keyboard this message shows, if any."""
        return [str(button["text"]) for button in reply_buttons(self.reply_markup)]


@dataclass
class ChatState:
    chat: dict[str, Any]
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    next_message_id: int = 1
    # message_id of the bot message whose reply keyboard is currently shown, if any.
    reply_keyboard_message_id: int | None = None
    blocked: bool = False
    deactivated: bool = False
    menu_button: dict[str, Any] | None = None

    @property
    def id(self) -> int:
        return int(self.chat["id"])

    def allocate_message_id(self) -> int:
        message_id = self.next_message_id
        self.next_message_id += 1
        return message_id

    def live_messages(self) -> list[StoredMessage]:
        return [m for m in self.messages.values() if not m.deleted]


@dataclass
class FileRecord:
    file_id: str
    file_unique_id: str
    kind: str
    data: bytes
    file_path: str
    file_name: str | None = None
    mime_type: str | None = None
    width: int | None = None
    height: int | None = None
    # For photos: file_ids of every size of the same picture, smallest first.
    sizes: list[str] = field(default_factory=list)

    def as_file(self) -> dict[str, Any]:
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": len(self.data),
            "file_path": self.file_path,
        }

    def as_photo_size(self) -> dict[str, Any]:
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": len(self.data),
            "width": self.width or 0,
            "height": self.height or 0,
        }

    def as_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": len(self.data),
        }
        if self.file_name:
            document["file_name"] = self.file_name
        if self.mime_type:
            document["mime_type"] = self.mime_type
        return document


@dataclass
class CallbackState:
    id: str
    user_id: int
    created_at: float
    data: str | None
    answered: bool = False
    answer: dict[str, Any] | None = None


_FILE_PREFIX = {"photo": "AgAC", "document": "BQAC", "sticker": "CAAC", "video": "BAAC"}
_PHOTO_SIZES = ((90, 68), (320, 240), (800, 600))
_FOLDER = {"photo": "photos", "document": "documents", "sticker": "stickers", "video": "videos"}


def fake_jpeg(size: int = 2048) -> bytes:
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + secrets.token_bytes(size) + b"\xff\xd9"


class FileStore:
    def __init__(self) -> None:
        self.by_id: dict[str, FileRecord] = {}
        self.by_path: dict[str, FileRecord] = {}
        self._counter = itertools.count(1)

    def add(
        self,
        kind: str,
        data: bytes,
        *,
        file_name: str | None = None,
        mime_type: str | None = None,
        width: int | None = None,
        height: int | None = None,
    ) -> FileRecord:
        number = next(self._counter)
        extension = "jpg" if kind == "photo" else "webp" if kind == "sticker" else None
        if extension is None:
            extension = (file_name or "").rpartition(".")[2] or "bin"
        record = FileRecord(
            file_id=_FILE_PREFIX.get(kind, "BQAC") + secrets.token_urlsafe(48),
            file_unique_id="AQAD" + secrets.token_urlsafe(9),
            kind=kind,
            data=data,
            file_path=f"{_FOLDER.get(kind, 'documents')}/file_{number}.{extension}",
            file_name=file_name,
            mime_type=mime_type or (mimetypes.guess_type(file_name)[0] if file_name else None),
            width=width,
            height=height,
        )
        self.by_id[record.file_id] = record
        self.by_path[record.file_path] = record
        return record

    def add_photo(self, data: bytes) -> list[FileRecord]:
        """One picture in the usual three sizes; the largest holds the given bytes."""
        sizes = []
        for index, (width, height) in enumerate(_PHOTO_SIZES):
            last = index == len(_PHOTO_SIZES) - 1
            payload = data if last else data[: max(len(data) // (4 - index), 1)]
            sizes.append(self.add("photo", payload, width=width, height=height))
        ids = [record.file_id for record in sizes]
        for record in sizes:
            record.sizes = ids
        return sizes

    def photo_sizes(self, record: FileRecord) -> list[dict[str, Any]]:
        ids = record.sizes or [record.file_id]
        return [self.by_id[file_id].as_photo_size() for file_id in ids]


@dataclass
class BotCommands:
    by_scope: dict[tuple[ScopeKey, str], list[dict[str, str]]] = field(default_factory=dict)

    def set(self, key: ScopeKey, language_code: str, commands: list[dict[str, str]]) -> None:
        if commands:
            self.by_scope[(key, language_code)] = commands
        else:
            self.by_scope.pop((key, language_code), None)

    def get(self, key: ScopeKey, language_code: str) -> list[dict[str, str]]:
        return copy.deepcopy(self.by_scope.get((key, language_code), []))


class World:
    """The mutable state behind the API; knows nothing about HTTP."""

    def __init__(self, token: str, bot_username: str, bot_name: str) -> None:
        self.token = token
        bot_id = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 1
        self.bot_user: dict[str, Any] = {
            "id": bot_id,
            "is_bot": True,
            "first_name": bot_name,
            "username": bot_username,
        }
        self.clock_offset = 0.0
        self.reset()

    def reset(self) -> None:
        self.users: dict[int, SimUser] = {}
        self.chats: dict[int, ChatState] = {}
        self.files = FileStore()
        self.callbacks: dict[str, CallbackState] = {}
        self.commands = BotCommands()
        self.default_menu_button: dict[str, Any] = {"type": "commands"}
        self._user_ids = itertools.count(100_000_001)
        self._callback_ids = itertools.count(1)
        self.clock_offset = 0.0

    def now(self) -> int:
        """Telegram's wall clock (unix seconds), movable with advance_clock()."""
        return int(time.time() + self.clock_offset)

    def new_user_id(self) -> int:
        user_id = next(self._user_ids)
        while user_id in self.users:
            user_id = next(self._user_ids)
        return user_id

    def new_callback_id(self) -> str:
        return f"{self.bot_user['id'] % 10_000}{next(self._callback_ids):015d}"

    def chat_of(self, user: SimUser) -> ChatState:
        """The private chat with the user; Telegram knows it once the user has written."""
        state = self.chats.get(user.id)
        if state is None:
            state = ChatState(chat=user.chat())
            self.chats[user.id] = state
        return state

    def known_chat(self, chat_id: Any) -> ChatState:
        state = self.chats.get(chat_id) if isinstance(chat_id, int) else None
        if state is None:
            raise ApiError(400, CHAT_NOT_FOUND)
        return state

    def learn_chat(self, chat: dict[str, Any]) -> ChatState:
        state = self.chats.get(int(chat["id"]))
        if state is None:
            state = ChatState(chat=dict(chat))
            self.chats[state.id] = state
        return state

    def bot_message(self, chat_id: int, message_id: int) -> StoredMessage | None:
        state = self.chats.get(chat_id)
        stored = state.messages.get(message_id) if state else None
        if stored is None or stored.deleted or not stored.from_bot:
            return None
        return stored

    def callback_button(self, stored: StoredMessage, data: str) -> dict[str, Any] | None:
        for button in inline_buttons(stored.markup):
            if button.get("callback_data") == data:
                return button
        return None
