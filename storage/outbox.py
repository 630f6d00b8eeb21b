"""The outbox: messages to people other than the one being answered.

A caller enqueues in its own transaction, so a message exists exactly when the change that
caused it was committed; `pg_notify('outbox')` in the same transaction wakes the delivery
worker (scheduler.outbox) at commit, and a rollback takes both back. The worker claims due
rows with `claim_due`, sends them outside any transaction and records the outcome with
`mark_sent`, `mark_retry`, `mark_failed` or `mark_blocked`.

A chat's messages go out one at a time and in order: a row is claimed only when no other
pending row of its chat comes first, where rows already tried come first, then by
(not_before, id). So a message held until morning does not hold back a later one that is
due now, and a message being retried is not overtaken.

The spacing between two sends to one chat is kept here too, so that it holds however many
workers share the database: the outcome of a send is recorded together with the moment its
chat may get the next message (`space_chat`, one row per chat in outbox_chats), and
`claim_due` hands that moment out with the chat's next message, which it cannot claim
before the outcome is committed. The worker holding the message waits for the moment.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from storage.models import OutboxChat, OutboxMessage, User

CHANNEL = "outbox"
METHODS = ("sendMessage", "sendPhoto", "sendDocument", "sendLocation")
# The parameters each method cannot do without; `text=` fills the text of sendMessage and
# the caption of the others.
_REQUIRED = {
    "sendMessage": ("text",),
    "sendPhoto": ("photo",),
    "sendDocument": ("document",),
    "sendLocation": ("latitude", "longitude"),
}

PENDING, SENT, FAILED, BLOCKED = "pending", "sent", "failed", "blocked"
# How long a claimed message is hidden from other workers while it is being sent.
CLAIM_LEASE = timedelta(minutes=2)
_MAX_ERROR = 2000

_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', '')")


@dataclass(frozen=True)
class ClaimedMessage:
    id: int
    chat_id: int
    method: str
    payload: dict[str, Any]
    attempts: int  # delivery attempts started, this one included
    due_at: datetime  # not_before before the claim, given back by `release`
    lease_until: datetime  # the claim's not_before; other workers keep off until then
    # Not to be sent before this: the chat's spacing after its last send, by any worker.
    send_after: datetime | None = None


def attachment(data: bytes, filename: str) -> dict[str, str]:
    """A file to upload with the message, as the value of `photo` or `document`
    (a file_id or URL string is sent as it is)."""
    return {"filename": filename, "base64": base64.b64encode(data).decode("ascii")}


def _jsonable(value: Any) -> Any:
    # An aiogram keyboard (a pydantic model) is stored as the dict the Bot API expects.
    dump = getattr(value, "model_dump", None)
    return dump(mode="json", exclude_none=True) if callable(dump) else value


async def enqueue(
    session: AsyncSession,
    *,
    chat_id: int,
    text: str | None = None,
    method: str = "sendMessage",
    payload: dict[str, Any] | None = None,
    dedup_key: str | None = None,
    not_before: datetime | None = None,
) -> int | None:
    """Queue a message in the caller's transaction; its id, or None when a message with the
    same `dedup_key` was ever queued before.

    `payload` holds the Bot API parameters except chat_id; `text` is the message text for
    sendMessage and the caption otherwise. Nothing is sent before `not_before` (default:
    as soon as the transaction commits).
    """
    if method not in METHODS:
        raise ValueError(f"unsupported method {method!r}; one of {', '.join(METHODS)}")
    params = {key: _jsonable(value) for key, value in (payload or {}).items()}
    if "chat_id" in params:
        raise ValueError("chat_id is given as its own argument, not in the payload")
    if text is not None:
        if method == "sendLocation":
            raise ValueError("sendLocation has no text")
        params["text" if method == "sendMessage" else "caption"] = text
    for required in _REQUIRED[method]:
        if params.get(required) in (None, ""):
            raise ValueError(f"{method} needs {required}")
    values: dict[str, Any] = {
        "chat_id": chat_id,
        "method": method,
        "payload": params,
        "dedup_key": dedup_key,
    }
    if not_before is not None:
        values["not_before"] = not_before
    stmt = (
        insert(OutboxMessage)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[OutboxMessage.dedup_key])
        .returning(OutboxMessage.id)
    )
    message_id = (await session.execute(stmt)).scalar_one_or_none()
    if message_id is not None:
        # Delivered to listeners at commit, and only then.
        await session.execute(_NOTIFY)
    return message_id


@dataclass(frozen=True)
class TextMessage:
    """A text message for `enqueue_texts`."""

    chat_id: int
    text: str
    dedup_key: str


_BATCH = 1000  # rows per INSERT: 4 parameters each, well under PostgreSQL's 32767


async def enqueue_texts(
    session: AsyncSession, messages: Sequence[TextMessage], *, not_before: datetime | None = None
) -> int:
    """Queue many text messages as `enqueue` queues one, a batch of rows per statement, for
    jobs that write to thousands of people; those whose key was used before are skipped.
    Returns how many were queued. Rows are written in key order, so two processes writing
    the same messages at once wait for each other instead of deadlocking."""
    queued = 0
    ordered = sorted(messages, key=lambda m: m.dedup_key)
    for start in range(0, len(ordered), _BATCH):
        values = [
            {
                "chat_id": m.chat_id,
                "method": "sendMessage",
                "payload": {"text": m.text},
                "dedup_key": m.dedup_key,
                **({} if not_before is None else {"not_before": not_before}),
            }
            for m in ordered[start : start + _BATCH]
        ]
        stmt = (
            insert(OutboxMessage)
            .values(values)
            .on_conflict_do_nothing(index_elements=[OutboxMessage.dedup_key])
            .returning(OutboxMessage.id)
        )
        queued += len((await session.execute(stmt)).all())
    if queued:
        await session.execute(_NOTIFY)
    return queued


async def _block_due_for_blocked_users(session: AsyncSession, *, now: datetime) -> None:
    """Due messages to users known to have blocked the bot are not sent."""
    doomed = (
        select(OutboxMessage.id)
        .join(User, User.id == OutboxMessage.chat_id)
        .where(
            OutboxMessage.status == PENDING,
            OutboxMessage.not_before <= now,
            User.blocked_at.is_not(None),
        )
        .with_for_update(of=OutboxMessage, skip_locked=True)
    )
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(doomed.scalar_subquery()))
        .values(status=BLOCKED, last_error="the user has blocked the bot")
        .execution_options(synchronize_session=False)
    )


def _sort_key(row: type[OutboxMessage]) -> Any:
    return tuple_(row.attempts == 0, row.not_before, row.id)


async def claim_due(
    session: AsyncSession, *, now: datetime, limit: int, lease: timedelta = CLAIM_LEASE
) -> list[ClaimedMessage]:
    """Up to `limit` messages due now, at most one per chat (its first, see the module
    docstring), longest waiting first, each with the end of its chat's spacing (`space_chat`).

    Rows locked by another transaction are skipped, and the claimed ones get `not_before`
    pushed `lease` into the future: once this transaction commits the locks are gone, and
    the lease keeps other workers off the row meanwhile. A worker that dies mid-send loses
    nothing; the message comes due again when the lease ends.
    """
    await _block_due_for_blocked_users(session, now=now)
    msg = OutboxMessage
    ahead = aliased(OutboxMessage)
    earlier_in_chat = select(ahead.id).where(
        ahead.chat_id == msg.chat_id,
        ahead.status == PENDING,
        _sort_key(ahead) < _sort_key(msg),
    )
    due = (
        select(msg.id, msg.not_before.label("due_at"))
        .where(msg.status == PENDING, msg.not_before <= now, ~earlier_in_chat.exists())
        .order_by(msg.not_before, msg.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    # Read in the claim's snapshot, where the chat's previous message is settled (else this
    # one would not be its first) and so its spacing written.
    send_after = (
        select(OutboxChat.next_send_at).where(OutboxChat.chat_id == msg.chat_id).scalar_subquery()
    )
    lease_until = now + lease
    stmt = (
        update(msg)
        .where(msg.id == due.c.id)
        .values(not_before=lease_until, attempts=msg.attempts + 1)
        .returning(
            msg.id,
            msg.chat_id,
            msg.method,
            msg.payload,
            msg.attempts,
            due.c.due_at,
            send_after.label("send_after"),
        )
        .execution_options(synchronize_session=False)
    )
    rows = sorted((await session.execute(stmt)).all(), key=lambda r: (r.due_at, r.id))
    return [
        ClaimedMessage(
            r.id, r.chat_id, r.method, r.payload, r.attempts, r.due_at, lease_until, r.send_after
        )
        for r in rows
    ]


async def next_due(session: AsyncSession) -> datetime | None:
    """The earliest not_before of a pending message (it may be one waiting behind its chat's
    first message, or under a lease)."""
    return await session.scalar(
        select(func.min(OutboxMessage.not_before)).where(OutboxMessage.status == PENDING)
    )


async def space_chat(session: AsyncSession, *, chat_id: int, until: datetime) -> None:
    """No message to `chat_id` is sent before `until` (a later moment already set stays).
    Written in the transaction that records a send's outcome: the chat's next message cannot
    be claimed before that commits, and its claim carries `until` to whichever worker."""
    stmt = insert(OutboxChat).values(chat_id=chat_id, next_send_at=until)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[OutboxChat.chat_id],
            set_={
                "next_send_at": func.greatest(OutboxChat.next_send_at, stmt.excluded.next_send_at)
            },
        )
    )


async def renew_lease(
    session: AsyncSession, *, message: ClaimedMessage, lease_until: datetime, until: datetime
) -> bool:
    """Extend the claim on a message still held under `lease_until`. False when the lease ran
    out and the message was claimed again or settled meanwhile: leave it alone then."""
    result = await session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == message.id,
            OutboxMessage.status == PENDING,
            OutboxMessage.not_before == lease_until,
        )
        .values(not_before=until)
        .returning(OutboxMessage.id)
        .execution_options(synchronize_session=False)
    )
    return result.first() is not None


async def release(
    session: AsyncSession, *, messages: Sequence[tuple[ClaimedMessage, datetime]]
) -> int:
    """Hand back claimed messages that were not tried (message, its current lease end): due
    again at once, in their old place. Returns how many were still held."""
    released = 0
    for message, lease_until in messages:
        result = await session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id == message.id,
                OutboxMessage.status == PENDING,
                OutboxMessage.not_before == lease_until,
            )
            .values(not_before=message.due_at, attempts=OutboxMessage.attempts - 1)
            .returning(OutboxMessage.id)
            .execution_options(synchronize_session=False)
        )
        released += result.first() is not None
    return released


async def mark_sent(
    session: AsyncSession,
    *,
    message_id: int,
    telegram_message_id: int | None,
    now: datetime,
    uploaded: dict[str, str] | None = None,
) -> None:
    """Record a delivery. An earlier error stays in last_error, for the record.

    `uploaded` maps an upload's field to the file_id Telegram gave the file: it replaces the
    file's bytes in the stored payload, so that a digest's chart and workbook (up to tens of
    megabytes as base64) are not kept in the outbox once sent, yet could be sent again.
    """
    values: dict[str, Any] = {
        "status": SENT,
        "sent_at": now,
        "telegram_message_id": telegram_message_id,
    }
    if uploaded:
        values["payload"] = OutboxMessage.payload.op("||")(
            func.jsonb_build_object(*_flat(uploaded))
        )
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def _flat(pairs: dict[str, str]) -> list[str]:
    return [item for pair in pairs.items() for item in pair]


async def prune_chat_spacing(session: AsyncSession, *, older_than: datetime) -> int:
    """Forget chats' spacing that ended before `older_than`: it no longer holds anything back."""
    result = await session.execute(delete(OutboxChat).where(OutboxChat.next_send_at < older_than))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def mark_retry(
    session: AsyncSession, *, message_id: int, error: str, retry_at: datetime
) -> None:
    """A failed attempt that a later one may get through (network, 5xx): due again at
    `retry_at`, still first in its chat."""
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, OutboxMessage.status == PENDING)
        .values(not_before=retry_at, last_error=error[:_MAX_ERROR])
        .execution_options(synchronize_session=False)
    )


async def mark_failed(session: AsyncSession, *, message_id: int, error: str) -> None:
    """Telegram refused the message itself (400): it is never tried again."""
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .values(status=FAILED, last_error=error[:_MAX_ERROR])
        .execution_options(synchronize_session=False)
    )


async def mark_blocked(session: AsyncSession, *, chat_id: int, error: str, now: datetime) -> int:
    """The chat refuses the bot (403): the user is marked as having blocked it, and none of
    the chat's pending messages is sent. Returns how many messages that stopped."""
    await session.execute(
        update(User)
        .where(User.id == chat_id, User.blocked_at.is_(None))
        .values(blocked_at=now)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.chat_id == chat_id, OutboxMessage.status == PENDING)
        .values(status=BLOCKED, last_error=error[:_MAX_ERROR])
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
