"""Villagers' requests in the back office: the directory import moves open requests to whoever
now looks after their village, with notes to both handlers and the villager in the import's
transaction."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.cli import RequestMoves, move_requests_after_import
from bot.i18n import Translator
from bot.settings import Settings
from core import directory as core_directory
from core.directory import COLUMNS
from core.requests import Actor, Event, Routed
from core.roles import AssignmentKind
from storage import requests as store
from storage.directory import apply_directory, import_directory
from storage.models import (
    Assignment,
    Officer,
    OutboxMessage,
    Request,
    RequestEvent,
    Supervisor,
    SupervisorStation,
    User,
)
from tests.factories import Directory, seed_directory

Sessions = async_sessionmaker[AsyncSession]
ZH, EN = Translator("zh"), Translator("en")
CREATED = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
SETTINGS = Settings(_env_file=None, default_locale="zh")

# Telegram accounts: officer A (012345, 王警官) reads Chinese, B (067890, 赵警官) and the new
# officer C (055555, 孙警官) English; the villager English; the supervisor Chinese.
A_ACCOUNT, B_ACCOUNT, C_ACCOUNT = 1001, 1002, 1003
VILLAGER, SUPERVISOR_ACCOUNT = 2001, 3001


@dataclass
class World:
    directory: Directory
    new_officer: int  # C's officer id
    supervisor: int  # the S01 station's supervisor
    v001_open: list[int]  # with A, one new and one accepted
    v001_done: int  # resolved by A
    v002_open: int  # with A, in a village the test files leave alone


async def _new_request(s: AsyncSession, village_id: int, n: int) -> int:
    routed = await store.route_for_village(s, village_id)
    assert isinstance(routed, Routed)
    saved = await store.create_request(
        s,
        store.NewRequest(
            draft_id=f"draft-{village_id}-{n}",
            villager_id=VILLAGER,
            village_id=village_id,
            category="dispute",
            body=f"诉求 {n}",
            photos=(),
            latitude=None,
            longitude=None,
            anonymous=False,
            created_at=CREATED + timedelta(minutes=n),
        ),
        routed,
    )
    return saved.id


async def seed_world(s: AsyncSession) -> World:
    d = await seed_directory(s)
    a, b = d.officers
    c = Officer(badge="055555", name="孙警官")
    chief = Supervisor(name="刘所长")
    s.add_all([c, chief])
    await s.flush()
    s.add(SupervisorStation(supervisor_id=chief.id, station_id=d.station.id))
    s.add_all(
        [
            User(id=A_ACCOUNT, role="officer", officer_id=a.id, language_code="zh-hans"),
            User(id=B_ACCOUNT, role="officer", officer_id=b.id, language_code="en"),
            User(id=C_ACCOUNT, role="officer", officer_id=c.id, language_code="en"),
            User(id=VILLAGER, role="villager", language_code="en", first_name="Li"),
            User(id=SUPERVISOR_ACCOUNT, role="supervisor", supervisor_id=chief.id, locale="zh"),
        ]
    )
    await s.flush()
    v1, v2, _ = d.villages
    first, accepted, done = [await _new_request(s, v1.id, n) for n in range(3)]
    later = CREATED + timedelta(hours=1)
    await store.record_event(
        s, request_id=accepted, event=Event.ACKNOWLEDGED, actor=Actor.OFFICER, now=later
    )
    await store.record_event(
        s, request_id=done, event=Event.RESOLVED, actor=Actor.OFFICER, now=later
    )
    other = await _new_request(s, v2.id, 3)
    return World(d, c.id, chief.id, [first, accepted], done, other)


@pytest.fixture
async def world(sessions: Sessions) -> World:
    async with sessions() as s, s.begin():
        return await seed_world(s)


def write_directory(path: Path, rows: Sequence[Sequence[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        csv.writer(out).writerows([COLUMNS, *rows])
    return path


V001 = ["S01", "城关派出所", "V001", "张庄村", "34.1", "113.2"]
C_RESIDENT = [*V001, "055555", "孙警官", "resident"]
B_CONTACT = [*V001, "067890", "赵警官", "contact"]


async def handlers(sessions: Sessions, ids: Sequence[int]) -> list[tuple[int | None, int | None]]:
    async with sessions() as s:
        rows = await s.execute(
            select(Request.id, Request.officer_id, Request.supervisor_id).where(Request.id.in_(ids))
        )
        by_id = {i: (o, sup) for i, o, sup in rows}
    return [by_id[i] for i in ids]


async def reassigned_events(sessions: Sessions) -> list[tuple[int, str, int | None, int | None]]:
    async with sessions() as s:
        rows = await s.execute(
            select(
                RequestEvent.request_id,
                RequestEvent.actor,
                RequestEvent.officer_id,
                RequestEvent.supervisor_id,
            )
            .where(RequestEvent.event == Event.REASSIGNED.value)
            .order_by(RequestEvent.id)
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]


async def outbox(sessions: Sessions) -> list[tuple[int, str]]:
    async with sessions() as s:
        rows = await s.execute(
            select(OutboxMessage.chat_id, OutboxMessage.payload).order_by(OutboxMessage.id)
        )
        return [(chat, payload["text"]) for chat, payload in rows]


LANGUAGE = {A_ACCOUNT: ZH, B_ACCOUNT: EN, C_ACCOUNT: EN, VILLAGER: EN, SUPERVISOR_ACCOUNT: ZH}


def notes(ref: str, *, old: int, new: int, who_key: str, who: str) -> list[tuple[int, str]]:
    """The three notes of one moved request, each in its reader's language; `who_key` and
    `who` name the new handler (request_who.officer or .supervisor, and their name)."""
    village = "张庄村"
    t_new, t_old, t_villager = LANGUAGE[new], LANGUAGE[old], LANGUAGE[VILLAGER]
    return [
        (new, t_new("request_note.moved_to_you", ref=ref, village=village)),
        (
            old,
            t_old(
                "request_note.moved_away", ref=ref, village=village, who=t_old(who_key, name=who)
            ),
        ),
        (
            VILLAGER,
            t_villager("request_note.moved_villager", ref=ref, who=t_villager(who_key, name=who)),
        ),
    ]


async def run_import(sessions: Sessions, path: Path) -> RequestMoves:
    moves = RequestMoves()
    await import_directory(sessions, path, after=move_requests_after_import(SETTINGS, moves))
    return moves


async def test_new_resident_officer_takes_over_the_open_requests(
    sessions: Sessions, world: World, tmp_path: Path
) -> None:
    a = world.directory.officers[0]
    c = world.new_officer
    path = write_directory(tmp_path / "dir.csv", [C_RESIDENT, B_CONTACT])
    moves = await run_import(sessions, path)

    assert moves == RequestMoves(to_officer=2, to_supervisor=0, stranded=0, notes=6)
    assert moves.lines() == ["open requests moved to their new officer: 2"]
    assert await handlers(sessions, world.v001_open) == [(c, None), (c, None)]
    # Finished requests and other villages' requests stay where they were.
    assert await handlers(sessions, [world.v001_done, world.v002_open]) == [(a.id, None)] * 2
    assert await reassigned_events(sessions) == [
        (request_id, Actor.SYSTEM.value, c, None) for request_id in world.v001_open
    ]
    async with sessions() as s:
        statuses = list(
            await s.scalars(
                select(Request.status).where(Request.id.in_(world.v001_open)).order_by(Request.id)
            )
        )
        # The inbox finds them under their new officer, status unchanged.
        inbox = [r.id for r in await store.open_for_handler(s, officer_id=c)]
    assert statuses == ["new", "acknowledged"]
    assert sorted(inbox) == world.v001_open
    expected = []
    for request_id in world.v001_open:
        expected += notes(
            store.reference(request_id),
            old=A_ACCOUNT,
            new=C_ACCOUNT,
            who_key="request_who.officer",
            who="孙警官",
        )
    assert await outbox(sessions) == expected

    # The same file again: nothing moves, nothing is written.
    again = await run_import(sessions, path)
    assert again == RequestMoves() and again.lines() == []
    assert len(await reassigned_events(sessions)) == 2
    assert await outbox(sessions) == expected


async def test_a_village_that_loses_its_resident_goes_to_its_contact_officer(
    sessions: Sessions, world: World, tmp_path: Path
) -> None:
    b = world.directory.officers[1]
    moves = await run_import(sessions, write_directory(tmp_path / "dir.csv", [B_CONTACT]))
    assert moves == RequestMoves(to_officer=2, notes=6)
    assert await handlers(sessions, world.v001_open) == [(b.id, None)] * 2
    ref = store.reference(world.v001_open[0])
    assert (await outbox(sessions))[:3] == notes(
        ref, old=A_ACCOUNT, new=B_ACCOUNT, who_key="request_who.officer", who="赵警官"
    )


def _without_officers(code: str = "V001") -> core_directory.Directory:
    """V001 listed with no officer at all. A directory file cannot say this (every row is an
    assignment), but apply_directory takes any Directory, so the hook must cope."""
    return core_directory.Directory(
        stations=(core_directory.Station("S01", "城关派出所"),),
        villages=(core_directory.Village(code, "张庄村", "S01", (34.1, 113.2)),),
        officers=(),
        assignments=(),
    )


async def test_a_village_that_loses_every_officer_goes_to_its_station_supervisor(
    sessions: Sessions, world: World
) -> None:
    moves = RequestMoves()
    async with sessions() as s, s.begin():
        report = await apply_directory(
            s, _without_officers(), after=move_requests_after_import(SETTINGS, moves)
        )
    assert report.removed_assignments == 2
    assert moves == RequestMoves(to_supervisor=2, notes=6)
    assert moves.lines() == ["open requests moved to a supervisor: 2"]
    assert await handlers(sessions, world.v001_open) == [(None, world.supervisor)] * 2
    assert await reassigned_events(sessions) == [
        (request_id, "system", None, world.supervisor) for request_id in world.v001_open
    ]
    ref = store.reference(world.v001_open[1])
    assert (await outbox(sessions))[3:] == notes(
        ref,
        old=A_ACCOUNT,
        new=SUPERVISOR_ACCOUNT,
        who_key="request_who.supervisor",
        who="刘所长",
    )


async def test_with_nobody_left_the_requests_stay_and_are_reported(
    sessions: Sessions, world: World
) -> None:
    async with sessions() as s, s.begin():
        await s.execute(delete(SupervisorStation))
    moves = RequestMoves()
    async with sessions() as s, s.begin():
        await apply_directory(
            s, _without_officers(), after=move_requests_after_import(SETTINGS, moves)
        )
    a = world.directory.officers[0]
    assert moves == RequestMoves(stranded=2)
    assert moves.lines() == [
        "open requests with nobody to handle them: 2"
        " (no officer in the village, no supervisor for its station or the county)"
    ]
    assert await handlers(sessions, world.v001_open) == [(a.id, None)] * 2
    assert await reassigned_events(sessions) == [] and await outbox(sessions) == []


async def test_a_village_gaining_its_first_officer_takes_its_requests_from_the_supervisor(
    sessions: Sessions, world: World, tmp_path: Path
) -> None:
    v3 = world.directory.villages[2]
    async with sessions() as s, s.begin():
        # V003 (station S02) has no officer: its requests go to a county-wide supervisor.
        county = Supervisor(name="县督导", county_wide=True)
        s.add(county)
        await s.flush()
        request_id = await _new_request(s, v3.id, 9)
    assert await handlers(sessions, [request_id]) == [(None, county.id)]
    row = ["S02", "东关派出所", "V003", "东关社区", "", "", "055555", "孙警官", "resident"]
    moves = await run_import(sessions, write_directory(tmp_path / "v3.csv", [row]))
    # The supervisor has no account: the new officer and the villager are told.
    assert moves == RequestMoves(to_officer=1, notes=2)
    assert await handlers(sessions, [request_id]) == [(world.new_officer, None)]
    ref = store.reference(request_id)
    assert await outbox(sessions) == [
        (C_ACCOUNT, EN("request_note.moved_to_you", ref=ref, village="东关社区")),
        (
            VILLAGER,
            EN(
                "request_note.moved_villager", ref=ref, who=EN("request_who.officer", name="孙警官")
            ),
        ),
    ]


async def test_a_failing_note_undoes_the_whole_import(
    sessions: Sessions, world: World, tmp_path: Path
) -> None:
    """The hook runs in the import's transaction: if it fails, nothing of the file applies."""
    moves = RequestMoves()
    hook = move_requests_after_import(SETTINGS, moves)

    async def failing(session: AsyncSession, report: object) -> None:
        await hook(session, report)  # type: ignore[arg-type]
        raise RuntimeError("outbox full")

    path = write_directory(tmp_path / "dir.csv", [C_RESIDENT, B_CONTACT])
    with pytest.raises(RuntimeError):
        await import_directory(sessions, path, after=failing)
    assert moves.to_officer == 2  # it ran, then everything was rolled back
    a = world.directory.officers[0]
    assert await handlers(sessions, world.v001_open) == [(a.id, None)] * 2
    async with sessions() as s:
        counts = [
            await s.scalar(select(func.count()).select_from(table))
            for table in (OutboxMessage, Officer)
        ]
        resident = await s.scalar(
            select(Officer.badge)
            .join(Assignment, Assignment.officer_id == Officer.id)
            .where(
                Assignment.village_id == world.directory.villages[0].id,
                Assignment.kind == AssignmentKind.RESIDENT.value,
            )
        )
    assert counts == [0, 3] and resident == "012345"
