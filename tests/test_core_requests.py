"""Villagers' requests: transitions, history, deadlines, routing, abuse limits, rating."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.requests import (
    ACTORS,
    CLOCK_ORDER,
    DEFAULT_DEADLINES,
    FINISHED_STATUSES,
    MESSAGE_WINDOW,
    OPEN_STATUSES,
    TRANSITIONS,
    Actor,
    Clock,
    ClockStatus,
    DeadlineConfig,
    DeadlineState,
    DepartmentSpell,
    Event,
    HistoryEntry,
    LimitConfig,
    Refusal,
    RequestCategory,
    RequestStatus,
    Routed,
    RouteKind,
    Timeline,
    TransitionError,
    Unrouted,
    apply,
    create,
    deadline_state,
    may_open_request,
    message_allowed,
    most_urgent,
    next_message_at,
    replay,
    route,
    timeline_of,
    validate_rating,
    was_met,
)
from core.roles import AssignmentKind

S = RequestStatus
E = Event
V, OFF, SUP, SYS = Actor.VILLAGER, Actor.OFFICER, Actor.SUPERVISOR, Actor.SYSTEM
STAFF = frozenset({OFF, SUP})
EVERYONE = tuple(Actor)

# ----------------------------------------------------------------------------- codes


def test_codes_are_stable() -> None:
    assert [c.value for c in RequestCategory] == [
        "dispute",
        "safety",
        "registration",
        "hardship",
        "other",
    ]
    assert [s.value for s in RequestStatus] == [
        "new",
        "acknowledged",
        "answered",
        "forwarded",
        "resolved",
        "closed",
    ]
    assert [e.value for e in Event] == [
        "created",
        "acknowledged",
        "replied",
        "villager_message",
        "answered",
        "forwarded",
        "department_update",
        "returned",
        "resolved",
        "closed_not_police",
        "rated",
        "reopened",
        "reassigned",
        "escalated",
    ]
    assert [a.value for a in Actor] == ["villager", "officer", "supervisor", "system"]
    assert [c.value for c in CLOCK_ORDER] == ["ack", "answer", "department"]
    assert "reopened" not in {s.value for s in RequestStatus}


def test_open_and_finished_statuses_partition_the_statuses() -> None:
    assert {S.NEW, S.ACKNOWLEDGED, S.ANSWERED, S.FORWARDED} == OPEN_STATUSES
    assert {S.RESOLVED, S.CLOSED} == FINISHED_STATUSES
    assert set(RequestStatus) == OPEN_STATUSES | FINISHED_STATUSES


# ----------------------------------------------------------------------------- transitions

# Who may cause each event, written out independently of the module.
EVENT_ACTORS: dict[Event, frozenset[Actor]] = {
    E.CREATED: frozenset({V}),
    E.ACKNOWLEDGED: STAFF,
    E.REPLIED: STAFF,
    E.VILLAGER_MESSAGE: frozenset({V}),
    E.ANSWERED: STAFF,
    E.FORWARDED: STAFF,
    E.DEPARTMENT_UPDATE: STAFF | {SYS},
    E.RETURNED: STAFF | {SYS},
    E.RESOLVED: STAFF,
    E.CLOSED_NOT_POLICE: STAFF,
    E.RATED: frozenset({V}),
    E.REOPENED: frozenset({V}),
    E.REASSIGNED: frozenset({SUP, SYS}),
    E.ESCALATED: frozenset({SYS}),
}

# Every allowed (status, event) and where it leads.
ALLOWED: dict[tuple[RequestStatus, Event], RequestStatus] = {
    (S.NEW, E.ACKNOWLEDGED): S.ACKNOWLEDGED,
    (S.NEW, E.REPLIED): S.ANSWERED,  # a first reply implies the acknowledgement
    (S.NEW, E.ANSWERED): S.ANSWERED,
    (S.NEW, E.FORWARDED): S.FORWARDED,
    (S.NEW, E.RESOLVED): S.RESOLVED,
    (S.NEW, E.CLOSED_NOT_POLICE): S.CLOSED,
    (S.NEW, E.VILLAGER_MESSAGE): S.NEW,
    (S.NEW, E.REASSIGNED): S.NEW,
    (S.NEW, E.ESCALATED): S.NEW,
    (S.ACKNOWLEDGED, E.REPLIED): S.ANSWERED,
    (S.ACKNOWLEDGED, E.ANSWERED): S.ANSWERED,
    (S.ACKNOWLEDGED, E.FORWARDED): S.FORWARDED,
    (S.ACKNOWLEDGED, E.RESOLVED): S.RESOLVED,
    (S.ACKNOWLEDGED, E.CLOSED_NOT_POLICE): S.CLOSED,
    (S.ACKNOWLEDGED, E.VILLAGER_MESSAGE): S.ACKNOWLEDGED,
    (S.ACKNOWLEDGED, E.REASSIGNED): S.ACKNOWLEDGED,
    (S.ACKNOWLEDGED, E.ESCALATED): S.ACKNOWLEDGED,
    (S.ANSWERED, E.REPLIED): S.ANSWERED,
    (S.ANSWERED, E.FORWARDED): S.FORWARDED,
    (S.ANSWERED, E.RESOLVED): S.RESOLVED,
    (S.ANSWERED, E.CLOSED_NOT_POLICE): S.CLOSED,
    (S.ANSWERED, E.VILLAGER_MESSAGE): S.ANSWERED,
    (S.ANSWERED, E.REASSIGNED): S.ANSWERED,
    (S.ANSWERED, E.ESCALATED): S.ANSWERED,
    (S.FORWARDED, E.REPLIED): S.FORWARDED,
    (S.FORWARDED, E.ANSWERED): S.FORWARDED,
    (S.FORWARDED, E.DEPARTMENT_UPDATE): S.FORWARDED,
    (S.FORWARDED, E.RETURNED): S.ACKNOWLEDGED,
    (S.FORWARDED, E.RESOLVED): S.RESOLVED,
    (S.FORWARDED, E.VILLAGER_MESSAGE): S.FORWARDED,
    (S.FORWARDED, E.REASSIGNED): S.FORWARDED,
    (S.FORWARDED, E.ESCALATED): S.FORWARDED,
    (S.RESOLVED, E.RATED): S.RESOLVED,
    (S.RESOLVED, E.REOPENED): S.ACKNOWLEDGED,
}

ALLOWED_CASES = [
    (status, event, actor, target)
    for (status, event), target in ALLOWED.items()
    for actor in sorted(EVENT_ACTORS[event])
]
WRONG_ACTOR_CASES = [
    (status, event, actor)
    for (status, event) in ALLOWED
    for actor in EVERYONE
    if actor not in EVENT_ACTORS[event]
]


def test_module_tables_match_the_written_rules() -> None:
    assert dict(TRANSITIONS) == ALLOWED
    assert dict(ACTORS) == EVENT_ACTORS


@pytest.mark.parametrize(("status", "event", "actor", "target"), ALLOWED_CASES)
def test_allowed_transition(
    status: RequestStatus, event: Event, actor: Actor, target: RequestStatus
) -> None:
    assert apply(status, event, actor=actor) is target


@pytest.mark.parametrize(("status", "event", "actor"), WRONG_ACTOR_CASES)
def test_allowed_event_by_the_wrong_actor(
    status: RequestStatus, event: Event, actor: Actor
) -> None:
    with pytest.raises(TransitionError) as caught:
        apply(status, event, actor=actor)
    assert caught.value.code is Refusal.WRONG_ACTOR
    assert (caught.value.status, caught.value.event, caught.value.actor) == (status, event, actor)


FORBIDDEN = [
    # the actor is checked before the status
    (S.RESOLVED, E.RESOLVED, V, Refusal.WRONG_ACTOR),
    (S.NEW, E.RATED, OFF, Refusal.WRONG_ACTOR),
    (S.RESOLVED, E.REOPENED, SUP, Refusal.WRONG_ACTOR),
    (S.NEW, E.ACKNOWLEDGED, SYS, Refusal.WRONG_ACTOR),
    (S.NEW, E.CLOSED_NOT_POLICE, V, Refusal.WRONG_ACTOR),
    (S.FORWARDED, E.ESCALATED, SUP, Refusal.WRONG_ACTOR),
    (S.NEW, E.REASSIGNED, OFF, Refusal.WRONG_ACTOR),
    (S.NEW, E.CREATED, OFF, Refusal.WRONG_ACTOR),
    # created only once
    (S.NEW, E.CREATED, V, Refusal.ALREADY_CREATED),
    (S.RESOLVED, E.CREATED, V, Refusal.ALREADY_CREATED),
    # acknowledging twice, or after an answer or a forward
    (S.ACKNOWLEDGED, E.ACKNOWLEDGED, OFF, Refusal.ALREADY_ACKNOWLEDGED),
    (S.ANSWERED, E.ACKNOWLEDGED, SUP, Refusal.ALREADY_ACKNOWLEDGED),
    (S.FORWARDED, E.ACKNOWLEDGED, OFF, Refusal.ALREADY_ACKNOWLEDGED),
    (S.ANSWERED, E.ANSWERED, OFF, Refusal.ALREADY_ANSWERED),
    (S.FORWARDED, E.FORWARDED, OFF, Refusal.ALREADY_FORWARDED),
    # department events only while forwarded
    (S.NEW, E.DEPARTMENT_UPDATE, SYS, Refusal.NOT_FORWARDED),
    (S.ACKNOWLEDGED, E.RETURNED, OFF, Refusal.NOT_FORWARDED),
    (S.ANSWERED, E.RETURNED, SYS, Refusal.NOT_FORWARDED),
    (S.FORWARDED, E.CLOSED_NOT_POLICE, OFF, Refusal.AT_DEPARTMENT),
    # rating and "not solved" only when resolved
    (S.NEW, E.RATED, V, Refusal.NOT_RESOLVED),
    (S.ANSWERED, E.RATED, V, Refusal.NOT_RESOLVED),
    (S.FORWARDED, E.REOPENED, V, Refusal.NOT_RESOLVED),
    (S.CLOSED, E.RATED, V, Refusal.NOT_RESOLVED),
    (S.CLOSED, E.REOPENED, V, Refusal.NOT_RESOLVED),
    # resolved and closed are terminal
    (S.RESOLVED, E.REPLIED, OFF, Refusal.FINISHED),
    (S.RESOLVED, E.RESOLVED, OFF, Refusal.FINISHED),
    (S.RESOLVED, E.VILLAGER_MESSAGE, V, Refusal.FINISHED),
    (S.RESOLVED, E.ESCALATED, SYS, Refusal.FINISHED),
    (S.RESOLVED, E.FORWARDED, SUP, Refusal.FINISHED),
    (S.CLOSED, E.ACKNOWLEDGED, OFF, Refusal.FINISHED),
    (S.CLOSED, E.VILLAGER_MESSAGE, V, Refusal.FINISHED),
    (S.CLOSED, E.REASSIGNED, SYS, Refusal.FINISHED),
    (S.CLOSED, E.RESOLVED, SUP, Refusal.FINISHED),
]


@pytest.mark.parametrize(("status", "event", "actor", "code"), FORBIDDEN)
def test_forbidden_transition(
    status: RequestStatus, event: Event, actor: Actor, code: Refusal
) -> None:
    with pytest.raises(TransitionError) as caught:
        apply(status, event, actor=actor)
    assert caught.value.code is code
    assert str(code) in str(caught.value)


def test_every_pair_not_allowed_is_refused_for_everyone() -> None:
    refused = 0
    for status in RequestStatus:
        for event in Event:
            if (status, event) in ALLOWED:
                continue
            for actor in EVERYONE:
                with pytest.raises(TransitionError):
                    apply(status, event, actor=actor)
                refused += 1
    assert refused == (len(RequestStatus) * len(Event) - len(ALLOWED)) * len(EVERYONE)


def test_villager_messages_never_change_the_status() -> None:
    for status in OPEN_STATUSES:
        assert apply(status, E.VILLAGER_MESSAGE, actor=V) is status


def test_codes_are_accepted_as_plain_strings() -> None:
    assert apply("new", "replied", actor="officer") is S.ANSWERED  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        apply("pending", "replied", actor="officer")  # type: ignore[arg-type]


def test_only_a_villager_creates() -> None:
    assert create(actor=V) is S.NEW
    for actor in (OFF, SUP, SYS):
        with pytest.raises(TransitionError) as caught:
            create(actor=actor)
        assert caught.value.code is Refusal.WRONG_ACTOR


# ----------------------------------------------------------------------------- history

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
H = timedelta(hours=1)
D = timedelta(days=1)


def h(offset: timedelta, event: Event, actor: Actor) -> HistoryEntry:
    return HistoryEntry(T0 + offset, event, actor)


def created() -> HistoryEntry:
    return h(timedelta(0), E.CREATED, V)


def test_replay_follows_the_lifecycle() -> None:
    history = [
        created(),
        h(H, E.VILLAGER_MESSAGE, V),
        h(2 * H, E.ACKNOWLEDGED, OFF),
        h(3 * H, E.FORWARDED, OFF),
        h(D, E.DEPARTMENT_UPDATE, SYS),
        h(2 * D, E.RETURNED, OFF),
        h(2 * D, E.REPLIED, OFF),
        h(3 * D, E.RESOLVED, OFF),
    ]
    assert replay(history) is S.RESOLVED
    assert replay(history[:4]) is S.FORWARDED
    assert replay(history[:6]) is S.ACKNOWLEDGED
    assert replay([*history, h(4 * D, E.RATED, V)]) is S.RESOLVED
    assert replay([*history, h(4 * D, E.REOPENED, V)]) is S.ACKNOWLEDGED


@pytest.mark.parametrize(
    "tail",
    [
        [h(D, E.RATED, V), h(2 * D, E.RATED, V)],
        [h(D, E.RATED, V), h(2 * D, E.REOPENED, V)],
    ],
)
def test_a_resolution_is_rated_once_or_reopened(tail: list[HistoryEntry]) -> None:
    history = [created(), h(H, E.RESOLVED, OFF), *tail]
    with pytest.raises(TransitionError) as caught:
        replay(history)
    assert caught.value.code is Refusal.ALREADY_RATED


def test_a_new_resolution_after_reopening_can_be_rated_again() -> None:
    history = [
        created(),
        h(H, E.RESOLVED, OFF),
        h(D, E.REOPENED, V),
        h(2 * D, E.RESOLVED, OFF),
        h(3 * D, E.RATED, V),
    ]
    assert replay(history) is S.RESOLVED


def test_replay_refusals() -> None:
    with pytest.raises(TransitionError) as caught:
        replay([])
    assert caught.value.code is Refusal.NOT_CREATED
    with pytest.raises(TransitionError) as caught:
        replay([h(timedelta(0), E.ACKNOWLEDGED, OFF)])
    assert caught.value.code is Refusal.NOT_CREATED
    with pytest.raises(TransitionError) as caught:
        replay([h(timedelta(0), E.CREATED, OFF)])
    assert caught.value.code is Refusal.WRONG_ACTOR
    with pytest.raises(TransitionError) as caught:
        replay([created(), h(H, E.RATED, V)])
    assert caught.value.code is Refusal.NOT_RESOLVED
    with pytest.raises(ValueError, match="back in time"):
        replay([created(), h(2 * H, E.ACKNOWLEDGED, OFF), h(H, E.REPLIED, OFF)])


def test_timeline_of_a_history() -> None:
    history = [
        created(),
        h(5 * H, E.VILLAGER_MESSAGE, V),
        h(10 * H, E.FORWARDED, OFF),  # implies the acknowledgement
        h(2 * D, E.RETURNED, SYS),
        h(3 * D, E.FORWARDED, SUP),
        h(4 * D, E.REPLIED, OFF),  # the officer answers while the department has it
        h(5 * D, E.RESOLVED, OFF),  # closes the open department spell
    ]
    assert timeline_of(history) == Timeline(
        created_at=T0,
        acknowledged_at=T0 + 10 * H,
        answered_at=T0 + 4 * D,
        reopened_at=None,
        finished_at=T0 + 5 * D,
        department=(
            DepartmentSpell(T0 + 10 * H, T0 + 2 * D),
            DepartmentSpell(T0 + 3 * D, T0 + 5 * D),
        ),
    )


def test_timeline_of_a_reopened_history() -> None:
    history = [
        created(),
        h(H, E.ACKNOWLEDGED, OFF),
        h(2 * H, E.ANSWERED, OFF),
        h(3 * H, E.REPLIED, OFF),
        h(D, E.RESOLVED, OFF),
        h(2 * D, E.REOPENED, V),
    ]
    assert timeline_of(history) == Timeline(
        created_at=T0, acknowledged_at=T0 + H, reopened_at=T0 + 2 * D
    )
    closed = [created(), h(H, E.CLOSED_NOT_POLICE, SUP)]
    assert timeline_of(closed) == Timeline(T0, T0 + H, None, None, T0 + H)


def test_timeline_of_refuses_an_invalid_history() -> None:
    with pytest.raises(TransitionError):
        timeline_of([created(), h(H, E.RETURNED, OFF)])


# ----------------------------------------------------------------------------- deadlines


def state(
    timeline: Timeline, now: datetime, config: DeadlineConfig = DEFAULT_DEADLINES
) -> DeadlineState:
    return deadline_state(timeline, now, config)


def test_default_deadlines() -> None:
    assert DeadlineConfig() == DeadlineConfig(
        ack=timedelta(hours=24), answer=timedelta(days=3), department=timedelta(days=7)
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"ack": timedelta(0)}, {"answer": timedelta(hours=-1)}, {"department": 7}],
)
def test_bad_deadline_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="positive timedelta"):
        DeadlineConfig(**kwargs)  # type: ignore[arg-type]


def test_a_new_request_runs_two_clocks() -> None:
    s = state(Timeline(T0), T0 + H)
    assert s.ack.status is ClockStatus.RUNNING
    assert s.ack.started_at == T0
    assert s.ack.due_at == T0 + 24 * H
    assert s.ack.time_left == 23 * H
    assert s.ack.done_at is None
    assert s.answer.status is ClockStatus.RUNNING
    assert s.answer.due_at == T0 + 3 * D
    assert s.answer.time_left == 3 * D - H
    assert s.department is None
    assert s.overdue == ()
    assert s.ack.due_at is not None and s.ack.due_at.tzinfo is UTC


def test_configured_deadlines_are_used() -> None:
    config = DeadlineConfig(ack=2 * H, answer=D, department=2 * D)
    s = state(Timeline(T0, department=(DepartmentSpell(T0 + H),)), T0 + H, config)
    assert s.ack.due_at == T0 + 2 * H
    assert s.department is not None and s.department.due_at == T0 + H + 2 * D
    assert s.answer.time_left == D - H


@pytest.mark.parametrize(
    ("acknowledged", "status"),
    [
        (T0 + 24 * H - timedelta(microseconds=1), ClockStatus.MET),
        (T0 + 24 * H, ClockStatus.MET),
        (T0 + 24 * H + timedelta(microseconds=1), ClockStatus.MISSED),
    ],
)
def test_ack_met_at_the_boundary(acknowledged: datetime, status: ClockStatus) -> None:
    s = state(Timeline(T0, acknowledged_at=acknowledged), T0 + 10 * D)
    assert s.ack.status is status
    assert s.ack.done_at == acknowledged
    assert s.ack.time_left is None
    assert s.ack.met is (status is ClockStatus.MET)


@pytest.mark.parametrize(
    ("now", "status", "left"),
    [
        (T0 + 24 * H, ClockStatus.RUNNING, timedelta(0)),
        (T0 + 24 * H + timedelta(microseconds=1), ClockStatus.OVERDUE, -timedelta(microseconds=1)),
        (T0 + 30 * H, ClockStatus.OVERDUE, -6 * H),
    ],
)
def test_ack_overdue_only_after_the_boundary(
    now: datetime, status: ClockStatus, left: timedelta
) -> None:
    s = state(Timeline(T0), now)
    assert s.ack.status is status
    assert s.ack.time_left == left
    assert s.ack.overdue is (status is ClockStatus.OVERDUE)
    assert s.overdue == ((Clock.ACK,) if status is ClockStatus.OVERDUE else ())


@pytest.mark.parametrize(
    ("answered", "status"),
    [
        (T0 + 3 * D, ClockStatus.MET),
        (T0 + 3 * D + timedelta(seconds=1), ClockStatus.MISSED),
    ],
)
def test_answer_met_at_the_boundary(answered: datetime, status: ClockStatus) -> None:
    s = state(timeline_of([created(), HistoryEntry(answered, E.REPLIED, OFF)]), T0 + 9 * D)
    assert s.answer.status is status
    assert s.answer.due_at == T0 + 3 * D
    # the reply acknowledged it too, late
    assert s.ack.status is ClockStatus.MISSED
    assert s.ack.done_at == answered


def test_a_prompt_first_reply_meets_both_clocks() -> None:
    s = state(timeline_of([created(), h(2 * H, E.REPLIED, OFF)]), T0 + 9 * D)
    assert (s.ack.status, s.answer.status) == (ClockStatus.MET, ClockStatus.MET)
    assert s.ack.done_at == s.answer.done_at == T0 + 2 * H
    assert most_urgent(s) is None


FORWARDED_AND_BACK = [created(), h(10 * H, E.FORWARDED, OFF), h(10 * H + 2 * D, E.RETURNED, OFF)]


def test_forwarding_pauses_the_answer_clock() -> None:
    # forwarded at 10 h, back 2 days later: the 3-day answer deadline moves by 2 days
    s = state(timeline_of(FORWARDED_AND_BACK), T0 + 3 * D)
    assert s.answer.status is ClockStatus.RUNNING
    assert s.answer.due_at == T0 + 5 * D
    assert s.answer.time_left == 2 * D
    assert s.ack.status is ClockStatus.MET  # forwarding acknowledged it
    assert s.ack.done_at == T0 + 10 * H
    assert s.department is not None
    assert s.department.status is ClockStatus.MET
    assert s.department.started_at == T0 + 10 * H
    assert s.department.due_at == T0 + 10 * H + 7 * D
    assert s.department.done_at == T0 + 10 * H + 2 * D
    assert most_urgent(s) == (Clock.ANSWER, T0 + 5 * D)


@pytest.mark.parametrize(
    ("answered", "status"),
    [(5 * D, ClockStatus.MET), (5 * D + timedelta(seconds=1), ClockStatus.MISSED)],
)
def test_the_moved_answer_deadline_is_met_at_its_boundary(
    answered: timedelta, status: ClockStatus
) -> None:
    history = [*FORWARDED_AND_BACK, h(answered, E.REPLIED, OFF)]
    s = state(timeline_of(history), T0 + 9 * D)
    assert s.answer.status is status
    assert s.answer.due_at == T0 + 5 * D


def test_while_at_the_department_the_answer_clock_is_paused() -> None:
    s = state(timeline_of(FORWARDED_AND_BACK[:2]), T0 + D)
    assert s.answer.status is ClockStatus.PAUSED
    assert s.answer.due_at is None
    assert s.answer.time_left == 3 * D - 10 * H  # the budget left when it comes back
    assert s.department is not None
    assert s.department.status is ClockStatus.RUNNING
    assert s.department.time_left == 6 * D + 10 * H
    assert most_urgent(s) == (Clock.DEPARTMENT, T0 + 10 * H + 7 * D)
    assert was_met(s) == {Clock.ACK: True, Clock.ANSWER: None, Clock.DEPARTMENT: None}


@pytest.mark.parametrize(
    ("after", "status"),
    [(timedelta(0), ClockStatus.RUNNING), (timedelta(microseconds=1), ClockStatus.OVERDUE)],
)
def test_department_clock_overdue_after_its_boundary(after: timedelta, status: ClockStatus) -> None:
    s = state(timeline_of(FORWARDED_AND_BACK[:2]), T0 + 10 * H + 7 * D + after)
    assert s.department is not None and s.department.status is status
    assert s.answer.status is ClockStatus.PAUSED  # the officer's clock is still stopped
    assert s.overdue == ((Clock.DEPARTMENT,) if after else ())


def test_several_department_spells_all_pause_the_answer_clock() -> None:
    history = [
        created(),
        h(10 * H, E.FORWARDED, OFF),
        h(20 * H, E.RETURNED, SYS),
        h(30 * H, E.FORWARDED, OFF),
        h(40 * H, E.RETURNED, OFF),
    ]
    s = state(timeline_of(history), T0 + 2 * D)
    assert s.answer.due_at == T0 + 3 * D + 20 * H
    assert s.department is not None
    assert s.department.started_at == T0 + 30 * H  # the last forwarding's clock
    assert s.department.done_at == T0 + 40 * H


def test_forwarding_exactly_at_the_answer_deadline_does_not_move_it() -> None:
    history = [created(), h(3 * D, E.FORWARDED, OFF), h(4 * D, E.RETURNED, OFF)]
    s = state(timeline_of(history), T0 + 3 * D + H)
    assert s.answer.due_at == T0 + 3 * D
    assert s.answer.status is ClockStatus.OVERDUE


def test_a_hand_made_timeline_counts_any_officer_action_as_acknowledgement() -> None:
    forwarded = Timeline(T0, department=(DepartmentSpell(T0 + 2 * H),))
    answered = Timeline(T0, answered_at=T0 + 3 * H)
    finished = Timeline(T0, finished_at=T0 + 30 * H)
    assert state(forwarded, T0 + D).ack.done_at == T0 + 2 * H
    assert state(answered, T0 + D).ack.done_at == T0 + 3 * H
    assert state(finished, T0 + 2 * D).ack.status is ClockStatus.MISSED


def test_forwarding_after_the_answer_deadline_does_not_rescue_it() -> None:
    s = state(timeline_of([created(), h(4 * D, E.FORWARDED, OFF)]), T0 + 5 * D)
    assert s.answer.status is ClockStatus.OVERDUE
    assert s.answer.due_at == T0 + 3 * D
    assert s.ack.status is ClockStatus.MISSED
    assert s.overdue == (Clock.ANSWER,)
    assert most_urgent(s) == (Clock.ANSWER, T0 + 3 * D)


def test_resolved_from_the_department_meets_its_clocks() -> None:
    history = [created(), h(10 * H, E.FORWARDED, OFF), h(5 * D, E.RESOLVED, OFF)]
    s = state(timeline_of(history), T0 + 20 * D)
    assert s.answer.status is ClockStatus.MET
    assert s.answer.done_at == T0 + 5 * D
    assert s.department is not None
    assert s.department.status is ClockStatus.MET
    assert s.department.done_at == T0 + 5 * D
    assert most_urgent(s) is None
    assert was_met(s) == {Clock.ACK: True, Clock.ANSWER: True, Clock.DEPARTMENT: True}


def test_a_department_clock_is_done_by_a_resolution_in_a_hand_made_timeline() -> None:
    timeline = Timeline(T0, finished_at=T0 + 8 * D, department=(DepartmentSpell(T0 + H),))
    s = state(timeline, T0 + 20 * D)
    assert s.department is not None
    assert s.department.status is ClockStatus.MISSED
    assert s.department.done_at == T0 + 8 * D


def test_closing_as_not_a_police_matter_answers() -> None:
    s = state(timeline_of([created(), h(26 * H, E.CLOSED_NOT_POLICE, OFF)]), T0 + 9 * D)
    assert s.ack.status is ClockStatus.MISSED
    assert s.answer.status is ClockStatus.MET
    assert was_met(s) == {Clock.ACK: False, Clock.ANSWER: True, Clock.DEPARTMENT: None}


REOPENED = [created(), h(H, E.REPLIED, OFF), h(2 * H, E.RESOLVED, OFF), h(10 * D, E.REOPENED, V)]


def test_reopening_restarts_the_answer_clock() -> None:
    s = state(timeline_of(REOPENED), T0 + 11 * D)
    assert replay(REOPENED) is S.ACKNOWLEDGED
    assert s.ack.status is ClockStatus.MET  # the officer already knew it
    assert s.answer.status is ClockStatus.RUNNING
    assert s.answer.started_at == T0 + 10 * D
    assert s.answer.due_at == T0 + 13 * D
    assert s.answer.time_left == 2 * D
    assert most_urgent(s) == (Clock.ANSWER, T0 + 13 * D)


@pytest.mark.parametrize(
    ("answered", "status"),
    [(13 * D, ClockStatus.MET), (13 * D + timedelta(seconds=1), ClockStatus.MISSED)],
)
def test_the_reopened_answer_clock_boundary(answered: timedelta, status: ClockStatus) -> None:
    s = state(timeline_of([*REOPENED, h(answered, E.REPLIED, OFF)]), T0 + 20 * D)
    assert s.answer.status is status


def test_department_time_before_a_reopening_does_not_pause_the_new_clock() -> None:
    history = [
        created(),
        h(H, E.FORWARDED, OFF),
        h(D, E.RESOLVED, OFF),
        h(2 * D, E.REOPENED, V),
        h(3 * D, E.FORWARDED, OFF),
        h(4 * D, E.RETURNED, OFF),
    ]
    s = state(timeline_of(history), T0 + 4 * D)
    assert s.answer.due_at == T0 + 2 * D + 3 * D + D  # only the second spell counts


def test_deadlines_are_elapsed_time_across_daylight_saving() -> None:
    new_york = ZoneInfo("America/New_York")
    made = datetime(2024, 3, 9, 12, 0, tzinfo=new_york)  # clocks go forward on 10 March
    s = state(Timeline(made), made)
    assert s.ack.due_at == datetime(2024, 3, 10, 13, 0, tzinfo=new_york)
    assert s.ack.due_at == made + timedelta(hours=24) + timedelta(hours=1)  # wall clock + 1 h
    assert s.ack.time_left == timedelta(hours=24)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="now must be time-zone aware"):
        deadline_state(Timeline(T0), datetime(2025, 3, 4, 9, 0))


@pytest.mark.parametrize(
    "build",
    [
        lambda: Timeline(datetime(2025, 3, 3, 9, 0)),
        lambda: Timeline(T0, acknowledged_at=datetime(2025, 3, 3, 10, 0)),
        lambda: Timeline(T0, answered_at=T0 - H),
        lambda: Timeline(T0, department=(DepartmentSpell(T0 - H, T0 + H),)),
        lambda: Timeline(T0, reopened_at=T0 + 2 * D, answered_at=T0 + D),
        lambda: Timeline(T0, reopened_at=T0 + 2 * D, finished_at=T0 + D),
        lambda: DepartmentSpell(T0 + 2 * H, T0 + H),
        lambda: DepartmentSpell(datetime(2025, 3, 3, 10, 0)),
        lambda: Timeline(
            T0, department=(DepartmentSpell(T0 + H), DepartmentSpell(T0 + 2 * H, T0 + 3 * H))
        ),
        lambda: Timeline(
            T0,
            department=(DepartmentSpell(T0 + H, T0 + 5 * H), DepartmentSpell(T0 + 2 * H)),
        ),
    ],
)
def test_inconsistent_timelines_are_refused(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        build()


def test_most_urgent_sorts_the_inbox_oldest_deadline_first() -> None:
    now = T0 + 2 * D
    requests = {
        "overdue_ack": Timeline(T0),  # ack due T0 + 24 h, overdue
        "fresh": Timeline(T0 + 2 * D - H),  # ack due T0 + 3 d - 1 h
        "acknowledged": Timeline(T0 + D, acknowledged_at=T0 + D + H),  # answer due T0 + 4 d
        "at_department": timeline_of(FORWARDED_AND_BACK[:2]),  # department due T0 + 7 d 10 h
        "done": timeline_of([created(), h(H, E.RESOLVED, OFF)]),  # nothing pending
    }
    urgency = {name: most_urgent(state(t, now)) for name, t in requests.items()}
    assert urgency == {
        "overdue_ack": (Clock.ACK, T0 + D),
        "fresh": (Clock.ACK, T0 + 3 * D - H),
        "acknowledged": (Clock.ANSWER, T0 + 4 * D),
        "at_department": (Clock.DEPARTMENT, T0 + 10 * H + 7 * D),
        "done": None,
    }
    never = datetime.max.replace(tzinfo=UTC)

    def key(name: str) -> datetime:
        found = urgency[name]
        return never if found is None else found[1]

    assert sorted(requests, key=key) == [
        "overdue_ack",
        "fresh",
        "acknowledged",
        "at_department",
        "done",
    ]


def test_most_urgent_ties_go_to_the_earlier_clock() -> None:
    same = DeadlineConfig(ack=D, answer=D)
    assert most_urgent(state(Timeline(T0), T0, same)) == (Clock.ACK, T0 + D)


def test_was_met_while_running_and_when_overdue() -> None:
    assert was_met(state(Timeline(T0), T0 + H)) == dict.fromkeys(Clock)
    assert was_met(state(Timeline(T0), T0 + 4 * D)) == {
        Clock.ACK: False,
        Clock.ANSWER: False,
        Clock.DEPARTMENT: None,
    }


# ----------------------------------------------------------------------------- routing


@pytest.mark.parametrize(
    ("resident", "contact", "supervisors", "expected"),
    [
        (11, 22, [33], Routed(RouteKind.OFFICER, 11, AssignmentKind.RESIDENT)),
        (11, None, [], Routed(RouteKind.OFFICER, 11, AssignmentKind.RESIDENT)),
        (None, 22, [33], Routed(RouteKind.OFFICER, 22, AssignmentKind.CONTACT)),
        (None, 22, [], Routed(RouteKind.OFFICER, 22, AssignmentKind.CONTACT)),
        (None, None, [33], Routed(RouteKind.SUPERVISOR, 33, None)),
        (None, None, [44, 33, 55], Routed(RouteKind.SUPERVISOR, 33, None)),
        (None, None, [], Unrouted()),
        (None, None, (), Unrouted()),
    ],
)
def test_route(
    resident: int | None,
    contact: int | None,
    supervisors: list[int],
    expected: Routed | Unrouted,
) -> None:
    assert route(resident, contact, supervisors) == expected


def test_unrouted_has_no_recipient_to_read() -> None:
    found = route(None, None, [])
    assert isinstance(found, Unrouted)
    assert found.kind is RouteKind.UNROUTED
    assert not hasattr(found, "recipient_id")


@pytest.mark.parametrize(
    ("kind", "assignment"),
    [
        (RouteKind.UNROUTED, None),
        (RouteKind.OFFICER, None),
        (RouteKind.SUPERVISOR, AssignmentKind.RESIDENT),
    ],
)
def test_inconsistent_routes_are_refused(
    kind: RouteKind, assignment: AssignmentKind | None
) -> None:
    with pytest.raises(ValueError, match="inconsistent route"):
        Routed(kind, 1, assignment)


# ----------------------------------------------------------------------------- abuse limits


@pytest.mark.parametrize(
    ("open_count", "config", "allowed"),
    [
        (0, LimitConfig(), True),
        (4, LimitConfig(), True),
        (5, LimitConfig(), False),
        (6, LimitConfig(), False),
        (0, LimitConfig(max_open=1), True),
        (1, LimitConfig(max_open=1), False),
    ],
)
def test_may_open_request(open_count: int, config: LimitConfig, allowed: bool) -> None:
    assert may_open_request(open_count, config) is allowed


def test_default_limits() -> None:
    assert LimitConfig() == LimitConfig(max_open=5, messages_per_minute=10)
    assert may_open_request(4) and not may_open_request(5)


@pytest.mark.parametrize(
    "kwargs", [{"max_open": 0}, {"messages_per_minute": -1}, {"max_open": True}, {"max_open": 2.5}]
)
def test_bad_limit_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="positive int"):
        LimitConfig(**kwargs)  # type: ignore[arg-type]


def test_ten_messages_a_minute_then_one_a_minute_later() -> None:
    start = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
    accepted: list[datetime] = []
    for second in range(10):  # the 1st to the 10th message within 60 s
        now = start + timedelta(seconds=second)
        assert message_allowed(accepted, now), f"message {second + 1}"
        accepted.append(now)
    eleventh = start + timedelta(seconds=10)
    assert not message_allowed(accepted, eleventh)
    assert not message_allowed(accepted, start + MESSAGE_WINDOW - timedelta(microseconds=1))
    # exactly a minute after the first, the first no longer counts
    assert message_allowed(accepted, start + MESSAGE_WINDOW)
    assert next_message_at(accepted, eleventh) == start + MESSAGE_WINDOW


def test_message_window_with_a_custom_limit() -> None:
    start = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
    config = LimitConfig(messages_per_minute=2)
    sent = [start, start + timedelta(seconds=30)]
    assert not message_allowed(sent, start + timedelta(seconds=59), config)
    assert message_allowed(sent, start + timedelta(seconds=60), config)
    assert next_message_at(sent, start + timedelta(seconds=40), config) == start + MESSAGE_WINDOW
    assert next_message_at([], start, config) == start
    assert next_message_at(sent[:1], start + timedelta(seconds=1), config) == start + timedelta(
        seconds=1
    )
    # older messages are ignored, and so is the order they are given in
    old = [start - timedelta(minutes=5)] * 20
    assert message_allowed(old, start, config)
    assert next_message_at(
        [*reversed(sent), start + timedelta(seconds=45)], start + timedelta(seconds=50), config
    ) == start + timedelta(seconds=90)


# ----------------------------------------------------------------------------- rating


@pytest.mark.parametrize(("value", "expected"), [(1, 1), (3, 3), (5, 5), ("1", 1), ("5", 5)])
def test_valid_ratings(value: int | str, expected: int) -> None:
    assert validate_rating(value) == expected


@pytest.mark.parametrize(
    "value", [0, 6, -1, 100, "0", "6", "", " 3", "+3", "-1", "3.0", "٣", "three", True, 3.0, None]
)
def test_invalid_ratings(value: object) -> None:
    with pytest.raises(ValueError):
        validate_rating(value)  # type: ignore[arg-type]
