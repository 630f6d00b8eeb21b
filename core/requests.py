"""Villagers' requests: their lifecycle, deadlines, routing and abuse limits.

A villager sends a request (群众诉求) to the officer of their village; the programme promises
an answer within 3 days (群众说的事…在三天之内作出回复), and a matter outside police duty is
forwarded to the responsible department and followed up (综治联动). Everything here is a pure
function of its arguments: storage keeps the history, the bot and the scheduler call these
rules, and the codes below are stored, logged and translated (never shown raw).

Lifecycle (see TRANSITIONS for the whole table):

    new ─► acknowledged ─► answered ─► resolved ─► (rated)
     │          │              │           │
     │          └──────┬───────┘           └─ reopened (villager: "not solved") ─► acknowledged
     ├─────────────────┴─► forwarded ─► returned ─► acknowledged
     │                         └─► resolved
     └──── any of new/acknowledged/answered ─► closed (not a police matter, with an explanation)

A first reply implies the acknowledgement (new → answered), and any open request may be
resolved directly; only a request a department holds cannot be closed as not a police matter.
"Reopened" is an event, not a status: the officer already knows the request, so it goes back
to `acknowledged` and gets a fresh answer clock from the moment it was reopened.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import pairwise
from types import MappingProxyType
from typing import Final

from core.roles import AssignmentKind

# --------------------------------------------------------------------------- vocabulary


class RequestCategory(StrEnum):
    DISPUTE = "dispute"
    SAFETY = "safety"  # a safety concern or a tip
    REGISTRATION = "registration"  # household registration, certificates
    HARDSHIP = "hardship"  # help for a hardship household
    OTHER = "other"


class RequestStatus(StrEnum):
    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    ANSWERED = "answered"
    FORWARDED = "forwarded"  # at a department outside the police
    RESOLVED = "resolved"
    CLOSED = "closed"  # not a police matter, closed with an explanation


class Event(StrEnum):
    """What happened to a request; one history entry each (who, what, when)."""

    CREATED = "created"
    ACKNOWLEDGED = "acknowledged"
    REPLIED = "replied"  # a message from the officer to the villager
    VILLAGER_MESSAGE = "villager_message"
    ANSWERED = "answered"  # answered outside the chat (in person, by phone), no message
    FORWARDED = "forwarded"  # handed to a department
    DEPARTMENT_UPDATE = "department_update"  # progress from the department; still there
    RETURNED = "returned"  # the department reported back or handed it back
    RESOLVED = "resolved"
    CLOSED_NOT_POLICE = "closed_not_police"
    RATED = "rated"
    REOPENED = "reopened"  # the villager said "not solved"
    REASSIGNED = "reassigned"  # the directory changed who looks after the village
    ESCALATED = "escalated"  # a deadline passed and the supervisor was told


class Actor(StrEnum):
    VILLAGER = "villager"
    OFFICER = "officer"  # the officer the request is routed to; the caller checks which
    SUPERVISOR = "supervisor"
    SYSTEM = "system"  # the scheduler, the directory import


class Refusal(StrEnum):
    """Why an event was refused: the code a TransitionError carries."""

    WRONG_ACTOR = "wrong_actor"
    NOT_CREATED = "not_created"  # a history that does not start with `created`
    ALREADY_CREATED = "already_created"
    FINISHED = "finished"  # resolved or closed: nothing more happens but rating / reopening
    NOT_RESOLVED = "not_resolved"  # rating or "not solved" before it is resolved
    ALREADY_RATED = "already_rated"  # a second rating, or "not solved" after rating
    ALREADY_ACKNOWLEDGED = "already_acknowledged"
    ALREADY_ANSWERED = "already_answered"
    ALREADY_FORWARDED = "already_forwarded"
    NOT_FORWARDED = "not_forwarded"  # a department update or return for a request not there
    AT_DEPARTMENT = "at_department"  # closing a request the department still has


class TransitionError(Exception):
    """An event that may not happen to a request in its status, or not by this actor."""

    def __init__(
        self,
        code: Refusal,
        *,
        status: RequestStatus | None = None,
        event: Event | None = None,
        actor: Actor | None = None,
    ) -> None:
        self.code = code
        self.status = status
        self.event = event
        self.actor = actor
        super().__init__(f"{code}: {event} by {actor} in {status}")


OPEN_STATUSES: Final[frozenset[RequestStatus]] = frozenset(
    {
        RequestStatus.NEW,
        RequestStatus.ACKNOWLEDGED,
        RequestStatus.ANSWERED,
        RequestStatus.FORWARDED,
    }
)
FINISHED_STATUSES: Final[frozenset[RequestStatus]] = frozenset(
    {RequestStatus.RESOLVED, RequestStatus.CLOSED}
)

# Events that carry a text of their own (the bot refuses them empty): a closure as not a
# police matter must say why, so the villager knows where to go instead.
NEEDS_TEXT: Final[frozenset[Event]] = frozenset(
    {Event.REPLIED, Event.VILLAGER_MESSAGE, Event.CLOSED_NOT_POLICE}
)
# Events that name a department from the configured list (settings DEPARTMENTS).
NEEDS_DEPARTMENT: Final[frozenset[Event]] = frozenset({Event.FORWARDED})

# --------------------------------------------------------------------------- transitions

_STAFF: Final = frozenset({Actor.OFFICER, Actor.SUPERVISOR})

# Who may cause each event. The supervisor can do whatever the officer can: a request is
# routed to a supervisor when the village has no officer, and a supervisor may step in.
ACTORS: Final[Mapping[Event, frozenset[Actor]]] = MappingProxyType(
    {
        Event.CREATED: frozenset({Actor.VILLAGER}),
        Event.ACKNOWLEDGED: _STAFF,
        Event.REPLIED: _STAFF,
        Event.VILLAGER_MESSAGE: frozenset({Actor.VILLAGER}),
        Event.ANSWERED: _STAFF,
        Event.FORWARDED: _STAFF,
        Event.DEPARTMENT_UPDATE: _STAFF | {Actor.SYSTEM},
        Event.RETURNED: _STAFF | {Actor.SYSTEM},
        Event.RESOLVED: _STAFF,
        Event.CLOSED_NOT_POLICE: _STAFF,
        Event.RATED: frozenset({Actor.VILLAGER}),
        Event.REOPENED: frozenset({Actor.VILLAGER}),
        Event.REASSIGNED: frozenset({Actor.SUPERVISOR, Actor.SYSTEM}),
        Event.ESCALATED: frozenset({Actor.SYSTEM}),
    }
)

_S = RequestStatus
_E = Event

# Events that never change an open request's status: they are history, not progress.
_NOTES: Final = (_E.VILLAGER_MESSAGE, _E.REASSIGNED, _E.ESCALATED)


def _table() -> dict[tuple[RequestStatus, Event], RequestStatus]:
    table = {
        # A first reply (or an answer given outside the chat) is the answer the 3-day rule
        # asks for, and implies the acknowledgement: new → answered is allowed.
        (_S.NEW, _E.ACKNOWLEDGED): _S.ACKNOWLEDGED,
        (_S.NEW, _E.REPLIED): _S.ANSWERED,
        (_S.NEW, _E.ANSWERED): _S.ANSWERED,
        (_S.NEW, _E.FORWARDED): _S.FORWARDED,
        (_S.NEW, _E.RESOLVED): _S.RESOLVED,
        (_S.NEW, _E.CLOSED_NOT_POLICE): _S.CLOSED,
        (_S.ACKNOWLEDGED, _E.REPLIED): _S.ANSWERED,
        (_S.ACKNOWLEDGED, _E.ANSWERED): _S.ANSWERED,
        (_S.ACKNOWLEDGED, _E.FORWARDED): _S.FORWARDED,
        (_S.ACKNOWLEDGED, _E.RESOLVED): _S.RESOLVED,
        (_S.ACKNOWLEDGED, _E.CLOSED_NOT_POLICE): _S.CLOSED,
        (_S.ANSWERED, _E.REPLIED): _S.ANSWERED,
        (_S.ANSWERED, _E.FORWARDED): _S.FORWARDED,
        (_S.ANSWERED, _E.RESOLVED): _S.RESOLVED,
        (_S.ANSWERED, _E.CLOSED_NOT_POLICE): _S.CLOSED,
        # At the department the officer may still talk to the villager; the request comes
        # back to the officer (returned), or is resolved once the department reports back.
        # It cannot be closed as not a police matter while a department holds it.
        (_S.FORWARDED, _E.REPLIED): _S.FORWARDED,
        (_S.FORWARDED, _E.ANSWERED): _S.FORWARDED,
        (_S.FORWARDED, _E.DEPARTMENT_UPDATE): _S.FORWARDED,
        (_S.FORWARDED, _E.RETURNED): _S.ACKNOWLEDGED,
        (_S.FORWARDED, _E.RESOLVED): _S.RESOLVED,
        # Resolved and closed are terminal, except that the villager rates a resolved
        # request or says it is not solved, which reopens it.
        (_S.RESOLVED, _E.RATED): _S.RESOLVED,
        (_S.RESOLVED, _E.REOPENED): _S.ACKNOWLEDGED,
    }
    for status in OPEN_STATUSES:
        for event in _NOTES:
            table[(status, event)] = status
    return table


TRANSITIONS: Final[Mapping[tuple[RequestStatus, Event], RequestStatus]] = MappingProxyType(_table())

# Why an event missing from TRANSITIONS is refused in an open status.
_OPEN_REFUSALS: Final[Mapping[Event, Refusal]] = MappingProxyType(
    {
        Event.CREATED: Refusal.ALREADY_CREATED,
        Event.ACKNOWLEDGED: Refusal.ALREADY_ACKNOWLEDGED,
        Event.ANSWERED: Refusal.ALREADY_ANSWERED,
        Event.FORWARDED: Refusal.ALREADY_FORWARDED,
        Event.CLOSED_NOT_POLICE: Refusal.AT_DEPARTMENT,
        Event.DEPARTMENT_UPDATE: Refusal.NOT_FORWARDED,
        Event.RETURNED: Refusal.NOT_FORWARDED,
        Event.RATED: Refusal.NOT_RESOLVED,
        Event.REOPENED: Refusal.NOT_RESOLVED,
    }
)


def _refusal(status: RequestStatus, event: Event) -> Refusal:
    if event is Event.CREATED:
        return Refusal.ALREADY_CREATED
    if status in FINISHED_STATUSES:
        if event in (Event.RATED, Event.REOPENED):
            return Refusal.NOT_RESOLVED  # closed as not a police matter: nothing to rate
        return Refusal.FINISHED
    return _OPEN_REFUSALS[event]


def create(*, actor: Actor) -> RequestStatus:
    """The status of a request just created; only a villager creates one."""
    if Actor(actor) not in ACTORS[Event.CREATED]:
        raise TransitionError(Refusal.WRONG_ACTOR, event=Event.CREATED, actor=actor)
    return RequestStatus.NEW


def apply(status: RequestStatus, event: Event, *, actor: Actor) -> RequestStatus:
    """The status after `event`, or TransitionError with the reason it may not happen.

    The actor is checked before the status, so a forged button pressed by the wrong kind of
    user learns nothing about the request. `created` is never applied to an existing request
    (see create). Whether a second rating is refused depends on the history, not on the
    status: replay checks it.
    """
    status, event, actor = RequestStatus(status), Event(event), Actor(actor)
    if actor not in ACTORS[event]:
        raise TransitionError(Refusal.WRONG_ACTOR, status=status, event=event, actor=actor)
    target = TRANSITIONS.get((status, event))
    if target is None:
        raise TransitionError(_refusal(status, event), status=status, event=event, actor=actor)
    return target


# --------------------------------------------------------------------------- history


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a request's history: when, what, and who did it."""

    at: datetime
    event: Event
    actor: Actor


