"""The escalations already recorded in requests' histories (the `escalated` events, whose
text names the clock), and the row lock under which one is decided and recorded."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.requests import Event
from storage.models import Request, RequestEvent


async def escalations(
    session: AsyncSession, request_ids: Sequence[int]
) -> dict[int, list[tuple[datetime, str]]]:
    """For each request: (when, clock name) of every escalation recorded, oldest first."""
    result: dict[int, list[tuple[datetime, str]]] = {i: [] for i in request_ids}
    if not request_ids:
        return result
    rows = await session.execute(
        select(RequestEvent.request_id, RequestEvent.at, RequestEvent.body)
        .where(
            RequestEvent.request_id.in_(list(request_ids)),
            RequestEvent.event == Event.ESCALATED.value,
        )
        .order_by(RequestEvent.request_id, RequestEvent.id)
    )
    for request_id, at, clock in rows:
        result[request_id].append((at, clock or ""))
    return result


async def lock_request(session: AsyncSession, request_id: int) -> bool:
    """Lock the request's row for the rest of the transaction, as record_event does, so that
    two processes deciding whether to escalate it do so one after the other. False: gone."""
    found = await session.scalar(
        select(Request.id).where(Request.id == request_id).with_for_update()
    )
    return found is not None
