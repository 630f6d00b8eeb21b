"""`villagebeat import directory`: reading, checking and applying the officer directory."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import openpyxl
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import storage.directory
from core.directory import COLUMNS, DirectoryError, RowProblem, parse_directory
from core.roles import AssignmentKind
from storage.directory import (
    IMPORT_LOCK,
    Counts,
    ImportReport,
    Reassignment,
    import_directory,
    read_directory_file,
)
from storage.models import Assignment, Officer, Station, Village

Sessions = async_sessionmaker[AsyncSession]
RESIDENT, CONTACT = AssignmentKind.RESIDENT, AssignmentKind.CONTACT

# station, station name, village, village name, latitude, longitude, badge, officer, assignment
BASE = [
    ["S1", "城关派出所", "V1", "东村", "34.75", "113.62", "001", "张伟", "resident"],
    ["S1", "城关派出所", "V1", "东村", "34.75", "113.62", "002", "王芳", "contact"],
    ["S1", "城关派出所", "V2", "西村", "34.7", "113.6", "003", "李娜", "驻村"],
    ["S2", "南关派出所", "V3", "南村", "", "", "004", "刘洋", "包村"],
]
BASE_ASSIGNMENTS = {
    ("V1", "001", "resident"),
    ("V1", "002", "contact"),
    ("V2", "003", "resident"),
    ("V3", "004", "contact"),
}


def write_csv(
    path: Path,
    rows: Sequence[Sequence[str]],
    *,
    header: Sequence[str] = COLUMNS,
    encoding: str = "utf-8",
    delimiter: str = ",",
) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows([header, *rows])
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def write_xlsx(path: Path, rows: Sequence[Sequence[Any]]) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(list(row))
    book.save(path)
    return path


def as_rows(*rows: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    return [(line, dict(zip(COLUMNS, row, strict=True))) for line, row in enumerate(rows, 2)]


class State(NamedTuple):
    stations: dict[str, str]
    villages: dict[str, tuple[str, str, float | None, float | None]]
    officers: dict[str, str]
    assignments: set[tuple[str, str, str]]


async def state(sessions: Sessions) -> State:
    async with sessions() as session:
        stations = await session.execute(select(Station.code, Station.name))
        villages = await session.execute(
            select(
                Village.code, Village.name, Station.code, Village.latitude, Village.longitude
            ).join(Station, Village.station_id == Station.id)
        )
        officers = await session.execute(select(Officer.badge, Officer.name))
        assignments = await session.execute(
            select(Village.code, Officer.badge, Assignment.kind)
            .join(Village, Assignment.village_id == Village.id)
            .join(Officer, Assignment.officer_id == Officer.id)
        )
        return State(
            stations={code: name for code, name in stations},
            villages={
                code: (name, station, lat, lon) for code, name, station, lat, lon in villages
            },
            officers={badge: name for badge, name in officers},
            assignments={(village, badge, kind) for village, badge, kind in assignments},
        )


async def row_counts(sessions: Sessions) -> dict[str, int]:
    async with sessions() as session:
        return {
            table: (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            for table in ("stations", "villages", "officers", "assignments")
        }


def problems_of(error: pytest.ExceptionInfo[DirectoryError]) -> list[tuple[int | None, str]]:
    return [(p.line, p.message) for p in error.value.problems]


# --- Happy paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "delimiter"),
    [("utf-8", ","), ("utf-8-sig", ","), ("gb18030", ","), ("utf-8", "\t")],
)
async def test_first_import_creates_everything(
    sessions: Sessions, tmp_path: Path, encoding: str, delimiter: str
) -> None:
    path = write_csv(tmp_path / "dir.csv", BASE, encoding=encoding, delimiter=delimiter)
    if encoding == "gb18030":
        with pytest.raises(UnicodeDecodeError):
            path.read_bytes().decode("utf-8")

    report = await import_directory(sessions, path)

    assert await state(sessions) == State(
        stations={"S1": "城关派出所", "S2": "南关派出所"},
        villages={
            "V1": ("东村", "S1", 34.75, 113.62),
            "V2": ("西村", "S1", 34.7, 113.6),
            "V3": ("南村", "S2", None, None),
        },
        officers={"001": "张伟", "002": "王芳", "003": "李娜", "004": "刘洋"},
        assignments=BASE_ASSIGNMENTS,
    )
    assert report.stations == Counts(created=2)
    assert report.villages == Counts(created=3)
    assert report.officers == Counts(created=4)
    assert report.assignments == Counts(created=4)
    assert report.removed_assignments == 0
    assert report.reassignments == [
        Reassignment("V1", RESIDENT, None, "001"),
        Reassignment("V1", CONTACT, None, "002"),
        Reassignment("V2", RESIDENT, None, "003"),
        Reassignment("V3", CONTACT, None, "004"),
    ]
    assert report.changed
    assert report.lines()[:4] == [
        "stations: 2 created, 0 updated, 0 unchanged",
        "villages: 3 created, 0 updated, 0 unchanged",
        "officers: 4 created, 0 updated, 0 unchanged",
        "assignments: 4 created, 0 updated, 0 unchanged, 0 removed",
    ]
    assert "nothing changed" not in report.lines()
    async with sessions() as session:
        tokens = (await session.execute(select(Village.join_token))).scalars().all()
    assert len(set(tokens)) == 3 and all(len(t) >= 16 for t in tokens)


async def test_xlsx_numeric_cells_become_text(sessions: Sessions, tmp_path: Path) -> None:
    path = tmp_path / "dir.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(
        [
            " Station Code",
            "STATION_NAME",
            "village code",
            "Village Name",
            "Latitude",
            "longitude",
            "Officer-Badge",
            "officer name",
            "Assignment",
        ]
    )
    sheet.append([7, "城关派出所", 410122001, "东村", 34.75, 113, 12345, "张伟", "Resident"])
    sheet.append([7, "城关派出所", 410122002.0, "西村", None, None, 12346, "王芳", " 包村 "])
    sheet.cell(row=3, column=7).number_format = "000000"  # how Excel keeps a badge's zero
    sheet.append([])
    sheet.append([7, "城关派出所", 410122002.0, "西村", None, None, "abc", "赵六", "contact"])
    book.save(path)

    rows = read_directory_file(path)

    assert [line for line, _ in rows] == [2, 3, 5]
    assert rows[0][1] == {
        "station_code": "7",
        "station_name": "城关派出所",
        "village_code": "410122001",
        "village_name": "东村",
        "latitude": "34.75",
        "longitude": "113",
        "officer_badge": "12345",
        "officer_name": "张伟",
        "assignment": "Resident",
    }
    assert rows[1][1]["village_code"] == "410122002"
    assert rows[1][1]["officer_badge"] == "012346"
    assert rows[1][1]["latitude"] == ""
    with pytest.raises(DirectoryError) as error:
        parse_directory(rows)
    assert problems_of(error) == [
        (5, "village 410122002 already has a contact officer, 012346, on line 3")
    ]

    report = await import_directory(
        sessions,
        write_xlsx(
            tmp_path / "ok.xlsx",
            [
                list(COLUMNS),
                [7, "城关派出所", 410122001, "东村", 34.75, 113, 12345, "张伟", "驻村"],
            ],
        ),
    )
    assert report.assignments == Counts(created=1)
    assert (await state(sessions)).villages == {"410122001": ("东村", "7", 34.75, 113.0)}


async def test_reimport_changes_nothing(sessions: Sessions, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "dir.csv", BASE)
    await import_directory(sessions, path)
    query = select(Village.code, Village.join_token, Village.updated_at)
    async with sessions() as session:
        before = {tuple(row) for row in await session.execute(query)}

    report = await import_directory(sessions, path)

    assert report == ImportReport(
        stations=Counts(unchanged=2),
        villages=Counts(unchanged=3),
        officers=Counts(unchanged=4),
        assignments=Counts(unchanged=4),
        removed_assignments=0,
        reassignments=[],
    )
    assert not report.changed
    assert report.lines() == [
        "stations: 0 created, 0 updated, 2 unchanged",
        "villages: 0 created, 0 updated, 3 unchanged",
        "officers: 0 created, 0 updated, 4 unchanged",
        "assignments: 0 created, 0 updated, 4 unchanged, 0 removed",
        "nothing changed",
    ]
    async with sessions() as session:
        assert {tuple(row) for row in await session.execute(query)} == before


def county(villages: Mapping[str, tuple[str, str, list[tuple[str, str, str]]]]) -> list[list[str]]:
    """Rows from {village: (name, station, [(badge, officer name, kind)])}."""
    stations = {"S1": "城关派出所", "S2": "南关派出所"}
    return [
        [station, stations[station], code, name, "", "", badge, officer, kind]
        for code, (name, station, posts) in villages.items()
        for badge, officer, kind in posts
    ]


async def test_updated_file_applies_exactly_its_changes(sessions: Sessions, tmp_path: Path) -> None:
    first = county(
        {
            "V1": ("东村", "S1", [("001", "张伟", "resident"), ("002", "王芳", "contact")]),
            "V2": ("西村", "S1", [("003", "李娜", "resident"), ("004", "刘洋", "contact")]),
            "V3": ("南村", "S2", [("005", "陈静", "resident"), ("006", "杨帆", "contact")]),
            "V4": ("北村", "S2", [("007", "赵磊", "resident")]),
            "V5": ("中村", "S1", [("009", "周敏", "resident"), ("010", "吴强", "contact")]),
            "V6": ("前村", "S1", [("011", "徐杰", "resident")]),
            "V7": ("后村", "S2", [("014", "孙丽", "resident")]),
            "V8": ("外村", "S2", [("015", "马超", "resident")]),
            "V9": ("上村", "S1", [("016", "朱婷", "resident"), ("017", "胡军", "contact")]),
        }
    )
    second = county(
        {
            "V1": ("东庄村", "S1", [("001", "张伟", "resident"), ("002", "王芳", "contact")]),
            "V2": ("西村", "S1", [("005", "陈静", "resident"), ("004", "刘阳", "contact")]),
            "V3": ("南村", "S2", [("003", "李娜", "resident"), ("006", "杨帆", "contact")]),
            "V4": ("北村", "S2", [("007", "赵磊", "contact"), ("008", "郭亮", "resident")]),
            "V5": ("中村", "S1", [("009", "周敏", "resident")]),
            "V6": ("前村", "S1", [("013", "何平", "resident")]),
            "V7": ("后村", "S2", [("014", "孙丽", "resident"), ("011", "徐杰", "contact")]),
            "V9": ("上村", "S1", [("016", "朱婷", "contact"), ("017", "胡军", "resident")]),
        }
    )
    await import_directory(sessions, write_csv(tmp_path / "first.csv", first))
    ids_query = (
        select(Village.code, Officer.badge, Assignment.id, Assignment.created_at)
        .join(Village, Assignment.village_id == Village.id)
        .join(Officer, Assignment.officer_id == Officer.id)
    )
    async with sessions() as session:
        ids_before = {(v, b): rest for v, b, *rest in await session.execute(ids_query)}

    report = await import_directory(sessions, write_csv(tmp_path / "second.csv", second))

    assert report.stations == Counts(unchanged=2)
    assert report.villages == Counts(updated=1, unchanged=7)
    assert report.officers == Counts(created=2, updated=1, unchanged=11)
    assert report.assignments == Counts(created=5, updated=3, unchanged=6)
    assert report.removed_assignments == 4
    assert report.reassignments == [
        Reassignment("V2", RESIDENT, "003", "005"),
        Reassignment("V3", RESIDENT, "005", "003"),
        Reassignment("V4", RESIDENT, "007", "008"),
        Reassignment("V4", CONTACT, None, "007"),
        Reassignment("V5", CONTACT, "010", None),
        Reassignment("V6", RESIDENT, "011", "013"),
        Reassignment("V7", CONTACT, None, "011"),
        Reassignment("V9", RESIDENT, "016", "017"),
        Reassignment("V9", CONTACT, "017", "016"),
    ]
    assert "  V9 contact: 017 -> 016" in report.lines()
    after = await state(sessions)
    assert after.villages["V1"][0] == "东庄村"
    assert after.villages["V8"] == ("外村", "S2", None, None)  # absent from the file: kept
    assert after.officers["004"] == "刘阳"
    assert after.officers["010"] == "吴强"  # no longer assigned, still an officer
    expected = {(v, b, k) for _, _, v, _, _, _, b, _, k in second} | {("V8", "015", "resident")}
    assert after.assignments == expected
    async with sessions() as session:
        ids_after = {(v, b): rest for v, b, *rest in await session.execute(ids_query)}
    for kept in [("V1", "001"), ("V4", "007"), ("V9", "016"), ("V9", "017"), ("V8", "015")]:
        assert ids_after[kept] == ids_before[kept]  # a kind change keeps id and created_at


# --- Validation ----------------------------------------------------------------------------

GOOD = ["S1", "城关派出所", "V1", "东村", "34.75", "113.62", "001", "张伟", "resident"]


def good(**changes: str) -> list[str]:
    return [changes.get(column, value) for column, value in zip(COLUMNS, GOOD, strict=True)]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        *[
            ({column: "  "}, f"{column} is empty")
            for column in COLUMNS
            if column not in {"latitude", "longitude"}
        ],
        ({"latitude": ""}, "latitude is empty but longitude is given"),
        ({"longitude": " "}, "longitude is empty but latitude is given"),
        ({"latitude": "北纬34"}, "latitude is not a number: '北纬34'"),
        ({"longitude": "nan"}, "longitude is not a number: 'nan'"),
        ({"latitude": "90.5"}, "latitude 90.5 is out of range (-90..90)"),
        ({"longitude": "-181"}, "longitude -181 is out of range (-180..180)"),
        ({"station_code": "S" * 65}, "station_code is longer than 64 characters (65)"),
        ({"officer_badge": "9" * 65}, "officer_badge is longer than 64 characters (65)"),
        ({"village_name": "村" * 201}, "village_name is longer than 200 characters (201)"),
        ({"officer_name": "张\x00伟"}, "officer_name contains a control character (U+0000)"),
        ({"village_name": "东\n村"}, "village_name contains a control character (U+000A)"),
        (
            {"assignment": "辅警"},
            "unknown assignment '辅警' (expected resident/驻村 or contact/包村)",
        ),
        (
            {"village_code": "4.10122E+11"},
            "village_code 4.10122E+11 looks mangled by Excel; format the column as text",
        ),
    ],
)
def test_each_field_rule_names_its_line(changes: dict[str, str], message: str) -> None:
    rows = as_rows(GOOD, good(**{"village_code": "V2", "officer_badge": "002", **changes}))
    with pytest.raises(DirectoryError) as error:
        parse_directory(rows)
    assert problems_of(error) == [(3, message)]


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({"assignment": " Resident "}, RESIDENT),
        ({"assignment": "CON TACT"}, CONTACT),
        ({"assignment": "驻 村"}, RESIDENT),
        ({"assignment": "包村民警"}, CONTACT),
        ({"latitude": "-90", "longitude": "180"}, RESIDENT),
        ({"latitude": "", "longitude": ""}, RESIDENT),
        ({"station_code": "S" * 64, "village_name": "村" * 200}, RESIDENT),
    ],
)
def test_accepted_variants(changes: dict[str, str], kind: AssignmentKind) -> None:
    directory = parse_directory(as_rows(good(**changes)))
    assert [a.kind for a in directory.assignments] == [kind]


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (
            good(station_name="城关所", village_code="V2", officer_badge="002"),
            "station S1 is named '城关所' here but '城关派出所' on line 2",
        ),
        (
            good(
                village_name="东庄",
                station_code="S2",
                latitude="34.8",
                officer_badge="002",
                assignment="contact",
            ),
            "village V1 differs from line 2: name '东庄' here but '东村' there;"
            " station S2 here but S1 there; centre 34.8,113.62 here but 34.75,113.62 there",
        ),
        (
            good(latitude="", longitude="", officer_badge="002", assignment="contact"),
            "village V1 differs from line 2: centre none here but 34.75,113.62 there",
        ),
        (
            good(village_code="V2", officer_name="张卫"),
            "officer 001 is named '张卫' here but '张伟' on line 2",
        ),
        (good(assignment="contact"), "officer 001 is already assigned to village V1 on line 2"),
        (
            good(officer_badge="002", officer_name="王芳"),
            "village V1 already has a resident officer, 001, on line 2",
        ),
        (good(), "duplicate of line 2"),
        (good(station_code=" S1 ", assignment="resident "), "duplicate of line 2"),
    ],
)
def test_each_cross_row_rule_names_both_lines(second: list[str], message: str) -> None:
    with pytest.raises(DirectoryError) as error:
        parse_directory(as_rows(GOOD, second))
    assert problems_of(error) == [(3, message)]


def test_two_contact_officers_for_one_village() -> None:
    rows = as_rows(
        good(officer_badge="002", assignment="包村"),
        good(officer_badge="003", assignment="contact"),
    )
    with pytest.raises(DirectoryError) as error:
        parse_directory(rows)
    assert problems_of(error) == [(3, "village V1 already has a contact officer, 002, on line 2")]


def test_every_problem_is_reported_in_line_order() -> None:
    rows = [
        (9, {**dict(zip(COLUMNS, GOOD, strict=True)), "column 10": " note "}),
        (
            2,
            dict(zip(COLUMNS, good(village_code="V2", latitude="x", officer_name=""), strict=True)),
        ),
    ]
    with pytest.raises(DirectoryError) as error:
        parse_directory(rows)
    assert problems_of(error) == [
        (2, "officer_name is empty"),
        (2, "latitude is not a number: 'x'"),
        (9, "value 'note' in column 10, which has no header"),
    ]
    assert str(error.value).splitlines()[0] == "line 2: officer_name is empty"


def test_no_rows_is_an_error() -> None:
    with pytest.raises(DirectoryError) as error:
        parse_directory([])
    assert problems_of(error) == [(None, "the file has no data rows")]


# --- Files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ([*COLUMNS, "remarks"], "unknown columns: remarks"),
        (
            [c for c in COLUMNS if c not in {"latitude", "longitude"}],
            "missing columns: latitude, longitude",
        ),
        ([*COLUMNS, "Latitude"], "repeated columns: latitude"),
    ],
)
def test_bad_header(tmp_path: Path, header: list[str], message: str) -> None:
    path = write_csv(tmp_path / "dir.csv", [GOOD], header=header)
    with pytest.raises(DirectoryError) as error:
        read_directory_file(path)
    [(line, text_)] = problems_of(error)
    assert line == 1
    assert text_ == f"{message} (expected {', '.join(COLUMNS)})"


def test_header_names_ignore_case_spaces_and_order(tmp_path: Path) -> None:
    header = [
        "Officer Badge ",
        " STATION_CODE",
        *[c.upper() for c in COLUMNS if c not in {"officer_badge", "station_code"}],
        "",
    ]
    row = [
        "001",
        "S1",
        *[
            v
            for c, v in zip(COLUMNS, GOOD, strict=True)
            if c not in {"officer_badge", "station_code"}
        ],
        "",
    ]
    rows = read_directory_file(write_csv(tmp_path / "dir.csv", [row], header=header))
    assert rows == [(2, dict(zip(COLUMNS, GOOD, strict=True)))]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"\r\n , ,\r\n\r\n", "the file is empty"),
        (",".join(COLUMNS).encode() + b"\r\n\r\n", "the file has no data rows"),
        (b"station_code\xff\r\n", "neither UTF-8 nor GB18030 text"),
    ],
)
async def test_unusable_csv(
    sessions: Sessions, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "dir.csv"
    path.write_bytes(content)
    with pytest.raises(DirectoryError) as error:
        await import_directory(sessions, path)
    [(line, text_)] = problems_of(error)
    assert line is None and text_.startswith(message)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("dir.xls", b"whatever", "only .csv and .xlsx files can be imported"),
        ("dir", b"whatever", "only .csv and .xlsx files can be imported"),
        ("dir.xlsx", b"not a zip", "not a readable Excel workbook"),
    ],
)
def test_unusable_file(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DirectoryError) as error:
        read_directory_file(path)
    assert error.value.problems[0].message.startswith(message)


def test_missing_file_is_a_directory_error(tmp_path: Path) -> None:
    with pytest.raises(DirectoryError, match="cannot read the file: No such file"):
        read_directory_file(tmp_path / "nope.csv")


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    path = tmp_path / "dir.csv"
    lines = [
        ",".join(COLUMNS),
        ",".join(GOOD),
        "",
        ",,,,,,,,",
        ",".join(good(village_code="V2", officer_badge="002", latitude="95")),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DirectoryError) as error:
        parse_directory(read_directory_file(path))
    assert problems_of(error) == [(5, "latitude 95 is out of range (-90..90)")]


def test_quoted_line_break_is_one_spreadsheet_row(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "dir.csv",
        [good(village_name="东\n村"), good(village_code="V2", officer_badge="002", latitude="x")],
    )
    with pytest.raises(DirectoryError) as error:
        parse_directory(read_directory_file(path))
    assert problems_of(error) == [
        (2, "village_name contains a control character (U+000A)"),
        (3, "latitude is not a number: 'x'"),
    ]


# --- All or nothing ------------------------------------------------------------------------


async def test_bad_rows_are_all_reported_and_nothing_is_applied(
    sessions: Sessions, tmp_path: Path
) -> None:
    await import_directory(sessions, write_csv(tmp_path / "first.csv", BASE))
    before, counts = await state(sessions), await row_counts(sessions)
    renamed = [[*r[:3], "东庄村", *r[4:]] if r[2] == "V1" else r for r in BASE]
    bad = [
        *renamed,  # lines 2..5: valid changes that must not be applied
        good(village_code="V9", village_name="新村", latitude="91", officer_badge="009"),
        good(village_code="V9", village_name="新村", officer_badge="010", assignment="辅警"),
        renamed[0],
        ["S3", "新所", "V10", "十村", "", "", "011", "", "contact"],
    ]

    with pytest.raises(DirectoryError) as error:
        await import_directory(sessions, write_csv(tmp_path / "bad.csv", bad))

    assert problems_of(error) == [
        (6, "latitude 91 is out of range (-90..90)"),
        (7, "unknown assignment '辅警' (expected resident/驻村 or contact/包村)"),
        (8, "duplicate of line 2"),
        (9, "officer_name is empty"),
    ]
    assert await row_counts(sessions) == counts
    assert await state(sessions) == before


async def test_a_failure_while_applying_rolls_everything_back(
    sessions: Sessions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> NoReturn:
        raise RuntimeError("connection lost")

    monkeypatch.setattr(storage.directory, "_replace_assignments", broken)
    with pytest.raises(RuntimeError):
        await import_directory(sessions, write_csv(tmp_path / "dir.csv", BASE))
    assert await row_counts(sessions) == dict.fromkeys(
        ("stations", "villages", "officers", "assignments"), 0
    )


async def test_imports_wait_for_each_other(sessions: Sessions, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "dir.csv", BASE)
    async with sessions() as holder, holder.begin():
        await holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": IMPORT_LOCK})
        waiting = asyncio.create_task(import_directory(sessions, path))
        await asyncio.sleep(0.5)
        assert not waiting.done()
    assert (await waiting).villages == Counts(created=3)

    reports = await asyncio.gather(*(import_directory(sessions, path) for _ in range(3)))
    assert [r.changed for r in reports] == [False, False, False]


async def test_concurrent_first_imports_do_not_collide(sessions: Sessions, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "dir.csv", BASE)
    reports = await asyncio.gather(*(import_directory(sessions, path) for _ in range(3)))
    assert sorted(r.changed for r in reports) == [False, False, True]
    assert (await state(sessions)).assignments == BASE_ASSIGNMENTS


# --- Scale ---------------------------------------------------------------------------------


def big_directory(villages: int) -> list[list[str]]:
    """Two posts per village; a contact officer covers five villages, as county staff do."""
    rows = []
    for i in range(villages):
        station = f"41{i // 20:06d}"
        village = f"4101{i:08d}"
        centre = [f"{32 + i % 1000 / 250:.4f}", f"{111 + i % 997 / 200:.4f}"]
        rows.append(
            [
                station,
                f"第{i // 20}派出所",
                village,
                f"{i}号村",
                *centre,
                f"R{i:06d}",
                f"驻村民警{i}",
                "resident",
            ]
        )
        rows.append(
            [
                station,
                f"第{i // 20}派出所",
                village,
                f"{i}号村",
                *centre,
                f"C{i // 5:06d}",
                f"包村民警{i // 5}",
                "contact",
            ]
        )
    return rows


async def test_fifty_thousand_rows(sessions: Sessions, tmp_path: Path) -> None:
    rows = big_directory(25_000)
    path = write_csv(tmp_path / "province.csv", rows)

    started = time.perf_counter()
    report = await import_directory(sessions, path)
    first = time.perf_counter() - started
    assert report.villages == Counts(created=25_000)
    assert report.officers == Counts(created=30_000)
    assert report.assignments == Counts(created=50_000)

    rows[0][3] = rows[1][3] = "改名村"
    rows[2][6], rows[4][6] = rows[4][6], rows[2][6]  # two resident officers swap villages
    rows[2][7], rows[4][7] = rows[4][7], rows[2][7]
    started = time.perf_counter()
    report = await import_directory(sessions, write_csv(tmp_path / "again.csv", rows))
    second = time.perf_counter() - started
    assert report.villages == Counts(updated=1, unchanged=24_999)
    assert report.assignments == Counts(created=2, unchanged=49_998)
    assert report.removed_assignments == 2
    assert report.reassignments == [
        Reassignment("410100000001", RESIDENT, "R000001", "R000002"),
        Reassignment("410100000002", RESIDENT, "R000002", "R000001"),
    ]
    assert first < 30 and second < 30, (first, second)


def test_problem_str() -> None:
    assert str(RowProblem(None, "the file is empty")) == "the file is empty"
    assert str(RowProblem(4, "x")) == "line 4: x"