def _check_order(history: Sequence[HistoryEntry]) -> None:
    for before, after in pairwise(history):
        if after.at < before.at:
            raise ValueError(f"history goes back in time: {after.event} at {after.at}")


def replay(history: Sequence[HistoryEntry]) -> RequestStatus:
    """The status a history leads to; TransitionError at the first event that may not happen.

    On top of apply: the history starts with `created`, its times never go backwards
    (ValueError), and a resolution is rated at most once and not reopened once rated (the
    villager rates it *or* says it is not solved).
    """
    if not history or history[0].event is not Event.CREATED:
        raise TransitionError(Refusal.NOT_CREATED)
    _check_order(history)
    status = create(actor=history[0].actor)
    rated = False
    for entry in history[1:]:
        new = apply(status, entry.event, actor=entry.actor)
        if entry.event in (Event.RATED, Event.REOPENED) and rated:
            raise TransitionError(
                Refusal.ALREADY_RATED, status=status, event=entry.event, actor=entry.actor
            )
        # Once rated, the resolution takes neither a second rating nor a reopening, so
        # the flag never needs resetting: nothing else happens to that request.
        rated = rated or entry.event is Event.RATED
        status = new
    return status


# --------------------------------------------------------------------------- deadlines


class Clock(StrEnum):
    ACK = "ack"  # the officer acknowledges
    ANSWER = "answer"  # the officer answers (the 3-day rule)
    DEPARTMENT = "department"  # the department reports back


