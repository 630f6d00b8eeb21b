"""Villagers' requests: stored once per draft, changed only through their history.

Every change is an event appended by `record_event`, which locks the request, replays the
history with the new event through core.requests (refusing what may not happen), and
derives the request's status, department, rating and most urgent deadline from it. The
caller writes the outbox messages the change causes in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from core.requests import (
    DEFAULT_DEADLINES,
    MESSAGE_WINDOW,
    OPEN_STATUSES,
    Actor,
    DeadlineConfig,
    DeadlineState,
    Event,
    HistoryEntry,
    RequestStatus,
    Route,
    Routed,
    RouteKind,
    deadline_state,
    most_urgent,
    replay,
    route,
    timeline_of,
)
from core.roles import AssignmentKind
from storage.models import (
    Assignment,
    Officer,
    Request,
    RequestEvent,
    Supervisor,
    SupervisorStation,
    User,
    Village,
)

OPEN_VALUES = tuple(s.value for s in OPEN_STATUSES)
Photos = Sequence[tuple[str, str]]  # (file_id, file_unique_id)


def reference(request_id: int) -> str:
    """The number a villager quotes: R000123."""
    return f"R{request_id:06d}"


# --------------------------------------------------------------------------- routing


async def route_for_village(session: AsyncSession, village_id: int) -> Route:
    """The village's resident officer, else its contact officer, else a supervisor of its
    station, else a county-wide supervisor; Unrouted when there is nobody at all."""
    posts = dict(
        (
            await session.execute(
                select(Assignment.kind, Assignment.officer_id).where(
                    Assignment.village_id == village_id
                )
            )
        ).all()
    )
    station_id = select(Village.station_id).where(Village.id == village_id).scalar_subquery()
    supervisors = list(
        await session.scalars(
            select(SupervisorStation.supervisor_id).where(
                SupervisorStation.station_id == station_id
            )
        )
    )
    if not supervisors:
        supervisors = list(
            await session.scalars(select(Supervisor.id).where(Supervisor.county_wide))
        )
    return route(
        posts.get(AssignmentKind.RESIDENT.value),
        posts.get(AssignmentKind.CONTACT.value),
        supervisors,
    )


def _handler_columns(routed: Routed) -> dict[str, int | None]:
    officer = routed.kind is RouteKind.OFFICER
    return {
        "officer_id": routed.recipient_id if officer else None,
        "supervisor_id": None if officer else routed.recipient_id,
    }


# --------------------------------------------------------------------------- limits


async def open_count(session: AsyncSession, *, villager_id: int) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(Request)
            .where(Request.villager_id == villager_id, Request.status.in_(OPEN_VALUES))
        )
        or 0
    )


async def recent_messages(
    session: AsyncSession, *, villager_id: int, now: datetime
) -> list[datetime]:
    """When the villager's requests and messages of the last minute were accepted."""
    return list(
        await session.scalars(
            select(RequestEvent.at).where(
                RequestEvent.user_id == villager_id,
                RequestEvent.event.in_([Event.CREATED.value, Event.VILLAGER_MESSAGE.value]),
                RequestEvent.at > now - MESSAGE_WINDOW,
            )
        )
    )


# --------------------------------------------------------------------------- creating


@dataclass(frozen=True)
class NewRequest:
    draft_id: str
    villager_id: int
    village_id: int
    category: str
    body: str
    photos: Photos
    latitude: float | None
    longitude: float | None
    anonymous: bool
    created_at: datetime


@dataclass(frozen=True)
class SavedRequest:
    id: int
    created: bool  # False: this draft had been stored already


def _derived(
    history: Sequence[HistoryEntry], now: datetime, config: DeadlineConfig
) -> dict[str, Any]:
    """The request columns its history determines."""
    urgent = most_urgent(deadline_state(timeline_of(history), now, config))
    return {
        "status": replay(history).value,
        "due_at": None if urgent is None else urgent[1],
        "due_clock": None if urgent is None else urgent[0].value,
    }


