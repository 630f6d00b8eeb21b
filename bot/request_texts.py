"""How a villager's request reads: labels, the card each side sees, history lines, the
deadline line, and the notes written when the directory moves requests. No aiogram here:
the import command writes those notes too."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.i18n import Translator
from bot.notify import tell
from bot.texts import MAX_MESSAGE, shorten
from core.requests import (
    Actor,
    Clock,
    ClockStatus,
    DeadlineState,
    Event,
    RouteKind,
    most_urgent,
)
from storage import requests as store
from storage.models import Officer, Supervisor
from storage.requests import EventView, RequestView

# A card shows the latest entries of the history; the rest is summed up in one line.
HISTORY_SHOWN = 12
BODY_PREVIEW = 300
LIST_PREVIEW = 40
Compose = Callable[[Translator], str]
_CLOCKS = frozenset(c.value for c in Clock)


def when(moment: datetime, tz: zoneinfo.ZoneInfo) -> str:
    return f"{moment.astimezone(tz):%m-%d %H:%M}"


def span(t: Translator, delta: timedelta) -> str:
    """A duration as people say it: 25 min, 3 h 10 min, 2 d 4 h."""
    minutes = max(0, int(delta.total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return t("request.span_days", days=days, hours=hours)
    if hours:
        return t("request.span_hours", hours=hours, minutes=minutes)
    return t("request.span_minutes", minutes=minutes)


def deadline_text(t: Translator, state: DeadlineState, now: datetime, tz: zoneinfo.ZoneInfo) -> str:
    """The deadline that matters now: the first one due, else a paused clock, else none."""
    urgent = most_urgent(state)
    if urgent is None:
        if state.answer.status is ClockStatus.PAUSED:
            return t("request.deadline_paused")
        return t("request.deadline_none")
    clock, due = urgent
    label = t(f"request_clock.{clock.value}")
    if due < now:
        line = t(
            "request.deadline_overdue", clock=label, due=when(due, tz), late=span(t, now - due)
        )
    else:
        line = t(
            "request.deadline_running", clock=label, due=when(due, tz), left=span(t, due - now)
        )
    if state.answer.status is ClockStatus.PAUSED:
        # The department's clock stands for the request; say why the officer's is not shown.
        line += "\n" + t("request.deadline_paused")
    return line


def officer_label(t: Translator, name: str | None) -> str:
    return t("request_who.officer", name=name or "")


def supervisor_label(t: Translator, name: str | None) -> str:
    return t("request_who.supervisor", name=name) if name else t("request_who.supervisor_unnamed")


def handler_label(t: Translator, request: RequestView) -> str:
    """Who handles the request, as the villager sees it."""
    if request.officer_id is not None:
        return officer_label(t, request.officer_name)
    return supervisor_label(t, request.supervisor_name)


def staff_label(t: Translator, request: RequestView) -> str:
    """Who handles the request, as supervisors see it: the officer with their badge."""
    if request.officer_id is not None:
        return t(
            "staff.officer", name=request.officer_name or "", badge=request.officer_badge or ""
        )
    return supervisor_label(t, request.supervisor_name)


def villager_label(t: Translator, request: RequestView) -> str:
    """The villager, as the officer sees them: a name they gave Telegram, never the account."""
    if request.anonymous:
        return t("request_who.anonymous")
    return request.villager_name or t("request_who.villager")


def _actor_label(t: Translator, event: EventView, *, for_villager: bool) -> str:
    if event.actor is Actor.VILLAGER:
        return t("request_who.you") if for_villager else t("request_who.villager")
    if event.actor is Actor.SYSTEM and event.event is not Event.REASSIGNED:
        return t("request_who.system")
    if event.officer_name is not None:
        return officer_label(t, event.officer_name)
    if event.supervisor_name is not None or event.actor is Actor.SUPERVISOR:
        return supervisor_label(t, event.supervisor_name)
    return t("request_who.system")


def event_line(
    t: Translator, event: EventView, tz: zoneinfo.ZoneInfo, *, for_villager: bool
) -> str:
    if event.event is Event.ESCALATED and event.body in _CLOCKS:
        # The scheduler's escalation names the missed deadline: shown by its label.
        what = t("escalation.history", clock=t(f"request_clock.{event.body}"))
        return f"{when(event.at, tz)} {what}"
    department = t(f"department.{event.department}") if event.department else ""
    what = t(
        f"request_event.{event.event.value}",
        who=_actor_label(t, event, for_villager=for_villager),
        department=department,
        rating=event.rating or "",
    )
    line = f"{when(event.at, tz)} {what}"
    if event.body and event.event is not Event.CREATED:
        line = t("request.history_said", line=line, text=shorten(event.body, BODY_PREVIEW))
    if event.photos:
        line += " " + t("request.history_photos", count=len(event.photos))
    return line


def _with_history(
    t: Translator,
    head: list[str],
    events: Sequence[EventView],
    tz: zoneinfo.ZoneInfo,
    *,
    for_villager: bool,
) -> str:
    """The head, then the newest history entries that fit in one message (at most
    HISTORY_SHOWN); the older ones are counted in one line."""
    lines = [event_line(t, e, tz, for_villager=for_villager) for e in events]
    shown = min(len(lines), HISTORY_SHOWN)
    while True:
        hidden = len(lines) - shown
        more = [t("request.history_more", count=hidden)] if hidden else []
        text = "\n".join([*head, t("request.history_title"), *more, *lines[hidden:]])
        if len(text) <= MAX_MESSAGE or shown == 0:
            return text[:MAX_MESSAGE]
        shown -= 1


def handler_card(
    t: Translator,
    request: RequestView,
    events: Sequence[EventView],
    state: DeadlineState,
    *,
    now: datetime,
    tz: zoneinfo.ZoneInfo,
) -> str:
    """The request as its officer (or supervisor) sees it."""
    lines = [
        t("request.ref_title", ref=request.ref, category=t(f"request_category.{request.category}")),
        t("request.field_status", status=t(f"request_status.{request.status.value}")),
        t("request.field_village", village=request.village_name),
        t("request.field_from", who=villager_label(t, request)),
    ]
    if request.villager_phone:
        lines.append(t("request.field_phone", phone=request.villager_phone))
    lines += _common_fields(t, request, tz)
    if request.is_open:
        lines.append(deadline_text(t, state, now, tz))
    return _with_history(t, lines, events, tz, for_villager=False)


def villager_card(
    t: Translator, request: RequestView, events: Sequence[EventView], *, tz: zoneinfo.ZoneInfo
) -> str:
    """The request as the villager who sent it sees it."""
    lines = [
        t("request.ref_title", ref=request.ref, category=t(f"request_category.{request.category}")),
        t("request.field_status", status=t(f"request_status.{request.status.value}")),
        t("request.field_handler", who=handler_label(t, request)),
        *_common_fields(t, request, tz),
    ]
    return _with_history(t, lines, events, tz, for_villager=True)


def _common_fields(t: Translator, request: RequestView, tz: zoneinfo.ZoneInfo) -> list[str]:
    lines = [t("request.field_sent", time=when(request.created_at, tz))]
    if request.department:
        lines.append(
            t("request.field_department", department=t(f"department.{request.department}"))
        )
    if request.rating is not None:
        lines.append(t("request.field_rating", rating=request.rating))
    lines.append(t("request.field_text", text=shorten(request.body, 2000)))
    if request.photos:
        lines.append(t("request.field_photos", count=len(request.photos)))
    if request.latitude is not None:
        lines.append(t("request.field_location"))
    return lines


def list_line(
    t: Translator,
    request: RequestView,
    state: DeadlineState | None,
    *,
    now: datetime,
    tz: zoneinfo.ZoneInfo,
) -> str:
    """One request in a list: reference, status, the start of its text, its deadline."""
    status = t(f"request_status.{request.status.value}")
    line = f"{request.ref} · {status} · {shorten(request.body, LIST_PREVIEW)}"
    if state is not None and request.is_open:
        line += "\n   " + deadline_text(t, state, now, tz)
    return line


# --------------------------------------------------------------------------- reassignment


def _route_label(t: Translator, kind: RouteKind, name: str | None) -> str:
    return officer_label(t, name) if kind is RouteKind.OFFICER else supervisor_label(t, name)


async def _accounts(
    session: AsyncSession, officer_id: int | None, supervisor_id: int | None
) -> list[int]:
    if officer_id is not None:
        account = await store.officer_account(session, officer_id)
        return [] if account is None else [account]
    if supervisor_id is not None:
        return await store.supervisor_accounts(session, [supervisor_id])
    return []


def _plain(text: Compose) -> Callable[[Translator], tuple[str, None]]:
    return lambda t: (text(t), None)


async def note_reassignments(
    session: AsyncSession, rerouting: store.Rerouting, *, default_locale: str
) -> int:
    """Tell the new handler, the old one and the villager about each moved request, in
    the transaction that moved it. Returns how many notes were queued."""
    notes: list[tuple[int, Compose]] = []
    for moved in rerouting.moved:
        ref, village, kind = store.reference(moved.request_id), moved.village_name, moved.new.kind
        model = Officer if kind is RouteKind.OFFICER else Supervisor
        name = await session.scalar(select(model.name).where(model.id == moved.new.recipient_id))
        to_new = await _accounts(
            session,
            moved.new.recipient_id if kind is RouteKind.OFFICER else None,
            moved.new.recipient_id if kind is RouteKind.SUPERVISOR else None,
        )
        to_old = await _accounts(session, moved.old_officer_id, moved.old_supervisor_id)

        def moved_to_you(t: Translator, ref: str = ref, village: str = village) -> str:
            return t("request_note.moved_to_you", ref=ref, village=village)

        def moved_away(
            t: Translator,
            ref: str = ref,
            village: str = village,
            kind: RouteKind = kind,
            name: str | None = name,
        ) -> str:
            return t(
                "request_note.moved_away", ref=ref, village=village, who=_route_label(t, kind, name)
            )

        def moved_villager(
            t: Translator, ref: str = ref, kind: RouteKind = kind, name: str | None = name
        ) -> str:
            return t("request_note.moved_villager", ref=ref, who=_route_label(t, kind, name))

        notes += [(chat_id, moved_to_you) for chat_id in to_new]
        notes += [(chat_id, moved_away) for chat_id in to_old]
        notes.append((moved.villager_id, moved_villager))
    for chat_id, text in notes:
        await tell(session, chat_id=chat_id, default_locale=default_locale, compose=_plain(text))
    return len(notes)
