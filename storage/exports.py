"""Monthly exports for the county office: one query per export, written as CSV or XLSX.

Rows are tuples of plain values in the order of the export's columns: `bool`, `int`,
`float`, `Decimal`, `str`, `date`, `datetime` (aware, in the county's time zone) or `None`.
The writers decide how each type looks in a CSV cell or an Excel cell, so a later digest can
attach the very same spreadsheet."""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
import unicodedata
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Literal

from sqlalchemy import ColumnElement, String, cast, func, literal, literal_column, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession

from core.activities import ORDER
from core.requests import (
    DEFAULT_DEADLINES,
    Clock,
    DeadlineConfig,
    Event,
    deadline_state,
    timeline_of,
    was_met,
)
from core.scoring import Source
from storage.models import (
    Hazard,
    Officer,
    Photo,
    Request,
    Station,
    Village,
    VisitActivity,
    VisitReport,
)
from storage.requests import histories, reference

VISIT_COLUMNS = (
    "report_id",
    "officer_badge",
    "officer_name",
    "village_code",
    "village_name",
    "visit_date",
    "hours",
    "households",
    "activities",
    "latitude",
    "longitude",
    "distance_m",
    "photos",
    "notes",
    "submitted_at",
)

HAZARD_COLUMNS = (
    "hazard_id",
    "village_code",
    "village_name",
    "officer_badge",
    "category",
    "severity",
    "status",
    "description",
    "latitude",
    "longitude",
    "photos",
    "reported_at",
    "due_at",
    "closed_at",
    "closed_how",
)

REQUEST_COLUMNS = (
    "request_id",
    "village_code",
    "village_name",
    "station_code",
    "officer_badge",
    "category",
    "status",
    "anonymous",
    "created_at",
    "acknowledged_at",
    "answered_at",
    "resolved_at",
    "department",
    "rating",
    "ack_met",
    "answer_met",
    "department_met",
)

# The activity list in the specification's order; `activities` cells follow it.
ACTIVITY_ORDER = tuple(a.value for a in ORDER)

Row = tuple[Any, ...]
Format = Literal["csv", "xlsx"]


class UnknownStationError(LookupError):
    """The `--station` code names no station."""


def month_start(month: date) -> date:
    return month.replace(day=1)


