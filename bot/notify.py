"""Messages to people other than the one being answered, written to the outbox in the
caller's transaction, each in its recipient's language. No aiogram here: the import
command writes notes too."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.i18n import Translator, pick_locale
from storage import outbox
from storage.models import User

# Builds a message for one recipient: its text (None for a location) and its reply markup
# (None for none).
Compose = Callable[[Translator], tuple[str | None, Any]]


async def translator_for(session: AsyncSession, user_id: int, default_locale: str) -> Translator:
    user = await session.get(User, user_id)
    if user is None:
        return Translator(default_locale)
    return Translator(pick_locale(user.locale, user.language_code, default_locale))


async def tell(
    session: AsyncSession,
    *,
    chat_id: int,
    default_locale: str,
    compose: Compose,
    method: str = "sendMessage",
    extra: dict[str, Any] | None = None,
    dedup_key: str | None = None,
    not_before: datetime | None = None,
) -> int | None:
    """Queue `compose`'s message for `chat_id` in their language; the outbox id, or None
    when `dedup_key` was used before. `extra` holds further Bot API parameters (a photo)."""
    t = await translator_for(session, chat_id, default_locale)
    text, markup = compose(t)
    payload = dict(extra or {})
    if markup is not None:
        payload["reply_markup"] = markup
    return await outbox.enqueue(
        session,
        chat_id=chat_id,
        text=text,
        method=method,
        payload=payload,
        dedup_key=dedup_key,
        not_before=not_before,
    )
