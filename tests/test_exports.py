"""Monthly exports: exact CSV cells, the month in the county's time zone, the station
filter, XLSX read back with openpyxl, atomic writes and the `export` command."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.requests import Actor, Event, Routed
from storage import exports, requests
from storage.models import (
    Hazard,
    Photo,
    Supervisor,
    User,
    Village,
    VisitActivity,
    VisitReport,
)
from tests.factories import seed_directory
from tests.test_cli import villagebeat

TZ = "Asia/Shanghai"
NOVEMBER = date(2026, 11, 1)
BOM = b"\xef\xbb\xbf"
VISITS_HEADER = (
    "report_id,officer_badge,officer_name,village_code,village_name,visit_date,hours,"
    "households,activities,latitude,longitude,distance_m,photos,notes,submitted_at"
)
HAZARDS_HEADER = (
    "hazard_id,village_code,village_name,officer_badge,category,severity,status,description,"
    "latitude,longitude,photos,reported_at,due_at,closed_at,closed_how"
)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@dataclass
class Seeded:
    visits: dict[str, int]
    hazards: dict[str, int]


_drafts = iter(range(1_000_000))


def _photo(**owner: int | str) -> Photo:
    n = next(_drafts)
    return Photo(file_id=f"file-{n}", file_unique_id=f"u{n}", **owner)


async def _seed(session: AsyncSession) -> Seeded:
    d = await seed_directory(session)
    v1, v2, v3 = d.villages
    a, b = d.officers

    def visit(officer: int, village: int, day: date, **fields: object) -> VisitReport:
        fields.setdefault("hours", Decimal("3.0"))
        fields.setdefault("households", 1)
        fields.setdefault("submitted_at", datetime.combine(day, datetime.min.time(), UTC))
        return VisitReport(
            draft_id=f"d{next(_drafts)}",
            officer_id=officer,
            village_id=village,
            visit_date=day,
            submitted_by=1,
            **fields,
        )

    visits = {
        # Inserted out of order: the export sorts by date, then id.
        "late": visit(
            a.id,
            v2.id,
            date(2026, 11, 30),
            hours=Decimal("1.5"),
            households=2,
            notes='=HYPERLINK("http://x")',
            # 16:30 UTC on the 30th is 00:30 on 1 December in Shanghai; the visit date counts.
            submitted_at=utc(2026, 11, 30, 16, 30),
        ),
        "full": visit(
            a.id,
            v1.id,
            date(2026, 11, 3),
            hours=Decimal("3.5"),
            households=5,
            latitude=34.1001,
            longitude=113.2002,
            distance_m=15,
            notes='走访张大爷家, "调解"邻里纠纷',
            submitted_at=utc(2026, 11, 3, 10, 0, 5),
        ),
        "far": visit(
            b.id,
            v1.id,
            date(2026, 11, 3),
            hours=Decimal("2"),
            households=0,
            latitude=34.15,
            longitude=113.25,
            distance_m=5400,
            far_from_village=True,
            submitted_at=utc(2026, 11, 3, 12, 0),
        ),
        "other_station": visit(b.id, v3.id, date(2026, 11, 15)),
        "october": visit(a.id, v1.id, date(2026, 10, 31)),
        "december": visit(a.id, v1.id, date(2026, 12, 1)),
    }
    session.add_all(visits.values())
    await session.flush()
    full = visits["full"].id
    session.add_all(
        [
            VisitActivity(report_id=full, code="other", count=1),
            VisitActivity(report_id=full, code="patrol", count=2),
            VisitActivity(report_id=full, code="household_visit", count=5),
            VisitActivity(report_id=full, code="dispute_mediation", count=1),
            VisitActivity(report_id=visits["late"].id, code="legal_publicity", count=3),
            VisitActivity(report_id=visits["october"].id, code="patrol", count=1),
            _photo(visit_report_id=full),
            _photo(visit_report_id=full),
            _photo(visit_report_id=visits["late"].id),
            _photo(visit_report_id=visits["october"].id),
        ]
    )

    def hazard(village: int, officer: int, reported_at: datetime, **fields: object) -> Hazard:
        fields.setdefault("category", "fire")
        fields.setdefault("severity", "low")
        fields.setdefault("description", "隐患")
        return Hazard(
            draft_id=f"h{next(_drafts)}",
            officer_id=officer,
            village_id=village,
            reported_by=1,
            reported_at=reported_at,
            **fields,
        )

    hazards = {
        # 23:30 on 30 November in Shanghai, 15:30 UTC: November.
        "last_evening": hazard(
            v1.id,
            a.id,
            utc(2026, 11, 30, 15, 30),
            category="fire",
            severity="high",
            description="柴草堆放在民房旁",
            latitude=34.1,
            longitude=113.2,
            due_at=utc(2026, 12, 7, 15, 30),
        ),
        "rectified": hazard(
            v2.id,
            a.id,
            utc(2026, 11, 5, 2, 0),
            category="electrical",
            severity="medium",
            description="私拉电线",
            status="rectified",
            closed_at=utc(2026, 11, 6, 3, 15),
            closed_how="rectified",
        ),
        "handed_over": hazard(
            v1.id,
            b.id,
            utc(2026, 11, 10, 1, 0),
            category="traffic",
            description="路口缺少减速带",
            status="handed_over",
            closed_at=utc(2026, 11, 12, 8, 0),
            closed_how="township_government",
        ),
        # 00:30 on 1 November in Shanghai, still 31 October in UTC: November.
        "first_night": hazard(v2.id, a.id, utc(2026, 10, 31, 16, 30), category="flood"),
        # 23:59 on 31 October in Shanghai: October.
        "october": hazard(v1.id, a.id, utc(2026, 10, 31, 15, 59)),
        # Midnight on 1 December in Shanghai, still 30 November in UTC: December.
        "december": hazard(v1.id, a.id, utc(2026, 11, 30, 16, 0)),
        "other_station": hazard(v3.id, b.id, utc(2026, 11, 20, 4, 0)),
    }
    session.add_all(hazards.values())
    await session.flush()
    session.add_all(
        [
            _photo(hazard_id=hazards["last_evening"].id),
            _photo(hazard_id=hazards["last_evening"].id),
            _photo(hazard_id=hazards["rectified"].id),
            _photo(hazard_id=hazards["rectified"].id, role="after"),
        ]
    )
    await session.flush()
    return Seeded(
        visits={k: v.id for k, v in visits.items()},
        hazards={k: h.id for k, h in hazards.items()},
    )


@pytest.fixture
async def seeded(sessions: async_sessionmaker[AsyncSession]) -> Seeded:
    async with sessions() as s, s.begin():
        return await _seed(s)


def _csv(columns: tuple[str, ...], rows: list[exports.Row]) -> bytes:
    out = io.BytesIO()
    exports.write_csv(out, columns, rows)
    return out.getvalue()


async def test_visits_csv_is_exact(
    sessions: async_sessionmaker[AsyncSession], seeded: Seeded
) -> None:
    async with sessions() as s:
        rows = await exports.visit_rows(s, month=NOVEMBER, station_code="S01", tz=TZ)
    v = seeded.visits
    data = _csv(exports.VISIT_COLUMNS, rows)
    assert data.startswith(BOM)
    assert data.decode("utf-8-sig").split("\r\n") == [
        VISITS_HEADER,
        f"{v['full']},012345,王警官,V001,张庄村,2026-11-03,3.5,5,"
        "household_visit:5;patrol:2;dispute_mediation:1;other:1,34.1001,113.2002,15,2,"
        '"走访张大爷家, ""调解""邻里纠纷",2026-11-03T18:00:05+08:00',
        f"{v['far']},067890,赵警官,V001,张庄村,2026-11-03,2.0,0,,34.15,113.25,5400,0,,"
        "2026-11-03T20:00:00+08:00",
        f"{v['late']},012345,王警官,V002,李庄村,2026-11-30,1.5,2,legal_publicity:3,,,,1,"
        '"=HYPERLINK(""http://x"")",2026-12-01T00:30:00+08:00',
        "",
    ]


async def test_visit_rows_are_typed_and_filtered_by_month_and_station(
    sessions: async_sessionmaker[AsyncSession], seeded: Seeded
) -> None:
    v = seeded.visits
    async with sessions() as s:
        county = await exports.visit_rows(s, month=NOVEMBER, station_code=None, tz=TZ)
        other = await exports.visit_rows(s, month=date(2026, 11, 20), station_code="S02", tz=TZ)
        october = await exports.visit_rows(s, month=date(2026, 10, 1), station_code=None, tz=TZ)
        empty = await exports.visit_rows(s, month=date(2027, 1, 1), station_code="S01", tz=TZ)
    assert [r[0] for r in county] == [v["full"], v["far"], v["other_station"], v["late"]]
    assert [r[0] for r in other] == [v["other_station"]]
    assert [(r[0], r[8], r[12]) for r in october] == [(v["october"], "patrol:1", 1)]
    assert empty == []
    full = county[0]
    assert len(full) == len(exports.VISIT_COLUMNS)
    assert full[5] == date(2026, 11, 3) and full[6] == Decimal("3.5")
    assert full[-1] == datetime(2026, 11, 3, 18, 0, 5, tzinfo=full[-1].tzinfo)
    assert full[-1].utcoffset().total_seconds() == 8 * 3600


async def test_unknown_station_is_an_error(
    sessions: async_sessionmaker[AsyncSession], seeded: Seeded
) -> None:
    async with sessions() as s:
        for rows in (exports.visit_rows, exports.hazard_rows):
            with pytest.raises(exports.UnknownStationError, match="no station with code 'S99'"):
                await rows(s, month=NOVEMBER, station_code="S99", tz=TZ)


async def test_hazards_belong_to_the_month_in_the_county_time_zone(
    sessions: async_sessionmaker[AsyncSession], seeded: Seeded
) -> None:
    h = seeded.hazards
    async with sessions() as s:
        county = await exports.hazard_rows(s, month=NOVEMBER, station_code=None, tz=TZ)
        station = await exports.hazard_rows(s, month=NOVEMBER, station_code="S01", tz=TZ)
        october = await exports.hazard_rows(s, month=date(2026, 10, 1), station_code=None, tz=TZ)
        december = await exports.hazard_rows(s, month=date(2026, 12, 1), station_code=None, tz=TZ)
        in_utc = await exports.hazard_rows(s, month=NOVEMBER, station_code="S01", tz="UTC")
    assert [r[0] for r in county] == [
        h["first_night"],
        h["rectified"],
        h["handed_over"],
        h["other_station"],
        h["last_evening"],
    ]
    assert [r[0] for r in station] == [r[0] for r in county if r[0] != h["other_station"]]
    assert [r[0] for r in october] == [h["october"]]
    assert [r[0] for r in december] == [h["december"]]
    # Counted in UTC the boundaries move: 31 Oct 16:30 UTC is October, 30 Nov 16:00 November.
    assert [r[0] for r in in_utc] == [
        h["rectified"],
        h["handed_over"],
        h["last_evening"],
        h["december"],
    ]

    data = _csv(exports.HAZARD_COLUMNS, station)
    assert data.startswith(BOM)
    assert data.decode("utf-8-sig").split("\r\n") == [
        HAZARDS_HEADER,
        f"{h['first_night']},V002,李庄村,012345,flood,low,open,隐患,,,0,"
        "2026-11-01T00:30:00+08:00,,,",
        f"{h['rectified']},V002,李庄村,012345,electrical,medium,rectified,私拉电线,,,1,"
        "2026-11-05T10:00:00+08:00,,2026-11-06T11:15:00+08:00,rectified",
        f"{h['handed_over']},V001,张庄村,067890,traffic,low,handed_over,路口缺少减速带,,,0,"
        "2026-11-10T09:00:00+08:00,,2026-11-12T16:00:00+08:00,township_government",
        f"{h['last_evening']},V001,张庄村,012345,fire,high,open,柴草堆放在民房旁,34.1,113.2,2,"
        "2026-11-30T23:30:00+08:00,2026-12-07T23:30:00+08:00,,",
        "",
    ]


async def test_xlsx_has_real_dates_numbers_and_chinese(
    sessions: async_sessionmaker[AsyncSession], seeded: Seeded
) -> None:
    async with sessions() as s:
        visits = await exports.visit_rows(s, month=NOVEMBER, station_code="S01", tz=TZ)
        hazards = await exports.hazard_rows(s, month=NOVEMBER, station_code="S01", tz=TZ)
    out = io.BytesIO()
    exports.write_xlsx(out, exports.VISIT_COLUMNS, visits, title="visits 2026-11")
    sheet = load_workbook(io.BytesIO(out.getvalue())).active
    assert sheet.title == "visits 2026-11"
    header = [c.value for c in sheet[1]]
    assert header == list(exports.VISIT_COLUMNS)
    assert all(c.font.bold for c in sheet[1])
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == "A1:O4"
    assert sheet.max_row == 4
    full = {name: cell for name, cell in zip(header, sheet[2], strict=True)}
    assert full["report_id"].value == seeded.visits["full"]
    assert full["officer_badge"].value == "012345"  # text: the leading zero stays
    assert full["officer_name"].value == "王警官" and full["village_name"].value == "张庄村"
    assert full["visit_date"].value == datetime(2026, 11, 3)
    assert full["visit_date"].is_date and full["visit_date"].number_format == "yyyy-mm-dd"
    assert full["submitted_at"].value == datetime(2026, 11, 3, 18, 0, 5)  # local, naive
    assert full["submitted_at"].number_format == "yyyy-mm-dd hh:mm"
    assert full["hours"].value == 3.5 and full["hours"].data_type == "n"
    assert full["households"].value == 5 and isinstance(full["households"].value, int)
    assert full["latitude"].value == pytest.approx(34.1001)
    assert full["photos"].value == 2 and full["distance_m"].value == 15
    assert full["activities"].value == "household_visit:5;patrol:2;dispute_mediation:1;other:1"
    late = {name: cell for name, cell in zip(header, sheet[4], strict=True)}
    assert late["latitude"].value is None and late["distance_m"].value is None
    # Text that looks like a formula stays text.
    assert late["notes"].data_type == "s" and late["notes"].value == '=HYPERLINK("http://x")'
    width = sheet.column_dimensions["N"].width
    assert width is not None and 20 <= width <= 60  # notes: wide enough, capped
    assert sheet.column_dimensions["A"].width >= len("report_id")

    out = io.BytesIO()
    exports.write_xlsx(out, exports.HAZARD_COLUMNS, hazards, title="hazards")
    sheet = load_workbook(io.BytesIO(out.getvalue())).active
    rows = list(sheet.iter_rows(min_row=2, values_only=True))
    assert len(rows) == 4
    last = dict(zip(exports.HAZARD_COLUMNS, rows[-1], strict=True))
    assert last["description"] == "柴草堆放在民房旁"
    assert last["reported_at"] == datetime(2026, 11, 30, 23, 30)
    assert last["due_at"] == datetime(2026, 12, 7, 23, 30)
    assert last["closed_at"] is None and last["photos"] == 2


def test_xlsx_drops_characters_excel_cannot_hold() -> None:
    out = io.BytesIO()
    exports.write_xlsx(out, ("notes",), [("响铃\x07结束",)])
    sheet = load_workbook(io.BytesIO(out.getvalue())).active
    assert sheet["A2"].value == "响铃结束"


def test_an_empty_export_is_a_header(tmp_path: Path) -> None:
    target = tmp_path / "empty.csv"
    exports.write_file(target, "csv", exports.HAZARD_COLUMNS, [])
    assert target.read_bytes() == BOM + HAZARDS_HEADER.encode() + b"\r\n"


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_a_failed_write_leaves_no_half_file(tmp_path: Path, fmt: exports.Format) -> None:
    target = tmp_path / f"out.{fmt}"
    target.write_bytes(b"the previous export")

    class Boom:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    rows: list[exports.Row] = [("ok",), (Boom(),)]
    with pytest.raises((RuntimeError, ValueError)):
        exports.write_file(target, fmt, ("notes",), rows)
    assert target.read_bytes() == b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary left behind

    exports.write_file(target, fmt, ("notes",), [("ok",)])
    assert target.read_bytes() != b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


# --- the command ---------------------------------------------------------------------


@pytest.fixture
def env(database_url: str, tmp_path: Path, seeded: Seeded) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "DATA_DIR": str(tmp_path), "TIMEZONE": TZ}


def test_export_help_offers_only_what_exists() -> None:
    result = villagebeat("export", "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: villagebeat export")
    assert "{visits,hazards,requests,scores}" in result.stdout
    assert "--month YYYY-MM" in result.stdout and "{csv,xlsx}" in result.stdout
    assert "export" in villagebeat("--help").stdout


def test_export_command_writes_csv_and_xlsx(
    env: dict[str, str], seeded: Seeded, tmp_path: Path
) -> None:
    target = tmp_path / "visits.csv"
    started = time.monotonic()
    result = villagebeat(
        "export", "visits", "--month", "2026-11", "--station", "S01", "--format", "csv",
        "--out", str(target), env=env,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote 3 visits for 2026-11 (station S01) to {target}\n"
    assert "AIOGRAM-IMPORTED" not in result.stderr
    assert elapsed < 2.0
    data = target.read_bytes()
    assert data.startswith(BOM)
    lines = data.decode("utf-8-sig").splitlines()
    assert lines[0] == VISITS_HEADER and len(lines) == 4
    assert lines[1].startswith(f"{seeded.visits['full']},012345,王警官,V001,张庄村,2026-11-03,")

    book = tmp_path / "hazards.xlsx"
    result = villagebeat(
        "export", "hazards", "--month", "2026-11", "--format", "xlsx", "--out", str(book),
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote 5 hazards for 2026-11 to {book}\n"
    assert "AIOGRAM-IMPORTED" not in result.stderr
    sheet = load_workbook(book).active
    assert [c.value for c in sheet[1]] == list(exports.HAZARD_COLUMNS)
    assert sheet.max_row == 6
    assert sheet["L2"].value == datetime(2026, 11, 1, 0, 30)  # reported_at, Shanghai time

    one = villagebeat(
        "export", "hazards", "--month", "2026-10", "--format", "csv", "--out", str(target),
        env=env,
    )  # fmt: skip
    assert one.stdout == f"wrote 1 hazard for 2026-10 to {target}\n"
    assert target.read_bytes().decode("utf-8-sig").splitlines()[0] == HAZARDS_HEADER


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--month", "2026-13"], "invalid month '2026-13': expected YYYY-MM"),
        (["--month", "Nov 2026"], "invalid month 'Nov 2026'"),
        (["--station", "S99"], "no station with code 'S99'"),
        (["--out", "{tmp}/missing/x.csv"], "no such directory"),
        (["--out", "{tmp}"], "it is a directory"),
        (["--out", "{tmp}/" + "x" * 300 + ".csv"], "File name too long"),
        (["--out", "{tmp}/seeded.txt/x.csv"], "seeded.txt' is not a directory"),
    ],
)
def test_export_errors_are_one_line(
    env: dict[str, str], tmp_path: Path, args: list[str], fragment: str
) -> None:
    (tmp_path / "seeded.txt").write_text("a file, not a directory")
    defaults = {"--month": "2026-11", "--format": "csv", "--out": str(tmp_path / "x.csv")}
    given = dict(zip(args[::2], (a.format(tmp=tmp_path) for a in args[1::2]), strict=True))
    flags = [part for item in ({**defaults, **given}).items() for part in item]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = villagebeat("export", "visits", *flags, env=env)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("villagebeat: "), result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["points", "--month", "2026-11", "--format", "csv", "--out", "x"], "invalid choice"),
        (["visits", "--month", "2026-11", "--format", "ods", "--out", "x"], "invalid choice"),
        (["visits", "--format", "csv", "--out", "x"], "required: --month"),
    ],
)
def test_export_usage_errors(args: list[str], fragment: str) -> None:
    result = villagebeat("export", *args)
    assert result.returncode == 2
    assert fragment in result.stderr and "AIOGRAM-IMPORTED" not in result.stderr


# --- villagers' requests ---------------------------------------------------------------

REQUESTS_HEADER = (
    "request_id,village_code,village_name,station_code,officer_badge,category,status,"
    "anonymous,created_at,acknowledged_at,answered_at,resolved_at,department,rating,"
    "ack_met,answer_met,department_met"
)
# The time of the export: every deadline of a November request has been decided by then.
EXPORTED_AT = utc(2026, 12, 10)
VILLAGER_NAME, VILLAGER_PHONE = "村民甲", "+8613800000000"


async def _seed_requests(session: AsyncSession) -> dict[str, int]:
    """Requests with their histories (times in UTC; Shanghai is 8 hours ahead)."""
    d = await seed_directory(session)
    v1, v2, v3 = d.villages
    # V003 has no officer: its requests go to the county-wide supervisor.
    session.add(Supervisor(name="县督导", county_wide=True))
    session.add(User(id=7001, role="villager", first_name=VILLAGER_NAME, phone=VILLAGER_PHONE))
    await session.flush()

    async def request(
        village: Village, category: str, at: datetime, *, anonymous: bool = False
    ) -> int:
        routed = await requests.route_for_village(session, village.id)
        assert isinstance(routed, Routed)
        new = requests.NewRequest(
            draft_id=f"r{next(_drafts)}",
            villager_id=7001,
            village_id=village.id,
            category=category,
            body="邻居占用通道",
            photos=(),
            latitude=None,
            longitude=None,
            anonymous=anonymous,
            created_at=at,
        )
        return (await requests.create_request(session, new, routed)).id

    async def then(request_id: int, event: Event, at: datetime, **fields: Any) -> None:
        actor = Actor.VILLAGER if event in (Event.REOPENED, Event.RATED) else Actor.OFFICER
        await requests.record_event(
            session, request_id=request_id, event=event, actor=actor, now=at, **fields
        )

    # 00:30 on 1 November in Shanghai, still 31 October in UTC: November. Accepted after
    # 26 hours (late), answered in time, resolved, reopened, answered and resolved again.
    late_ack = await request(v1, "dispute", utc(2026, 10, 31, 16, 30))
    await then(late_ack, Event.ACKNOWLEDGED, utc(2026, 11, 1, 18, 30))
    await then(late_ack, Event.REPLIED, utc(2026, 11, 2), body="明天上门")
    await then(late_ack, Event.RESOLVED, utc(2026, 11, 2, 1))
    await then(late_ack, Event.REOPENED, utc(2026, 11, 3))
    await then(late_ack, Event.REPLIED, utc(2026, 11, 3, 2), body="再去一次")
    await then(late_ack, Event.RESOLVED, utc(2026, 11, 3, 3))
    await then(late_ack, Event.RATED, utc(2026, 11, 3, 4), rating=4)
    # A first reply exactly 24 hours after it was sent: in time for both clocks.
    answered = await request(v2, "safety", utc(2026, 11, 5, 1), anonymous=True)
    await then(answered, Event.REPLIED, utc(2026, 11, 6, 1), body="已安排巡逻")
    # Five days at the department (in time); the answer clock paused meanwhile: 3 h used.
    forwarded = await request(v1, "registration", utc(2026, 11, 10))
    await then(forwarded, Event.ACKNOWLEDGED, utc(2026, 11, 10, 1))
    await then(forwarded, Event.FORWARDED, utc(2026, 11, 10, 2), department="civil_affairs")
    await then(forwarded, Event.RETURNED, utc(2026, 11, 15, 2))
    await then(forwarded, Event.REPLIED, utc(2026, 11, 15, 3), body="证明已开具")
    # Closed as not a police matter after two days: accepted late, answered in time.
    closed = await request(v2, "other", utc(2026, 11, 12))
    await then(closed, Event.CLOSED_NOT_POLICE, utc(2026, 11, 14), body="请找村委会")
    # Still at the department, past its week: the answer clock is paused (unknown).
    stuck = await request(v1, "hardship", utc(2026, 11, 20))
    await then(stuck, Event.FORWARDED, utc(2026, 11, 20, 1), department="civil_affairs")
    # Nobody did anything: both clocks overdue by the time of the export.
    overdue = await request(v3, "other", utc(2026, 11, 28))
    # 23:59 on 31 October and midnight on 1 December in Shanghai.
    october = await request(v1, "dispute", utc(2026, 10, 31, 15, 59))
    december = await request(v1, "dispute", utc(2026, 11, 30, 16))
    return {
        "late_ack": late_ack,
        "answered": answered,
        "forwarded": forwarded,
        "closed": closed,
        "stuck": stuck,
        "overdue": overdue,
        "october": october,
        "december": december,
    }


@pytest.fixture
async def seeded_requests(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with sessions() as s, s.begin():
        return await _seed_requests(s)


def _ref(request_id: int) -> str:
    return f"R{request_id:06d}"


def _shanghai(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A Shanghai wall-clock time in 2026, as the XLSX holds it (no zone)."""
    return datetime(2026, month, day, hour, minute)


