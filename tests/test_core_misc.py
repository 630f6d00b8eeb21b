"""Activities and their export form, distances, hazards."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from core.activities import (
    COUNTED,
    MAX_COUNT,
    ORDER,
    PROBLEM_SOLVING,
    UNITS,
    Activity,
    check_count,
    decode,
    encode,
    from_code,
    patrols,
    problems_solved,
)
from core.geo import EARTH_RADIUS_M, distance_m, far_from_centre, valid_point
from core.hazards import (
    CLOSED_STATUSES,
    DEFAULT_DEPARTMENTS,
    HazardCategory,
    HazardStatus,
    Severity,
    reinspection_due,
)

A = Activity

SPEC_CODES = [
    "household_visit",
    "patrol",
    "dispute_mediation",
    "legal_publicity",
    "info_collection",
    "hazard_inspection",
    "resident_service",
    "hardship_help",
    "clue_collected",
    "school_duty",
    "venue_inspection",
    "linkage_matter",
    "other",
]


def test_activity_codes_are_the_specs_in_order() -> None:
    assert [a.value for a in ORDER] == SPEC_CODES
    assert [str(a) for a in Activity] == SPEC_CODES
    assert len(set(ORDER)) == len(ORDER)


def test_what_is_counted() -> None:
    assert {
        A.PATROL,
        A.DISPUTE_MEDIATION,
        A.LEGAL_PUBLICITY,
        A.INFO_COLLECTION,
        A.HAZARD_INSPECTION,
        A.RESIDENT_SERVICE,
        A.HARDSHIP_HELP,
        A.CLUE_COLLECTED,
        A.VENUE_INSPECTION,
        A.LINKAGE_MATTER,
    } == COUNTED
    assert A.OTHER not in COUNTED
    assert A.HOUSEHOLD_VISIT not in COUNTED
    assert set(UNITS) == COUNTED
    assert UNITS[A.PATROL] == "patrols"
    assert UNITS[A.HARDSHIP_HELP] == "households"
    assert all(unit.isascii() and unit.isidentifier() for unit in UNITS.values())


def test_problem_solving_is_changdes_list() -> None:
    assert {
        A.DISPUTE_MEDIATION,
        A.RESIDENT_SERVICE,
        A.HARDSHIP_HELP,
        A.LINKAGE_MATTER,
    } == PROBLEM_SOLVING
    assert PROBLEM_SOLVING <= COUNTED


@pytest.mark.parametrize(
    ("code", "expected"),
    [("patrol", A.PATROL), ("other", A.OTHER), ("Patrol", None), ("", None), ("x" * 100, None)],
)
def test_from_code(code: str, expected: Activity | None) -> None:
    assert from_code(code) is expected


@pytest.mark.parametrize(
    ("activities", "encoded"),
    [
        ({}, ""),
        ({A.PATROL: 2}, "patrol:2"),
        ({A.OTHER: None}, "other:1"),
        ({A.HOUSEHOLD_VISIT: None}, "household_visit:1"),
        ({A.SCHOOL_DUTY: 1}, "school_duty:1"),
        (
            {A.OTHER: None, A.LINKAGE_MATTER: 3, A.PATROL: 2, A.HOUSEHOLD_VISIT: None},
            "household_visit:1;patrol:2;linkage_matter:3;other:1",
        ),
        ({A.VENUE_INSPECTION: MAX_COUNT}, "venue_inspection:999"),
        (
            {a: (1 if a in COUNTED else None) for a in reversed(ORDER)},
            ";".join(f"{code}:1" for code in SPEC_CODES),
        ),
    ],
)
def test_encode_and_decode(activities: dict[Activity, int | None], encoded: str) -> None:
    assert encode(activities) == encoded
    round_trip = {a: (None if a not in COUNTED else c) for a, c in activities.items()}
    assert decode(encoded) == round_trip


@pytest.mark.parametrize(
    ("activities", "message"),
    [
        ({A.PATROL: None}, "needs an integer count"),
        ({A.PATROL: 0}, "outside 1..999"),
        ({A.PATROL: -1}, "outside 1..999"),
        ({A.PATROL: MAX_COUNT + 1}, "outside 1..999"),
        ({A.PATROL: True}, "needs an integer count"),
        ({A.OTHER: 2}, "not counted"),
        ({A.HOUSEHOLD_VISIT: 0}, "not counted"),
    ],
)
def test_encode_refuses_counts_that_do_not_fit(
    activities: dict[Activity, int | None], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encode(activities)


def test_check_count_accepts_the_bounds() -> None:
    check_count(A.PATROL, 1)
    check_count(A.PATROL, MAX_COUNT)
    check_count(A.OTHER, None)
    check_count(A.OTHER, 1)
    with pytest.raises(ValueError):
        check_count(A.OTHER, True)


@pytest.mark.parametrize(
    "text",
    [
        "patrol",
        "patrol:",
        "patrol:x",
        "patrol:0",
        "patrol:1000",
        "patrol:-1",
        "patrol:２",
        "walk:1",
        "other:2",
        "patrol:1;patrol:2",
        "patrol:1;",
        ";",
        "patrol:1:2",
    ],
)
def test_decode_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        decode(text)


def test_problems_solved_and_patrols() -> None:
    activities: dict[Activity, int | None] = {
        A.PATROL: 3,
        A.DISPUTE_MEDIATION: 2,
        A.RESIDENT_SERVICE: 4,
        A.HARDSHIP_HELP: 1,
        A.LINKAGE_MATTER: 5,
        A.CLUE_COLLECTED: 7,
        A.OTHER: None,
    }
    assert problems_solved(activities) == 12
    assert patrols(activities) == 3
    assert problems_solved({A.OTHER: None, A.CLUE_COLLECTED: 2}) == 0
    assert patrols({}) == 0


# --- geo --------------------------------------------------------------------------------

ONE_DEGREE_M = EARTH_RADIUS_M * math.pi / 180  # about 111,195 m


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ((30.0, 114.0, 30.0, 114.0), 0.0),
        ((0.0, 0.0, 1.0, 0.0), ONE_DEGREE_M),
        ((0.0, 0.0, 0.0, 1.0), ONE_DEGREE_M),
        ((10.0, 20.0, 11.0, 20.0), ONE_DEGREE_M),  # along a meridian, anywhere
        ((0.0, 179.5, 0.0, -179.5), ONE_DEGREE_M),  # across the antimeridian
        ((0.0, 0.0, 0.0, 90.0), EARTH_RADIUS_M * math.pi / 2),
        ((0.0, 0.0, 0.0, 180.0), EARTH_RADIUS_M * math.pi),  # antipodes
        ((90.0, 0.0, -90.0, 0.0), EARTH_RADIUS_M * math.pi),
        ((90.0, 0.0, 90.0, 123.0), 0.0),  # every longitude meets at the pole
        ((60.0, 0.0, 60.0, 1.0), ONE_DEGREE_M * 0.5),  # approximately: cos 60° = 0.5
    ],
)
def test_distance_m(points: tuple[float, float, float, float], expected: float) -> None:
    assert distance_m(*points) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    lat1, lon1, lat2, lon2 = points
    assert distance_m(lat2, lon2, lat1, lon1) == pytest.approx(distance_m(*points))


def test_distance_at_village_scale() -> None:
    # 0.001° of latitude is about 111 m: the scale of "was the officer in the village"
    assert distance_m(34.7466, 113.6253, 34.7476, 113.6253) == pytest.approx(111.2, abs=0.1)
    # Zhengzhou to Beijing, about 620 km
    assert distance_m(34.7466, 113.6253, 39.9042, 116.4074) == pytest.approx(620_000, rel=0.02)


@pytest.mark.parametrize(
    "points",
    [
        (91.0, 0.0, 0.0, 0.0),
        (0.0, 181.0, 0.0, 0.0),
        (0.0, 0.0, -90.5, 0.0),
        (0.0, 0.0, 0.0, -180.5),
        (math.nan, 0.0, 0.0, 0.0),
        (0.0, 0.0, 0.0, math.inf),
    ],
)
def test_distance_refuses_invalid_points(points: tuple[float, float, float, float]) -> None:
    with pytest.raises(ValueError, match="not a valid point"):
        distance_m(*points)


@pytest.mark.parametrize(
    ("lat", "lon", "valid"),
    [
        (0.0, 0.0, True),
        (34.7, 113.6, True),
        (90.0, 180.0, True),
        (-90.0, -180.0, True),
        (90, -180, True),
        (90.0001, 0.0, False),
        (-90.0001, 0.0, False),
        (0.0, 180.0001, False),
        (0.0, -180.0001, False),
        (math.nan, 0.0, False),
        (0.0, math.nan, False),
        (math.inf, 0.0, False),
        (0.0, -math.inf, False),
        (True, 0.0, False),
    ],
)
def test_valid_point(lat: float, lon: float, valid: bool) -> None:
    assert valid_point(lat, lon) is valid


@pytest.mark.parametrize(
    ("distance", "radius", "far"),
    [
        (None, 500.0, False),
        (0.0, 500.0, False),
        (500.0, 500.0, False),
        (500.1, 500.0, True),
        (12_000.0, 3_000.0, True),
        (0.0, 0.0, False),
        (0.1, 0.0, True),
    ],
)
def test_far_from_centre(distance: float | None, radius: float, far: bool) -> None:
    assert far_from_centre(distance, radius) is far


# --- hazards ----------------------------------------------------------------------------


def test_hazard_codes() -> None:
    assert [c.value for c in HazardCategory] == [
        "fire",
        "traffic",
        "public_security",
        "electrical",
        "flood_geological",
        "other",
    ]
    assert [s.value for s in Severity] == ["low", "medium", "high"]
    assert [s.value for s in HazardStatus] == ["open", "rectified", "handed_over"]
    assert {HazardStatus.RECTIFIED, HazardStatus.HANDED_OVER} == CLOSED_STATUSES
    assert HazardStatus.OPEN not in CLOSED_STATUSES


def test_default_departments() -> None:
    assert DEFAULT_DEPARTMENTS == (
        "civil_affairs",
        "natural_resources",
        "labour",
        "health",
        "emergency_management",
        "township_government",
        "housing_construction",
        "water_resources",
        "market_regulation",
        "transport",
        "education",
        "power_supply",
        "other",
    )
    assert len(set(DEFAULT_DEPARTMENTS)) == len(DEFAULT_DEPARTMENTS)
    assert all(code.isascii() and code.isidentifier() for code in DEFAULT_DEPARTMENTS)


REPORTED = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
SHANGHAI = timezone(timedelta(hours=8))


@pytest.mark.parametrize(
    ("reported_at", "severity", "high_days", "due"),
    [
        (REPORTED, Severity.HIGH, 7, datetime(2026, 11, 27, 9, 30, tzinfo=UTC)),
        (REPORTED, Severity.HIGH, 3, datetime(2026, 11, 23, 9, 30, tzinfo=UTC)),
        (REPORTED, Severity.MEDIUM, 7, None),
        (REPORTED, Severity.LOW, 7, None),
        # across a year end and a leap day
        (
            datetime(2026, 12, 28, 23, 0, tzinfo=SHANGHAI),
            Severity.HIGH,
            7,
            datetime(2027, 1, 4, 23, 0, tzinfo=SHANGHAI),
        ),
        (
            datetime(2028, 2, 25, 8, 0, tzinfo=SHANGHAI),
            Severity.HIGH,
            7,
            datetime(2028, 3, 3, 8, 0, tzinfo=SHANGHAI),
        ),
    ],
)
def test_reinspection_due(
    reported_at: datetime, severity: Severity, high_days: int, due: datetime | None
) -> None:
    result = reinspection_due(reported_at, severity, high_days=high_days)
    assert result == due
    if result is not None:
        assert result.tzinfo is reported_at.tzinfo


def test_reinspection_due_defaults_and_plain_codes() -> None:
    assert reinspection_due(REPORTED, Severity.HIGH) == REPORTED + timedelta(days=7)
    assert reinspection_due(REPORTED, Severity("high")) == REPORTED + timedelta(days=7)
    with pytest.raises(ValueError, match="high_days"):
        reinspection_due(REPORTED, Severity.HIGH, high_days=0)
    with pytest.raises(ValueError):
        Severity("critical")
