"""Quotas, their resolution from county to village, and the pace rule."""

from __future__ import annotations

from datetime import date

import pytest

from core.quota import (
    COUNTERS,
    DEFAULT_PROFILE,
    GRACE_DAYS,
    PROFILES,
    Progress,
    Quota,
    QuotaOverride,
    Shortfall,
    behind_pace,
    days_left,
    expected_progress,
    is_met,
    month_bounds,
    profile,
    resolve_quota,
    shortfall,
)

XI = Quota(visit_days=4, households=4, patrols=0, problems_solved=0)
CHANGDE = Quota(visit_days=4, households=10, patrols=2, problems_solved=5)


def test_profiles_match_the_programme() -> None:
    assert PROFILES["xi"] == XI
    assert PROFILES["changde"] == CHANGDE
    assert DEFAULT_PROFILE == "xi"
    assert profile("changde") is PROFILES["changde"]
    assert set(PROFILES) == {"xi", "changde"}


def test_unknown_profile() -> None:
    with pytest.raises(ValueError, match="unknown quota profile 'hunan'"):
        profile("hunan")
    with pytest.raises(ValueError, match="unknown quota profile"):
        QuotaOverride(profile="hunan")


def test_profiles_cannot_be_changed() -> None:
    with pytest.raises(TypeError):
        PROFILES["xi"] = CHANGDE  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"visit_days": -1}, ValueError),
        ({"households": -5}, ValueError),
        ({"patrols": True}, TypeError),
        ({"problems_solved": 1.5}, TypeError),
        ({"households": "4"}, TypeError),
    ],
)
def test_bad_counters_are_refused(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        Quota(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(error):
        Progress(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(error):
        QuotaOverride(**kwargs)  # type: ignore[arg-type]


def test_zero_is_a_valid_counter_everywhere() -> None:
    assert Quota().as_dict() == dict.fromkeys(COUNTERS, 0)
    assert Progress().as_dict() == dict.fromkeys(COUNTERS, 0)
    assert QuotaOverride(households=0).households == 0


DEFAULT = Quota(visit_days=3, households=5, patrols=1, problems_solved=0)


@pytest.mark.parametrize(
    ("station", "village", "expected"),
    [
        (None, None, DEFAULT),
        (QuotaOverride(), QuotaOverride(), DEFAULT),
        (QuotaOverride(households=6), None, Quota(3, 6, 1, 0)),
        (None, QuotaOverride(households=6), Quota(3, 6, 1, 0)),
        (QuotaOverride(profile="changde"), None, CHANGDE),
        (QuotaOverride(profile="xi"), None, XI),
        # village overrides station, field by field
        (QuotaOverride(households=6), QuotaOverride(households=8), Quota(3, 8, 1, 0)),
        (QuotaOverride(households=6), QuotaOverride(patrols=4), Quota(3, 6, 4, 0)),
        # a profile is the base, then the same override's counters apply on top
        (QuotaOverride(profile="changde", patrols=0), None, Quota(4, 10, 0, 5)),
        (QuotaOverride(profile="changde"), QuotaOverride(households=12), Quota(4, 12, 2, 5)),
        # a village profile replaces everything inherited, the station's counters included
        (QuotaOverride(profile="changde", households=20), QuotaOverride(profile="xi"), XI),
        (QuotaOverride(households=20), QuotaOverride(profile="changde"), CHANGDE),
        (
            QuotaOverride(profile="xi"),
            QuotaOverride(profile="changde", visit_days=6),
            Quota(6, 10, 2, 5),
        ),
        # a counter can be switched off
        (None, QuotaOverride(visit_days=0), Quota(0, 5, 1, 0)),
    ],
)
def test_resolve_quota(
    station: QuotaOverride | None, village: QuotaOverride | None, expected: Quota
) -> None:
    assert resolve_quota(DEFAULT, station, village) == expected


@pytest.mark.parametrize(
    ("day", "first", "last"),
    [
        (date(2026, 11, 20), date(2026, 11, 1), date(2026, 11, 30)),
        (date(2026, 12, 31), date(2026, 12, 1), date(2026, 12, 31)),
        (date(2026, 12, 1), date(2026, 12, 1), date(2026, 12, 31)),
        (date(2027, 1, 1), date(2027, 1, 1), date(2027, 1, 31)),
        (date(2027, 2, 14), date(2027, 2, 1), date(2027, 2, 28)),
        (date(2028, 2, 14), date(2028, 2, 1), date(2028, 2, 29)),
        (date(2028, 2, 29), date(2028, 2, 1), date(2028, 2, 29)),
        (date(2100, 2, 1), date(2100, 2, 1), date(2100, 2, 28)),  # century, not leap
        (date(2000, 2, 1), date(2000, 2, 1), date(2000, 2, 29)),  # divisible by 400, leap
        (date(2026, 4, 30), date(2026, 4, 1), date(2026, 4, 30)),
    ],
)
def test_month_bounds(day: date, first: date, last: date) -> None:
    assert month_bounds(day) == (first, last)


@pytest.mark.parametrize(
    ("today", "left"),
    [
        (date(2026, 11, 1), 30),
        (date(2026, 11, 21), 10),
        (date(2026, 11, 30), 1),
        (date(2026, 12, 1), 31),
        (date(2026, 12, 31), 1),
        (date(2027, 2, 1), 28),
        (date(2027, 2, 28), 1),
        (date(2028, 2, 1), 29),
        (date(2028, 2, 28), 2),
        (date(2028, 2, 29), 1),
    ],
)
def test_days_left_counts_today(today: date, left: int) -> None:
    assert days_left(today) == left


def test_shortfall_is_floored_at_zero() -> None:
    missing = shortfall(CHANGDE, Progress(visit_days=5, households=3, patrols=0, problems_solved=7))
    assert missing == Shortfall(visit_days=0, households=7, patrols=2, problems_solved=0)
    assert missing.missing() == {"households": 7, "patrols": 2}
    assert not missing.is_met
    assert not is_met(CHANGDE, Progress(5, 3, 0, 7))


@pytest.mark.parametrize(
    ("quota", "progress", "met"),
    [
        (XI, Progress(4, 4, 0, 0), True),
        (XI, Progress(9, 30, 0, 0), True),
        (XI, Progress(3, 4, 0, 0), False),
        (XI, Progress(4, 3, 5, 5), False),
        (CHANGDE, Progress(4, 10, 2, 5), True),
        (CHANGDE, Progress(4, 10, 2, 4), False),
        (Quota(), Progress(), True),
    ],
)
def test_is_met(quota: Quota, progress: Progress, met: bool) -> None:
    assert is_met(quota, progress) is met
    assert shortfall(quota, progress).is_met is met
    assert (shortfall(quota, progress).missing() == {}) is met


@pytest.mark.parametrize(
    ("today", "visit_days"),
    [
        # grace: nothing is expected in the first week
        (date(2026, 12, 1), 0),
        (date(2027, 2, 7), 0),
        # 28-day February: 7 days gone of 28 is a quarter of the month, one day of four
        (date(2027, 2, 8), 1),
        # leap February: 7 of 29 days gone is not a quarter yet; 8 of 29 is
        (date(2028, 2, 8), 0),
        (date(2028, 2, 9), 1),
        (date(2028, 2, 28), 3),
        (date(2028, 2, 29), 4),  # the last day wants everything
        (date(2027, 2, 28), 4),
        # 30 against 31 days: 15 days gone is half of November, not half of December
        (date(2026, 11, 16), 2),
        (date(2026, 12, 16), 1),
        (date(2026, 12, 17), 2),
        (date(2026, 11, 30), 4),
        (date(2026, 12, 30), 3),
        (date(2026, 12, 31), 4),
    ],
)
def test_expected_visit_days(today: date, visit_days: int) -> None:
    assert expected_progress(XI, today).visit_days == visit_days


def test_expected_progress_scales_every_counter() -> None:
    assert expected_progress(CHANGDE, date(2026, 11, 16)) == Progress(2, 5, 1, 2)
    assert expected_progress(CHANGDE, date(2026, 11, 30)) == Progress(4, 10, 2, 5)
    assert expected_progress(CHANGDE, date(2026, 11, GRACE_DAYS)) == Progress()


def test_expected_progress_refuses_negative_absences() -> None:
    with pytest.raises(ValueError, match="absences"):
        expected_progress(XI, date(2026, 11, 16), absences=-1)


@pytest.mark.parametrize(
    ("quota", "progress", "today", "absences", "behind"),
    [
        # the first day of the month and the whole grace week: nobody is behind
        (XI, Progress(), date(2026, 11, 1), 0, []),
        (CHANGDE, Progress(), date(2026, 11, 7), 0, []),
        # first day after grace where nothing done is too little
        (XI, Progress(), date(2026, 11, 8), 0, []),
        (XI, Progress(), date(2026, 11, 9), 0, ["visit_days", "households"]),
        (XI, Progress(1, 0, 0, 0), date(2026, 11, 9), 0, ["households"]),
        (XI, Progress(1, 1, 0, 0), date(2026, 11, 9), 0, []),
        # mid-month, Changde: exactly on pace, then one short on one counter
        (CHANGDE, Progress(2, 5, 1, 2), date(2026, 11, 16), 0, []),
        (CHANGDE, Progress(2, 5, 1, 1), date(2026, 11, 16), 0, ["problems_solved"]),
        (CHANGDE, Progress(1, 4, 0, 1), date(2026, 11, 16), 0, list(COUNTERS)),
        # ahead on everything: never behind
        (CHANGDE, Progress(9, 40, 9, 9), date(2026, 11, 16), 0, []),
        # the last day requires everything, in every month length
        (XI, Progress(4, 3, 0, 0), date(2026, 11, 30), 0, ["households"]),
        (XI, Progress(4, 4, 0, 0), date(2026, 11, 30), 0, []),
        (XI, Progress(3, 4, 0, 0), date(2026, 12, 31), 0, ["visit_days"]),
        (XI, Progress(3, 4, 0, 0), date(2027, 2, 28), 0, ["visit_days"]),
        (XI, Progress(3, 4, 0, 0), date(2028, 2, 29), 0, ["visit_days"]),
        (XI, Progress(3, 4, 0, 0), date(2028, 2, 28), 0, []),
        # the day before the end of a 31-day month: pace says 3, and 1 day can still be made
        (XI, Progress(3, 3, 0, 0), date(2026, 12, 30), 0, []),
        # a counter with quota 0 is never behind, even on the last day
        (XI, Progress(4, 4, 0, 0), date(2026, 12, 31), 0, []),
        # an absence lowers the visit days expected so far by one
        (XI, Progress(1, 2, 0, 0), date(2026, 11, 16), 0, ["visit_days"]),
        (XI, Progress(1, 2, 0, 0), date(2026, 11, 16), 1, []),
        (XI, Progress(0, 2, 0, 0), date(2026, 11, 16), 1, ["visit_days"]),
        (XI, Progress(0, 2, 0, 0), date(2026, 11, 16), 2, []),
        (XI, Progress(0, 2, 0, 0), date(2026, 11, 16), 9, []),
        # ...but not the households
        (XI, Progress(0, 1, 0, 0), date(2026, 11, 16), 9, ["households"]),
        # ...and not the quota itself: on the last day it must be made up
        (XI, Progress(3, 4, 0, 0), date(2026, 11, 30), 3, ["visit_days"]),
        # ...nor whether it can still be met: 3 days missing with 2 days left
        (XI, Progress(1, 4, 0, 0), date(2026, 11, 29), 2, ["visit_days"]),
        (XI, Progress(2, 4, 0, 0), date(2026, 11, 29), 2, []),
        # more visit days missing than days left is behind even in the grace week
        (Quota(visit_days=28), Progress(), date(2027, 2, 2), 0, ["visit_days"]),
        (Quota(visit_days=28), Progress(), date(2027, 2, 1), 0, []),
        (Quota(visit_days=28), Progress(visit_days=1), date(2027, 2, 2), 0, []),
    ],
)
def test_behind_pace(
    quota: Quota, progress: Progress, today: date, absences: int, behind: list[str]
) -> None:
    assert behind_pace(quota, progress, today, absences=absences) == behind


def test_nobody_is_behind_with_the_quota_met() -> None:
    done = Progress(4, 10, 2, 5)
    day = date(2028, 2, 1)
    while day.month == 2:
        assert behind_pace(CHANGDE, done, day) == [], day
        assert behind_pace(CHANGDE, done, day, absences=3) == [], day
        day = date.fromordinal(day.toordinal() + 1)


def test_doing_nothing_is_behind_from_the_day_after_grace_to_the_end() -> None:
    for month_start in (date(2027, 2, 1), date(2028, 2, 1), date(2026, 11, 1), date(2026, 12, 1)):
        last = month_bounds(month_start)[1]
        for day_number in range(1, last.day + 1):
            today = month_start.replace(day=day_number)
            behind = behind_pace(CHANGDE, Progress(), today)
            if day_number <= GRACE_DAYS:
                assert behind == [], today
            else:
                # households (10 a month) are the first counter to fall behind
                assert "households" in behind, today
            if day_number == last.day:
                assert behind == list(COUNTERS), today


def test_expected_never_exceeds_quota_and_never_decreases() -> None:
    for month_start in (date(2027, 2, 1), date(2028, 2, 1), date(2026, 11, 1), date(2026, 12, 1)):
        previous = Progress()
        for day_number in range(1, month_bounds(month_start)[1].day + 1):
            expected = expected_progress(CHANGDE, month_start.replace(day=day_number))
            for name in COUNTERS:
                assert getattr(previous, name) <= getattr(expected, name) <= getattr(CHANGDE, name)
            previous = expected
        assert previous == Progress(**CHANGDE.as_dict())