async def test_requests_csv_is_exact(
    sessions: async_sessionmaker[AsyncSession], seeded_requests: dict[str, int]
) -> None:
    r = {k: _ref(v) for k, v in seeded_requests.items()}
    async with sessions() as s:
        rows = await exports.request_rows(
            s, month=NOVEMBER, station_code=None, tz=TZ, now=EXPORTED_AT
        )
    data = _csv(exports.REQUEST_COLUMNS, rows)
    assert data.startswith(BOM)
    assert data.decode("utf-8-sig").split("\r\n") == [
        REQUESTS_HEADER,
        f"{r['late_ack']},V001,张庄村,S01,012345,dispute,resolved,no,2026-11-01T00:30:00+08:00,"
        "2026-11-02T02:30:00+08:00,2026-11-02T08:00:00+08:00,2026-11-03T11:00:00+08:00,,4,"
        "no,yes,",
        f"{r['answered']},V002,李庄村,S01,012345,safety,answered,yes,2026-11-05T09:00:00+08:00,"
        "2026-11-06T09:00:00+08:00,2026-11-06T09:00:00+08:00,,,,yes,yes,",
        f"{r['forwarded']},V001,张庄村,S01,012345,registration,answered,no,"
        "2026-11-10T08:00:00+08:00,2026-11-10T09:00:00+08:00,2026-11-15T11:00:00+08:00,,"
        "civil_affairs,,yes,yes,yes",
        f"{r['closed']},V002,李庄村,S01,012345,other,closed,no,2026-11-12T08:00:00+08:00,"
        "2026-11-14T08:00:00+08:00,,2026-11-14T08:00:00+08:00,,,no,yes,",
        f"{r['stuck']},V001,张庄村,S01,012345,hardship,forwarded,no,2026-11-20T08:00:00+08:00,"
        "2026-11-20T09:00:00+08:00,,,civil_affairs,,yes,,no",
        f"{r['overdue']},V003,东关社区,S02,,other,new,no,2026-11-28T08:00:00+08:00,,,,,,no,no,",
        "",
    ]
    text = data.decode("utf-8-sig")
    assert VILLAGER_NAME not in text and VILLAGER_PHONE not in text and "邻居" not in text


