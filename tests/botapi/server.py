"""BotApiServer: a fake api.telegram.org for end-to-end tests of the bot."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from .errors import NOT_FOUND, UNAUTHORIZED, ApiError, flood
from .limits import FLOOD_SCOPED_METHODS, GLOBAL, FaultInjector, RateLimiter
from .methods import MAX_UPLOAD, Methods
from .params import UploadedFile, decode_params, read_request
from .recording import Call, RateLimitViolation, Recorder, WebhookAttempt, params_match
from .state import SentMessage, SimUser, StoredMessage, World
from .updates import UpdateQueue
from .users import UserSimulator
from .validation import scope_key

DEFAULT_TOKEN = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"

ChatRef = SimUser | int


def _chat_id(chat: ChatRef) -> int:
    return chat.id if isinstance(chat, SimUser) else int(chat)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class BotApiServer:
    """An aiohttp server speaking the Bot API for one bot token.

    Start it, point an aiogram Bot at ``server.url`` and drive it with simulated users::

        async with BotApiServer() as server:
            session = AiohttpSession(api=TelegramAPIServer.from_base(server.url))
            user = server.user(first_name="Li")
            await server.send_text(user, "/start")
            call = await server.wait_for_call("sendMessage", chat_id=user.id)
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        bot_username: str = "village_beat_bot",
        *,
        bot_name: str = "Village Beat",
        webhook_retry_delay: float = 0.2,
        webhook_max_retry_delay: float = 5.0,
        require_https_webhooks: bool = False,
        webhook_parallel: bool = False,
    ) -> None:
        self.token = token
        self.world = World(token, bot_username, bot_name)
        self.queue = UpdateQueue(
            now=self.world.now,
            retry_delay=webhook_retry_delay,
            max_retry_delay=webhook_max_retry_delay,
            parallel=webhook_parallel,
        )
        self.queue.on_webhook_reply = self.run_webhook_reply
        self.recorder = Recorder()
        self.faults = FaultInjector()
        self.limits = RateLimiter()
        self.methods = Methods(self.world, self.queue, self.limits, require_https_webhooks)
        self.simulator = UserSimulator(self.world, self.queue)
        self.rate_limit_violations: list[RateLimitViolation] = []
        self.calls_inside_retry_after: list[Call] = []
        self.logged_out = False
        # Exceptions raised by the fake itself (bugs); each call also answered 500.
        self.internal_errors: list[BaseException] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self.queue.closing = False
        app = web.Application(client_max_size=MAX_UPLOAD + 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_route("GET", "/file/bot{token}/{path:.+}", self._handle_file)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_port = runner.addresses[0][1]
        self.url = f"http://{host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        await self.queue.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def reset(self) -> None:
        """Forget users, chats, messages, updates, calls, faults and limits (for shared servers)."""
        await self.queue.reset()
        self.world.reset()
        self.recorder.clear()
        self.faults.faults.clear()
        self.limits.configure(None, None)
        self.limits.retry_windows.clear()
        self.rate_limit_violations.clear()
        self.calls_inside_retry_after.clear()
        self.internal_errors.clear()
        self.logged_out = False

    # -- HTTP -----------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        method = request.match_info["method"]
        parse_error: ApiError | None = None
        params: dict[str, Any] = {}
        files: dict[str, UploadedFile] = {}
        try:
            params, files = await read_request(request)
        except ApiError as e:
            parse_error = e
        call = await self._dispatch(token, method, params, files, parse_error=parse_error)
        return web.json_response(call.response, status=call.status, dumps=_dumps)

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(ApiError(401, UNAUTHORIZED).body(), status=401)
        record = self.world.files.by_path.get(request.match_info["path"])
        if record is None:
            return web.json_response(ApiError(404, NOT_FOUND).body(), status=404)
        return web.Response(body=record.data, content_type="application/octet-stream")

    async def _handle_unknown(self, request: web.Request) -> web.Response:
        return web.json_response(ApiError(404, NOT_FOUND).body(), status=404)

    async def _dispatch(
        self,
        token: str,
        name: str,
        params: dict[str, Any],
        files: dict[str, UploadedFile],
        *,
        source: str = "http",
        parse_error: ApiError | None = None,
    ) -> Call:
        at = time.monotonic()
        canonical = Methods.canonical(name)
        inside_window = False
        try:
            if token != self.token or self.logged_out:
                raise ApiError(401, UNAUTHORIZED)
            if canonical is None:
                raise ApiError(404, NOT_FOUND)
            if parse_error is not None:
                raise parse_error
            self.faults.check(canonical, params)
            if canonical in FLOOD_SCOPED_METHODS:
                remaining, scope = self.limits.window_remaining(params.get("chat_id"), at)
                if remaining > 0:
                    inside_window = True
                    if self.limits.enabled:
                        raise flood(max(1, math.ceil(remaining)), scope)
            result = await self.methods.handler(canonical)(params, files)
            if canonical == "logOut":
                self.logged_out = True
            status, response = 200, {"ok": True, "result": result}
        except ApiError as e:
            status, response = e.status, e.body()
            if e.status == 429 and e.retry_after:
                self._announce_retry_after(e, canonical or name, params)
        except Exception as e:  # a bug in the fake: answer like a Telegram hiccup, keep it
            self.internal_errors.append(e)
            description = f"Internal Server Error: fake Bot API failed: {e!r}"
            status, response = 500, ApiError(500, description).body()
        call = Call(canonical or name, params, list(files), at, status, response, source=source)
        self.recorder.record(call)
        if inside_window:
            self.calls_inside_retry_after.append(call)
        return call

    def _announce_retry_after(self, error: ApiError, method: str, params: dict[str, Any]) -> None:
        if method not in FLOOD_SCOPED_METHODS:
            return  # e.g. a 429 injected into getUpdates says nothing about sending
        chat_id = params.get("chat_id")
        scope = error.scope or ("chat" if isinstance(chat_id, int) else "global")
        key = GLOBAL if scope == "global" else ("chat", str(chat_id))
        now = time.monotonic()
        self.limits.open_window(key, now + (error.retry_after or 0))
        if error.scope is not None:
            self.rate_limit_violations.append(
                RateLimitViolation(method, chat_id, scope, error.retry_after or 0, now)
            )

    async def run_webhook_reply(
        self, payload: dict[str, Any], files: dict[str, UploadedFile]
    ) -> None:
        raw = {key: value for key, value in payload.items() if key != "method"}
        parse_error: ApiError | None = None
        params: dict[str, Any] = {}
        try:
            params = decode_params(raw)
        except ApiError as e:
            parse_error = e
        await self._dispatch(
            self.token,
            str(payload["method"]),
            params,
            files,
            source="webhook-reply",
            parse_error=parse_error,
        )

    # -- recorded calls -------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        return self.recorder.calls

    def calls_of(self, method: str) -> list[Call]:
        return self.recorder.of(method)

    def clear_calls(self) -> None:
        self.recorder.clear()

    def mark(self) -> int:
        return self.recorder.mark()

    def on_call(self, listener: Callable[[Call], None] | None) -> None:
        """Have listener(call) run for every recorded call (e.g. to print them)."""
        self.recorder.on_call = listener

    async def wait_for(
        self,
        predicate: Callable[[Call], bool],
        timeout: float = 10.0,
        *,
        since: int | None = None,
    ) -> Call:
        return await self.recorder.wait_for(predicate, timeout, since)

    async def wait_for_call(
        self,
        method: str,
        *,
        since: int | None = None,
        timeout: float = 10.0,
        **params: Any,
    ) -> Call:
        """The first call of `method` (since the mark) whose params include `params`.

        A param value may be a callable used as a predicate on the actual value.
        """

        def matches(call: Call) -> bool:
            return call.method.lower() == method.lower() and params_match(call.params, params)

        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        return await self.recorder.wait_for(matches, timeout, since, f"{method}({shown})")

    # -- chat contents --------------------------------------------------------------

    def messages_to(self, chat: ChatRef, *, include_deleted: bool = False) -> list[SentMessage]:
        state = self.world.chats.get(_chat_id(chat))
        if state is None:
            return []
        return [
            SentMessage.of(stored)
            for stored in sorted(state.messages.values(), key=lambda m: m.message_id)
            if stored.from_bot and (include_deleted or not stored.deleted)
        ]

    def last_message_to(self, chat: ChatRef) -> SentMessage:
        messages = self.messages_to(chat)
        if not messages:
            raise AssertionError(f"the bot has sent nothing to chat {_chat_id(chat)}")
        return messages[-1]

    def file_data(self, file_id: str) -> bytes:
        record = self.world.files.by_id.get(file_id)
        if record is None:
            raise AssertionError(f"unknown file_id {file_id!r}")
        return record.data

    def callback_answer(self, query: dict[str, Any] | str) -> dict[str, Any] | None:
        """How the bot answered a callback query (pass the update or the query id)."""
        if isinstance(query, dict):
            query = str(query["callback_query"]["id"])
        state = self.world.callbacks.get(query)
        return state.answer if state else None

    def commands_for(
        self, scope: dict[str, Any] | None = None, language_code: str = ""
    ) -> list[dict[str, str]]:
        """Commands stored for exactly this scope and language (like getMyCommands)."""
        return self.world.commands.get(scope_key(scope), language_code)

    def visible_commands(self, user: SimUser) -> list[dict[str, str]]:
        """The command menu the user would see in the private chat, by Telegram's fallback rules."""
        language = (user.language_code or "")[:2].lower()
        for scope in ({"type": "chat", "chat_id": user.id}, {"type": "all_private_chats"}, None):
            for code in (language, ""):
                commands = self.commands_for(scope, code)
                if commands:
                    return commands
        return []

    @property
    def webhook_attempts(self) -> list[WebhookAttempt]:
        return self.queue.webhook_attempts

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        return [item.update for item in self.queue.pending]

    @property
    def dropped_updates(self) -> list[dict[str, Any]]:
        return self.queue.dropped

    # -- simulated users ------------------------------------------------------------

    def user(
        self,
        id: int | None = None,
        first_name: str = "Test",
        language_code: str | None = "zh-hans",
        username: str | None = None,
        *,
        last_name: str | None = None,
    ) -> SimUser:
        return self.simulator.create(id, first_name, language_code, username, last_name)

    async def send_text(
        self, user: SimUser, text: str, *, reply_to_message_id: int | None = None
    ) -> dict[str, Any]:
        return self.simulator.text(user, text, reply_to_message_id)

    async def send_photo(self, user: SimUser, caption: str | None = None) -> dict[str, Any]:
        return self.simulator.photo(user, caption)

    async def send_album(
        self, user: SimUser, n: int, caption: str | None = None
    ) -> list[dict[str, Any]]:
        return self.simulator.album(user, n, caption)

    async def send_location(self, user: SimUser, lat: float, lon: float) -> dict[str, Any]:
        return self.simulator.location(user, lat, lon)

    async def send_contact(
        self,
        user: SimUser,
        phone: str,
        *,
        first_name: str | None = None,
        user_id: int | None = None,
    ) -> dict[str, Any]:
        """A shared contact; user_id defaults to the sender (sharing their own number)."""
        return self.simulator.contact(
            user, phone, first_name, user.id if user_id is None else user_id
        )

    async def send_sticker(self, user: SimUser, emoji: str = "👍") -> dict[str, Any]:
        return self.simulator.sticker(user, emoji)

    async def send_document(
        self,
        user: SimUser,
        file_name: str = "report.pdf",
        data: bytes | None = None,
        *,
        mime_type: str | None = None,
        caption: str | None = None,
    ) -> dict[str, Any]:
        return self.simulator.document(user, file_name, data, mime_type, caption)

    async def press(
        self, user: SimUser, message_id: int, callback_data: str, *, force: bool = False
    ) -> dict[str, Any]:
        return self.simulator.press(user, message_id, callback_data, force)

    async def click(
        self,
        user: SimUser,
        label: str,
        *,
        location: tuple[float, float] | None = None,
        phone: str | None = None,
    ) -> dict[str, Any]:
        return self.simulator.click(user, label, location, phone)

    def inject(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue a raw update (update_id is assigned when missing); its chats become known."""
        for key in ("message", "edited_message", "callback_query"):
            payload = update.get(key)
            if not isinstance(payload, dict):
                continue
            message = payload.get("message") if key == "callback_query" else payload
            if isinstance(message, dict) and isinstance(message.get("chat"), dict):
                chat = self.world.learn_chat(message["chat"])
                message_id = message.get("message_id")
                if isinstance(message_id, int):
                    chat.next_message_id = max(chat.next_message_id, message_id + 1)
                    if key != "callback_query" and message_id not in chat.messages:
                        chat.messages[message_id] = StoredMessage(dict(message), from_bot=False)
        return self.queue.push(update)

    def redeliver(self, update_id: int) -> None:
        """Queue an already delivered update again with the same update_id."""
        self.queue.redeliver(update_id)

    async def wait_delivered(self, update_id: int, timeout: float = 10.0) -> None:
        """Polling: confirmed by a later offset; webhook: answered with 2xx."""
        await self.queue.wait_delivered(update_id, timeout)

    def block(self, user: SimUser) -> None:
        self.world.chat_of(user).blocked = True

    def unblock(self, user: SimUser) -> None:
        self.world.chat_of(user).blocked = False

    def deactivate(self, user: SimUser) -> None:
        self.world.chat_of(user).deactivated = True

    def advance_clock(self, seconds: float) -> None:
        """Move Telegram's wall clock (message dates, callback query expiry) forward."""
        self.world.clock_offset += seconds

    # -- faults and limits ----------------------------------------------------------

    def fail_next(
        self,
        method: str,
        *,
        status: int,
        description: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
        chat_id: Any = None,
    ) -> None:
        """Make the next `times` calls of `method` ("*" = any) fail; chat_id narrows it."""
        self.faults.add(
            method,
            status=status,
            description=description,
            retry_after=retry_after,
            times=times,
            chat_id=chat_id,
        )

    def set_rate_limits(
        self, per_chat_per_second: float | None = 1.0, global_per_second: float | None = 30.0
    ) -> None:
        """Enforce Telegram's flood limits on message sending (None turns one off)."""
        self.limits.configure(per_chat_per_second, global_per_second)

    def clear_rate_limits(self) -> None:
        self.limits.configure(None, None)
