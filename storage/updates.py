"""Exactly-once application of Telegram updates, and the ones that keep failing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import delete, func, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import FailedUpdate, ProcessedUpdate

# The statements every update runs go through the driver (see storage.db.driver_connection).
# One round trip: serialise on the sender (so one user's updates apply in order across
# processes), then record the update id; nothing comes back when it was applied before.
_CLAIM_LOCKED = (
    "WITH serial AS (SELECT pg_advisory_xact_lock($2)) "
    "INSERT INTO processed_updates (update_id) SELECT $1 FROM serial "
    "ON CONFLICT DO NOTHING RETURNING update_id"
)
_CLAIM = (
    "INSERT INTO processed_updates (update_id) VALUES ($1) "
    "ON CONFLICT DO NOTHING RETURNING update_id"
)


async def claim_update(db: asyncpg.Connection, update_id: int, *, serial_key: int | None) -> bool:
    """True when this transaction is the first to apply `update_id`.

    A concurrent transaction holding the same id makes this wait for its outcome, so a
    redelivery racing the original is still applied once.
    """
    if serial_key is None:
        claimed = await db.fetchval(_CLAIM, update_id)
    else:
        claimed = await db.fetchval(_CLAIM_LOCKED, update_id, serial_key)
    return claimed is not None


# Also run together with the conversation's write (see storage.fsm), hence the parameters'
# numbers left open.
KEEP_SQL = (
    "UPDATE processed_updates SET answers = {answers}, processed_at = clock_timestamp() "
    "WHERE update_id = {update_id}"
)
_KEEP = KEEP_SQL.format(update_id="$1", answers="$2")
_CLEAR = (
    "UPDATE processed_updates SET answers = NULL "  # SQL NULL, not JSON null
    "WHERE update_id = ANY($1::bigint[]) AND answers IS NOT NULL"
)


async def keep_answers(
    db: asyncpg.Connection, update_id: int, answers: list[dict[str, Any]]
) -> None:
    """Store the answers to an update being applied, in its transaction. The process that
    applies it clears them once sent (`clear_answers`); answers left behind by a process that
    died are sent by the update's redelivery (`take_unsent_answers`). `processed_at` is set
    to the moment they were kept, for the grace period."""
    await db.execute(_KEEP, update_id, json.dumps(answers))


async def clear_answers(db: asyncpg.Connection, update_ids: Sequence[int]) -> None:
    """The answers to `update_ids` were sent."""
    await db.execute(_CLEAR, list(update_ids))


@dataclass(frozen=True, slots=True)
class Unsent:
    answers: list[dict[str, Any]] | None  # taken: now the caller's to send
    pending: bool  # kept less than the grace period ago: their process may still send them


# The row is locked, so of two redeliveries racing for the same answers one takes them and
# the other, once the first commits, finds them gone.
_TAKE_UNSENT = text(
    "WITH kept AS ("
    "  SELECT update_id, answers,"
    "         processed_at < clock_timestamp() - make_interval(secs => :grace) AS due"
    "  FROM processed_updates WHERE update_id = :update_id AND answers IS NOT NULL"
    "  FOR UPDATE"
    "), taken AS ("
    "  UPDATE processed_updates AS p SET answers = NULL FROM kept"
    "  WHERE p.update_id = kept.update_id AND kept.due RETURNING p.update_id"
    ") SELECT due, answers FROM kept"
)


async def take_unsent_answers(session: AsyncSession, update_id: int, *, grace: float) -> Unsent:
    """For the redelivery of an applied update: its answers if they were kept more than
    `grace` seconds ago and are still unsent (the process that kept them is taken to have
    died), now marked as sent; `pending` if they are younger."""
    row = (await session.execute(_TAKE_UNSENT, {"update_id": update_id, "grace": grace})).first()
    if row is None:
        return Unsent(None, pending=False)
    due, answers = row
    return Unsent(list(answers), pending=False) if due else Unsent(None, pending=True)


async def record_failure(
    session: AsyncSession,
    *,
    update_id: int,
    payload: dict[str, Any],
    error: str,
    give_up_after: int,
) -> bool:
    """Count a failed attempt at an update. True when it is now set aside as dead."""
    stmt = insert(FailedUpdate).values(
        update_id=update_id,
        attempts=1,
        error=error[:4000],
        payload=payload,
        dead=give_up_after <= 1,
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=[FailedUpdate.update_id],
        set_={
            "attempts": FailedUpdate.attempts + 1,
            "error": stmt.excluded.error,
            "last_failed_at": func.now(),
            "dead": FailedUpdate.attempts + 1 >= give_up_after,
        },
    ).returning(FailedUpdate.dead)
    return bool((await session.execute(upsert)).scalar_one())


async def prune_processed(session: AsyncSession, *, older_than: datetime) -> int:
    """Forget applied update ids older than Telegram ever redelivers (it gives up after a day)."""
    result = await session.execute(
        delete(ProcessedUpdate).where(ProcessedUpdate.processed_at < older_than)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
