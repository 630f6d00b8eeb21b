"""Injected failures, flood limits and the retry_after windows they announce."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, RetryScope, default_description, flood

# Methods that create messages and so count against Telegram's flood limits.
SENDING_METHODS = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "sendMediaGroup",
        "sendLocation",
        "sendContact",
        "sendSticker",
        "sendVideo",
        "sendAudio",
        "sendVoice",
        "sendAnimation",
        "sendVenue",
        "sendPoll",
        "sendDice",
        "copyMessage",
        "forwardMessage",
    }
)
# Methods that touch a chat and must respect an announced retry_after.
FLOOD_SCOPED_METHODS = SENDING_METHODS | {
    "sendChatAction",
    "editMessageText",
    "editMessageCaption",
    "editMessageReplyMarkup",
    "editMessageMedia",
    "deleteMessage",
}

ScopeKey = tuple[str, Any]
GLOBAL: ScopeKey = ("global", None)


@dataclass
class Fault:
    method: str
    status: int
    description: str
    retry_after: int | None
    remaining: int
    chat_id: Any = None

    def matches(self, method: str, params: dict[str, Any]) -> bool:
        if self.method not in ("*", method.lower()):
            return False
        return self.chat_id is None or str(params.get("chat_id")) == str(self.chat_id)


@dataclass
class FaultInjector:
    faults: list[Fault] = field(default_factory=list)

    def add(
        self,
        method: str,
        *,
        status: int,
        description: str | None,
        retry_after: int | None,
        times: int,
        chat_id: Any,
    ) -> None:
        if status == 429 and retry_after is None:
            retry_after = 1
        self.faults.append(
            Fault(
                method=method.lower(),
                status=status,
                description=description or default_description(status, retry_after),
                retry_after=retry_after,
                remaining=times,
                chat_id=chat_id,
            )
        )

    def check(self, method: str, params: dict[str, Any]) -> None:
        for fault in self.faults:
            if fault.remaining > 0 and fault.matches(method, params):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self.faults.remove(fault)
                raise ApiError(fault.status, fault.description, retry_after=fault.retry_after)


class Window:
    """At most `count` events per `span` seconds."""

    def __init__(self, per_second: float) -> None:
        self.span = max(1.0, 1.0 / per_second)
        self.count = max(1, round(per_second * self.span))
        self.events: deque[float] = deque()

    def wait_needed(self, now: float) -> float:
        while self.events and self.events[0] <= now - self.span:
            self.events.popleft()
        if len(self.events) < self.count:
            return 0.0
        return self.events[0] + self.span - now


class RateLimiter:
    def __init__(self) -> None:
        self.per_chat_per_second: float | None = None
        self.global_per_second: float | None = None
        # scope -> monotonic time until which the announced retry_after is running
        self.retry_windows: dict[ScopeKey, float] = {}
        self._chats: dict[Any, Window] = {}
        self._global: Window | None = None

    @property
    def enabled(self) -> bool:
        return self.per_chat_per_second is not None or self.global_per_second is not None

    def configure(self, per_chat: float | None, global_: float | None) -> None:
        self.per_chat_per_second = per_chat
        self.global_per_second = global_
        self._chats.clear()
        self._global = Window(global_) if global_ else None

    def admit(self, chat_id: Any, now: float) -> None:
        """Count one sent message, or refuse it with 429 when over a limit."""
        if not self.enabled:
            return
        chat_window = None
        if self.per_chat_per_second:
            chat_window = self._chats.setdefault(chat_id, Window(self.per_chat_per_second))
            wait = chat_window.wait_needed(now)
            if wait > 0:
                raise flood(max(1, math.ceil(wait)), "chat")
        if self._global is not None:
            wait = self._global.wait_needed(now)
            if wait > 0:
                raise flood(max(1, math.ceil(wait)), "global")
            self._global.events.append(now)
        if chat_window is not None:
            chat_window.events.append(now)

    def open_window(self, scope: ScopeKey, until: float) -> None:
        self.retry_windows[scope] = max(self.retry_windows.get(scope, 0.0), until)

    def window_remaining(self, chat_id: Any, now: float) -> tuple[float, RetryScope]:
        """Seconds left in the longest open retry_after window covering this chat, and its scope."""
        global_left = self.retry_windows.get(GLOBAL, 0.0) - now
        chat_left = -1.0
        if chat_id is not None:
            chat_left = self.retry_windows.get(("chat", str(chat_id)), 0.0) - now
        if chat_left > global_left:
            return chat_left, "chat"
        return global_left, "global"