async def test_request_rows_by_month_station_and_time_of_export(
    sessions: async_sessionmaker[AsyncSession], seeded_requests: dict[str, int]
) -> None:
    r = seeded_requests
    async with sessions() as s:
        station = await exports.request_rows(
            s, month=NOVEMBER, station_code="S02", tz=TZ, now=EXPORTED_AT
        )
        october = await exports.request_rows(
            s, month=date(2026, 10, 1), station_code=None, tz=TZ, now=EXPORTED_AT
        )
        december = await exports.request_rows(
            s, month=date(2026, 12, 1), station_code="S01", tz=TZ, now=EXPORTED_AT
        )
        # Two hours after it was sent nothing is decided yet for the overdue request.
        early = await exports.request_rows(
            s, month=NOVEMBER, station_code="S02", tz=TZ, now=utc(2026, 11, 28, 2)
        )
        with pytest.raises(exports.UnknownStationError):
            await exports.request_rows(s, month=NOVEMBER, station_code="S99", tz=TZ)
    assert [row[0] for row in station] == [_ref(r["overdue"])]
    assert station[0][-3:] == (False, False, None)
    assert early[0][-3:] == (None, None, None)
    assert [row[0] for row in october] == [_ref(r["october"])]
    assert [row[0] for row in december] == [_ref(r["december"])]


