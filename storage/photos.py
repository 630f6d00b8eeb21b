"""Report and hazard photos waiting to be downloaded, and pictures used more than once.

The bot stores a photo as Telegram ids in the same transaction as its report; the media
worker (scheduler.media) claims pending rows, downloads them outside any transaction and
records the outcome here. Backoff is computed by the caller with `retry_delay`; whatever it
asks for, `mark_failed` never waits longer than `MAX_RETRY_DELAY`, and a photo is retried
forever at that pace (a file_id stays valid, so a later attempt can still succeed).

"Reused" means the same picture appears on a photo of a different report or hazard: the
same Telegram file (`file_unique_id`, flagged when the bot stores it) or the same bytes
under another file (`sha256`, flagged once downloaded). Both photos are flagged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from storage import locks
from storage.models import Photo

# How long a claimed photo is hidden from other workers while it is being downloaded.
CLAIM_LEASE = timedelta(minutes=5)
FIRST_RETRY_DELAY = timedelta(seconds=30)
MAX_RETRY_DELAY = timedelta(hours=1)

# Advisory lock classes (the two-int4 key space, apart from storage.updates' bigint keys):
# they serialise the reuse checks on one picture, so that two transactions flagging the
# same picture at the same time cannot both miss each other.
_LOCK = text("SELECT pg_advisory_xact_lock(:cls, :key)")


@dataclass(frozen=True)
class PendingPhoto:
    id: int
    file_id: str
    file_unique_id: str
    attempts: int  # failed attempts so far


def retry_delay(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failure: 30 s, 1 min, 2 min, … capped at 1 h."""
    exponent = min(max(attempts, 1) - 1, 20)
    return min(FIRST_RETRY_DELAY * (1 << exponent), MAX_RETRY_DELAY)


async def _lock(session: AsyncSession, cls: int, value: str) -> None:
    # A stable 32-bit key (hash() is salted per process, and every process must agree).
    key = int.from_bytes(hashlib.sha256(value.encode()).digest()[:4], "big", signed=True)
    await session.execute(_LOCK, {"cls": cls, "key": key})


def _other_owner(visit_report_id: int | None, hazard_id: int | None) -> ColumnElement[bool]:
    """A photo belonging to another report or hazard than the given owner."""
    return or_(
        Photo.visit_report_id.is_distinct_from(visit_report_id),
        Photo.hazard_id.is_distinct_from(hazard_id),
    )


async def claim_pending(
    session: AsyncSession, *, now: datetime, limit: int, lease: timedelta = CLAIM_LEASE
) -> list[PendingPhoto]:
    """Up to `limit` photos due for a download attempt, longest waiting first.

    Rows locked by another transaction are skipped, and the claimed ones are pushed
    `lease` into the future: once this transaction commits the row locks are gone, and the
    lease is what keeps another worker from downloading the same photo meanwhile. A worker
    that dies mid-download loses nothing; the photo comes due again when the lease ends.
    """
    due = (
        select(Photo.id, Photo.next_attempt_at.label("due_at"))
        .where(Photo.sha256.is_(None), Photo.next_attempt_at <= now)
        .order_by(Photo.next_attempt_at, Photo.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    stmt = (
        update(Photo)
        .where(Photo.id == due.c.id)
        .values(next_attempt_at=now + lease)
        .returning(Photo.id, Photo.file_id, Photo.file_unique_id, Photo.attempts, due.c.due_at)
        .execution_options(synchronize_session=False)
    )
    rows = sorted((await session.execute(stmt)).all(), key=lambda r: (r.due_at, r.id))
    return [PendingPhoto(r.id, r.file_id, r.file_unique_id, r.attempts) for r in rows]


async def mark_downloaded(
    session: AsyncSession, *, photo_id: int, sha256: str, path: str, size: int, now: datetime
) -> bool:
    """Record a finished download (`path` relative to the media directory).

    True when the same bytes already belong to a photo of a different report or hazard:
    this photo and those are then flagged as reused. False also when the photo is gone
    (its report was deleted meanwhile).
    """
    await _lock(session, locks.PHOTO_SHA256, sha256)
    owner = (
        await session.execute(
            update(Photo)
            .where(Photo.id == photo_id)
            .values(
                sha256=sha256,
                path=path,
                size=size,
                downloaded_at=now,
                last_error=None,
            )
            .returning(Photo.visit_report_id, Photo.hazard_id)
            .execution_options(synchronize_session=False)
        )
    ).first()
    if owner is None:
        return False
    others = (
        (
            await session.execute(
                select(Photo.id).where(
                    Photo.sha256 == sha256,
                    Photo.id != photo_id,
                    _other_owner(owner.visit_report_id, owner.hazard_id),
                )
            )
        )
        .scalars()
        .all()
    )
    if not others:
        await session.flush()
        return False
    await session.execute(
        update(Photo)
        .where(Photo.id.in_([photo_id, *others]))
        .values(reused=True)
        .execution_options(synchronize_session=False)
    )
    await session.flush()
    return True


async def mark_failed(
    session: AsyncSession, *, photo_id: int, error: str, now: datetime, retry_in: timedelta
) -> None:
    """Count a failed attempt; the next one is due after `retry_in`, at most an hour."""
    wait = min(max(retry_in, timedelta(0)), MAX_RETRY_DELAY)
    await session.execute(
        update(Photo)
        .where(Photo.id == photo_id)
        .values(attempts=Photo.attempts + 1, last_error=error[:2000], next_attempt_at=now + wait)
        .execution_options(synchronize_session=False)
    )
    await session.flush()


async def flag_reused_file_ids(session: AsyncSession, *, photo_ids: Sequence[int]) -> int:
    """Flag the photos among `photo_ids` whose Telegram file (`file_unique_id`) is already on
    a photo of a different report or hazard, and flag those earlier photos too.

    Call it in the transaction that stores the new photos. Returns how many of `photo_ids`
    are reuses.
    """
    if not photo_ids:
        return 0
    unique_ids = (
        (
            await session.execute(
                select(Photo.file_unique_id).where(Photo.id.in_(photo_ids)).distinct()
            )
        )
        .scalars()
        .all()
    )
    # One order for every transaction, so that taking several locks cannot deadlock.
    for unique_id in sorted(unique_ids):
        await _lock(session, locks.PHOTO_FILE_UNIQUE_ID, unique_id)
    new, old = aliased(Photo), aliased(Photo)
    pairs = (
        await session.execute(
            select(new.id, old.id)
            .join(old, old.file_unique_id == new.file_unique_id)
            .where(
                new.id.in_(photo_ids),
                old.id != new.id,
                or_(
                    old.visit_report_id.is_distinct_from(new.visit_report_id),
                    old.hazard_id.is_distinct_from(new.hazard_id),
                ),
            )
        )
    ).all()
    if not pairs:
        return 0
    reused_new = {n for n, _ in pairs}
    await session.execute(
        update(Photo)
        .where(Photo.id.in_(reused_new | {o for _, o in pairs}))
        .values(reused=True)
        .execution_options(synchronize_session=False)
    )
    await session.flush()
    return len(reused_new)
