"""Exactly-once application of Telegram updates, and the ones that keep failing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Begun, begin_with, literal
from storage.models import FailedUpdate, ProcessedUpdate

# The statements every update runs go out with its BEGIN and COMMIT (storage.db.begin_with,
# commit_with), hence literals. Serialise on the sender, so that one user's updates apply in
# order across processes, then record the update id: nothing is inserted when it was applied
# before. Each statement of the BEGIN's round trip sees what committed before it started,
# so what follows the lock sees what the sender's previous update left.
_CLAIM = "INSERT INTO processed_updates (update_id) VALUES ({update_id}) ON CONFLICT DO NOTHING"
_LOCK = "SELECT pg_advisory_xact_lock({serial_key})"
# With a condition to test once the lock is held: the claim's status is then that of a
# SELECT of no row (applied before), one (claimed) or two (claimed, and the condition holds).
_CLAIM_TESTING = (
    "WITH claim AS (" + _CLAIM + " RETURNING 1) "
    "SELECT FROM claim UNION ALL SELECT FROM claim WHERE {condition}"
)


@dataclass(frozen=True, slots=True)
class Claimed:
    """An update claimed by `claim_update`: its transaction, and whether the condition given
    held once the sender's lock was taken."""

    began: Begun
    held: bool


async def claim_update(
    session: AsyncSession,
    update_id: int,
    *,
    serial_key: int | None,
    condition: str | None = None,
) -> Claimed | None:
    """Begin the session's transaction by claiming `update_id` (serialised on `serial_key`,
    when given), in one round trip: the claim when this is the first to apply the update,
    None when it was applied before (the session's close then ends the transaction).

    `condition` (SQL, literals only) is tested in the same round trip after the lock, so it
    sees what the sender's previous update left (storage.fsm.PostgresStorage.condition_seen).

    A concurrent transaction holding the same id makes this wait for its outcome, so a
    redelivery racing the original is still applied once.
    """
    update = literal(update_id)
    claimed: tuple[str, ...]
    if condition is None:
        statements, claimed = _CLAIM.format(update_id=update), ("INSERT 0 1",)
    else:
        statements = _CLAIM_TESTING.format(update_id=update, condition=condition)
        claimed = ("SELECT 1", "SELECT 2")
    if serial_key is not None:
        statements = f"{_LOCK.format(serial_key=literal(serial_key))}; {statements}"
    began = await begin_with(session, statements)
    if began.status not in claimed:
        return None
    return Claimed(began, held=began.status == "SELECT 2")


_KEEP = (
    "UPDATE processed_updates SET answers = {answers}, processed_at = clock_timestamp() "
    "WHERE update_id = {update_id}"
)
_CLEAR = (
    "UPDATE processed_updates SET answers = NULL "  # SQL NULL, not JSON null
    "WHERE update_id IN ({update_ids}) AND answers IS NOT NULL"
)


def keep_statement(update_id: int, answers: list[dict[str, Any]]) -> str:
    """Store the answers to an update being applied, in its transaction (with its COMMIT).
    The process that applies it clears them once sent (`clear_statement`); answers left behind
    by a process that died are sent by the update's redelivery (`take_unsent_answers`).
    `processed_at` is set to the moment they were kept, for the grace period."""
    return _KEEP.format(update_id=literal(update_id), answers=literal(json.dumps(answers)))


def clear_statement(update_ids: Sequence[int]) -> str:
    """The answers to `update_ids` were sent (not an empty list)."""
    return _CLEAR.format(update_ids=", ".join(literal(int(i)) for i in update_ids))


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