async def test_request_histories_are_loaded_in_one_query(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    seeded_requests: dict[str, int],
) -> None:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        async with sessions() as s:
            rows = await exports.request_rows(
                s, month=NOVEMBER, station_code="S01", tz=TZ, now=EXPORTED_AT
            )
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert len(rows) == 5
    # The station check, the requests, their histories: not one query per request.
    assert len(statements) == 3, statements


async def test_requests_xlsx_has_booleans_and_local_times(
    sessions: async_sessionmaker[AsyncSession], seeded_requests: dict[str, int]
) -> None:
    r = {k: _ref(v) for k, v in seeded_requests.items()}
    async with sessions() as s:
        rows = await exports.request_rows(
            s, month=NOVEMBER, station_code=None, tz=TZ, now=EXPORTED_AT
        )
    out = io.BytesIO()
    exports.write_xlsx(out, exports.REQUEST_COLUMNS, rows, title="requests 2026-11")
    sheet = load_workbook(io.BytesIO(out.getvalue())).active
    assert [c.value for c in sheet[1]] == list(exports.REQUEST_COLUMNS)
    assert sheet.auto_filter.ref == "A1:Q7"
    d, c = _shanghai, "civil_affairs"
    assert list(sheet.iter_rows(min_row=2, values_only=True)) == [
        (r["late_ack"], "V001", "张庄村", "S01", "012345", "dispute", "resolved", False,
         d(11, 1, 0, 30), d(11, 2, 2, 30), d(11, 2, 8), d(11, 3, 11), None, 4, False, True, None),
        (r["answered"], "V002", "李庄村", "S01", "012345", "safety", "answered", True,
         d(11, 5, 9), d(11, 6, 9), d(11, 6, 9), None, None, None, True, True, None),
        (r["forwarded"], "V001", "张庄村", "S01", "012345", "registration", "answered", False,
         d(11, 10, 8), d(11, 10, 9), d(11, 15, 11), None, c, None, True, True, True),
        (r["closed"], "V002", "李庄村", "S01", "012345", "other", "closed", False,
         d(11, 12, 8), d(11, 14, 8), None, d(11, 14, 8), None, None, False, True, None),
        (r["stuck"], "V001", "张庄村", "S01", "012345", "hardship", "forwarded", False,
         d(11, 20, 8), d(11, 20, 9), None, None, c, None, True, None, False),
        (r["overdue"], "V003", "东关社区", "S02", None, "other", "new", False,
         d(11, 28, 8), None, None, None, None, None, False, False, None),
    ]  # fmt: skip
    late = {name: cell for name, cell in zip(exports.REQUEST_COLUMNS, sheet[2], strict=True)}
    assert late["anonymous"].data_type == "b" and late["ack_met"].data_type == "b"
    assert late["rating"].data_type == "n" and late["request_id"].data_type == "s"
    assert late["created_at"].is_date and late["created_at"].number_format == "yyyy-mm-dd hh:mm"