async def create_request(
    session: AsyncSession,
    new: NewRequest,
    routed: Routed,
    *,
    config: DeadlineConfig = DEFAULT_DEADLINES,
) -> SavedRequest:
    """Store the request and its `created` event unless this draft was stored already."""
    history = [HistoryEntry(new.created_at, Event.CREATED, Actor.VILLAGER)]
    stmt = (
        insert(Request)
        .values(
            draft_id=new.draft_id,
            villager_id=new.villager_id,
            village_id=new.village_id,
            category=new.category,
            body=new.body,
            latitude=new.latitude,
            longitude=new.longitude,
            anonymous=new.anonymous,
            created_at=new.created_at,
            updated_at=new.created_at,
            **_handler_columns(routed),
            **_derived(history, new.created_at, config),
        )
        .on_conflict_do_nothing(index_elements=[Request.draft_id])
        .returning(Request.id)
    )
    request_id = await session.scalar(stmt)
    if request_id is None:
        existing = await session.scalar(select(Request.id).where(Request.draft_id == new.draft_id))
        assert existing is not None
        return SavedRequest(existing, created=False)
    session.add(
        RequestEvent(
            request_id=request_id,
            at=new.created_at,
            event=Event.CREATED.value,
            actor=Actor.VILLAGER.value,
            user_id=new.villager_id,
            body=new.body,
            photos=[list(p) for p in new.photos],
        )
    )
    await session.flush()
    return SavedRequest(request_id, created=True)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class RequestView:
    id: int
    villager_id: int
    village_id: int
    village_name: str
    station_id: int
    officer_id: int | None
    officer_name: str | None
    officer_badge: str | None
    supervisor_id: int | None
    supervisor_name: str | None
    category: str
    body: str
    latitude: float | None
    longitude: float | None
    anonymous: bool
    status: RequestStatus
    department: str | None
    rating: int | None
    due_at: datetime | None
    due_clock: str | None
    created_at: datetime
    # The villager as the officer may see them: empty when anonymous.
    villager_name: str = ""
    villager_phone: str | None = None
    photos: tuple[tuple[str, str], ...] = ()

    @property
    def ref(self) -> str:
        return reference(self.id)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


def _select_views() -> Select[Any]:
    handler = aliased(Supervisor)
    photos = (
        select(RequestEvent.photos)
        .where(RequestEvent.request_id == Request.id, RequestEvent.event == Event.CREATED.value)
        .limit(1)
        .scalar_subquery()
    )
    return (
        select(
            Request,
            Village.name,
            Village.station_id,
            Officer.name,
            Officer.badge,
            handler.name,
            User.first_name,
            User.last_name,
            User.phone,
            photos,
        )
        .join(Village, Village.id == Request.village_id)
        .join(User, User.id == Request.villager_id)
        .outerjoin(Officer, Officer.id == Request.officer_id)
        .outerjoin(handler, handler.id == Request.supervisor_id)
        # record_event changes rows with UPDATE statements: read them afresh, never from
        # objects an earlier read left in the session.
        .execution_options(populate_existing=True)
    )


def _view(row: Any) -> RequestView:
    req, village, station_id, officer, badge, supervisor, first, last, phone, photos = row
    name = " ".join(part for part in (first, last) if part)
    return RequestView(
        id=req.id,
        villager_id=req.villager_id,
        village_id=req.village_id,
        village_name=village,
        station_id=station_id,
        officer_id=req.officer_id,
        officer_name=officer,
        officer_badge=badge,
        supervisor_id=req.supervisor_id,
        supervisor_name=supervisor,
        category=req.category,
        body=req.body,
        latitude=req.latitude,
        longitude=req.longitude,
        anonymous=req.anonymous,
        status=RequestStatus(req.status),
        department=req.department,
        rating=req.rating,
        due_at=req.due_at,
        due_clock=req.due_clock,
        created_at=req.created_at,
        villager_name="" if req.anonymous else name,
        villager_phone=None if req.anonymous else phone,
        photos=tuple((p[0], p[1]) for p in photos or ()),
    )


