"""`villagebeat import directory FILE`: read a CSV/XLSX directory and apply it in one transaction.

The file is authoritative for the villages it lists: each ends up with exactly the assignments
the file gives it. Villages, stations and officers the file does not mention are left alone.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import openpyxl
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.directory import (
    Directory,
    DirectoryError,
    RowProblem,
    header_columns,
    parse_directory,
)
from core.roles import AssignmentKind
from core.tokens import new_village_token
from storage import locks

IMPORT_LOCK = locks.DIRECTORY_IMPORT
_SHOWN_REASSIGNMENTS = 20
_ZERO_PADDED = re.compile(r"0+")


# --- Reading files -------------------------------------------------------------------------


def read_directory_file(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The file's data rows keyed by column name, with the line a spreadsheet shows for each."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        table = _csv_table(path)
    elif suffix == ".xlsx":
        table = _xlsx_table(path)
    else:
        raise _file_error("only .csv and .xlsx files can be imported")
    return _records(table)


def _file_error(message: str) -> DirectoryError:
    """A problem with the whole file; callers show it after the file's name."""
    return DirectoryError([RowProblem(None, message)])


def _records(table: Iterable[tuple[int, Sequence[str]]]) -> list[tuple[int, dict[str, str]]]:
    rows = ((line, cells) for line, cells in table if any(c.strip() for c in cells))
    first = next(rows, None)
    if first is None:
        raise _file_error("the file is empty")
    header_line, header = first
    columns = header_columns(header, line=header_line)
    records = []
    for line, cells in rows:
        record: dict[str, str] = {}
        for index, value in enumerate(cells):
            name = columns[index] if index < len(columns) else None
            if name is not None:
                record[name] = value
            elif value.strip():
                record[f"column {index + 1}"] = value
        records.append((line, record))
    return records


def _csv_table(path: Path) -> list[tuple[int, list[str]]]:
    data = _read_bytes(path)
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Excel on Chinese Windows saves "CSV" in the ANSI code page, i.e. GBK/GB18030.
        try:
            content = data.decode("gb18030")
        except UnicodeDecodeError as exc:
            raise _file_error(f"neither UTF-8 nor GB18030 text ({exc})") from exc
    first_line = next((ln for ln in content.splitlines() if ln.strip()), "")
    delimiter = max((",", "\t", ";"), key=first_line.count)
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    table: list[tuple[int, list[str]]] = []
    try:
        # A record's index is the row number a spreadsheet shows, even with quoted line breaks.
        for number, cells in enumerate(reader, start=1):
            table.append((number, cells))
    except csv.Error as exc:
        raise DirectoryError([RowProblem(len(table) + 1, f"unreadable CSV: {exc}")]) from exc
    return table


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _file_error(f"cannot read the file: {exc.strerror or exc}") from exc


def _xlsx_table(path: Path) -> list[tuple[int, list[str]]]:
    with warnings.catch_warnings():
        # openpyxl warns about workbook features it drops (styles, validation): noise here.
        warnings.simplefilter("ignore")
        try:
            book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises many kinds for a damaged or foreign file
            raise _file_error(f"not a readable Excel workbook: {exc}") from exc
        try:
            sheet = book.worksheets[0]
            sheet.reset_dimensions()  # some writers record a wrong size; read what is there
            return [
                (number, [_cell_text(cell) for cell in row])
                for number, row in enumerate(sheet.iter_rows(), start=1)
            ]
        except Exception as exc:
            raise _file_error(f"cannot read the first sheet: {exc}") from exc
        finally:
            book.close()


def _cell_text(cell: Any) -> str:
    value = cell.value
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        digits = str(value)
        # A badge typed as 012345 keeps its zeros only through a "000000" number format.
        number_format = str(getattr(cell, "number_format", ""))
        if _ZERO_PADDED.fullmatch(number_format):
            digits = digits.zfill(len(number_format))
        return digits
    return str(value)


# --- Applying a directory ------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def __str__(self) -> str:
        return f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged"


class Reassignment(NamedTuple):
    """A village post whose officer changed; None: the post was, or is now, empty."""

    village_code: str
    kind: AssignmentKind
    old_badge: str | None
    new_badge: str | None


