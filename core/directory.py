"""The officer directory an operator imports: its rows checked and turned into plain data.

No I/O here: storage.directory reads files and applies a parsed Directory to the database.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from core.roles import AssignmentKind

COLUMNS = (
    "station_code",
    "station_name",
    "village_code",
    "village_name",
    "latitude",
    "longitude",
    "officer_badge",
    "officer_name",
    "assignment",
)
CODE_MAX = 64
NAME_MAX = 200
_CODES = {"station_code", "village_code", "officer_badge"}
_TEXTS = [c for c in COLUMNS if c not in {"latitude", "longitude"}]  # required, plain text
_KINDS = {
    "resident": AssignmentKind.RESIDENT,
    "驻村": AssignmentKind.RESIDENT,
    "驻村民警": AssignmentKind.RESIDENT,
    "contact": AssignmentKind.CONTACT,
    "包村": AssignmentKind.CONTACT,
    "包村民警": AssignmentKind.CONTACT,
}
_STATION_FIELDS = {"station_code", "station_name"}
_VILLAGE_FIELDS = {"village_code", "village_name", "station_code", "latitude", "longitude"}
_OFFICER_FIELDS = {"officer_badge", "officer_name"}
_ASSIGNMENT_FIELDS = {"village_code", "officer_badge", "assignment"}

# Excel shows a long number such as a 12-digit village code as 4.10122E+11, and saves it so.
_SCIENTIFIC = re.compile(r"\d(\.\d+)?E\+\d+", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc, exactly

Centre = tuple[float, float]


@dataclass(frozen=True)
class RowProblem:
    line: int | None  # None: the file as a whole
    message: str

    def __str__(self) -> str:
        return self.message if self.line is None else f"line {self.line}: {self.message}"


class DirectoryError(Exception):
    """Every problem found in a directory file; str() gives one problem a line."""

    def __init__(self, problems: Sequence[RowProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: -1 if p.line is None else p.line)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Station:
    code: str
    name: str


@dataclass(frozen=True)
class Village:
    code: str
    name: str
    station_code: str
    centre: Centre | None  # (latitude, longitude)


@dataclass(frozen=True)
class Officer:
    badge: str
    name: str


@dataclass(frozen=True)
class Assignment:
    village_code: str
    officer_badge: str
    kind: AssignmentKind


@dataclass(frozen=True)
class Directory:
    """Each entity once, in the order of its first line in the file."""

    stations: tuple[Station, ...]
    villages: tuple[Village, ...]
    officers: tuple[Officer, ...]
    assignments: tuple[Assignment, ...]


def header_columns(cells: Sequence[str], *, line: int = 1) -> list[str | None]:
    """The column name of each header cell (None for a blank cell), or every header problem."""
    names = [re.sub(r"[\s\-]+", "_", cell.strip().lower()) or None for cell in cells]
    present = [n for n in names if n is not None]
    problems = []
    unknown = [n for n in present if n not in COLUMNS]
    if unknown:
        problems.append(f"unknown columns: {', '.join(unknown)}")
    missing = [c for c in COLUMNS if c not in present]
    if missing:
        problems.append(f"missing columns: {', '.join(missing)}")
    repeated = sorted({n for n in present if present.count(n) > 1})
    if repeated:
        problems.append(f"repeated columns: {', '.join(repeated)}")
    if problems:
        expected = ", ".join(COLUMNS)
        raise DirectoryError([RowProblem(line, f"{p} (expected {expected})") for p in problems])
    return names


def parse_directory(rows: Iterable[tuple[int, Mapping[str, str]]]) -> Directory:
    """Check every row and the rows against each other; raise DirectoryError with all problems."""
    parser = _Parser()
    for line, row in rows:
        parser.add(line, row)
    return parser.result()


def _text_problem(column: str, value: str) -> str | None:
    if not value:
        return f"{column} is empty"
    limit = CODE_MAX if column in _CODES else NAME_MAX
    if len(value) > limit:
        return f"{column} is longer than {limit} characters ({len(value)})"
    if column in _CODES and _SCIENTIFIC.fullmatch(value):
        return f"{column} {value} looks mangled by Excel; format the column as text"
    control = _CONTROL.search(value)
    if control is not None:
        return f"{column} contains a control character (U+{ord(control.group()):04X})"
    return None


def _coordinate(column: str, value: str, limit: int) -> tuple[float | None, str | None]:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        return None, f"{column} is not a number: {value!r}"
    if not -limit <= number <= limit:
        return None, f"{column} {value} is out of range (-{limit}..{limit})"
    return number, None


def _describe(centre: Centre | None) -> str:
    return "none" if centre is None else f"{centre[0]},{centre[1]}"


class _Parser:
    def __init__(self) -> None:
        self.problems: list[RowProblem] = []
        self.rows = 0
        self.first_line_of_row: dict[tuple[str, ...], int] = {}
        self.stations: dict[str, tuple[Station, int]] = {}
        self.villages: dict[str, tuple[Village, int]] = {}
        self.officers: dict[str, tuple[Officer, int]] = {}
        self.pairs: dict[tuple[str, str], int] = {}
        self.slots: dict[tuple[str, AssignmentKind], tuple[str, int]] = {}
        self.assignments: list[Assignment] = []

    def add(self, line: int, row: Mapping[str, str]) -> None:
        self.rows += 1
        values = {c: (row.get(c) or "").strip() for c in COLUMNS}
        for key, value in row.items():
            if key not in COLUMNS and value.strip():
                self._problem(line, f"value {value.strip()!r} in {key}, which has no header")
        first = self.first_line_of_row.setdefault(tuple(values.values()), line)
        if first != line:
            self._problem(line, f"duplicate of line {first}")
            return  # its problems, if any, are reported on the first line
        bad: set[str] = set()
        for column in _TEXTS:
            message = _text_problem(column, values[column])
            if message is not None:
                self._problem(line, message)
                bad.add(column)
        centre = self._centre(line, values, bad)
        kind = _KINDS.get(re.sub(r"\s+", "", values["assignment"]).lower())
        if kind is None and "assignment" not in bad:
            self._problem(
                line,
                f"unknown assignment {values['assignment']!r}"
                " (expected resident/驻村 or contact/包村)",
            )
            bad.add("assignment")
        if not bad & _STATION_FIELDS:
            self._station(line, Station(values["station_code"], values["station_name"]))
        if not bad & _VILLAGE_FIELDS:
            village = Village(
                values["village_code"], values["village_name"], values["station_code"], centre
            )
            self._village(line, village)
        if not bad & _OFFICER_FIELDS:
            self._officer(line, Officer(values["officer_badge"], values["officer_name"]))
        if kind is not None and not bad & _ASSIGNMENT_FIELDS:
            self._assignment(
                line, Assignment(values["village_code"], values["officer_badge"], kind)
            )

    def result(self) -> Directory:
        if self.rows == 0:
            self.problems.append(RowProblem(None, "the file has no data rows"))
        if self.problems:
            raise DirectoryError(self.problems)
        return Directory(
            stations=tuple(s for s, _ in self.stations.values()),
            villages=tuple(v for v, _ in self.villages.values()),
            officers=tuple(o for o, _ in self.officers.values()),
            assignments=tuple(self.assignments),
        )

    def _problem(self, line: int, message: str) -> None:
        self.problems.append(RowProblem(line, message))

    def _centre(self, line: int, values: Mapping[str, str], bad: set[str]) -> Centre | None:
        latitude, longitude = values["latitude"], values["longitude"]
        if not latitude and not longitude:
            return None
        if not latitude or not longitude:
            empty, given = ("latitude", "longitude") if not latitude else ("longitude", "latitude")
            self._problem(line, f"{empty} is empty but {given} is given")
            bad.add(empty)
            return None
        lat, lat_problem = _coordinate("latitude", latitude, 90)
        lon, lon_problem = _coordinate("longitude", longitude, 180)
        for column, message in (("latitude", lat_problem), ("longitude", lon_problem)):
            if message is not None:
                self._problem(line, message)
                bad.add(column)
        return None if lat is None or lon is None else (lat, lon)

    def _station(self, line: int, station: Station) -> None:
        seen, first = self.stations.setdefault(station.code, (station, line))
        if seen.name != station.name:
            self._problem(
                line,
                f"station {station.code} is named {station.name!r} here"
                f" but {seen.name!r} on line {first}",
            )

    def _officer(self, line: int, officer: Officer) -> None:
        seen, first = self.officers.setdefault(officer.badge, (officer, line))
        if seen.name != officer.name:
            self._problem(
                line,
                f"officer {officer.badge} is named {officer.name!r} here"
                f" but {seen.name!r} on line {first}",
            )

    def _village(self, line: int, village: Village) -> None:
        seen, first = self.villages.setdefault(village.code, (village, line))
        differences = []
        if seen.name != village.name:
            differences.append(f"name {village.name!r} here but {seen.name!r} there")
        if seen.station_code != village.station_code:
            differences.append(f"station {village.station_code} here but {seen.station_code} there")
        if seen.centre != village.centre:
            here, there = _describe(village.centre), _describe(seen.centre)
            differences.append(f"centre {here} here but {there} there")
        if differences:
            self._problem(
                line, f"village {village.code} differs from line {first}: {'; '.join(differences)}"
            )

    def _assignment(self, line: int, assignment: Assignment) -> None:
        village, badge, kind = assignment.village_code, assignment.officer_badge, assignment.kind
        if (village, badge) in self.pairs:
            first = self.pairs[village, badge]
            self._problem(
                line, f"officer {badge} is already assigned to village {village} on line {first}"
            )
        elif (village, kind) in self.slots:
            other, first = self.slots[village, kind]
            self._problem(
                line, f"village {village} already has a {kind} officer, {other}, on line {first}"
            )
        else:
            self.pairs[village, badge] = line
            self.slots[village, kind] = (badge, line)
            self.assignments.append(assignment)