async def get_request(session: AsyncSession, request_id: int) -> RequestView | None:
    if not 0 < request_id < 2**31:
        return None  # ids come from buttons, which can be forged
    row = (await session.execute(_select_views().where(Request.id == request_id))).first()
    return None if row is None else _view(row)


async def requests_by_ids(session: AsyncSession, ids: Sequence[int]) -> list[RequestView]:
    """The requests with these ids, in no particular order."""
    if not ids:
        return []
    rows = await session.execute(_select_views().where(Request.id.in_(list(ids))))
    return [_view(r) for r in rows]


async def open_for_handler(
    session: AsyncSession,
    *,
    officer_id: int | None = None,
    supervisor_id: int | None = None,
) -> list[RequestView]:
    """Open requests routed to an officer (or a supervisor), the most urgent deadline
    first; those with no pending deadline (at a department past due counts as pending)
    last, oldest first."""
    if (officer_id is None) == (supervisor_id is None):
        raise ValueError("give exactly one of officer_id and supervisor_id")
    whose = (
        Request.officer_id == officer_id
        if officer_id is not None
        else Request.supervisor_id == supervisor_id
    )
    rows = await session.execute(
        _select_views()
        .where(whose, Request.status.in_(OPEN_VALUES))
        .order_by(Request.due_at.asc().nulls_last(), Request.id)
    )
    return [_view(r) for r in rows]