@dataclass(frozen=True)
class ImportReport:
    stations: Counts
    villages: Counts
    officers: Counts
    assignments: Counts
    removed_assignments: int
    reassignments: list[Reassignment] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        counts = (self.stations, self.villages, self.officers, self.assignments)
        return self.removed_assignments > 0 or any(c.created or c.updated for c in counts)

    def lines(self) -> list[str]:
        lines = [
            f"stations: {self.stations}",
            f"villages: {self.villages}",
            f"officers: {self.officers}",
            f"assignments: {self.assignments}, {self.removed_assignments} removed",
        ]
        # A post filled for the first time is no news; one that had an officer is.
        changed = [r for r in self.reassignments if r.old_badge is not None]
        if changed:
            lines.append(f"officer changed on {len(changed)} village posts:")
            for r in changed[:_SHOWN_REASSIGNMENTS]:
                lines.append(f"  {r.village_code} {r.kind}: {r.old_badge} -> {r.new_badge or '-'}")
            if len(changed) > _SHOWN_REASSIGNMENTS:
                lines.append(f"  … and {len(changed) - _SHOWN_REASSIGNMENTS} more")
        if not self.changed:
            lines.append("nothing changed")
        return lines


# Runs in the import's transaction once the directory is applied: what follows from the
# changes (moving villagers' requests) commits with them or not at all. storage cannot
# import bot, so the caller passes it in.
AfterImport = Callable[[AsyncSession, "ImportReport"], Awaitable[None]]


async def import_directory(
    sessions: async_sessionmaker[AsyncSession], path: Path, *, after: AfterImport | None = None
) -> ImportReport:
    """Read, check and apply `path` in one transaction: on any problem nothing is applied."""
    directory = parse_directory(read_directory_file(path))
    async with sessions() as session, session.begin():
        return await apply_directory(session, directory, after=after)


