"""Invite and village links for the command line (no aiogram: these must start fast)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

from bot.cli import CommandError
from bot.settings import Settings
from core.clock import system_clock
from core.tokens import village_payload
from storage import invites, villages
from storage.db import Database
from storage.meta import BOT_USERNAME, get_meta, set_meta


def _meta_key(settings: Settings) -> str:
    token = settings.bot_token.get_secret_value() if settings.bot_token else ""
    return f"{BOT_USERNAME}:{token.split(':', 1)[0]}"


async def bot_username(db: Database, settings: Settings) -> str:
    """BOT_USERNAME, else what `getMe` answered (remembered by `run`), else ask `getMe` now."""
    if settings.bot_username:
        return settings.bot_username.lstrip("@")
    async with db.sessions() as session:
        cached = await get_meta(session, _meta_key(settings))
    if cached:
        return cached
    if settings.bot_token is None:
        raise CommandError("cannot tell the bot's username: set BOT_USERNAME or BOT_TOKEN")
    username = _ask_get_me(settings)
    async with db.sessions() as session, session.begin():
        await set_meta(session, _meta_key(settings), username)
    return username


def _ask_get_me(settings: Settings) -> str:
    assert settings.bot_token is not None
    url = f"{settings.telegram_api_url}/bot{settings.bot_token.get_secret_value()}/getMe"
    try:
        with urlopen(url, timeout=10) as response:
            answer = json.load(response)
    except (URLError, OSError, ValueError) as exc:
        raise CommandError(
            f"cannot ask the Bot API for the bot's username ({exc}); set BOT_USERNAME"
        ) from None
    if not answer.get("ok") or not answer.get("result", {}).get("username"):
        raise CommandError(
            "the Bot API did not give the bot's username; check BOT_TOKEN or set BOT_USERNAME"
        )
    return str(answer["result"]["username"])


def _invite_result(username: str, issued: invites.IssuedInvite, whom: str) -> dict[str, Any]:
    return {
        "link": _link(username, issued.payload),
        "payload": issued.payload,
        "expires_at": issued.expires_at.isoformat(),
        "notes": [f"for {whom}; single use, expires {issued.expires_at:%Y-%m-%d %H:%M %Z}"],
    }


def _link(username: str, payload: str) -> str:
    return f"https://t.me/{username}?start={payload}"


async def officer_invite(db: Database, settings: Settings, badge: str) -> dict[str, Any]:
    username = await bot_username(db, settings)
    async with db.sessions() as session, session.begin():
        try:
            issued, officer = await invites.create_officer_invite(
                session,
                badge=badge,
                now=system_clock(),
                ttl=timedelta(days=settings.invite_ttl_days),
            )
        except invites.NotFoundError as exc:
            raise CommandError(str(exc)) from None
    return _invite_result(username, issued, f"officer {officer.name} ({officer.badge})")


async def supervisor_invite(
    db: Database, settings: Settings, stations: list[str], county: bool, name: str | None
) -> dict[str, Any]:
    username = await bot_username(db, settings)
    async with db.sessions() as session, session.begin():
        try:
            issued, found = await invites.create_supervisor_invite(
                session,
                station_codes=stations,
                county_wide=county,
                name=name,
                now=system_clock(),
                ttl=timedelta(days=settings.invite_ttl_days),
            )
        except invites.NotFoundError as exc:
            raise CommandError(str(exc)) from None
    scope = "the whole county" if county else ", ".join(f"{s.name} ({s.code})" for s in found)
    return _invite_result(username, issued, f"a supervisor of {scope}")


async def village_link(db: Database, settings: Settings, code: str) -> dict[str, Any]:
    username = await bot_username(db, settings)
    async with db.sessions() as session:
        village = await villages.village_by_code(session, code)
    if village is None:
        raise CommandError(f"no village with code {code!r}; import the directory first")
    payload = village_payload(village.join_token)
    return {
        "link": _link(username, payload),
        "payload": payload,
        "village_code": village.code,
        "village_name": village.name,
        "notes": [f"villagers of {village.name} ({village.station_name}); public, does not expire"],
    }
