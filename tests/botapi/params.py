"""Turning an HTTP request into typed Bot API parameters.

Telegram accepts parameters in the query string, as a JSON body, url-encoded or as
multipart form data; in the form encodings every value is a string and complex values
(reply_markup, commands, media...) are JSON documents inside that string.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web

from .errors import ApiError, bad_request

JSON_FIELDS: dict[str, str] = {
    "reply_markup": "reply keyboard markup",
    "commands": "commands",
    "scope": "BotCommandScope",
    "media": "media",
    "entities": "entities",
    "caption_entities": "caption entities",
    "allowed_updates": "allowed updates",
    "link_preview_options": "link preview options",
    "reply_parameters": "reply parameters",
    "menu_button": "menu button",
}
INT_FIELDS = frozenset(
    {
        "message_id",
        "offset",
        "limit",
        "timeout",
        "cache_time",
        "reply_to_message_id",
        "max_connections",
        "message_thread_id",
        "user_id",
        "live_period",
        "heading",
        "proximity_alert_radius",
    }
)
FLOAT_FIELDS = frozenset({"latitude", "longitude", "horizontal_accuracy"})
BOOL_FIELDS = frozenset(
    {
        "disable_notification",
        "protect_content",
        "show_alert",
        "drop_pending_updates",
        "disable_web_page_preview",
        "allow_sending_without_reply",
        "has_spoiler",
        "show_caption_above_media",
        "disable_content_type_detection",
        "allow_paid_broadcast",
    }
)
_INT_RE = re.compile(r"^\s*-?\d+\s*$")


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request."""

    name: str
    filename: str
    content_type: str
    data: bytes


async def read_request(request: web.Request) -> tuple[dict[str, Any], dict[str, UploadedFile]]:
    """Collect raw parameters and uploaded files, then decode them."""
    raw: dict[str, Any] = dict(request.query)
    files: dict[str, UploadedFile] = {}
    if request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = json.loads(await request.text() or "{}")
            except ValueError as e:
                raise bad_request("can't parse JSON encoded request body") from e
            if not isinstance(body, dict):
                raise bad_request("JSON object expected as request body")
            raw.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    files[key] = UploadedFile(
                        name=key,
                        filename=value.filename,
                        content_type=value.content_type,
                        data=value.file.read(),
                    )
                elif isinstance(value, str):
                    raw[key] = value
    return decode_params(raw), files


async def read_webhook_reply(
    response: aiohttp.ClientResponse,
) -> tuple[dict[str, Any], dict[str, UploadedFile]] | None:
    """A method call in a webhook answer: JSON, url-encoded or multipart (aiogram's choice)."""
    content_type = response.content_type
    raw: dict[str, Any] = {}
    files: dict[str, UploadedFile] = {}
    if content_type == "multipart/form-data":
        reader = aiohttp.MultipartReader.from_response(response)
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, aiohttp.BodyPartReader) or not part.name:
                continue
            data = await part.read(decode=True)
            if part.filename:
                kind = part.headers.get("Content-Type", "application/octet-stream")
                files[part.name] = UploadedFile(part.name, part.filename, kind, bytes(data))
            else:
                raw[part.name] = bytes(data).decode("utf-8", "replace")
    elif content_type == "application/x-www-form-urlencoded":
        raw.update(parse_qsl((await response.read()).decode("utf-8", "replace")))
    else:
        try:
            payload = json.loads(await response.read() or b"null")
        except ValueError:
            return None
        if not isinstance(payload, dict):
            return None
        raw.update(payload)
    if not isinstance(raw.get("method"), str):
        return None
    return raw, files


def decode_params(raw: dict[str, Any]) -> dict[str, Any]:
    return {key: decode_value(key, value) for key, value in raw.items()}


def decode_value(key: str, value: Any) -> Any:
    if key in JSON_FIELDS:
        if isinstance(value, str):
            if value == "":
                return None
            try:
                return json.loads(value)
            except ValueError as e:
                raise bad_request(f"can't parse {JSON_FIELDS[key]} JSON object") from e
        return value
    if key == "chat_id":
        if isinstance(value, str) and _INT_RE.match(value):
            return int(value)
        return value
    if key in INT_FIELDS:
        return _to_int(key, value)
    if key in FLOAT_FIELDS:
        return _to_float(key, value)
    if key in BOOL_FIELDS:
        if isinstance(value, str):
            return value.strip().lower() in ("true", "yes", "1")
        return bool(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        # The real server reads every top-level value as a string.
        return str(value)
    return value


def _to_int(key: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _wrong_type(key, "Integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_RE.match(value):
        return int(value)
    raise _wrong_type(key, "Integer")


def _to_float(key: str, value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _wrong_type(key, "Float")
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise _wrong_type(key, "Float") from e


def _wrong_type(key: str, kind: str) -> ApiError:
    return bad_request(f'field "{key}" must be of type {kind}')
