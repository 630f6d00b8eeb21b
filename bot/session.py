"""The bot's HTTP session with the Bot API: aiogram's, with a JSON body and a lighter way
for answers whose result nobody reads.

aiogram sends every request as a form, each nested object (a keyboard) JSON-encoded on its
own, and parses every answer into pydantic models (a sent message with its keyboard:
about 60 µs). The Bot API takes a JSON body for any method that uploads nothing, and most of
the bot's answers are sent and forgotten (bot.replies): for those only success is checked,
and a failure still raises aiogram's own exception (flood control, a blocked bot, …).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache
from http import HTTPStatus
from typing import Any, get_args

from aiogram import Bot
from aiogram.client.default import Default
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods import TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import InputFile
from aiohttp import ClientError, ClientTimeout
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

_JSON = {"Content-Type": "application/json"}


class BotSession(AiohttpSession):
    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 (aiogram's signature)
    ) -> TelegramType:
        body = self._json_body(bot, method)
        if body is None:  # an upload: aiogram's multipart form
            return await super().make_request(bot, method, timeout)
        status, content = await self._post(bot, method, body, timeout or self.timeout)
        response = self.check_response(bot=bot, method=method, status_code=status, content=content)
        return response.result  # type: ignore[return-value]

    async def send_unread(
        self, bot: Bot, method: TelegramMethod[Any], params: dict[str, Any] | None = None
    ) -> None:
        """Send `method`, its result unread: only success is checked; a failure raises as
        `make_request` would. `params`: the method's parameters as JSON, when the caller
        has them already (bot.replies keeps each answer so)."""
        body = self._json_body(bot, method) if params is None else self.json_dumps(params)
        if body is None:
            await super().make_request(bot, method)
            return
        status, content = await self._post(bot, method, body, self.timeout)
        if HTTPStatus.OK <= status <= HTTPStatus.IM_USED:
            try:
                ok = self.json_loads(content).get("ok") is True
            except (ValueError, AttributeError):
                ok = False
            if ok:
                return
        self.check_response(bot=bot, method=method, status_code=status, content=content)

    def _json_body(self, bot: Bot, method: TelegramMethod[Any]) -> str | None:
        """The method as a JSON body; None when it uploads a file."""
        params = api_params(bot, method)
        return None if params is None else self.json_dumps(params)

    async def _post(
        self, bot: Bot, method: TelegramMethod[Any], body: str, seconds: float
    ) -> tuple[int, str]:
        session = await self.create_session()
        url = self.api.api_url(token=bot.token, method=method.__api_method__)
        try:
            async with session.post(
                url, data=body, headers=_JSON, timeout=ClientTimeout(total=seconds)
            ) as response:
                return response.status, await response.text()
        except TimeoutError as exc:
            raise TelegramNetworkError(method=method, message="Request timeout error") from exc
        except ClientError as exc:
            raise TelegramNetworkError(
                method=method, message=f"{type(exc).__name__}: {exc}"
            ) from exc


def api_params(bot: Bot, method: TelegramMethod[Any]) -> dict[str, Any] | None:
    """`method`'s parameters as the Bot API takes them in JSON, exactly as aiogram would send
    them: the bot's defaults filled in (parse mode, link previews, …, nested ones too), unset
    fields left out, a field required with its only value kept (`remove_keyboard`, an
    input media's `type`). None when it uploads a file.

    Most answers (a text, a keyboard) take pydantic's own JSON dump, three times faster than
    aiogram's walk over every value (`_prepared`), which the rest take: a default or a file
    below the top level, a date or a duration anywhere."""
    dumped = _dumped(bot, method)
    return _prepared(bot, method) if dumped is None else dumped


class _Nested(Exception):
    """A value pydantic cannot put in JSON below the top level: a bot default or a file."""


def _refuse(value: Any) -> Any:
    raise _Nested


def _dumped(bot: Bot, method: TelegramMethod[Any]) -> dict[str, Any] | None:
    defaults = {}
    for name, value in method.__dict__.items():
        if isinstance(value, Default):
            defaults[name] = bot.default[value.name]
        elif isinstance(value, InputFile) or _holds_time(value):
            # aiogram sends dates and durations as Unix time, pydantic's JSON as ISO 8601.
            return None
    try:
        params = method.model_dump(
            mode="json", exclude_none=True, exclude=set(defaults), fallback=_refuse
        )
    except (_Nested, PydanticSerializationError):
        return None
    for name, value in defaults.items():
        if value is not None:
            params[name] = bot.session.prepare_value(value, bot=bot, files={}, _dumps_json=False)
    return params


def _holds_time(value: Any) -> bool:
    """Whether `value` holds a date or a duration at any depth; models whose fields cannot
    hold one (keyboards, …) are not looked into."""
    if isinstance(value, datetime | timedelta):
        return True
    if isinstance(value, BaseModel):
        return not _timeless(type(value)) and any(map(_holds_time, value.__dict__.values()))
    if isinstance(value, list):
        return any(map(_holds_time, value))
    return False


@cache
def _timeless(model: type[BaseModel]) -> bool:
    """Whether no field of `model`, nor of a model in one, can hold a date or a duration."""
    return not _mentions_time(model, set())


def _mentions_time(annotation: Any, seen: set[type]) -> bool:
    if annotation in (datetime, timedelta):
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return False
        seen.add(annotation)
        return any(_mentions_time(f.annotation, seen) for f in annotation.model_fields.values())
    return any(_mentions_time(argument, seen) for argument in get_args(annotation))


def _prepared(bot: Bot, method: TelegramMethod[Any]) -> dict[str, Any] | None:
    files: dict[str, InputFile] = {}
    params = {}
    for key, value in method.model_dump(warnings=False).items():
        prepared = bot.session.prepare_value(value, bot=bot, files=files, _dumps_json=False)
        if prepared is not None:
            params[key] = prepared
    return None if files else params


async def send_unread(
    bot: Bot, method: TelegramMethod[Any], params: dict[str, Any] | None = None
) -> None:
    """Send `method` without reading its result (see BotSession), through any session."""
    if isinstance(bot.session, BotSession):
        await bot.session.send_unread(bot, method, params)
    else:
        await bot(method)
