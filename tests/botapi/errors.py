"""Bot API error answers, worded the way api.telegram.org words them."""

from __future__ import annotations

from typing import Any, Literal

RetryScope = Literal["chat", "global"]

CHAT_NOT_FOUND = "Bad Request: chat not found"
MESSAGE_TEXT_EMPTY = "Bad Request: message text is empty"
MESSAGE_TOO_LONG = "Bad Request: message is too long"
CAPTION_TOO_LONG = "Bad Request: message caption is too long"
MESSAGE_TO_EDIT_NOT_FOUND = "Bad Request: message to edit not found"
MESSAGE_TO_DELETE_NOT_FOUND = "Bad Request: message to delete not found"
MESSAGE_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
BOT_BLOCKED = "Forbidden: bot was blocked by the user"
USER_DEACTIVATED = "Forbidden: user is deactivated"
UNAUTHORIZED = "Unauthorized"
NOT_FOUND = "Not Found"
CONFLICT_OTHER_POLL = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
CONFLICT_WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)

DEFAULT_DESCRIPTIONS: dict[int, str] = {
    400: "Bad Request",
    401: UNAUTHORIZED,
    403: BOT_BLOCKED,
    404: NOT_FOUND,
    409: "Conflict",
    413: "Request Entity Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


def too_many_requests(retry_after: int) -> str:
    return f"Too Many Requests: retry after {retry_after}"


def default_description(status: int, retry_after: int | None = None) -> str:
    if status == 429:
        return too_many_requests(retry_after or 1)
    return DEFAULT_DESCRIPTIONS.get(status, f"Error {status}")


class ApiError(Exception):
    """An error answer; raising it anywhere in a method handler ends the call with it."""

    def __init__(
        self,
        status: int,
        description: str,
        *,
        retry_after: int | None = None,
        scope: RetryScope | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after
        # Which flood window a 429 opens; None means "the chat of the call, if any".
        self.scope = scope

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def bad_request(message: str) -> ApiError:
    return ApiError(400, f"Bad Request: {message}")


def flood(retry_after: int, scope: RetryScope | None = None) -> ApiError:
    return ApiError(429, too_many_requests(retry_after), retry_after=retry_after, scope=scope)
