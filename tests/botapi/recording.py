"""What the bot asked for and what it was answered, with ways to wait for it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class Pulse:
    """A broadcast wake-up: everyone waiting on the current generation is woken by fire()."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        """Take this before checking a condition, then wait on it: no wake-up is lost."""
        return self._event

    @staticmethod
    async def wait(event: asyncio.Event, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)


@dataclass
class Call:
    """One Bot API call as the server saw it."""

    method: str
    params: dict[str, Any]
    files: list[str]
    at: float
    status: int
    response: dict[str, Any]
    seq: int = 0
    # "http" for requests, "webhook-reply" for methods returned in a webhook answer.
    source: str = "http"

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))

    @property
    def result(self) -> Any:
        return self.response.get("result")

    @property
    def description(self) -> str | None:
        description = self.response.get("description")
        return description if isinstance(description, str) else None

    @property
    def chat_id(self) -> Any:
        return self.params.get("chat_id")

    def summary(self) -> str:
        params = {k: v for k, v in self.params.items() if k not in ("reply_markup", "media")}
        shown = json.dumps(params, ensure_ascii=False, default=str)
        if len(shown) > 160:
            shown = shown[:157] + "..."
        outcome = "ok" if self.ok else f"{self.status} {self.description}"
        return f"#{self.seq} {self.method} {shown} -> {outcome}"


@dataclass(frozen=True)
class WebhookAttempt:
    update_id: int
    at: float
    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class RateLimitViolation:
    method: str
    chat_id: Any
    scope: str
    retry_after: int
    at: float


def params_match(actual: dict[str, Any], expected: dict[str, Any]) -> bool:
    for key, want in expected.items():
        if key not in actual:
            return False
        have = actual[key]
        if callable(want):
            if not want(have):
                return False
        elif have != want and str(have) != str(want):
            return False
    return True


class Recorder:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.on_call: Callable[[Call], None] | None = None
        self.pulse = Pulse()
        self._seq = 0

    def record(self, call: Call) -> Call:
        self._seq += 1
        call.seq = self._seq
        self.calls.append(call)
        if self.on_call is not None:
            self.on_call(call)
        self.pulse.fire()
        return call

    def mark(self) -> int:
        """A position in the call history; pass it as since= to look only at later calls."""
        return self._seq + 1

    def clear(self) -> None:
        self.calls.clear()

    def of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method.lower() == method.lower()]

    def find(self, predicate: Callable[[Call], bool], since: int | None = None) -> Call | None:
        for call in self.calls:
            if (since is None or call.seq >= since) and predicate(call):
                return call
        return None

    async def wait_for(
        self,
        predicate: Callable[[Call], bool],
        timeout: float = 10.0,
        since: int | None = None,
        what: str = "a matching call",
    ) -> Call:
        deadline = time.monotonic() + timeout
        while True:
            event = self.pulse.current()
            found = self.find(predicate, since)
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}\n{self.recent()}"
                )
            await Pulse.wait(event, remaining)

    def recent(self, count: int = 15) -> str:
        # Long polling floods the history; leave getUpdates out of the listing.
        shown = [call for call in self.calls if call.method != "getUpdates"]
        polls = len(self.calls) - len(shown)
        if not shown:
            return f"no calls were recorded besides {polls} getUpdates"
        lines = [call.summary() for call in shown[-count:]]
        return f"recent calls (not showing {polls} getUpdates):\n  " + "\n  ".join(lines)