async def villager_requests(
    session: AsyncSession, *, villager_id: int, limit: int, offset: int = 0
) -> tuple[list[RequestView], int]:
    """A villager's requests, open ones first, newest first within each; and the total."""
    total = int(
        await session.scalar(
            select(func.count()).select_from(Request).where(Request.villager_id == villager_id)
        )
        or 0
    )
    rows = await session.execute(
        _select_views()
        .where(Request.villager_id == villager_id)
        .order_by(Request.status.in_(OPEN_VALUES).desc(), Request.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [_view(r) for r in rows], total


@dataclass(frozen=True)
class EventView:
    id: int
    at: datetime
    event: Event
    actor: Actor
    user_id: int | None
    officer_name: str | None
    supervisor_name: str | None
    body: str | None
    photos: tuple[tuple[str, str], ...]
    department: str | None
    rating: int | None

    @property
    def entry(self) -> HistoryEntry:
        return HistoryEntry(self.at, self.event, self.actor)


async def histories(
    session: AsyncSession, request_ids: Iterable[int]
) -> dict[int, list[EventView]]:
    """The history of each request, oldest first."""
    ids = list(request_ids)
    result: dict[int, list[EventView]] = {i: [] for i in ids}
    if not ids:
        return result
    handler = aliased(Supervisor)
    rows = await session.execute(
        select(RequestEvent, Officer.name, handler.name)
        .outerjoin(Officer, Officer.id == RequestEvent.officer_id)
        .outerjoin(handler, handler.id == RequestEvent.supervisor_id)
        .where(RequestEvent.request_id.in_(ids))
        .order_by(RequestEvent.request_id, RequestEvent.id)
    )
    for ev, officer, supervisor in rows:
        result[ev.request_id].append(
            EventView(
                id=ev.id,
                at=ev.at,
                event=Event(ev.event),
                actor=Actor(ev.actor),
                user_id=ev.user_id,
                officer_name=officer,
                supervisor_name=supervisor,
                body=ev.body,
                photos=tuple((p[0], p[1]) for p in ev.photos or ()),
                department=ev.department,
                rating=ev.rating,
            )
        )
    return result


async def history(session: AsyncSession, request_id: int) -> list[EventView]:
    return (await histories(session, [request_id]))[request_id]


def deadlines_of(
    events: Sequence[EventView], now: datetime, config: DeadlineConfig = DEFAULT_DEADLINES
) -> DeadlineState:
    return deadline_state(timeline_of([e.entry for e in events]), now, config)


# --------------------------------------------------------------------------- rights


async def actor_for(session: AsyncSession, request: RequestView, user: User) -> Actor | None:
    """What the user is to this request: its villager, the officer it is routed to, or a
    supervisor whose scope holds its village (who may step in); None: nothing."""
    if user.role == "villager" and request.villager_id == user.id:
        return Actor.VILLAGER
    if user.officer_id is not None and user.officer_id == request.officer_id:
        return Actor.OFFICER
    if user.supervisor_id is not None:
        if user.supervisor_id == request.supervisor_id:
            return Actor.SUPERVISOR
        supervisor = await session.get(Supervisor, user.supervisor_id)
        if supervisor is not None and supervisor.county_wide:
            return Actor.SUPERVISOR
        in_scope = await session.scalar(
            select(literal(True)).where(
                SupervisorStation.supervisor_id == user.supervisor_id,
                SupervisorStation.station_id == request.station_id,
            )
        )
        if in_scope:
            return Actor.SUPERVISOR
    return None


# --------------------------------------------------------------------------- changing


@dataclass(frozen=True)
class Recorded:
    event_id: int
    at: datetime
    before: RequestStatus
    after: RequestStatus


async def record_event(
    session: AsyncSession,
    *,
    request_id: int,
    event: Event,
    actor: Actor,
    now: datetime,
    user_id: int | None = None,
    officer_id: int | None = None,
    supervisor_id: int | None = None,
    body: str | None = None,
    photos: Photos = (),
    department: str | None = None,
    rating: int | None = None,
    config: DeadlineConfig = DEFAULT_DEADLINES,
) -> Recorded:
    """Append an event and update what the history determines.

    Raises core.requests.TransitionError when the event may not happen now (the request
    was meanwhile resolved, a second rating, …) and LookupError for an unknown request.
    The request row is locked for the rest of the transaction, so two people acting on
    one request at once are applied one after the other. Times never go backwards: an
    event is dated no earlier than the one before it (clocks of two processes may differ).
    """
    current = await session.scalar(
        select(Request.status).where(Request.id == request_id).with_for_update()
    )
    if current is None:
        raise LookupError(f"no request {request_id}")
    entries = [
        HistoryEntry(at, Event(ev), Actor(who))
        for at, ev, who in await session.execute(
            select(RequestEvent.at, RequestEvent.event, RequestEvent.actor)
            .where(RequestEvent.request_id == request_id)
            .order_by(RequestEvent.id)
        )
    ]
    at = max(now, entries[-1].at) if entries else now
    history = [*entries, HistoryEntry(at, Event(event), Actor(actor))]
    derived = _derived(history, at, config)  # raises TransitionError
    values: dict[str, Any] = {**derived, "updated_at": at}
    if event is Event.FORWARDED:
        values["department"] = department
    if event is Event.RATED:
        values["rating"] = rating
    await session.execute(
        update(Request)
        .where(Request.id == request_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    row = RequestEvent(
        request_id=request_id,
        at=at,
        event=Event(event).value,
        actor=Actor(actor).value,
        user_id=user_id,
        officer_id=officer_id,
        supervisor_id=supervisor_id,
        body=body,
        photos=[list(p) for p in photos],
        department=department,
        rating=rating,
    )
    session.add(row)
    await session.flush()
    return Recorded(row.id, at, RequestStatus(current), RequestStatus(derived["status"]))


# --------------------------------------------------------------------------- reassigning


@dataclass(frozen=True)
class Moved:
    """An open request that changed hands because the directory changed."""

    request_id: int
    villager_id: int
    village_name: str
    old_officer_id: int | None
    old_supervisor_id: int | None
    new: Routed


@dataclass
class Rerouting:
    moved: list[Moved] = field(default_factory=list)
    stranded: list[int] = field(default_factory=list)  # nobody left to route them to


async def reroute_open_requests(
    session: AsyncSession,
    *,
    village_ids: Iterable[int],
    now: datetime,
    config: DeadlineConfig = DEFAULT_DEADLINES,
) -> Rerouting:
    """Move the open requests of these villages to whoever their route leads to now (after
    an import changed the villages' officers), each with a `reassigned` event."""
    result = Rerouting()
    ids = sorted(set(village_ids))
    if not ids:
        return result
    rows = (
        await session.execute(
            select(
                Request.id,
                Request.village_id,
                Request.villager_id,
                Request.officer_id,
                Request.supervisor_id,
                Village.name,
            )
            .join(Village, Village.id == Request.village_id)
            .where(Request.village_id.in_(ids), Request.status.in_(OPEN_VALUES))
            .order_by(Request.id)
        )
    ).all()
    routes: dict[int, Route] = {}
    for request_id, village_id, villager_id, officer_id, supervisor_id, village_name in rows:
        if village_id not in routes:
            routes[village_id] = await route_for_village(session, village_id)
        new = routes[village_id]
        if not isinstance(new, Routed):
            result.stranded.append(request_id)
            continue
        columns = _handler_columns(new)
        if (columns["officer_id"], columns["supervisor_id"]) == (officer_id, supervisor_id):
            continue
        await record_event(
            session,
            request_id=request_id,
            event=Event.REASSIGNED,
            actor=Actor.SYSTEM,
            now=now,
            config=config,
            officer_id=columns["officer_id"],
            supervisor_id=columns["supervisor_id"],
        )
        await session.execute(
            update(Request)
            .where(Request.id == request_id)
            .values(**columns)
            .execution_options(synchronize_session=False)
        )
        result.moved.append(
            Moved(request_id, villager_id, village_name, officer_id, supervisor_id, new)
        )
    return result


async def village_ids_by_code(session: AsyncSession, codes: Iterable[str]) -> list[int]:
    return list(await session.scalars(select(Village.id).where(Village.code.in_(list(codes)))))


# --------------------------------------------------------------------------- recipients


async def officer_account(session: AsyncSession, officer_id: int) -> int | None:
    """The Telegram account bound to an officer, if any."""
    return await session.scalar(
        select(User.id).where(User.officer_id == officer_id, User.role == "officer")
    )


async def supervisor_accounts(session: AsyncSession, supervisor_ids: Iterable[int]) -> list[int]:
    ids = list(supervisor_ids)
    if not ids:
        return []
    return list(
        await session.scalars(
            select(User.id)
            .where(User.supervisor_id.in_(ids), User.role == "supervisor")
            .order_by(User.id)
        )
    )


async def station_supervisor_accounts(session: AsyncSession, station_id: int) -> list[int]:
    """Accounts of the supervisors who see a station (its own, else the county-wide ones)."""
    own = list(
        await session.scalars(
            select(SupervisorStation.supervisor_id).where(
                SupervisorStation.station_id == station_id
            )
        )
    )
    if not own:
        own = list(await session.scalars(select(Supervisor.id).where(Supervisor.county_wide)))
    return await supervisor_accounts(session, own)


async def handler_accounts(session: AsyncSession, request: RequestView) -> list[int]:
    """Who hears about the villager's side of a request: the officer's account, or the
    supervisor's; when the officer has not joined the bot yet, the station's supervisors."""
    if request.officer_id is not None:
        account = await officer_account(session, request.officer_id)
        if account is not None:
            return [account]
        return await station_supervisor_accounts(session, request.station_id)
    assert request.supervisor_id is not None
    return await supervisor_accounts(session, [request.supervisor_id])


# --------------------------------------------------------------------------- villager's side


async def request_for_draft(
    session: AsyncSession, *, draft_id: str, villager_id: int
) -> int | None:
    """The request a villager's draft was stored as, if it was submitted already."""
    return await session.scalar(
        select(Request.id).where(Request.draft_id == draft_id, Request.villager_id == villager_id)
    )


async def add_event_photos(
    session: AsyncSession, *, event_id: int, photos: Photos, body: str | None = None
) -> None:
    """More photos for a message already recorded: Telegram delivers an album one photo per
    update, and its photos belong to the one message they were sent as. A caption fills the
    event's text when it had none."""
    event = await session.get(RequestEvent, event_id, with_for_update=True)
    if event is None:
        raise LookupError(f"no request event {event_id}")
    event.photos = [*event.photos, *([p[0], p[1]] for p in photos)]
    if body and not event.body:
        event.body = body
    await session.flush()