def next_month(month: date) -> date:
    start = month_start(month)
    return date(start.year + start.month // 12, start.month % 12 + 1, 1)


async def _check_station(session: AsyncSession, station_code: str | None) -> None:
    if station_code is None:
        return
    found = await session.scalar(select(Station.id).where(Station.code == station_code))
    if found is None:
        raise UnknownStationError(f"no station with code {station_code!r}")


def _in_station(station_code: str | None) -> list[ColumnElement[bool]]:
    if station_code is None:
        return []
    station = select(Station.id).where(Station.code == station_code).scalar_subquery()
    return [Village.station_id == station]


def _local(value: datetime | None, tz: zoneinfo.ZoneInfo) -> datetime | None:
    return None if value is None else value.astimezone(tz).replace(microsecond=0)


_ACTIVITY_POSITION: ColumnElement[Any] = literal_column(
    "ARRAY[" + ", ".join(f"'{code}'" for code in ACTIVITY_ORDER) + "]::text[]"
)


async def visit_rows(
    session: AsyncSession, *, month: date, station_code: str | None, tz: str
) -> list[Row]:
    """The month's visit reports (by `visit_date`), in VISIT_COLUMNS order, by date then id."""
    await _check_station(session, station_code)
    zone = zoneinfo.ZoneInfo(tz)
    activities = (
        select(
            func.string_agg(
                VisitActivity.code + ":" + cast(VisitActivity.count, String),
                aggregate_order_by(
                    literal(";"),
                    func.array_position(_ACTIVITY_POSITION, VisitActivity.code),
                    VisitActivity.code,
                ),
            )
        )
        .where(VisitActivity.report_id == VisitReport.id)
        .scalar_subquery()
    )
    photos = (
        select(func.count())
        .select_from(Photo)
        .where(Photo.visit_report_id == VisitReport.id)
        .scalar_subquery()
    )
    query = (
        select(
            VisitReport.id,
            Officer.badge,
            Officer.name,
            Village.code,
            Village.name,
            VisitReport.visit_date,
            VisitReport.hours,
            VisitReport.households,
            activities,
            VisitReport.latitude,
            VisitReport.longitude,
            VisitReport.distance_m,
            photos,
            VisitReport.notes,
            VisitReport.submitted_at,
        )
        .join(Officer, Officer.id == VisitReport.officer_id)
        .join(Village, Village.id == VisitReport.village_id)
        .where(
            VisitReport.visit_date >= month_start(month),
            VisitReport.visit_date < next_month(month),
            *_in_station(station_code),
        )
        .order_by(VisitReport.visit_date, VisitReport.id)
    )
    raw: list[Row] = [tuple(row) for row in await session.execute(query)]
    return [(*row[:-1], _local(row[-1], zone)) for row in raw]


async def hazard_rows(
    session: AsyncSession, *, month: date, station_code: str | None, tz: str
) -> list[Row]:
    """The month's hazards (by `reported_at` in the county's time zone), in HAZARD_COLUMNS
    order, by report time then id. `photos` counts the evidence photos, not the after ones."""
    await _check_station(session, station_code)
    zone = zoneinfo.ZoneInfo(tz)
    start, end = _month_bounds(month, zone)
    photos = (
        select(func.count())
        .select_from(Photo)
        .where(Photo.hazard_id == Hazard.id, Photo.role == "evidence")
        .scalar_subquery()
    )
    query = (
        select(
            Hazard.id,
            Village.code,
            Village.name,
            Officer.badge,
            Hazard.category,
            Hazard.severity,
            Hazard.status,
            Hazard.description,
            Hazard.latitude,
            Hazard.longitude,
            photos,
            Hazard.reported_at,
            Hazard.due_at,
            Hazard.closed_at,
            Hazard.closed_how,
        )
        .join(Officer, Officer.id == Hazard.officer_id)
        .join(Village, Village.id == Hazard.village_id)
        .where(Hazard.reported_at >= start, Hazard.reported_at < end, *_in_station(station_code))
        .order_by(Hazard.reported_at, Hazard.id)
    )
    raw: list[Row] = [tuple(row) for row in await session.execute(query)]
    return [(*row[:11], *(_local(stamp, zone) for stamp in row[11:14]), row[14]) for row in raw]


def _month_bounds(month: date, zone: zoneinfo.ZoneInfo) -> tuple[datetime, datetime]:
    """The month as an instant range: midnight on the 1st, county time, to the next 1st."""
    start = datetime.combine(month_start(month), datetime.min.time(), zone)
    return start, datetime.combine(next_month(month), datetime.min.time(), zone)


async def request_rows(
    session: AsyncSession,
    *,
    month: date,
    station_code: str | None,
    tz: str,
    now: datetime | None = None,
    deadlines: DeadlineConfig = DEFAULT_DEADLINES,
) -> list[Row]:
    """The month's villagers' requests (by `created_at` in the county's time zone), in
    REQUEST_COLUMNS order, by creation time then id. Nothing identifies the villager.

    The times come from each request's history: the first acknowledgement (explicit or
    implied), the first answer ever given, and when it was resolved or closed (empty while
    open). The *_met columns judge the deadlines as of `now` (default: the current time):
    True met, False missed or overdue, None not known yet or never started (the department
    clock of a request never forwarded). `deadlines` are the ones in force (settings)."""
    await _check_station(session, station_code)
    zone = zoneinfo.ZoneInfo(tz)
    start, end = _month_bounds(month, zone)
    now = datetime.now(zone) if now is None else now
    query = (
        select(
            Request.id,
            Village.code,
            Village.name,
            Station.code,
            Officer.badge,
            Request.category,
            Request.status,
            Request.anonymous,
            Request.department,
            Request.rating,
        )
        .join(Village, Village.id == Request.village_id)
        .join(Station, Station.id == Village.station_id)
        .outerjoin(Officer, Officer.id == Request.officer_id)
        .where(Request.created_at >= start, Request.created_at < end, *_in_station(station_code))
        .order_by(Request.created_at, Request.id)
    )
    raw = (await session.execute(query)).all()
    events = await histories(session, [row[0] for row in raw])  # one query for all
    rows: list[Row] = []
    for request_id, village, village_name, station, badge, *fields in raw:
        category, status, anonymous, department, rating = fields
        entries = [e.entry for e in events[request_id]]
        timeline = timeline_of(entries)
        answered = next((e.at for e in entries if e.event in (Event.REPLIED, Event.ANSWERED)), None)
        met = was_met(deadline_state(timeline, now, deadlines))
        rows.append(
            (
                reference(request_id),
                village,
                village_name,
                station,
                badge,
                category,
                status,
                anonymous,
                _local(timeline.created_at, zone),
                _local(timeline.acknowledged_at, zone),
                _local(answered, zone),
                _local(timeline.finished_at, zone),
                department,
                rating,
                met[Clock.ACK],
                met[Clock.ANSWER],
                met[Clock.DEPARTMENT],
            )
        )
    return rows


SCORE_COLUMNS = (
    "officer_badge",
    "officer_name",
    "station_code",
    "station_name",
    "visit_days",
    "households",
    *(f"points_{source.value}" for source in Source),
    "total",
    "station_rank",
    "county_rank",
)
SCORE_ITEM_COLUMNS = ("officer_badge", "source", "code", "record", "units", "points")


async def score_rows(
    session: AsyncSession,
    *,
    month: date,
    station_code: str | None,
    tz: str,
    table: Mapping[str, int],
) -> tuple[list[Row], list[Row]]:
    """The month's ranking (SCORE_COLUMNS, best first; ranks among the whole station and
    county even with `station_code`) and every item behind it (SCORE_ITEM_COLUMNS, by
    officer in ranking order, then source and record)."""
    from storage import scores  # only this export needs it: the others start faster

    await _check_station(session, station_code)
    zone = zoneinfo.ZoneInfo(tz)
    scope = None
    if station_code is not None:
        scope = select(Station.id).where(Station.code == station_code)
    ranked = await scores.standings(session, month=month, tz=zone, table=table, scope=scope)
    items = await scores.month_items(session, month=month, tz=zone, scope=scope)
    ranking: list[Row] = [
        (
            s.member.badge,
            s.member.name,
            s.member.station_code,
            s.member.station_name,
            s.visit_days,
            s.households,
            *(s.by_source[source] for source in Source),
            s.points,
            s.station_rank,
            s.county_rank,
        )
        for s in ranked
    ]
    order = {s.member.officer_id: i for i, s in enumerate(ranked)}
    badge = {s.member.officer_id: s.member.badge for s in ranked}
    listed = sorted((i for i in items if i.officer_id in order), key=lambda i: order[i.officer_id])
    item_rows: list[Row] = [
        (badge[i.officer_id], i.source.value, i.code, i.record, i.units, i.points(table))
        for i in listed
    ]
    return ranking, item_rows


# --- writers ---------------------------------------------------------------------------


def csv_cell(value: Any) -> str:
    """A value as text: ISO-8601 dates and times (with the UTC offset), yes/no for a
    boolean, '' for NULL."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def write_csv(out: IO[bytes], columns: Sequence[str], rows: Sequence[Row]) -> None:
    """UTF-8 with a BOM (so that Excel on Chinese Windows shows Chinese), CRLF line ends."""
    text = io.TextIOWrapper(out, encoding="utf-8-sig", newline="", write_through=True)
    try:
        writer = csv.writer(text)
        writer.writerow(columns)
        writer.writerows([csv_cell(value) for value in row] for row in rows)
        text.flush()
    finally:
        text.detach()


DATE_FORMAT = "yyyy-mm-dd"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm"
DECIMAL_FORMAT = "0.0"
_MIN_WIDTH, _MAX_WIDTH = 6, 60


def _display_width(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, datetime):
        return 16
    if isinstance(value, date):
        return 10
    text = str(value)
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _column_widths(columns: Sequence[str], rows: Sequence[Row]) -> list[float]:
    widths = [len(name) + 4 for name in columns]  # room for the filter button
    for row in rows:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], _display_width(value) + 2)
    return [min(max(width, _MIN_WIDTH), _MAX_WIDTH) for width in widths]


@dataclass(frozen=True)
class Sheet:
    """One sheet of a workbook: its title (at most 31 characters, none of []:*?/\\),
    columns and rows."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Row]


_SHEET_TITLE_BAD = re.compile(r"[\[\]:*?/\\]")


def write_xlsx(
    out: IO[bytes], columns: Sequence[str], rows: Sequence[Row], *, title: str = "export"
) -> None:
    """One sheet: a bold, frozen header with an auto-filter; dates and times as Excel dates
    (local time, no zone), numbers as numbers, text always as text (never a formula)."""
    write_workbook(out, [Sheet(title, columns, rows)])


def write_workbook(out: IO[bytes], sheets: Sequence[Sheet]) -> None:
    """Several sheets, each written as write_xlsx writes its one (a digest's tables, or the
    scores with their items)."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    workbook = Workbook(write_only=True)
    bold = Font(bold=True)
    for spec in sheets:
        columns, rows = spec.columns, spec.rows
        sheet = workbook.create_sheet(title=_SHEET_TITLE_BAD.sub(" ", spec.title)[:31])
        # Column widths, panes and the filter range must be known before the first row.
        for i, width in enumerate(_column_widths(columns, rows), start=1):
            sheet.column_dimensions[get_column_letter(i)].width = width
        sheet.freeze_panes = "A2"
        sheet.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{len(rows) + 1}"

        def header(name: str, sheet: Any = sheet) -> Any:
            cell = WriteOnlyCell(sheet, value=name)
            cell.font = bold
            return cell

        def cell(value: Any, sheet: Any = sheet) -> Any:
            if value is None:
                return None
            if isinstance(value, str):
                text = WriteOnlyCell(sheet, value=ILLEGAL_CHARACTERS_RE.sub("", value))
                text.data_type = "s"  # '=…' stays text: no formula injection
                return text
            if isinstance(value, datetime):
                stamp = WriteOnlyCell(sheet, value=value.replace(tzinfo=None))
                stamp.number_format = DATETIME_FORMAT
                return stamp
            if isinstance(value, date):
                day = WriteOnlyCell(sheet, value=value)
                day.number_format = DATE_FORMAT
                return day
            if isinstance(value, Decimal):
                number = WriteOnlyCell(sheet, value=float(value))
                number.number_format = DECIMAL_FORMAT
                return number
            return value

        sheet.append([header(name) for name in columns])
        for row in rows:
            sheet.append([cell(value) for value in row])
    workbook.save(out)


def write_file(
    path: Path,
    fmt: Format,
    columns: Sequence[str],
    rows: Sequence[Row],
    *,
    title: str = "export",
) -> None:
    """Write to a temporary file beside `path`, then rename it: a failed export leaves
    no half-written file, and an existing file is replaced only by a complete one."""
    writers: dict[str, Callable[[IO[bytes]], None]] = {
        "csv": lambda out: write_csv(out, columns, rows),
        "xlsx": lambda out: write_xlsx(out, columns, rows, title=title),
    }
    _write_atomically(path, writers[fmt])


def write_workbook_file(path: Path, sheets: Sequence[Sheet]) -> None:
    """write_workbook to `path`, as write_file does (no half-written file)."""
    _write_atomically(path, lambda out: write_workbook(out, sheets))


def _write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    temp = path.with_name(f".{path.name[:200]}.{secrets.token_hex(4)}.tmp")
    # O_EXCL with mode 0666: the umask applies, as for any new file (mkstemp would give 0600).
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
