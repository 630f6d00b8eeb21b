"""Exactly-once application of Telegram updates, and the ones that keep failing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import FailedUpdate, ProcessedUpdate

# One round trip: serialise on the sender (so one user's updates apply in order across
# processes), then record the update id; nothing comes back when it was applied before.
_CLAIM_LOCKED = text(
    "WITH serial AS (SELECT pg_advisory_xact_lock(:key)) "
    "INSERT INTO processed_updates (update_id) SELECT :update_id FROM serial "
    "ON CONFLICT DO NOTHING RETURNING update_id"
)
_CLAIM = text(
    "INSERT INTO processed_updates (update_id) VALUES (:update_id) "
    "ON CONFLICT DO NOTHING RETURNING update_id"
)


async def claim_update(session: AsyncSession, update_id: int, *, serial_key: int | None) -> bool:
    """True when this transaction is the first to apply `update_id`.

    A concurrent transaction holding the same id makes this wait for its outcome, so a
    redelivery racing the original is still applied once.
    """
    if serial_key is None:
        result = await session.execute(_CLAIM, {"update_id": update_id})
    else:
        result = await session.execute(_CLAIM_LOCKED, {"update_id": update_id, "key": serial_key})
    return result.first() is not None


async def keep_answers(
    session: AsyncSession, update_id: int, answers: list[dict[str, Any]]
) -> None:
    """Store the answers to an update being applied, in its transaction (see take_answers)."""
    applied = ProcessedUpdate.update_id == update_id
    await session.execute(update(ProcessedUpdate).where(applied).values(answers=answers))


# Takes the answers atomically: of two transactions racing for them (the process that applied
# the update and one handling its redelivery), the second finds them taken and gets nothing.
_TAKE_ANSWERS = text(
    "UPDATE processed_updates AS p SET answers = NULL "
    "FROM (SELECT update_id, answers FROM processed_updates "
    "      WHERE update_id = :update_id AND answers IS NOT NULL FOR UPDATE) AS kept "
    "WHERE p.update_id = kept.update_id AND p.answers IS NOT NULL "
    "RETURNING kept.answers"
)


async def take_answers(session: AsyncSession, update_id: int) -> list[dict[str, Any]] | None:
    """The stored answers to an applied update, now marked as taken; None when there were
    none or someone else took them. Whoever takes them sends them."""
    result = await session.execute(_TAKE_ANSWERS, {"update_id": update_id})
    answers = result.scalar_one_or_none()
    return list(answers) if answers is not None else None


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