CLOCK_ORDER: Final[tuple[Clock, ...]] = tuple(Clock)


class ClockStatus(StrEnum):
    RUNNING = "running"  # not done, not yet due
    PAUSED = "paused"  # the answer clock while a department has the request
    OVERDUE = "overdue"  # not done and past due
    MET = "met"  # done at or before the due time
    MISSED = "missed"  # done after the due time


@dataclass(frozen=True)
class DeadlineConfig:
    ack: timedelta = timedelta(hours=24)
    answer: timedelta = timedelta(days=3)
    department: timedelta = timedelta(days=7)

    def __post_init__(self) -> None:
        for name in ("ack", "answer", "department"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value <= timedelta(0):
                raise ValueError(f"DeadlineConfig.{name} must be a positive timedelta")


DEFAULT_DEADLINES: Final = DeadlineConfig()


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be time-zone aware, got {value!r}")


@dataclass(frozen=True)
class DepartmentSpell:
    """A stay at a department: from forwarding until it reported back (None: still there)."""

    forwarded_at: datetime
    returned_at: datetime | None = None

    def __post_init__(self) -> None:
        _aware("forwarded_at", self.forwarded_at)
        _aware("returned_at", self.returned_at)
        if self.returned_at is not None and self.returned_at < self.forwarded_at:
            raise ValueError("a department spell ends before it starts")


@dataclass(frozen=True)
class Timeline:
    """The times the deadlines depend on; timeline_of derives it from a history.

    - acknowledged_at: the first acknowledgement, explicit or implied by any officer action
      (a reply, an answer, a forward, a resolution, a closure).
    - answered_at: the first answer (reply or answer outside the chat) since the answer
      clock last started: at creation, or at `reopened_at` if the request was reopened.
    - reopened_at: the last time the villager said "not solved".
    - finished_at: when it was resolved or closed (None while open, and after a reopen).
    - department: every stay at a department, in order; only the last may be open.

    All times are time-zone aware; they may be in any zone (deadlines are elapsed time).
    """

    created_at: datetime
    acknowledged_at: datetime | None = None
    answered_at: datetime | None = None
    reopened_at: datetime | None = None
    finished_at: datetime | None = None
    department: tuple[DepartmentSpell, ...] = ()

    def __post_init__(self) -> None:
        for name in ("created_at", "acknowledged_at", "answered_at", "reopened_at", "finished_at"):
            _aware(name, getattr(self, name))
        stamps = [self.acknowledged_at, self.answered_at, self.reopened_at, self.finished_at]
        stamps += [spell.forwarded_at for spell in self.department]
        if any(stamp is not None and stamp < self.created_at for stamp in stamps):
            raise ValueError("a request's timeline has a time before it was created")
        if self.reopened_at is not None:
            for name in ("answered_at", "finished_at"):
                value = getattr(self, name)
                if value is not None and value < self.reopened_at:
                    raise ValueError(f"{name} is before the reopening it should follow")
        for before, after in pairwise(self.department):
            if before.returned_at is None or after.forwarded_at < before.returned_at:
                raise ValueError("department spells overlap or are out of order")


@dataclass(frozen=True)
class ClockState:
    """One deadline as of `now`.

    due_at is None only while the clock is paused (the due time depends on when the
    department hands the request back). time_left is due_at - now while the clock runs
    (negative once overdue), the budget still unspent while paused, and None once done.
    """

    clock: Clock
    status: ClockStatus
    started_at: datetime
    due_at: datetime | None
    done_at: datetime | None
    time_left: timedelta | None

    @property
    def met(self) -> bool:
        return self.status is ClockStatus.MET

    @property
    def overdue(self) -> bool:
        return self.status is ClockStatus.OVERDUE

    @property
    def is_done(self) -> bool:
        return self.status in (ClockStatus.MET, ClockStatus.MISSED)


@dataclass(frozen=True)
class DeadlineState:
    ack: ClockState
    answer: ClockState
    department: ClockState | None  # None: never forwarded

    def clocks(self) -> Iterator[ClockState]:
        yield self.ack
        yield self.answer
        if self.department is not None:
            yield self.department

    @property
    def overdue(self) -> tuple[Clock, ...]:
        """The clocks past due and not done: what the scheduler escalates."""
        return tuple(state.clock for state in self.clocks() if state.overdue)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _first(*values: datetime | None) -> datetime | None:
    present = [_utc(v) for v in values if v is not None]
    return min(present) if present else None


def _due(
    start: datetime,
    budget: timedelta,
    spells: Sequence[DepartmentSpell],
    until: datetime | None,
) -> tuple[datetime | None, timedelta]:
    """When a clock of `budget` started at `start` runs out, not counting the spells.

    Only spells after `start` and, for a clock already done, before `until` pause it. A
    spell that starts once the budget has run out changes nothing: forwarding an overdue
    request does not rescue the deadline. Returns (due, unused budget); due is None when
    the clock is paused in an open spell, with the budget it has left.
    """
    cursor, remaining = start, budget
    for spell in spells:
        begin = max(_utc(spell.forwarded_at), start)
        end = None if spell.returned_at is None else _utc(spell.returned_at)
        if until is not None:
            if begin >= until:
                break
            end = until if end is None else min(end, until)
        if end is not None and end <= begin:
            continue
        if cursor + remaining <= begin:
            break
        remaining -= begin - cursor
        if end is None:
            return None, remaining
        cursor = end
    return cursor + remaining, remaining


def _clock(
    clock: Clock,
    start: datetime,
    budget: timedelta,
    done_at: datetime | None,
    now: datetime,
    spells: Sequence[DepartmentSpell] = (),
) -> ClockState:
    due, remaining = _due(start, budget, spells, done_at)
    if due is None:  # only a clock not done can be paused: _due clips spells at done_at
        return ClockState(clock, ClockStatus.PAUSED, start, None, None, remaining)
    if done_at is not None:
        status = ClockStatus.MET if done_at <= due else ClockStatus.MISSED
        return ClockState(clock, status, start, due, done_at, None)
    status = ClockStatus.OVERDUE if now > due else ClockStatus.RUNNING
    return ClockState(clock, status, start, due, None, due - now)


def deadline_state(
    timeline: Timeline, now: datetime, config: DeadlineConfig = DEFAULT_DEADLINES
) -> DeadlineState:
    """Every deadline of a request as of `now` (aware), computed from its timeline.

    - ack: `config.ack` from creation; met by the first officer action of any kind.
    - answer: `config.answer` from creation, or from the last reopening; met by the first
      answer since then, or by the resolution or closure (which tell the villager the
      outcome). Time spent at a department does not count: the clock pauses when the
      request is forwarded and resumes when it comes back.
    - department: `config.department` from the last forwarding; met when the department
      reports back (returned) or the request is resolved.

    A deadline is met when done at or before its due time, and overdue only once `now` is
    strictly after it. Durations are elapsed time (24 h across a daylight-saving change is
    24 h), and every datetime returned is in UTC.
    """
    _aware("now", now)
    now = _utc(now)
    created = _utc(timeline.created_at)
    finished = _first(timeline.finished_at)
    spells = timeline.department
    ack = _clock(
        Clock.ACK,
        created,
        config.ack,
        _first(
            timeline.acknowledged_at,
            timeline.answered_at,
            timeline.finished_at,
            spells[0].forwarded_at if spells else None,
        ),
        now,
    )
    answer_start = _first(timeline.reopened_at) or created
    answer = _clock(
        Clock.ANSWER,
        answer_start,
        config.answer,
        _first(timeline.answered_at, timeline.finished_at),
        now,
        spells,
    )
    department = None
    if spells:
        last = spells[-1]
        back = last.returned_at
        if back is None and finished is not None and finished >= _utc(last.forwarded_at):
            back = finished
        department = _clock(
            Clock.DEPARTMENT,
            _utc(last.forwarded_at),
            config.department,
            _first(back),
            now,
        )
    return DeadlineState(ack=ack, answer=answer, department=department)


def most_urgent(state: DeadlineState) -> tuple[Clock, datetime] | None:
    """The clock still to be met that falls due first, with its due time; None when none.

    For the inbox, "oldest deadline first": an overdue clock sorts before a running one
    because its due time is earlier. A paused clock has no due time and is left out (the
    department clock stands for the request meanwhile). Ties go to the earlier clock in
    CLOCK_ORDER.
    """
    pending = [
        (s.due_at, CLOCK_ORDER.index(s.clock), s.clock)
        for s in state.clocks()
        if s.due_at is not None and s.status in (ClockStatus.RUNNING, ClockStatus.OVERDUE)
    ]
    if not pending:
        return None
    due, _, clock = min(pending)
    return clock, due


def was_met(state: DeadlineState) -> dict[Clock, bool | None]:
    """Per clock, for the export: True met, False missed or overdue, None not yet known.

    None also for the department clock of a request never forwarded. After a reopening
    the answer clock is the one since the reopening (an earlier miss shows in the history
    as an escalation).
    """
    result: dict[Clock, bool | None] = dict.fromkeys(CLOCK_ORDER)
    for s in state.clocks():
        if s.status is ClockStatus.MET:
            result[s.clock] = True
        elif s.status in (ClockStatus.MISSED, ClockStatus.OVERDUE):
            result[s.clock] = False
    return result


def timeline_of(history: Sequence[HistoryEntry]) -> Timeline:
    """The timeline of a history, which must replay (see replay) without error."""
    replay(history)
    created = history[0].at
    acknowledged: datetime | None = None
    answered: datetime | None = None
    reopened: datetime | None = None
    finished: datetime | None = None
    spells: list[DepartmentSpell] = []
    implies_ack = {
        Event.ACKNOWLEDGED,
        Event.REPLIED,
        Event.ANSWERED,
        Event.FORWARDED,
        Event.RESOLVED,
        Event.CLOSED_NOT_POLICE,
    }
    for entry in history[1:]:
        event, at = entry.event, entry.at
        if event in implies_ack and acknowledged is None:
            acknowledged = at
        if event in (Event.REPLIED, Event.ANSWERED) and answered is None:
            answered = at
        if event is Event.FORWARDED:
            spells.append(DepartmentSpell(at))
        elif event in (Event.RETURNED, Event.RESOLVED) and spells and not spells[-1].returned_at:
            spells[-1] = DepartmentSpell(spells[-1].forwarded_at, at)
        if event in (Event.RESOLVED, Event.CLOSED_NOT_POLICE):
            finished = at
        elif event is Event.REOPENED:
            reopened, answered, finished = at, None, None
    return Timeline(created, acknowledged, answered, reopened, finished, tuple(spells))


# --------------------------------------------------------------------------- routing


class RouteKind(StrEnum):
    OFFICER = "officer"
    SUPERVISOR = "supervisor"
    UNROUTED = "unrouted"


@dataclass(frozen=True)
class Routed:
    """Who a new request goes to: an officer (resident or contact) or a supervisor."""

    kind: RouteKind
    recipient_id: int
    assignment: AssignmentKind | None  # for an officer: resident or contact

    def __post_init__(self) -> None:
        officer = self.kind is RouteKind.OFFICER
        if self.kind is RouteKind.UNROUTED or officer != (self.assignment is not None):
            raise ValueError(f"inconsistent route: {self.kind} with {self.assignment}")


@dataclass(frozen=True)
class Unrouted:
    """Nobody to send the request to: no officer for the village, no supervisor for its
    station. A separate type without a recipient, so the caller cannot read one by mistake
    and must decide (refuse the request with a code, and tell the county office)."""

    kind: RouteKind = RouteKind.UNROUTED


Route = Routed | Unrouted


def route(
    resident_officer_id: int | None,
    contact_officer_id: int | None,
    station_supervisor_ids: Sequence[int],
) -> Route:
    """The resident officer, else the contact officer, else one of the station's supervisors.

    Among several supervisors the lowest id is chosen, so the same request goes to the same
    person whatever order the caller's query returned them in.
    """
    if resident_officer_id is not None:
        return Routed(RouteKind.OFFICER, resident_officer_id, AssignmentKind.RESIDENT)
    if contact_officer_id is not None:
        return Routed(RouteKind.OFFICER, contact_officer_id, AssignmentKind.CONTACT)
    if station_supervisor_ids:
        return Routed(RouteKind.SUPERVISOR, min(station_supervisor_ids), None)
    return Unrouted()


# --------------------------------------------------------------------------- abuse limits

MESSAGE_WINDOW: Final = timedelta(seconds=60)


@dataclass(frozen=True)
class LimitConfig:
    max_open: int = 5
    messages_per_minute: int = 10

    def __post_init__(self) -> None:
        for name in ("max_open", "messages_per_minute"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LimitConfig.{name} must be a positive int, got {value!r}")


DEFAULT_LIMITS: Final = LimitConfig()


def may_open_request(open_count: int, config: LimitConfig = DEFAULT_LIMITS) -> bool:
    """Whether a villager with `open_count` open requests may open another."""
    return open_count < config.max_open


def _in_window(recent: Sequence[datetime], now: datetime) -> list[datetime]:
    return sorted(t for t in recent if t > now - MESSAGE_WINDOW)


def message_allowed(
    recent: Sequence[datetime], now: datetime, config: LimitConfig = DEFAULT_LIMITS
) -> bool:
    """Whether one more message may be accepted at `now`.

    `recent` holds the times of the villager's accepted messages (requests and messages
    alike); refused ones should not be recorded, or a flood would lock its sender out for
    good. The window is sliding and half-open: a message exactly 60 s old no longer counts.
    """
    return len(_in_window(recent, now)) < config.messages_per_minute


def next_message_at(
    recent: Sequence[datetime], now: datetime, config: LimitConfig = DEFAULT_LIMITS
) -> datetime:
    """The earliest time a message will be allowed: `now` if it is already."""
    window = _in_window(recent, now)
    excess = len(window) - config.messages_per_minute
    if excess < 0:
        return now
    return window[excess] + MESSAGE_WINDOW


# --------------------------------------------------------------------------- rating

RATING_MIN: Final = 1
RATING_MAX: Final = 5


def validate_rating(value: int | str) -> int:
    """The rating as an int in RATING_MIN..RATING_MAX; ValueError for anything else.

    Takes the int or the ASCII digits of callback data; bools, floats, signs, spaces and
    non-ASCII digits are refused, so forged data cannot slip through.
    """
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()):
            raise ValueError(f"not a rating: {value!r}")
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise ValueError(f"not a rating: {value!r}")
    if not RATING_MIN <= number <= RATING_MAX:
        raise ValueError(f"rating {number} is outside {RATING_MIN}..{RATING_MAX}")
    return number
