"""The activities an officer ticks in a visit report, and their export form.

Codes are stable (they are stored, exported and used as catalogue keys `activity.<code>`);
labels live in the translation catalogues, as do the units (`unit.<unit code>`).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class Activity(StrEnum):
    HOUSEHOLD_VISIT = "household_visit"
    PATROL = "patrol"
    DISPUTE_MEDIATION = "dispute_mediation"
    LEGAL_PUBLICITY = "legal_publicity"
    INFO_COLLECTION = "info_collection"
    HAZARD_INSPECTION = "hazard_inspection"
    RESIDENT_SERVICE = "resident_service"
    HARDSHIP_HELP = "hardship_help"
    CLUE_COLLECTED = "clue_collected"
    SCHOOL_DUTY = "school_duty"
    VENUE_INSPECTION = "venue_inspection"
    LINKAGE_MATTER = "linkage_matter"
    OTHER = "other"


ORDER: Final[tuple[Activity, ...]] = tuple(Activity)

# What a counted activity counts, as a stable unit code. household_visit is not counted here
# because the visit report asks for the households visited as a field of its own; school_duty
# is a stint at the school gate, not a number of things; other has nothing to count.
UNITS: Final[Mapping[Activity, str]] = MappingProxyType(
    {
        Activity.PATROL: "patrols",
        Activity.DISPUTE_MEDIATION: "disputes",
        Activity.LEGAL_PUBLICITY: "sessions",
        Activity.INFO_COLLECTION: "records",
        Activity.HAZARD_INSPECTION: "places",
        Activity.RESIDENT_SERVICE: "services",
        Activity.HARDSHIP_HELP: "households",
        Activity.CLUE_COLLECTED: "clues",
        Activity.VENUE_INSPECTION: "venues",
        Activity.LINKAGE_MATTER: "matters",
    }
)

COUNTED: Final[frozenset[Activity]] = frozenset(UNITS)

# Changde's quota counts "practical problems solved" (解决实际问题); these activities are them.
PROBLEM_SOLVING: Final[frozenset[Activity]] = frozenset(
    {
        Activity.DISPUTE_MEDIATION,
        Activity.RESIDENT_SERVICE,
        Activity.HARDSHIP_HELP,
        Activity.LINKAGE_MATTER,
    }
)

MIN_COUNT: Final = 1
MAX_COUNT: Final = 999

_SEPARATOR = ";"
_PAIR = ":"


def from_code(code: str) -> Activity | None:
    """The activity with this code, or None (e.g. for forged callback data)."""
    try:
        return Activity(code)
    except ValueError:
        return None


def check_count(activity: Activity, count: int | None) -> None:
    """Raise ValueError unless `count` fits the activity.

    A counted activity needs a count in MIN_COUNT..MAX_COUNT; an uncounted one takes None
    (or 1, the value it exports as).
    """
    if activity in COUNTED:
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"{activity} needs an integer count, got {count!r}")
        if not MIN_COUNT <= count <= MAX_COUNT:
            raise ValueError(f"{activity} count {count} is outside {MIN_COUNT}..{MAX_COUNT}")
    elif count is not None and (isinstance(count, bool) or count != 1):
        raise ValueError(f"{activity} is not counted, got {count!r}")


def encode(activities: Mapping[Activity, int | None]) -> str:
    """The export form: `code:count` joined by `;`, in ORDER.

    An uncounted activity exports as `code:1`, so every item of the column has the same
    shape and a spreadsheet can split it without special cases. An empty mapping gives "".
    Raises ValueError for a count that does not fit its activity (see check_count).
    """
    for activity, count in activities.items():
        check_count(Activity(activity), count)
    parts = []
    for activity in ORDER:
        if activity in activities:
            count = activities[activity]
            parts.append(f"{activity.value}{_PAIR}{1 if count is None else count}")
    return _SEPARATOR.join(parts)


def decode(text: str) -> dict[Activity, int | None]:
    """The inverse of encode: uncounted activities come back with None.

    Raises ValueError for an unknown code, a malformed or out-of-range count, or a repeat.
    """
    result: dict[Activity, int | None] = {}
    if not text:
        return result
    for part in text.split(_SEPARATOR):
        code, sep, number = part.partition(_PAIR)
        activity = from_code(code)
        if activity is None or not sep:
            raise ValueError(f"not an activity item: {part!r}")
        if activity in result:
            raise ValueError(f"activity {activity} repeated")
        if not (number.isascii() and number.isdigit()):
            raise ValueError(f"not a count: {part!r}")
        count: int | None = int(number) if activity in COUNTED else None
        if activity not in COUNTED and number != "1":
            raise ValueError(f"{activity} is not counted, got {number!r}")
        check_count(activity, count)
        result[activity] = count
    return result


def problems_solved(activities: Mapping[Activity, int | None]) -> int:
    """How many practical problems a report's activities solved, for the Changde quota."""
    return sum(count or 0 for activity, count in activities.items() if activity in PROBLEM_SOLVING)


def patrols(activities: Mapping[Activity, int | None]) -> int:
    """How many patrols a report's activities record."""
    return activities.get(Activity.PATROL) or 0
