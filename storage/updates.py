"""Exactly-once application of Telegram updates."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

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
