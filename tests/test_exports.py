"""Monthly exports: exact CSV cells, the month in the county's time zone, the station
filter, XLSX read back with openpyxl, atomic writes and the `export` command."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage import exports
from storage.models import Hazard, Photo, VisitActivity, VisitReport
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
    assert "{visits,hazards}" in result.stdout and "requests" not in result.stdout
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
        (["requests", "--month", "2026-11", "--format", "csv", "--out", "x"], "invalid choice"),
        (["visits", "--month", "2026-11", "--format", "ods", "--out", "x"], "invalid choice"),
        (["visits", "--format", "csv", "--out", "x"], "required: --month"),
    ],
)
def test_export_usage_errors(args: list[str], fragment: str) -> None:
    result = villagebeat("export", *args)
    assert result.returncode == 2
    assert fragment in result.stderr and "AIOGRAM-IMPORTED" not in result.stderr