async def apply_directory(
    session: AsyncSession, directory: Directory, *, after: AfterImport | None = None
) -> ImportReport:
    """Upsert the directory in the caller's transaction (flushes, never commits), then run
    `after` in that transaction."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": IMPORT_LOCK})
    station_ids, stations = await _upsert(
        session, _STATIONS, {s.code: (s.name,) for s in directory.stations}
    )
    village_ids, villages = await _upsert(
        session,
        _VILLAGES,
        {
            v.code: (v.name, station_ids[v.station_code], *(v.centre or (None, None)))
            for v in directory.villages
        },
    )
    officer_ids, officers = await _upsert(
        session, _OFFICERS, {o.badge: (o.name,) for o in directory.officers}
    )
    assignments, removed, reassignments = await _replace_assignments(
        session, directory, village_ids=village_ids, officer_ids=officer_ids
    )
    await session.flush()
    report = ImportReport(stations, villages, officers, assignments, removed, reassignments)
    if after is not None:
        await after(session, report)
    return report


@dataclass(frozen=True)
class _Table:
    name: str
    key: str
    columns: tuple[tuple[str, str], ...]  # (column, SQL type) compared and updated
    fresh: tuple[tuple[str, str, Callable[[], object]], ...] = ()  # set on insert only


_STATIONS = _Table("stations", "code", (("name", "text"),))
_OFFICERS = _Table("officers", "badge", (("name", "text"),))
_VILLAGES = _Table(
    "villages",
    "code",
    (
        ("name", "text"),
        ("station_id", "integer"),
        ("latitude", "double precision"),
        ("longitude", "double precision"),
    ),
    fresh=(("join_token", "text", new_village_token),),
)


def _unnest(types: Sequence[str]) -> str:
    """unnest() over one array parameter per column: a whole batch in one statement."""
    return ", ".join(f"CAST(:a{i} AS {t}[])" for i, t in enumerate(types))


def _arrays(rows: Sequence[Sequence[object]], width: int) -> dict[str, list[object]]:
    return {f"a{i}": [row[i] for row in rows] for i in range(width)}


async def _upsert(
    session: AsyncSession, table: _Table, wanted: Mapping[str, tuple[object, ...]]
) -> tuple[dict[str, int], Counts]:
    """Insert the missing rows, update the differing ones; the ids of all, by key."""
    columns = [c for c, _ in table.columns]
    existing = await session.execute(
        text(
            f"SELECT id, {table.key}, {', '.join(columns)} FROM {table.name}"
            f" WHERE {table.key} = ANY(CAST(:keys AS text[]))"
        ),
        {"keys": list(wanted)},
    )
    ids: dict[str, int] = {}
    updates: list[tuple[object, ...]] = []
    for id_, key, *current in existing:
        ids[key] = id_
        if tuple(current) != wanted[key]:
            updates.append((id_, *wanted[key]))
    if updates:
        assigned = ", ".join(f"{c} = u.{c}" for c in columns)
        await session.execute(
            text(
                f"UPDATE {table.name} AS t SET {assigned}, updated_at = now()"
                f" FROM unnest({_unnest(['integer', *(t for _, t in table.columns)])})"
                f" AS u(id, {', '.join(columns)}) WHERE t.id = u.id"
            ),
            _arrays(updates, len(columns) + 1),
        )
    inserts = [
        (key, *values, *(make() for _, _, make in table.fresh))
        for key, values in wanted.items()
        if key not in ids
    ]
    if inserts:
        names = [table.key, *columns, *(c for c, _, _ in table.fresh)]
        types = ["text", *(t for _, t in table.columns), *(t for _, t, _ in table.fresh)]
        created = await session.execute(
            text(
                f"INSERT INTO {table.name} ({', '.join(names)})"
                f" SELECT * FROM unnest({_unnest(types)}) RETURNING id, {table.key}"
            ),
            _arrays(inserts, len(names)),
        )
        ids.update({key: id_ for id_, key in created})
    unchanged = len(wanted) - len(inserts) - len(updates)
    return ids, Counts(len(inserts), len(updates), unchanged)


async def _replace_assignments(
    session: AsyncSession,
    directory: Directory,
    *,
    village_ids: Mapping[str, int],
    officer_ids: Mapping[str, int],
) -> tuple[Counts, int, list[Reassignment]]:
    wanted = {
        (village_ids[a.village_code], officer_ids[a.officer_badge]): a.kind
        for a in directory.assignments
    }
    current = await session.execute(
        text(
            "SELECT a.id, a.village_id, a.officer_id, a.kind, a.created_at, o.badge"
            " FROM assignments AS a JOIN officers AS o ON o.id = a.officer_id"
            " WHERE a.village_id = ANY(CAST(:villages AS integer[]))"
        ),
        {"villages": list(village_ids.values())},
    )
    old_posts: dict[tuple[int, str], str] = {}
    held: set[tuple[int, int]] = set()
    removed: list[int] = []
    rekinded: list[tuple[object, ...]] = []
    for id_, village_id, officer_id, kind, created_at, badge in current:
        old_posts[village_id, kind] = badge
        held.add((village_id, officer_id))
        new_kind = wanted.get((village_id, officer_id))
        if new_kind is None:
            removed.append(id_)
        elif new_kind != kind:
            rekinded.append((id_, officer_id, village_id, new_kind.value, created_at))
    # Delete before inserting so that officers can swap posts: PostgreSQL checks the unique
    # constraints row by row, so updating a swap in place would collide with itself.
    if removed or rekinded:
        await session.execute(
            text("DELETE FROM assignments WHERE id = ANY(CAST(:ids AS integer[]))"),
            {"ids": removed + [row[0] for row in rekinded]},
        )
    if rekinded:  # the same assignment with its new kind: id and created_at are kept
        types = ["integer", "integer", "integer", "text", "timestamptz"]
        await session.execute(
            text(
                "INSERT INTO assignments (id, officer_id, village_id, kind, created_at)"
                f" SELECT * FROM unnest({_unnest(types)})"
            ),
            _arrays(rekinded, len(types)),
        )
    created = [
        (officer_id, village_id, kind.value)
        for (village_id, officer_id), kind in wanted.items()
        if (village_id, officer_id) not in held
    ]
    if created:
        await session.execute(
            text(
                "INSERT INTO assignments (officer_id, village_id, kind)"
                f" SELECT * FROM unnest({_unnest(['integer', 'integer', 'text'])})"
            ),
            _arrays(created, 3),
        )
    unchanged = len(held) - len(removed) - len(rekinded)
    counts = Counts(len(created), len(rekinded), unchanged)
    return counts, len(removed), _reassignments(directory, village_ids, old_posts)


def _reassignments(
    directory: Directory, village_ids: Mapping[str, int], old_posts: Mapping[tuple[int, str], str]
) -> list[Reassignment]:
    """Every post of the file's villages whose officer differs from before, in file order."""
    new_posts = {
        (village_ids[a.village_code], a.kind.value): a.officer_badge for a in directory.assignments
    }
    changes = []
    for village in directory.villages:
        for kind in AssignmentKind:
            post = (village_ids[village.code], kind.value)
            old, new = old_posts.get(post), new_posts.get(post)
            if old != new:
                changes.append(Reassignment(village.code, kind, old, new))
    return changes
