"""A fake Telegram Bot API server for end-to-end tests (aiohttp and stdlib only).

    async with BotApiServer() as server:
        bot = Bot(server.token, session=AiohttpSession(api=TelegramAPIServer.from_base(server.url)))
        user = server.user(first_name="Li")          # language_code "zh-hans" by default
        update = await server.send_text(user, "/start")
        reply = await server.wait_for_call("sendMessage", chat_id=user.id)
        await server.click(user, "Report")           # inline button -> callback_query
        await server.wait_delivered(update["update_id"])

It rejects what api.telegram.org rejects (same status and description), can inject
failures (fail_next), enforce flood limits (set_rate_limits), and records every call.
"""

from .errors import ApiError
from .recording import Call, RateLimitViolation, WebhookAttempt
from .server import DEFAULT_TOKEN, BotApiServer
from .state import SentMessage, SimUser

__all__ = [
    "DEFAULT_TOKEN",
    "ApiError",
    "BotApiServer",
    "Call",
    "RateLimitViolation",
    "SentMessage",
    "SimUser",
    "WebhookAttempt",
]