def test_export_requests_command(
    database_url: str,
    tmp_path: Path,
    seeded_requests: dict[str, int],
) -> None:
    env = {"DATABASE_URL": database_url, "DATA_DIR": str(tmp_path), "TIMEZONE": TZ}
    target = tmp_path / "requests.csv"
    result = villagebeat(
        "export", "requests", "--month", "2026-11", "--format", "csv", "--out", str(target),
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote 6 requests for 2026-11 to {target}\n"
    assert "AIOGRAM-IMPORTED" not in result.stderr
    lines = target.read_bytes().decode("utf-8-sig").splitlines()
    assert lines[0] == REQUESTS_HEADER
    assert [line.split(",")[0] for line in lines[1:]] == [
        _ref(seeded_requests[k])
        for k in ("late_ack", "answered", "forwarded", "closed", "stuck", "overdue")
    ]
    # Decided long before the command ran: the same cells as exported on 10 December.
    assert lines[2].endswith(",yes,yes,") and lines[6].endswith(",no,no,")

    book = tmp_path / "requests.xlsx"
    result = villagebeat(
        "export", "requests", "--month", "2026-11", "--station", "S02", "--format", "xlsx",
        "--out", str(book), env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote 1 request for 2026-11 (station S02) to {book}\n"
    sheet = load_workbook(book).active
    assert [c.value for c in sheet[2]][:5] == [
        _ref(seeded_requests["overdue"]),
        "V003",
        "东关社区",
        "S02",
        None,
    ]
