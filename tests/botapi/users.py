"""Simulated users: the updates Telegram would produce when a person uses the bot."""

from __future__ import annotations

import copy
import secrets
from typing import Any

from .state import CallbackState, ChatState, SimUser, StoredMessage, World, fake_jpeg
from .textfmt import detect_entities
from .updates import UpdateQueue
from .validation import inline_buttons, reply_buttons

DEFAULT_LOCATION = (39.9042, 116.4074)
DEFAULT_PHONE = "+8613800138000"


class UserSimulator:
    def __init__(self, world: World, queue: UpdateQueue) -> None:
        self.world = world
        self.queue = queue

    def create(
        self,
        id: int | None,
        first_name: str,
        language_code: str | None,
        username: str | None,
        last_name: str | None,
    ) -> SimUser:
        user = SimUser(
            id=self.world.new_user_id() if id is None else id,
            first_name=first_name,
            last_name=last_name,
            username=username,
            language_code=language_code,
        )
        self.world.users[user.id] = user
        return user

    # -- messages -------------------------------------------------------------------

    def _message(
        self, user: SimUser, content: dict[str, Any], reply_to_message_id: int | None = None
    ) -> dict[str, Any]:
        chat = self.world.chat_of(user)
        # Writing to a bot you blocked unblocks it in the Telegram apps.
        chat.blocked = False
        message: dict[str, Any] = {
            "message_id": chat.allocate_message_id(),
            "from": user.to_dict(),
            "chat": dict(chat.chat),
            "date": self.world.now(),
        }
        if reply_to_message_id is not None:
            original = chat.messages.get(reply_to_message_id)
            if original is None:
                raise AssertionError(f"no message {reply_to_message_id} in chat {chat.id}")
            replied = copy.deepcopy(original.message)
            replied.pop("reply_to_message", None)
            message["reply_to_message"] = replied
        message.update(content)
        chat.messages[message["message_id"]] = StoredMessage(message, from_bot=False)
        return message

    def _push_message(self, message: dict[str, Any]) -> dict[str, Any]:
        return self.queue.push({"message": message})

    def text(self, user: SimUser, text: str, reply_to_message_id: int | None) -> dict[str, Any]:
        content: dict[str, Any] = {"text": text}
        entities = detect_entities(text)
        if entities:
            content["entities"] = entities
        return self._push_message(self._message(user, content, reply_to_message_id))

    def _photo_content(self, caption: str | None) -> dict[str, Any]:
        sizes = self.world.files.add_photo(fake_jpeg())
        content: dict[str, Any] = {"photo": [record.as_photo_size() for record in sizes]}
        if caption:
            content["caption"] = caption
            entities = detect_entities(caption)
            if entities:
                content["caption_entities"] = entities
        return content

    def photo(self, user: SimUser, caption: str | None) -> dict[str, Any]:
        return self._push_message(self._message(user, self._photo_content(caption)))

    def album(self, user: SimUser, count: int, caption: str | None) -> list[dict[str, Any]]:
        if not 2 <= count <= 10:
            raise AssertionError("an album has 2-10 items")
        group_id = str(secrets.randbelow(10**18) + 10**17)
        updates = []
        for index in range(count):
            content = self._photo_content(caption if index == 0 else None)
            content["media_group_id"] = group_id
            updates.append(self._push_message(self._message(user, content)))
        return updates

    def location(self, user: SimUser, latitude: float, longitude: float) -> dict[str, Any]:
        content = {"location": {"latitude": latitude, "longitude": longitude}}
        return self._push_message(self._message(user, content))

    def contact(
        self, user: SimUser, phone: str, first_name: str | None, user_id: int | None
    ) -> dict[str, Any]:
        contact: dict[str, Any] = {
            "phone_number": phone,
            "first_name": first_name or user.first_name,
        }
        if user_id is not None:
            contact["user_id"] = user_id
        return self._push_message(self._message(user, {"contact": contact}))

    def sticker(self, user: SimUser, emoji: str) -> dict[str, Any]:
        record = self.world.files.add("sticker", b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(256))
        sticker = {
            **record.as_document(),
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": emoji,
            "set_name": "VillageBeatTestPack",
        }
        return self._push_message(self._message(user, {"sticker": sticker}))

    def document(
        self,
        user: SimUser,
        file_name: str,
        data: bytes | None,
        mime_type: str | None,
        caption: str | None,
    ) -> dict[str, Any]:
        payload = data if data is not None else b"%PDF-1.4\n% test document\n%%EOF\n"
        record = self.world.files.add("document", payload, file_name=file_name, mime_type=mime_type)
        content: dict[str, Any] = {"document": record.as_document()}
        if caption:
            content["caption"] = caption
        return self._push_message(self._message(user, content))

    # -- buttons --------------------------------------------------------------------

    def press(
        self, user: SimUser, message_id: int, callback_data: str, force: bool
    ) -> dict[str, Any]:
        chat = self.world.chat_of(user)
        stored = self.world.bot_message(chat.id, message_id)
        if stored is None and not force:
            raise AssertionError(
                f"the bot has no message {message_id} in chat {chat.id} to press a button on"
            )
        if (
            stored is not None
            and not force
            and self.world.callback_button(stored, callback_data) is None
        ):
            offered = [b.get("callback_data") for b in inline_buttons(stored.markup)]
            raise AssertionError(
                f"message {message_id} has no button with callback_data={callback_data!r}; "
                f"its current buttons carry {offered}"
            )
        if stored is not None:
            message = copy.deepcopy(stored.message)
        else:
            message = {"chat": dict(chat.chat), "message_id": message_id, "date": 0}
        query_id = self.world.new_callback_id()
        self.world.callbacks[query_id] = CallbackState(
            id=query_id, user_id=user.id, created_at=self.world.now(), data=callback_data
        )
        query = {
            "id": query_id,
            "from": user.to_dict(),
            "message": message,
            "chat_instance": str(-(abs(hash((self.world.bot_user["id"], chat.id))) % 10**18)),
            "data": callback_data,
        }
        return self.queue.push({"callback_query": query})

    def click(
        self,
        user: SimUser,
        label: str,
        location: tuple[float, float] | None,
        phone: str | None,
    ) -> dict[str, Any]:
        chat = self.world.chat_of(user)
        for stored in sorted(chat.messages.values(), key=lambda m: -m.message_id):
            if not stored.from_bot:
                continue
            # A reply keyboard stays on screen even when its message is deleted.
            for button in [] if stored.deleted else inline_buttons(stored.markup):
                if button.get("text") == label:
                    if "callback_data" not in button:
                        kind = next(k for k in button if k != "text")
                        raise AssertionError(
                            f"button {label!r} is a {kind} button; pressing it sends no update"
                        )
                    return self.press(user, stored.message_id, button["callback_data"], False)
            if stored.message_id == chat.reply_keyboard_message_id:
                for button in reply_buttons(stored.markup):
                    if button.get("text") == label:
                        return self._reply_button(user, button, location, phone)
        raise AssertionError(
            f"no button labelled {label!r} for user {user.id}; visible buttons: "
            f"{self.visible_labels(chat)}"
        )

    def _reply_button(
        self,
        user: SimUser,
        button: dict[str, Any],
        location: tuple[float, float] | None,
        phone: str | None,
    ) -> dict[str, Any]:
        if button.get("request_location"):
            latitude, longitude = location or DEFAULT_LOCATION
            return self.location(user, latitude, longitude)
        if button.get("request_contact"):
            return self.contact(user, phone or DEFAULT_PHONE, None, user.id)
        special = [k for k in button if k != "text" and button[k]]
        if special:
            raise AssertionError(f"clicking a {special[0]} button is not simulated")
        return self.text(user, str(button["text"]), None)

    def visible_labels(self, chat: ChatState) -> list[str]:
        labels: list[str] = []
        for stored in chat.live_messages():
            if stored.from_bot:
                labels += [str(b["text"]) for b in inline_buttons(stored.markup)]
        current = chat.messages.get(chat.reply_keyboard_message_id or 0)
        if current is not None:
            labels += [str(b["text"]) for b in reply_buttons(current.markup)]
        return labels
