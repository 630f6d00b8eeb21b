"""Scoring and ranking against a hand count: a month of visits, requests and hazards of four
officers in two stations, with the county's time zone at the month's edges; SCORE_POINTS;
and `villagebeat export scores` read back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.requests import Actor, Event, Routed
from core.roles import AssignmentKind
from core.scoring import DEFAULT_POINTS, Item, Source, parse_points
from storage import requests, scores
from storage.models import Assignment, Hazard, Officer, User, VisitActivity, VisitReport
from storage.villages import stations_in_scope
from tests.factories import Directory, seed_directory
from tests.test_cli import villagebeat

TZ = ZoneInfo("Asia/Shanghai")
NOVEMBER = date(2026, 11, 1)
_serial = iter(range(1, 1_000_000))


def utc(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@dataclass
class County:
    """The test directory plus officers C (resident) and D (contact) of 东关社区 (S02)."""

    directory: Directory
    officers: dict[str, Officer]  # "A" 王警官, "B" 赵警官 (S01); "C" 孙警官, "D" 李警官 (S02)


async def seed_county(session: AsyncSession) -> County:
    d = await seed_directory(session)
    c = Officer(badge="033333", name="孙警官")
    e = Officer(badge="044444", name="李警官")
    session.add_all([c, e])
    await session.flush()
    v3 = d.villages[2]
    session.add_all(
        [
            Assignment(officer_id=c.id, village_id=v3.id, kind=AssignmentKind.RESIDENT.value),
            Assignment(officer_id=e.id, village_id=v3.id, kind=AssignmentKind.CONTACT.value),
        ]
    )
    await session.flush()
    a, b = d.officers
    return County(d, {"A": a, "B": b, "C": c, "D": e})


async def add_visit(
    session: AsyncSession,
    officer: Officer,
    village_id: int,
    day: date,
    households: int = 0,
    activities: dict[str, int] | None = None,
    **fields: object,
) -> int:
    report = VisitReport(
        draft_id=f"sc{next(_serial)}",
        officer_id=officer.id,
        village_id=village_id,
        visit_date=day,
        hours=Decimal(3),
        households=households,
        submitted_by=1,
        **fields,
    )
    session.add(report)
    await session.flush()
    session.add_all(
        VisitActivity(report_id=report.id, code=code, count=count)
        for code, count in (activities or {}).items()
    )
    await session.flush()
    return report.id


async def add_hazard(
    session: AsyncSession,
    officer: Officer,
    village_id: int,
    *,
    status: str = "open",
    closed_at: datetime | None = None,
    reported_at: datetime | None = None,
    **fields: object,
) -> int:
    fields.setdefault("severity", "low")
    hazard = Hazard(
        draft_id=f"hz{next(_serial)}",
        officer_id=officer.id,
        village_id=village_id,
        category="fire",
        description="柴草堆放在民房旁",
        status=status,
        reported_by=1,
        reported_at=reported_at or utc(11, 1, 2),
        closed_at=closed_at,
        closed_how=None if status == "open" else "rectified",
        **fields,
    )
    session.add(hazard)
    await session.flush()
    return hazard.id


async def add_request(
    session: AsyncSession,
    village_id: int,
    created: datetime,
    events: list[tuple[Event, datetime, Officer | None]],
) -> int:
    """A villager's request and its history; an officer given acts as that officer, None as
    the villager (reopening)."""
    villager = 7000 + next(_serial)
    session.add(User(id=villager, role="villager", first_name="村民"))
    await session.flush()
    routed = await requests.route_for_village(session, village_id)
    assert isinstance(routed, Routed)
    new = requests.NewRequest(
        draft_id=f"rq{next(_serial)}",
        villager_id=villager,
        village_id=village_id,
        category="dispute",
        body="邻居占用通道",
        photos=(),
        latitude=None,
        longitude=None,
        anonymous=False,
        created_at=created,
    )
    request_id = (await requests.create_request(session, new, routed)).id
    for event, at, officer in events:
        await requests.record_event(
            session,
            request_id=request_id,
            event=event,
            actor=Actor.VILLAGER if officer is None else Actor.OFFICER,
            officer_id=None if officer is None else officer.id,
            now=at,
        )
    return request_id


@dataclass
class Month:
    county: County
    records: dict[str, int]


async def seed_month(session: AsyncSession) -> Month:
    """November 2026 (Shanghai). The points by hand, with the default table, are in
    HAND_COUNT below."""
    county = await seed_county(session)
    a, b, c = (county.officers[k] for k in "ABC")
    v1, v2, v3 = (v.id for v in county.directory.villages)
    r: dict[str, int] = {}
    # A: two reports in 张庄村 on the 3rd (one visit day), one in 李庄村 the same day
    # (another visit day); 3 + 2 households; patrol 2, dispute mediation 1, other (uncounted).
    r["a1"] = await add_visit(
        session, a, v1, date(2026, 11, 3), 3, {"patrol": 2, "dispute_mediation": 1}
    )
    r["a2"] = await add_visit(session, a, v1, date(2026, 11, 3), 2, {"other": 1})
    r["a3"] = await add_visit(session, a, v2, date(2026, 11, 3), 0, {"household_visit": 4})
    await add_visit(session, a, v1, date(2026, 10, 31), 5, {"patrol": 1})  # October
    # A resolves a request, the villager reopens it, A resolves it again: counted once.
    r["a_request"] = await add_request(
        session,
        v1,
        utc(11, 2),
        [
            (Event.ACKNOWLEDGED, utc(11, 2, 1), a),
            (Event.RESOLVED, utc(11, 2, 2), a),
            (Event.REOPENED, utc(11, 3), None),
            (Event.RESOLVED, utc(11, 4), a),
        ],
    )
    r["a_hazard"] = await add_hazard(session, a, v1, status="rectified", closed_at=utc(11, 5))
    await add_hazard(session, a, v2)  # still open: nothing
    # B: two days in 张庄村, 4 + 4 households, legal publicity once.
    r["b1"] = await add_visit(session, b, v1, date(2026, 11, 10), 4)
    r["b2"] = await add_visit(session, b, v1, date(2026, 11, 17), 4, {"legal_publicity": 1})
    # Handed over at 23:30 on 30 November in Shanghai (15:30 UTC): November.
    r["b_hazard"] = await add_hazard(
        session, b, v1, status="handed_over", closed_at=utc(11, 30, 15, 30)
    )
    # Closed at 00:30 on 1 December in Shanghai (still 30 November in UTC): December.
    await add_hazard(session, b, v1, status="rectified", closed_at=utc(11, 30, 16, 30))
    # C: one day in 东关社区 with 12 households.
    r["c1"] = await add_visit(session, c, v3, date(2026, 11, 5), 12)
    # Resolved by C at 23:00 on 31 October in Shanghai, reopened and resolved again in
    # November: it counts in October, where it was first resolved.
    await add_request(
        session,
        v3,
        utc(10, 30),
        [
            (Event.RESOLVED, utc(10, 31, 15), c),
            (Event.REOPENED, utc(11, 2), None),
            (Event.RESOLVED, utc(11, 3), c),
        ],
    )
    # Resolved at 00:30 on 1 November in Shanghai (31 October in UTC): November.
    r["c_request"] = await add_request(
        session, v3, utc(10, 30), [(Event.RESOLVED, utc(10, 31, 16, 30), c)]
    )
    # D did nothing; an officer without any assignment is on no roster.
    session.add(Officer(badge="099999", name="退休警官"))
    await session.flush()
    return Month(county, r)


# The month by hand, with DEFAULT_POINTS (visit day 5, household 1, patrol 2, dispute
# mediation 5, other 1, household_visit 0, legal publicity 2, request 5, rectified 5,
# handed over 2):
HAND_COUNT = {
    # 2 visit days (10) + 5 households (5) + patrol 2×2 + mediation 5 + other 1 (10)
    # + one request (5) + one rectified hazard (5)
    "A": 10 + 5 + 10 + 5 + 5,  # 35
    # 2 days (10) + 8 households (8) + legal publicity (2) + handed over (2)
    "B": 10 + 8 + 2 + 2,  # 22
    # 1 day (5) + 12 households (12) + one request (5)
    "C": 5 + 12 + 5,  # 22
    "D": 0,
}


@pytest.fixture
async def month(sessions: async_sessionmaker[AsyncSession]) -> Month:
    async with sessions() as s, s.begin():
        return await seed_month(s)


async def test_hand_count_totals_and_ranks(
    sessions: async_sessionmaker[AsyncSession], month: Month
) -> None:
    async with sessions() as s:
        ranked = await scores.standings(s, month=NOVEMBER, tz=TZ, table=DEFAULT_POINTS)
    badges = {o.id: k for k, o in month.county.officers.items()}
    got = {badges[x.member.officer_id]: x for x in ranked}
    assert {k: x.points for k, x in got.items()} == HAND_COUNT
    # County: A first, B and C share second, D fourth (competition ranking).
    assert [(k, got[k].county_rank) for k in "ABCD"] == [("A", 1), ("B", 2), ("C", 2), ("D", 4)]
    assert {got[k].county_size for k in "ABCD"} == {4}
    # Stations: A, B in 城关派出所 (B is a contact officer there); C, D in 东关派出所.
    assert [(k, got[k].member.station_code, got[k].station_rank) for k in "ABCD"] == [
        ("A", "S01", 1),
        ("B", "S01", 2),
        ("C", "S02", 1),
        ("D", "S02", 2),
    ]
    assert {got[k].station_size for k in "ABCD"} == {2}
    # Best first; equal points by badge (C's 033333 before B's 067890).
    assert [badges[x.member.officer_id] for x in ranked] == ["A", "C", "B", "D"]
    assert got["A"].by_source == {
        Source.VISIT_DAY: 10,
        Source.HOUSEHOLD: 5,
        Source.ACTIVITY: 10,
        Source.REQUEST_RESOLVED: 5,
        Source.HAZARD_RECTIFIED: 5,
        Source.HAZARD_HANDED_OVER: 0,
    }
    assert (got["A"].visit_days, got["A"].households) == (2, 5)
    assert (got["C"].visit_days, got["C"].households) == (1, 12)


async def test_officer_score_is_the_standings_points(
    sessions: async_sessionmaker[AsyncSession], month: Month
) -> None:
    """/me's one-officer statement counts the same items as the whole county's."""
    async with sessions() as s:
        ranked = await scores.standings(s, month=NOVEMBER, tz=TZ, table=DEFAULT_POINTS)
        mine = {
            x.member.officer_id: await scores.officer_score(
                s, officer_id=x.member.officer_id, month=NOVEMBER, tz=TZ, table=DEFAULT_POINTS
            )
            for x in ranked
        }
    badges = {o.id: k for k, o in month.county.officers.items()}
    assert {badges[o]: x.points for o, x in mine.items()} == HAND_COUNT
    assert {x.member.officer_id: dict(x.by_source) for x in ranked} == {
        o: dict(x.by_source) for o, x in mine.items()
    }


async def test_every_point_names_its_record(
    sessions: async_sessionmaker[AsyncSession], month: Month
) -> None:
    a = month.county.officers["A"].id
    r = month.records
    async with sessions() as s:
        items = await scores.month_items(s, month=NOVEMBER, tz=TZ)

    def ref(prefix: str, key: str) -> str:
        return f"{prefix}{r[key]:06d}"

    assert [i for i in items if i.officer_id == a] == [
        # The day in 张庄村 is named by its first report.
        Item(a, Source.VISIT_DAY, "visit_day", ref("V", "a1"), 1),
        Item(a, Source.VISIT_DAY, "visit_day", ref("V", "a3"), 1),
        Item(a, Source.HOUSEHOLD, "household", ref("V", "a1"), 3),
        Item(a, Source.HOUSEHOLD, "household", ref("V", "a2"), 2),
        Item(a, Source.ACTIVITY, "dispute_mediation", ref("V", "a1"), 1),
        Item(a, Source.ACTIVITY, "patrol", ref("V", "a1"), 2),
        Item(a, Source.ACTIVITY, "other", ref("V", "a2"), 1),
        # Not a counted activity (households have their own field): 1 unit, worth 0.
        Item(a, Source.ACTIVITY, "household_visit", ref("V", "a3"), 1),
        Item(a, Source.REQUEST_RESOLVED, "request_resolved", ref("R", "a_request"), 1),
        Item(a, Source.HAZARD_RECTIFIED, "hazard_rectified", ref("H", "a_hazard"), 1),
    ]
    total = sum(i.points(DEFAULT_POINTS) for i in items if i.officer_id == a)
    assert total == HAND_COUNT["A"]
    others = {i.record for i in items if i.officer_id != a}
    assert others == {
        ref("V", "b1"),
        ref("V", "b2"),
        ref("H", "b_hazard"),
        ref("V", "c1"),
        ref("R", "c_request"),
    }
    assert sum(i.points(DEFAULT_POINTS) for i in items) == sum(HAND_COUNT.values())


async def test_score_points_override_and_scope(
    sessions: async_sessionmaker[AsyncSession], month: Month
) -> None:
    table = parse_points("visit_day=10, patrol=0,hazard_handed_over=0")
    async with sessions() as s:
        ranked = await scores.standings(s, month=NOVEMBER, tz=TZ, table=table)
        october = await scores.standings(s, month=date(2026, 10, 15), tz=TZ, table=table)
        station = await scores.standings(
            s, month=NOVEMBER, tz=TZ, table=table, scope=[month.county.directory.station.id]
        )
    badges = {o.id: k for k, o in month.county.officers.items()}
    assert {badges[x.member.officer_id]: x.points for x in ranked} == {
        "A": 20 + 5 + (0 + 5 + 1) + 5 + 5,  # 41
        "B": 20 + 8 + 2 + 0,  # 30
        "C": 10 + 12 + 5,  # 27
        "D": 0,
    }
    assert [(badges[x.member.officer_id], x.county_rank) for x in ranked] == [
        ("A", 1),
        ("B", 2),
        ("C", 3),
        ("D", 4),
    ]
    # A scope shows its officers, ranked among the whole county still.
    assert [(badges[x.member.officer_id], x.county_rank) for x in station] == [
        ("A", 1),
        ("B", 2),
    ]
    # October: A's visit of the 31st (10 + 5 + patrol 0) and C's first resolution (5).
    assert {badges[x.member.officer_id]: x.points for x in october} == {
        "A": 15,
        "B": 0,
        "C": 5,
        "D": 0,
    }


async def test_supervisor_scope_subquery(
    sessions: async_sessionmaker[AsyncSession], month: Month
) -> None:
    from storage.models import Supervisor, SupervisorStation

    async with sessions() as s, s.begin():
        chief = Supervisor(name="东关所长")
        s.add(chief)
        await s.flush()
        s.add(
            SupervisorStation(
                supervisor_id=chief.id, station_id=month.county.directory.other_station.id
            )
        )
        await s.flush()
        scope = await stations_in_scope(s, chief.id)
        ranked = await scores.standings(s, month=NOVEMBER, tz=TZ, table=DEFAULT_POINTS, scope=scope)
        items = await scores.month_items(s, month=NOVEMBER, tz=TZ, scope=scope)
        members = await scores.roster(s, scope=scope)
    assert [x.member.name for x in ranked] == ["孙警官", "李警官"]
    assert [x.county_rank for x in ranked] == [2, 4]
    assert {i.officer_id for i in items} == {month.county.officers["C"].id}
    assert [m.badge for m in members] == ["033333", "044444"]


def test_points_table_is_documented() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for code, points in DEFAULT_POINTS.items():
        assert f"| `{code}` | {points} |" in readme, code


SCORES_HEADER = (
    "officer_badge,officer_name,station_code,station_name,visit_days,households,"
    "points_visit_day,points_household,points_activity,points_request_resolved,"
    "points_hazard_rectified,points_hazard_handed_over,total,station_rank,county_rank"
)


def test_export_scores_csv_and_xlsx(database_url: str, tmp_path: Path, month: Month) -> None:
    env = {"DATABASE_URL": database_url, "DATA_DIR": str(tmp_path), "TIMEZONE": "Asia/Shanghai"}
    target = tmp_path / "scores.csv"
    result = villagebeat(
        "export", "scores", "--month", "2026-11", "--format", "csv", "--out", str(target),
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote 4 officers for 2026-11 to {target}\n"
    assert "AIOGRAM-IMPORTED" not in result.stderr
    assert target.read_bytes().decode("utf-8-sig").splitlines() == [
        SCORES_HEADER,
        "012345,王警官,S01,城关派出所,2,5,10,5,10,5,5,0,35,1,1",
        "033333,孙警官,S02,东关派出所,1,12,5,12,0,5,0,0,22,1,2",
        "067890,赵警官,S01,城关派出所,2,8,10,8,2,0,0,2,22,2,2",
        "044444,李警官,S02,东关派出所,0,0,0,0,0,0,0,0,0,2,4",
    ]

    book = tmp_path / "scores.xlsx"
    result = villagebeat(
        "export", "scores", "--month", "2026-11", "--station", "S01", "--format", "xlsx",
        "--out", str(book), env={**env, "SCORE_POINTS": "visit_day=10"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"wrote 2 officers and 16 score items for 2026-11 (station S01) to {book}\n"
    )
    workbook = load_workbook(book)
    assert workbook.sheetnames == ["scores 2026-11", "items 2026-11"]
    ranking, items = workbook["scores 2026-11"], workbook["items 2026-11"]
    assert [c.value for c in ranking[1]] == SCORES_HEADER.split(",")
    assert ranking.freeze_panes == "A2" and ranking["A1"].font.b
    assert [c.value for c in ranking[2]] == [
        "012345", "王警官", "S01", "城关派出所", 2, 5, 20, 5, 10, 5, 5, 0, 45, 1, 1,
    ]  # fmt: skip
    assert [c.value for c in ranking[3]][:2] == ["067890", "赵警官"]
    assert ranking.max_row == 3
    assert [c.value for c in items[1]] == [
        "officer_badge", "source", "code", "record", "units", "points",
    ]  # fmt: skip
    assert items.max_row == 1 + 16
    rows = [[c.value for c in row] for row in items.iter_rows(min_row=2)]
    a1 = f"V{month.records['a1']:06d}"
    assert rows[0] == ["012345", "visit_day", "visit_day", a1, 1, 10]
    assert ["012345", "activity", "patrol", a1, 2, 4] in rows
    hazard = f"H{month.records['b_hazard']:06d}"
    assert rows[-1] == ["067890", "hazard_handed_over", "hazard_handed_over", hazard, 1, 2]
    assert sum(row[5] for row in rows if row[0] == "012345") == 45


def test_export_scores_unknown_station(database_url: str, tmp_path: Path, month: Month) -> None:
    env = {"DATABASE_URL": database_url, "DATA_DIR": str(tmp_path)}
    result = villagebeat(
        "export", "scores", "--month", "2026-11", "--station", "S99", "--format", "csv",
        "--out", str(tmp_path / "x.csv"), env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no station with code 'S99'" in result.stderr
    assert not (tmp_path / "x.csv").exists()
