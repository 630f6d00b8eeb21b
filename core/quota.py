"""Monthly quotas, how they are configured, and whether an officer is keeping pace.

A quota is per officer and village and per calendar month. Four counters:
visit_days (distinct days in the village), households (visited), patrols, problems_solved;
0 means the counter is not required.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import date
from functools import lru_cache
from types import MappingProxyType
from typing import Final

COUNTERS: Final[tuple[str, ...]] = ("visit_days", "households", "patrols", "problems_solved")

# Nobody is behind pace during the first GRACE_DAYS days of a month: the weekly village day
# may not have come round yet.
GRACE_DAYS: Final = 7


def _check_counter(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}.{name} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{owner}.{name} must not be negative, got {value}")


def _check_counters(owner: str, values: tuple[object, ...]) -> None:
    """Each counter a non-negative int. A plain int passes at a glance: the scheduler's jobs
    build one of these per assignment of the province."""
    for name, value in zip(COUNTERS, values, strict=True):
        if type(value) is not int or value < 0:
            _check_counter(owner, name, value)


@dataclass(frozen=True, slots=True)
class Quota:
    visit_days: int = 0
    households: int = 0
    patrols: int = 0
    problems_solved: int = 0

    def __post_init__(self) -> None:
        _check_counters(
            "Quota", (self.visit_days, self.households, self.patrols, self.problems_solved)
        )

    def as_dict(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in COUNTERS}


@dataclass(frozen=True, slots=True)
class Progress:
    """What was done in the period, counted the same way as the quota."""

    visit_days: int = 0
    households: int = 0
    patrols: int = 0
    problems_solved: int = 0

    def __post_init__(self) -> None:
        _check_counters(
            "Progress", (self.visit_days, self.households, self.patrols, self.problems_solved)
        )

    def as_dict(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in COUNTERS}


PROFILES: Final[Mapping[str, Quota]] = MappingProxyType(
    {
        "xi": Quota(visit_days=4, households=4, patrols=0, problems_solved=0),
        "changde": Quota(visit_days=4, households=10, patrols=2, problems_solved=5),
    }
)
DEFAULT_PROFILE: Final = "xi"


def profile(name: str) -> Quota:
    """The built-in profile with this name; ValueError for an unknown one."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ValueError(f"unknown quota profile {name!r} (known: {known})") from None


@dataclass(frozen=True)
class QuotaOverride:
    """A station's or a village's departure from the quota it would otherwise inherit."""

    profile: str | None = None
    visit_days: int | None = None
    households: int | None = None
    patrols: int | None = None
    problems_solved: int | None = None

    def __post_init__(self) -> None:
        if self.profile is not None:
            profile(self.profile)
        for name in COUNTERS:
            value = getattr(self, name)
            if value is not None:
                _check_counter("QuotaOverride", name, value)

    def apply(self, base: Quota) -> Quota:
        """The profile, if any, replaces `base`; then each explicit counter replaces its field."""
        quota = base if self.profile is None else profile(self.profile)
        explicit = {name: getattr(self, name) for name in COUNTERS}
        return replace(quota, **{k: v for k, v in explicit.items() if v is not None})


def resolve_quota(
    default: Quota, station: QuotaOverride | None, village: QuotaOverride | None
) -> Quota:
    """The quota in force for a village: village overrides station overrides county default.

    Each override applies to the result of the level above it, so a profile named at village
    level discards the station's explicit counters too.
    """
    quota = default
    for override in (station, village):
        if override is not None:
            quota = override.apply(quota)
    return quota


def month_bounds(day: date) -> tuple[date, date]:
    """The first and the last day of the month `day` is in."""
    length = calendar.monthrange(day.year, day.month)[1]
    return day.replace(day=1), day.replace(day=length)


def days_left(today: date) -> int:
    """Days remaining in the month, today included (1 on the last day)."""
    return (month_bounds(today)[1] - today).days + 1


@dataclass(frozen=True)
class Shortfall:
    """What is still missing to meet the quota (quota - done, never below 0)."""

    visit_days: int = 0
    households: int = 0
    patrols: int = 0
    problems_solved: int = 0

    @property
    def is_met(self) -> bool:
        return not any(self.as_dict().values())

    def as_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}

    def missing(self) -> dict[str, int]:
        """Only the counters that still fall short, in COUNTERS order."""
        return {name: value for name, value in self.as_dict().items() if value}


def shortfall(quota: Quota, progress: Progress) -> Shortfall:
    return Shortfall(
        **{name: max(0, getattr(quota, name) - getattr(progress, name)) for name in COUNTERS}
    )


def is_met(quota: Quota, progress: Progress) -> bool:
    return shortfall(quota, progress).is_met


def expected_progress(quota: Quota, today: date, *, absences: int = 0) -> Progress:
    """What should be done by the start of `today` to be on pace for the month.

    See behind_pace for the rule.
    """
    if absences < 0:
        raise ValueError(f"absences must not be negative, got {absences}")
    length = month_bounds(today)[1].day
    if days_left(today) == 1:
        return Progress(**quota.as_dict())
    if today.day <= GRACE_DAYS:
        return Progress()
    elapsed = today.day - 1
    expected = {name: getattr(quota, name) * elapsed // length for name in COUNTERS}
    expected["visit_days"] = max(0, expected["visit_days"] - absences)
    return Progress(**expected)


def behind_pace(quota: Quota, progress: Progress, today: date, *, absences: int = 0) -> list[str]:
    """The counters (in COUNTERS order) behind the pace needed to meet the quota by month end.

    Pace is linear over the calendar month, measured at the start of `today`: with
    `elapsed = today.day - 1` whole days gone of a month of `length` days, a counter is
    expected to stand at `floor(quota * elapsed / length)`. Nothing is expected during the
    first GRACE_DAYS days, and on the last day of the month the whole quota is (today is
    the last chance). Each recorded absence (`absences`: village days reported as missed
    this month) lowers the expected visit days by one, never below 0; it does not lower the
    quota, which the officer must still make up.

    A counter is behind when progress is below that expectation, or, for visit days, when
    the days still missing exceed the days left in the month (today included), so that no
    amount of effort can meet it. A counter with a quota of 0 is never behind.
    """
    expected, left = _pace(quota, today, absences)
    needed = (quota.visit_days, quota.households, quota.patrols, quota.problems_solved)
    done = (progress.visit_days, progress.households, progress.patrols, progress.problems_solved)
    # Visit days still missing beyond the days left: no amount of effort meets the quota.
    impossible = needed[0] - done[0] > left
    behind = []
    for i, name in enumerate(COUNTERS):
        if needed[i] and (done[i] < expected[i] or (i == 0 and impossible)):
            behind.append(name)
    return behind


@lru_cache(maxsize=4096)
def _pace(quota: Quota, today: date, absences: int) -> tuple[tuple[int, ...], int]:
    """The expected counters (COUNTERS order) and the days left: the same for every
    assignment with this quota and absences, so computed once per run of a job."""
    expected = expected_progress(quota, today, absences=absences)
    return tuple(getattr(expected, name) for name in COUNTERS), days_left(today)
