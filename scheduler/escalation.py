"""request-deadlines: a request past a deadline is reported to the supervisors of its
station and the officer handling it is reminded, once per request and deadline.

"Once" is kept by the request's own history: each escalation is an `escalated` event
naming its clock (ack, answer, department), and a clock counts as escalated when such an
event was recorded after the clock started. A reopened request's answer clock starts
again, so it is a new deadline and is escalated again. The decision and the event are
taken under the request's row lock, so two runs at once escalate it once; the messages'
dedup keys (request, clock, clock start, recipient) say the same to the outbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot.i18n import Translator
from bot.notify import tell
from bot.request_texts import span, staff_label, when
from core.requests import Actor, ClockState, DeadlineState, Event
from scheduler.jobs import JobContext
from storage import requests as store
from storage.attention import overdue_requests
from storage.escalations import escalations, lock_request
from storage.requests import RequestView

Marks = Sequence[tuple[datetime, str]]  # (when, clock name) of the escalations recorded


def already_escalated(clock: ClockState, marks: Marks) -> bool:
    return any(name == clock.clock.value and at >= clock.started_at for at, name in marks)


def to_escalate(state: DeadlineState, marks: Marks) -> list[ClockState]:
    """The overdue clocks not escalated since they started."""
    return [c for c in state.clocks() if c.overdue and not already_escalated(c, marks)]


def _values(
    t: Translator, request: RequestView, clock: ClockState, ctx: JobContext
) -> dict[str, str]:
    assert clock.due_at is not None  # an overdue clock has a due time
    return {
        "ref": request.ref,
        "village": request.village_name,
        "clock": t(f"request_clock.{clock.clock.value}"),
        "due": when(clock.due_at, ctx.settings.tz),
        "late": span(t, ctx.now - clock.due_at),
    }


async def _escalate(session: AsyncSession, ctx: JobContext, request_id: int) -> tuple[int, int]:
    """Escalate what is still due of one request; (clocks escalated, messages queued)."""
    if not await lock_request(session, request_id):
        return 0, 0
    request = await store.get_request(session, request_id)
    if request is None or not request.is_open:
        return 0, 0
    events = await store.history(session, request_id)
    state = store.deadlines_of(events, ctx.now, ctx.settings.deadlines)
    marks = [(e.at, e.body or "") for e in events if e.event is Event.ESCALATED]
    due = to_escalate(state, marks)
    if not due:
        return 0, 0  # another run got here first, or someone acted meanwhile
    supervisors = await store.station_supervisor_accounts(session, request.station_id)
    # The handler may be one of the supervisors told (the request is routed to them, or the
    # officer has not joined the bot): one message each is enough.
    handlers = [a for a in await store.handler_accounts(session, request) if a not in supervisors]
    joined = (
        request.officer_id is None
        or await store.officer_account(session, request.officer_id) is not None
    )
    queued = 0
    for clock in due:
        await store.record_event(
            session,
            request_id=request_id,
            event=Event.ESCALATED,
            actor=Actor.SYSTEM,
            now=ctx.now,
            body=clock.clock.value,
            config=ctx.settings.deadlines,
        )

        def report(t: Translator, clock: ClockState = clock) -> tuple[str, None]:
            text = t(
                "escalation.supervisor",
                category=t(f"request_category.{request.category}"),
                handler=staff_label(t, request),
                **_values(t, request, clock, ctx),
            )
            return (text if joined else f"{text}\n{t('escalation.unbound')}"), None

        def remind(t: Translator, clock: ClockState = clock) -> tuple[str, None]:
            return t("escalation.reminder", **_values(t, request, clock, ctx)), None

        key = f"escalation:{request_id}:{clock.clock.value}:{clock.started_at.timestamp():.0f}"
        for chat_id, compose in [
            *((s, report) for s in supervisors),
            *((h, remind) for h in handlers),
        ]:
            queued += (
                await tell(
                    session,
                    chat_id=chat_id,
                    default_locale=ctx.settings.default_locale,
                    compose=compose,
                    dedup_key=f"{key}:{chat_id}",
                    not_before=ctx.send_at,
                )
                is not None
            )
    return len(due), queued


async def request_deadlines(ctx: JobContext) -> str:
    async with ctx.sessions() as session:
        overdue = await overdue_requests(session, now=ctx.now, config=ctx.settings.deadlines)
        marks = await escalations(session, [o.request.id for o in overdue])
    # Only the requests with something new to escalate are locked, one transaction each.
    pending = [o.request.id for o in overdue if to_escalate(o.state, marks[o.request.id])]
    clocks = queued = 0
    for request_id in pending:
        async with ctx.sessions() as session, session.begin():
            escalated, sent = await _escalate(session, ctx, request_id)
        clocks, queued = clocks + escalated, queued + sent
    return (
        f"{len(overdue)} requests past a deadline, {clocks} deadlines escalated, "
        f"{queued} messages queued"
    )
