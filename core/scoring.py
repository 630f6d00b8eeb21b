"""Points and ranking: "work is scoring, scoring is assessment, assessment is ranking"
(工作即得分、得分即考核、考核即排名).

Every point comes from one record: a day in a village (a visit report's date), the
households of a visit report, one activity line of a visit report, a resolved request, a
rectified or handed-over hazard. storage computes the items; the rules here say what each is
worth and turn totals into a ranking.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final, Protocol

from core.activities import Activity


class Source(StrEnum):
    """What earned the points; stored in exports, translated as `score_source.<code>`."""

    VISIT_DAY = "visit_day"  # a distinct day an officer spent in one of their villages
    HOUSEHOLD = "household"  # each household visited, from the visit report's field
    ACTIVITY = "activity"  # a visit report's activity line: count × the activity's points
    REQUEST_RESOLVED = "request_resolved"  # a villager's request the officer resolved
    HAZARD_RECTIFIED = "hazard_rectified"  # a hazard closed with an "after" photo
    HAZARD_HANDED_OVER = "hazard_handed_over"  # a hazard handed to the responsible department


# Points per unit. A visit day and a household are the programme's core duty; an activity is
# worth its effort; solving a villager's request or a hazard is worth most.
DEFAULT_POINTS: Final[Mapping[str, int]] = MappingProxyType(
    {
        Source.VISIT_DAY.value: 5,
        Source.HOUSEHOLD.value: 1,
        Source.REQUEST_RESOLVED.value: 5,
        Source.HAZARD_RECTIFIED.value: 5,
        Source.HAZARD_HANDED_OVER.value: 2,
        Activity.HOUSEHOLD_VISIT.value: 0,  # counted by the households field instead
        Activity.PATROL.value: 2,
        Activity.DISPUTE_MEDIATION.value: 5,
        Activity.LEGAL_PUBLICITY.value: 2,
        Activity.INFO_COLLECTION.value: 1,
        Activity.HAZARD_INSPECTION.value: 2,
        Activity.RESIDENT_SERVICE.value: 3,
        Activity.HARDSHIP_HELP.value: 3,
        Activity.CLUE_COLLECTED.value: 3,
        Activity.SCHOOL_DUTY.value: 2,
        Activity.VENUE_INSPECTION.value: 2,
        Activity.LINKAGE_MATTER.value: 3,
        Activity.OTHER.value: 1,
    }
)
MAX_POINTS: Final = 1000


def parse_points(text: str) -> dict[str, int]:
    """DEFAULT_POINTS with the overrides of `text` ("patrol=3,household=2"); ValueError
    naming the first bad entry."""
    points = dict(DEFAULT_POINTS)
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        key, sep, value = entry.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in DEFAULT_POINTS:
            known = ", ".join(DEFAULT_POINTS)
            raise ValueError(f"unknown score item {key!r} (known: {known})")
        if not (value.isascii() and value.isdigit()) or int(value) > MAX_POINTS:
            raise ValueError(f"points for {key} must be a whole number 0..{MAX_POINTS}")
        points[key] = int(value)
    return points


@dataclass(frozen=True)
class Item:
    """Points earned by one record. `code` is the activity for Source.ACTIVITY, else the
    source itself; `record` names the row that earned them (e.g. "V000012")."""

    officer_id: int
    source: Source
    code: str
    record: str
    units: int

    def points(self, table: Mapping[str, int]) -> int:
        return self.units * table[self.code]


@dataclass(frozen=True)
class Tally:
    """The items of one officer and code summed up: what a ranking needs, without the
    records (storage adds them up in the database)."""

    officer_id: int
    code: str
    units: int

    @property
    def source(self) -> Source:
        return source_of(self.code)

    def points(self, table: Mapping[str, int]) -> int:
        return self.units * table[self.code]


class Scored(Protocol):
    @property
    def officer_id(self) -> int: ...

    @property
    def source(self) -> Source: ...

    def points(self, table: Mapping[str, int]) -> int: ...


_SOURCE_CODES: Final = frozenset(s.value for s in Source if s is not Source.ACTIVITY)
# Which letter a record's number carries, as officers and villagers see it (V000012).
_RECORD_PREFIX: Final[Mapping[Source, str]] = MappingProxyType(
    {
        Source.VISIT_DAY: "V",
        Source.HOUSEHOLD: "V",
        Source.ACTIVITY: "V",
        Source.REQUEST_RESOLVED: "R",
        Source.HAZARD_RECTIFIED: "H",
        Source.HAZARD_HANDED_OVER: "H",
    }
)


def source_of(code: str) -> Source:
    """The source of a points-table code: itself, or ACTIVITY for an activity code."""
    return Source(code) if code in _SOURCE_CODES else Source.ACTIVITY


def record_name(source: Source, record_id: int) -> str:
    """The reference of the record that earned an item: V000012, R000003, H000004."""
    return f"{_RECORD_PREFIX[source]}{record_id:06d}"


def totals(items: Iterable[Scored], table: Mapping[str, int]) -> dict[int, int]:
    result: dict[int, int] = {}
    for item in items:
        result[item.officer_id] = result.get(item.officer_id, 0) + item.points(table)
    return result


def by_source(items: Iterable[Scored], table: Mapping[str, int]) -> dict[int, dict[Source, int]]:
    """Points per officer and source, every source present (0 when none)."""
    result: dict[int, dict[Source, int]] = {}
    for item in items:
        points = result.setdefault(item.officer_id, dict.fromkeys(Source, 0))
        points[item.source] += item.points(table)
    return result


def rank(scores: Mapping[int, int]) -> dict[int, int]:
    """Competition ranking ("1224"): equal scores share a rank, the next rank skips."""
    ordered = sorted(scores.values(), reverse=True)
    first: dict[int, int] = {}
    for position, score in enumerate(ordered, start=1):
        first.setdefault(score, position)
    return {key: first[score] for key, score in scores.items()}
